"""Benchmark: VAE-GAN training throughput of one process against N data-parallel processes.

Same global batch on both sides (what ``train.batch_size`` means with ``train.nproc``), so
the question answered is the user's: how much faster does ``-S train.nproc=N`` make this
run? Each process runs the library's own data-parallel step (its shard of the batch, noise
seeded per rank, global batch norm, averaged gradients; ``alphagan.distributed``): gloo on
CPU, where the cores are shared out equally (one process gets them all), NCCL with one GPU
per process on CUDA. Prints images/s (whole run, all processes together), the speed-up and
the scaling efficiency (speed-up / N).

    python benchmarks/scale.py [--size 32] [--batch 64] [--width 32] [--nproc 2] [--steps 10] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alphagan import distributed
from alphagan.benchmarking import UNSTABLE, MAX_SPREAD, interleaved, machine_line, ratio
from alphagan.config import parse_params
from alphagan.training import autocast_for, latent_noise, seeded_model, to_tensor, train_step


def _rank(rank: int, nproc: int, port: int, args: argparse.Namespace, results) -> None:
    """One process of an ``nproc``-process measurement; rank 0 reports images/s of the whole run."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(nproc),
                      LOCAL_RANK=str(rank))
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    world = distributed.start(device)  # None for one process: the plain single-process step
    device = world.device if world else device
    # Unset params take config.py's defaults, which are params.yaml's (tests/test_config.py checks).
    params = parse_params({"data": {"image_size": args.size}, "train": {
        "base_channels": args.width, "max_channels": args.width * 8, "batch_size": args.batch, "nproc": nproc,
        "device": device.type}}).train
    model = seeded_model(params, args.size, 0, device)
    if world:
        world.prepare([model.encoder, model.decoder, model.discriminator])
    autocast = autocast_for(device, params.precision)
    per_rank = args.batch // nproc
    images = np.random.default_rng(rank).integers(0, 256, (per_rank, args.size, args.size, 3), dtype=np.uint8)
    real = to_tensor(images, device)

    def step(index: int) -> None:
        noise = None
        if world:
            torch.manual_seed(world.step_seed(0, index))
            noise = latent_noise(per_rank, params.latent_dim, device)
        train_step(model, real, params, index, autocast, noise=noise, distributed=world)

    for index in range(3):  # warm-up: allocator, kernel choice, the process group's first collectives
        step(index)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if world:
        dist.barrier()
    start = time.perf_counter()
    for index in range(args.steps):
        step(3 + index)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if world:
        dist.barrier()
    elapsed = time.perf_counter() - start
    if rank == 0:
        results.put(args.steps * args.batch / elapsed)
    distributed.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(nproc: int, args: argparse.Namespace) -> float:
    """images/s of ``nproc`` fresh processes (start-up and warm-up not timed)."""
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(_rank, args=(nproc, _free_port(), args, results), nprocs=nproc, start_method="spawn")
    return results.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="the global batch, as train.batch_size")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--nproc", type=int, default=0, help="processes to compare with one (default: 2 on CPU, every GPU)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side (>= 2 for a ratio)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    nproc = args.nproc or (torch.cuda.device_count() if device.type == "cuda" else 2)
    if nproc < 2 or (device.type == "cuda" and nproc > torch.cuda.device_count()):
        raise SystemExit(f"scale: need 2 or more processes (one per GPU on CUDA), got --nproc {nproc} "
                         f"with {torch.cuda.device_count() if device.type == 'cuda' else os.cpu_count()} "
                         f"{'GPUs' if device.type == 'cuda' else 'cores'}")
    if args.batch % nproc:
        raise SystemExit(f"scale: --batch {args.batch} does not divide evenly over {nproc} processes")
    print(machine_line())
    # One side, then the other, round by round, each in fresh processes: a slow stretch of a
    # shared machine hits both. A side whose rounds disagree gives no ratio at all.
    sides = {1: lambda: measure(1, args), nproc: lambda: measure(nproc, args)}
    runs = interleaved({f"{n} process{'es' if n > 1 else ''}": program for n, program in sides.items()}, args.rounds)
    name = (f"{torch.cuda.get_device_name(device)}, one per process" if device.type == "cuda"
            else f"CPU, {os.cpu_count()} cores shared out equally")
    backend = "NCCL" if device.type == "cuda" else "gloo"
    print(f"\n{args.size} px, global batch {args.batch}, width {args.width}, {name}, {backend}; "
          f"{args.rounds} interleaved rounds x {args.steps} steps, fresh processes each round\n")
    print(f"| {'processes':<12} | {'images/s min / median / max (spread)':>38} | {'per process (median)':>21} |")
    print(f"|{'-' * 14}|{'-' * 40}|{'-' * 23}|")
    for (n, _), (label, rounds) in zip(sides.items(), runs.items(), strict=True):
        print(f"| {label:<12} | {rounds.summary():>38} | {rounds.median / n:21.0f} |")
    print()
    one, many = runs.values()
    speedup = ratio(many, one)
    label = f"{nproc} processes / 1 process throughput (medians)"
    if speedup is None:
        print(f"{label}: {UNSTABLE} (a side's rounds spread by more than {100 * MAX_SPREAD:.0f}%, or fewer than 2 rounds)")
    else:
        print(f"{label}: {speedup:.2f}x; scaling efficiency {100 * speedup / nproc:.0f}% of {nproc}x")


if __name__ == "__main__":
    main()
