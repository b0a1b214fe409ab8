"""Benchmark: one VAE-GAN training step against a reference DCGAN step, in one run.

Both at the same image size, batch and width (VAE-GAN base_channels = DCGAN ngf = ndf);
the DCGAN is the Radford et al. 2015 layout (transposed-conv generator from a 1x1
latent, BatchNorm, LeakyReLU discriminator, BCE, Adam 2e-4). Prints images/s and peak
memory (CUDA max allocated on a GPU; growth of the process's peak RSS on CPU).
Target on CPU: VAE-GAN >= 0.6x DCGAN (issue 12). On a GPU add ``--device cuda --batch 128``:
bf16 autocast, target peak memory <= 1.25 GB.

    python benchmarks/train.py [--size 64] [--batch 64] [--width 32] [--steps 10] [--rounds 3] [--device cpu]
                               [--profile 5] [--compile]

The FLOPs of one step of each model (``torch.utils.flop_counter``: convolutions and matrix
products, forward and backward) give the ratio the two would reach at the same FLOP rate:
the FLOP-bound throughput ratio. A target above it asks the VAE-GAN to run its convolutions
faster per FLOP than the DCGAN runs the same kernels, which no change that keeps the maths
can promise.

``--compile`` adds a third side: the same VAE-GAN step with its three networks through
``torch.compile`` (inductor), the "fusing" route to a faster step that keeps the maths. Its
warm-up column includes the compilation, cold (an empty inductor cache in every round), which a
training run pays once; the compiled step's FLOPs are not counted (the counter sees the eager
graph only), and ``--profile`` compiles it once more.

``--profile N`` then runs N more steps of each model under ``torch.profiler`` (after the
timed rounds, so it perturbs none of them) and prints where the time goes: convolutions
(forward and backward) against everything else, and the costliest other ops.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import resource
import shutil
import tempfile
import time

import numpy as np
import torch

from alphagan.benchmarking import UNSTABLE, interleaved, machine_line, ratio, result_of, verdict
from alphagan.config import parse_params
from alphagan.dcgan import Dcgan, DcganConfig
from alphagan.training import VaeGan, model_config, to_tensor, train_step

COMPILED = "VAE-GAN compiled"  # the --compile side


def dcgan_stepper(size, batch, width, device, autocast):
    model = Dcgan(DcganConfig(image_size=size, width=width), device)  # the anchor of benchmarks/quality.py too
    return lambda real, _step: model.step(real, autocast)


def vaegan_stepper(size, batch, width, device, autocast, compiled: bool = False):
    # Unset params take config.py's defaults, which are params.yaml's (tests/test_config.py checks).
    params = parse_params({"data": {"image_size": size}, "train": {"base_channels": width, "max_channels": width * 8,
                                                                     "batch_size": batch, "device": device.type}}).train
    model = VaeGan.build(model_config(params, size), params, device)
    if compiled:  # compiled on their first call, inside the untimed warm-up
        for network in (model.encoder, model.decoder, model.discriminator):
            network.compile(dynamic=False)
    return lambda real, step: train_step(model, real, params, step, autocast)


STEPPERS = {"DCGAN": dcgan_stepper, "VAE-GAN": vaegan_stepper, COMPILED: functools.partial(vaegan_stepper, compiled=True)}


def step_inputs(device_name: str):
    """(device, autocast factory, one fixed batch of random images), seeded: what every
    measured or profiled step of either model is fed."""
    device = torch.device(device_name)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
    real = to_tensor(np.random.default_rng(0).integers(0, 256, (ARGS.batch, ARGS.size, ARGS.size, 3), dtype=np.uint8), device)
    return device, autocast, real


def warmed_up_step(which: str, device: torch.device, autocast, real: torch.Tensor):
    """A fresh model's step function after 3 untimed steps (allocator, oneDNN / cuDNN kernel
    choice); call it as ``step(real, step_index)`` from index 3 on."""
    step = STEPPERS[which](ARGS.size, ARGS.batch, ARGS.width, device, autocast)
    for i in range(3):
        step(real, i)
    return step


def measure(which: str, steps: int, device_name: str) -> tuple[float, int, float]:
    """(images/s, peak memory bytes, warm-up seconds) of ``steps`` training steps of one model.

    Runs in a fresh process (see main), so on CPU the growth of peak RSS over the
    imports belongs to this model alone.
    """
    device, autocast, real = step_inputs(device_name)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    warm_up_start = time.perf_counter()
    step = warmed_up_step(which, device, autocast, real)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    warm_up = start - warm_up_start
    for i in range(steps):
        step(real, 3 + i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    return steps * ARGS.batch / (time.perf_counter() - start), peak, warm_up


def step_flops(which: str, device_name: str) -> int:
    """FLOPs of one training step of ``which`` after the warm-up (deterministic: a count, not a timing)."""
    from torch.utils.flop_counter import FlopCounterMode

    device, autocast, real = step_inputs(device_name)
    step = warmed_up_step(which, device, autocast, real)
    with FlopCounterMode(display=False) as counter:
        step(real, 3)
    return counter.get_total_flops()


def profile_steps(which: str, steps: int, device_name: str, top: int = 5) -> str:
    """One line per model: self time of convolutions (forward + backward) and of the rest,
    and the ``top`` costliest other ops, over ``steps`` steps after a warm-up."""
    from torch.profiler import ProfilerActivity, profile

    device, autocast, real = step_inputs(device_name)
    step = warmed_up_step(which, device, autocast, real)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as recorded:
        for i in range(steps):
            step(real, 3 + i)
    times: dict[str, float] = {}
    for event in recorded.key_averages():
        seconds = (event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total) / 1e6
        times[event.key] = times.get(event.key, 0.0) + seconds
    convolution = sum(t for name, t in times.items() if "conv" in name)
    total = sum(times.values())
    others = sorted(((t, name) for name, t in times.items() if "conv" not in name), reverse=True)[:top]
    listed = ", ".join(f"{name} {t:.3f}" for t, name in others)
    return (f"{which}: {total:.3f} s over {steps} steps; convolutions {convolution:.3f} s ({convolution / total:.0%}), "
            f"the rest {total - convolution:.3f} s; costliest other ops (s): {listed}")


def _child(which: str, steps: int, device_name: str, args: argparse.Namespace, results) -> None:
    global ARGS
    ARGS = args
    if which != COMPILED:
        results.put(measure(which, steps, device_name))
        return
    # A cold compilation in every round, as a first training run pays it: inductor's on-disk
    # cache would otherwise serve the second round (and any later run) from the first.
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        results.put(measure(which, steps, device_name))


def in_fresh_process(which: str, steps: int, device_name: str) -> tuple[float, int, float]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_child, args=(which, steps, device_name, ARGS, results))
    process.start()
    outcome = result_of(process, results, which)
    process.join()
    return outcome


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per model (>= 2 for a ratio)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then profile N steps of each model and print where the time goes")
    parser.add_argument("--compile", action="store_true",
                        help="also time the VAE-GAN step with its networks through torch.compile")
    ARGS = args = parser.parse_args()
    if args.compile and torch.device(args.device).type == "cpu" and not any(map(shutil.which, ("g++", "clang++", "c++"))):
        parser.error("--compile on the CPU needs a C++ compiler (torch inductor builds its kernels with one): "
                     "install g++ (Debian: apt-get install g++)")
    # Alternate the two models round by round, each in its own process: a shared machine's
    # slow minute then hits both. A side whose rounds disagree gives no ratio at all.
    print(machine_line())
    sides = ["DCGAN", "VAE-GAN"] + ([COMPILED] if args.compile else [])
    memory_peaks: dict[str, int] = dict.fromkeys(sides, 0)
    warm_ups: dict[str, list[float]] = {which: [] for which in sides}

    def program(which: str):
        def run_once() -> float:
            ips, peak, warm_up = in_fresh_process(which, args.steps, args.device)
            memory_peaks[which] = max(memory_peaks[which], peak)
            warm_ups[which].append(warm_up)
            return ips
        return run_once

    runs = interleaved({which: program(which) for which in memory_peaks}, args.rounds)
    device = torch.device(args.device)
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    memory = "CUDA max allocated" if device.type == "cuda" else "peak RSS growth"
    print(f"\n{args.size} px, batch {args.batch}, width {args.width}, {precision}, {name}; "
          f"{args.rounds} interleaved rounds x {args.steps} steps, each model in its own process\n")
    # After the rounds: it perturbs none. The compiled side has the eager side's FLOPs, not counted again.
    flops = {which: step_flops(which, args.device) for which in runs if which != COMPILED}
    print(f"| {'model':<16} | {'images/s min / median / max (spread)':>38} | {memory + ' MiB':>24} | {'GFLOP / step':>12} "
          f"| {'GFLOP/s (median)':>16} | {'warm-up s (median)':>18} |")
    print(f"|{'-' * 18}|{'-' * 40}|{'-' * 26}|{'-' * 14}|{'-' * 18}|{'-' * 20}|")
    for which, rounds in runs.items():
        count = f"{flops[which] / 1e9:12.2f}" if which in flops else f"{'-':>12}"
        rate = f"{rounds.median / args.batch * flops[which] / 1e9:16.1f}" if which in flops else f"{'-':>16}"
        print(f"| {which:<16} | {rounds.summary():>38} | {memory_peaks[which] / 2**20:24.1f} | {count} "
              f"| {rate} | {np.median(warm_ups[which]):18.1f} |")
    print()
    measured = ratio(runs["VAE-GAN"], runs["DCGAN"])
    print(verdict(measured, 0.6, "VAE-GAN / DCGAN throughput (medians)"))
    bound = flops["DCGAN"] / flops["VAE-GAN"]
    print(f"FLOP-bound ratio (DCGAN / VAE-GAN FLOPs per step): {bound:.3f}x, the throughput ratio at equal FLOP rates"
          + ("" if bound >= 0.6 else ": the 0.6x target is above it"))
    if measured is not None:
        print(f"VAE-GAN FLOP rate / DCGAN FLOP rate: {measured / bound:.2f}")
    if args.compile:
        gained = ratio(runs[COMPILED], runs["VAE-GAN"])
        extra = np.median(warm_ups[COMPILED]) - np.median(warm_ups["VAE-GAN"])
        print("torch.compile, compiled / eager VAE-GAN step (medians): "
              + (f"{gained:.2f}x, after {extra:.1f} s more warm-up (the compilation)" if gained is not None else UNSTABLE))
    if device.type == "cuda":
        vaegan_mem = memory_peaks["VAE-GAN"]
        print(f"VAE-GAN peak CUDA memory {vaegan_mem / 2**30:.2f} GiB (target <= 1.25 GB): {'MET' if vaegan_mem <= 1.25e9 else 'NOT MET'}")
    if args.profile:
        print(f"\nwhere the time goes (torch.profiler, self time of each op, {args.profile} steps after a warm-up):")
        for which in runs:
            print("  " + profile_steps(which, args.profile, args.device))

if __name__ == "__main__":
    main()
