"""Control: the batch-norm discriminator fed real and fake images apart, or in one mixed batch.

The default discriminator has batch norm (``train.spectral_norm: false``), and the training
step feeds it real images and generated images as two batches (``training.discriminate``),
as the DCGAN recipe does. Until that was found, one pass went over the concatenated
[real; reconstructions; prior samples], so every batch-norm statistic was shared by both
populations. This script trains the default params both ways for the same number of steps
on the same prepared data, one after the other in this run, and scores both with the
evaluate stage's instruments beside the real-data floor. The mixed variant exists only
here: it swaps ``training.discriminate`` for ``training.discriminate_in_one_pass`` (what a
spectral-norm discriminator gets), which is exactly the code that was replaced. Prints a table (not a test) and writes both grids side by side.

    python benchmarks/discriminator_batches.py [--steps 2000] [--seed 0] [--set train.KEY=VALUE ...]
                                               [--out reports/discriminator-batches.png]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from alphagan import training
from alphagan.benchmarking import machine_line, params_with_train_overrides, png_output, prepared_arrays
from alphagan.evaluation import generate, image_grid, quality_scores
from alphagan.plots import side_by_side

SHOWN = ["swd_ratio", "swd_32", "swd_16", "swd_8", "precision_random", "recall_random"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--steps", type=int, default=2000, help="steps of each run (fewer if the default run is shorter)")
    parser.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a train.* param of both runs (repeatable), e.g. to rerun an earlier default")
    parser.add_argument("--out", default="reports/discriminator-batches.png", type=png_output)
    args = parser.parse_args()
    params = params_with_train_overrides(args.params, [*args.set, f"train.max_steps={args.steps}"], "discriminator_batches")
    if params.train.spectral_norm:
        raise SystemExit("discriminator_batches: the params have spectral_norm: true (no batch norm): nothing to compare")
    seed = params.seed if args.seed is None else args.seed
    train_images, val_images = prepared_arrays(params, "discriminator_batches")
    device = training.select_device(params.train.device)
    machine = machine_line()

    variants = {"real and fakes apart (default)": training.discriminate, "one mixed batch (replaced)": training.discriminate_in_one_pass}
    generated, runs = {}, {}
    library_version = training.discriminate
    for label, discriminate in variants.items():
        training.discriminate = discriminate
        try:
            with tempfile.TemporaryDirectory() as scratch:
                start = time.perf_counter()
                result = training.train(train_images, val_images, params.train, params.data.image_size, seed,
                                        Path(scratch) / "checkpoint.pt")
                runs[label] = (result.step, time.perf_counter() - start)
                decoder, _, config = training.load_generator(Path(scratch) / "checkpoint.pt")
        finally:
            training.discriminate = library_version
        generated[label] = generate(decoder, args.samples, config.latent_dim, seed, 250, device)
    scores = {label: quality_scores(val_images, images, train_images, seed) for label, images in generated.items()}

    print(f"\n{params.data.image_size} px, seed {seed}; {machine}")
    first = next(iter(scores.values()))
    print(f"each metric: mean ± spread over {first['draws']} draws of {first['count']} images a side against the val split\n")
    shown = [m for m in SHOWN if m in first]
    print(f"| {'discriminator batches':<31} | {'steps':>5} | {'seconds':>7} | " + " | ".join(f"{m:>16}" for m in shown) + " |")
    print(f"|{'-' * 33}|{'-' * 7}|{'-' * 9}|" + "|".join("-" * 18 for _ in shown) + "|")
    for label, score in scores.items():
        steps, seconds = runs[label]
        print(f"| {label:<31} | {steps:>5} | {seconds:>7.0f} | "
              + " | ".join(f"{score[m]:9.4f} ±{score[m + '_std']:<5.3f}" for m in shown) + " |")
    print(f"| {'real floor':<31} | {'':>5} | {'':>7} | "
          + " | ".join(f"{first[m + '_floor']:9.4f} ±{first[m + '_floor_std']:<5.3f}" for m in shown) + " |")
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    side_by_side({f"{label}, {runs[label][0]} steps": image_grid(images[:64], 8) for label, images in generated.items()}).save(out)
    print(f"grids side by side: {out}")


if __name__ == "__main__":
    main()
