"""Benchmark: the project's VAE-GAN against the plain DCGAN anchor at the same wall time.

Both train on the same prepared data (``paths.prepared`` of params.yaml: run
``dvc repro prepare`` first) on the same machine, one after the other in this run: the
VAE-GAN with the default params (its whole default run), then the DCGAN recipe of
pytorch/examples (``alphagan.dcgan``, scaled to ``data.image_size``, width =
``train.base_channels``) for exactly the wall time the VAE-GAN took. Both are scored
with the same instruments at equal counts against the val split, beside the real-data
floor, and both sample grids go side by side into one PNG. Prints a table (not a test).

    python benchmarks/quality.py [--params params.yaml] [--seconds S] [--seed 0] [--set train.KEY=VALUE ...]
                                 [--out reports/quality.png]

``--seconds`` caps the VAE-GAN at S seconds (a quick look; not the default run); the DCGAN
always gets the wall time the VAE-GAN took.
``--set`` changes VAE-GAN params for this run only (as ``dvc exp run -S`` would), so a
setting is judged against the anchor trained in the same run, on the same machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from alphagan.benchmarking import machine_line, params_with_train_overrides, png_output, prepared_arrays
from alphagan.dcgan import DcganConfig, train_dcgan
from alphagan.evaluation import VALIDATED_METRICS, generate, image_grid, quality_scores
from alphagan.metrics.memorisation import memorisation_report
from alphagan.plots import side_by_side
from alphagan.training import autocast_for, load_generator, select_device, train

SHOWN = ["swd_ratio", "swd_32", "swd_16", "swd_8", "c2st_accuracy", "fd_random", "kid_random", "precision_random", "recall_random"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seconds", type=float, default=0.0, help="cap the VAE-GAN at this wall time (0: its whole default run); the DCGAN gets the time it took")
    parser.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a param of the VAE-GAN's run (repeatable)")
    parser.add_argument("--out", default="reports/quality.png", type=png_output)
    args = parser.parse_args()
    params = params_with_train_overrides(args.params, args.set, "quality")
    seed = params.seed if args.seed is None else args.seed
    train_images, val_images = prepared_arrays(params, "quality")
    size = params.data.image_size
    device = select_device(params.train.device)
    busy = os.getloadavg()[0]
    machine = machine_line()  # equal wall time means equal machine: say how busy it was

    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        result = train(train_images, val_images, params.train, size, seed, Path(scratch) / "checkpoint.pt", max_seconds=args.seconds)
        vaegan_seconds = time.perf_counter() - start
        decoder, _, config = load_generator(Path(scratch) / "checkpoint.pt")
    budget = vaegan_seconds  # equal wall time, also when the VAE-GAN ends its epochs before --seconds
    dcgan, dcgan_steps, dcgan_seconds = train_dcgan(
        train_images, DcganConfig(image_size=size, width=params.train.base_channels), seed, device,
        batch_size=params.train.batch_size, max_seconds=budget, autocast=autocast_for(device, params.train.precision))

    generated = {
        "DCGAN": generate(dcgan.generator.eval(), args.samples, dcgan.config.latent_dim, seed, 250, device),
        "VAE-GAN": generate(decoder, args.samples, config.latent_dim, seed, 250, device),
    }
    scores = {name: quality_scores(val_images, images, train_images, seed, two_sample=True) for name, images in generated.items()}
    memo = {name: memorisation_report(images, train_images, val_images) for name, images in generated.items()}

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{size} px, {name}, seed {seed}; {machine}; load average {busy:.2f} at start, {os.getloadavg()[0]:.2f} at the end")
    if args.set:
        print("VAE-GAN params changed for this run: " + ", ".join(args.set))
    print(f"VAE-GAN: {result.step} steps in {vaegan_seconds:.0f} s; DCGAN: {dcgan_steps} steps in {dcgan_seconds:.0f} s")
    first = scores["VAE-GAN"]
    print(f"each metric: mean over {first['draws']} draws of {first['count']} images a side against the val split; "
          "floor = held-out real (train) images scored the same way; c2st_accuracy: a classifier's held-out accuracy "
          f"between the samples and {first.get('c2st_count', 0)} training images a side (0.5 = chance; "
          "alphagan.metrics.classifier)\n")
    print(f"| {'metric':<17} | {'validated':>9} | {'DCGAN':>16} | {'VAE-GAN':>16} | {'real floor':>16} | {'better':>7} |")
    print(f"|{'-' * 19}|{'-' * 11}|{'-' * 18}|{'-' * 18}|{'-' * 18}|{'-' * 9}|")
    higher_is_better = {"precision_random", "recall_random"}
    for metric in (m for m in SHOWN if m in scores["VAE-GAN"]):  # the SWD bands follow the image size (no swd_32 at 16 px)
        d, v = scores["DCGAN"], scores["VAE-GAN"]
        better = ("VAE-GAN" if (v[metric] > d[metric]) == (metric in higher_is_better) else "DCGAN")
        print(f"| {metric:<17} | {'yes' if metric in VALIDATED_METRICS else 'no':>9} | {d[metric]:9.4f} ±{d[metric + '_std']:<5.3f} | "
              f"{v[metric]:9.4f} ±{v[metric + '_std']:<5.3f} | {v[metric + '_floor']:9.4f} ±{v[metric + '_floor_std']:<5.3f} | {better:>7} |")
    for label, key in (("memorisation ratio", "ratio"), ("copy fraction", "copy_fraction")):
        print(f"| {label:<17} | {'-':>9} | {getattr(memo['DCGAN'], key):16.3f} | {getattr(memo['VAE-GAN'], key):16.3f} | "
              f"{(1.0 if key == 'ratio' else 0.01):16.3f} | {'':>7} |")
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    side_by_side({f"DCGAN anchor ({dcgan_steps} steps)": image_grid(generated["DCGAN"][:64], 8),
                  f"VAE-GAN ({result.step} steps)": image_grid(generated["VAE-GAN"][:64], 8)}).save(out)
    print(f"grids side by side: {out}")


if __name__ == "__main__":
    main()
