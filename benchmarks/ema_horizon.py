"""Benchmark: how long an average of the decoder draws the best faces, on one training run.

The samples come from an exponential moving average (EMA) of the decoder, whose decay ramps
as min(``train.ema_decay``, (1 + n) / (r + n)) over updates n (``alphagan.training.
ema_with_warmup``; the run's own EMA has r = ``EMA_RAMP`` = 10: an average over about the
last 11% of the steps). This trains the default run once and keeps one more EMA of the
decoder for each ramp ``r`` asked for, all updated after every step of the same trajectory
(``TrainingCallbacks.on_step``), so the averages differ in their horizon alone. The raw
decoder (no average) is scored too. Each is scored as ``evaluate`` scores the run (equal
counts against the val split, beside the real floor: the validated ``swd_ratio`` and the
rest), and the grids go side by side into one PNG. Prints a table (not a test).

    python benchmarks/ema_horizon.py [--params params.yaml] [--seed 0] [--ramps 3,5,10,20,40]
                                     [--set train.KEY=VALUE ...] [--samples 1000] [--out reports/ema_horizon.png]

The ramp-10 average must equal the run's own EMA decoder bit for bit (checked, and said in the
output): it is the same update on the same trajectory. A decay that reaches ``train.ema_decay``
stops there; ``--set train.ema_decay=0.9999`` lifts that cap for the slow ramps without changing
the training or the run's own EMA (its ramp stays below 0.999 for 8,990 steps).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from alphagan.benchmarking import machine_line, params_with_train_overrides, png_output, prepared_arrays
from alphagan.evaluation import VALIDATED_METRICS, generate, image_grid, quality_scores
from alphagan.plots import side_by_side
from alphagan.training import EMA_RAMP, TrainingCallbacks, VaeGan, ema_with_warmup, ramped_decay, train

SHOWN = ["swd_ratio", "swd_32", "swd_16", "swd_8", "fd_random", "precision_random", "recall_random"]


def ramp_list(value: str) -> list[float]:
    """``--ramps``: comma-separated ramp constants, each > 1."""
    try:
        ramps = [float(part) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of numbers") from None
    if not ramps or any(r <= 1 for r in ramps):
        raise argparse.ArgumentTypeError(f"every ramp must be > 1 (the decay (1 + n) / (r + n) must stay below 1): {value!r}")
    return sorted(set(ramps))


class ExtraAverages(TrainingCallbacks):
    """One more EMA of the decoder per ramp, each updated after every step of the run; keeps
    the run's model, whose own EMA and raw decoder are the rows to compare with."""

    def __init__(self, ramps: list[float], decay: float):
        self.ramps, self.decay = ramps, decay
        self.averages: dict[float, AveragedModel] = {}
        self.model: VaeGan | None = None

    def on_step(self, step: int, model: VaeGan) -> None:
        if not self.averages:  # after the first step, as the run's own EMA takes its first copy then
            self.model = model
            self.averages = {ramp: AveragedModel(model.decoder, multi_avg_fn=ema_with_warmup(self.decay, ramp), use_buffers=True)
                             for ramp in self.ramps}
        for average in self.averages.values():
            average.update_parameters(model.decoder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed")
    parser.add_argument("--ramps", type=ramp_list, default=ramp_list("3,5,10,20,40"),
                        help=f"ramp constants to compare (the run's own: {EMA_RAMP:g})")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a param of the run (repeatable)")
    parser.add_argument("--out", default="reports/ema_horizon.png", type=png_output)
    args = parser.parse_args()
    params = params_with_train_overrides(args.params, args.set, "ema_horizon")
    seed = params.seed if args.seed is None else args.seed
    train_images, val_images = prepared_arrays(params, "ema_horizon")
    size, cap = params.data.image_size, params.train.ema_decay
    machine = machine_line()
    ramps = sorted(set(args.ramps) | {EMA_RAMP})  # the run's own ramp is always a row: the check below needs it

    averages = ExtraAverages(ramps, cap)
    with tempfile.TemporaryDirectory() as scratch:
        result = train(train_images, val_images, params.train, size, seed, Path(scratch) / "checkpoint.pt", callbacks=averages)
    decoders = {ramp: average.module.eval() for ramp, average in averages.averages.items()}
    own_state, ours = averages.model.generator().state_dict(), decoders[EMA_RAMP].state_dict()
    identical = all(torch.equal(own_state[key], ours[key]) for key in own_state)
    if not identical:
        raise SystemExit("ema_horizon: the ramp-10 average differs from the run's own EMA decoder; the comparison is void")
    raw = averages.model.decoder

    device = torch.device("cpu")
    latent_dim = params.train.latent_dim
    generated = {f"ramp {ramp:g}": generate(decoder, args.samples, latent_dim, seed, 250, device) for ramp, decoder in decoders.items()}
    generated["raw decoder"] = generate(raw.eval(), args.samples, latent_dim, seed, 250, device)
    scores = {name: quality_scores(val_images, images, train_images, seed) for name, images in generated.items()}

    print(f"\n{size} px, CPU, {torch.get_num_threads()} threads, seed {seed}; {machine}; load average {os.getloadavg()[0]:.2f} at the end")
    if args.set:
        print("params changed for this run: " + ", ".join(args.set))
    first = next(iter(scores.values()))
    print(f"one training run of {result.step} steps; each average is the decoder's EMA with decay min({cap:g}, (1 + n) / (r + n)) "
          f"after update n; horizon = 1 / (1 - last decay) steps. Each metric: mean ± spread over {first['draws']} draws of "
          f"{first['count']} images a side against the val split; floor = held-out real (train) images scored the same way")
    print(f"the ramp-{EMA_RAMP:g} average is the run's own EMA decoder, bit for bit: {identical}\n")
    shown = [m for m in SHOWN if m in first]  # the SWD bands follow the image size
    print(f"| {'decoder':<12} | {'last decay':>10} | {'horizon':>7} | " + " | ".join(
        f"{m + (' (validated)' if m in VALIDATED_METRICS else ''):>22}" for m in shown) + " |")
    print(f"|{'-' * 14}|{'-' * 12}|{'-' * 9}|" + "|".join("-" * 24 for _ in shown) + "|")
    for name, score in scores.items():
        if name == "raw decoder":
            decay, horizon = "-", "-"
        else:
            last = ramped_decay(result.step - 1, cap, float(name.split()[1]))  # the last update is number steps - 1
            decay, horizon = f"{last:.5f}", f"{1 / (1 - last):.0f}"
        print(f"| {name:<12} | {decay:>10} | {horizon:>7} | " + " | ".join(
            f"{score[m]:>13.4f} ±{score[m + '_std']:<7.3f}" for m in shown) + " |")
    print(f"| {'real floor':<12} | {'-':>10} | {'-':>7} | " + " | ".join(
        f"{first[m + '_floor']:>13.4f} ±{first[m + '_floor_std']:<7.3f}" for m in shown) + " |")
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    side_by_side({name: image_grid(images[:64], 8) for name, images in generated.items()}).save(out)
    print(f"grids side by side: {out}")


if __name__ == "__main__":
    main()
