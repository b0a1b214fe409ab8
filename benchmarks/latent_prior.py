"""Benchmark: where a trained VAE-GAN's samples lose quality, in the prior or in the decoder.

The decoder of one checkpoint (default: ``models/checkpoint.pt``, from ``dvc repro train``)
draws from these sources of latent codes:

- ``N(0, I)``: the prior it was trained with, what ``evaluate`` and ``alphagan sample`` draw;
- ``temperature T``: N(0, T² I), the same codes as the prior's row scaled by T < 1
  (reduced-temperature sampling, the smooth form of the truncation trick): fidelity bought
  with variety, which recall and the classifier should show if it is paid;
- ``fitted Gaussian``: one Gaussian fitted to the aggregate posterior (two draws
  z ~ q(z|x) per training image), its mean and full covariance;
- ``mixture of K``: Gaussian mixtures (scikit-learn) fitted to the same draws, ex-post
  density estimation after Ghosh et al. 2020, "From variational to deterministic autoencoders";
- ``posterior``: one z ~ q(z|x) per training image, the decoder where reconstruction
  trained it: a ceiling, and the closest of these sources to copying the training set.

Each set is scored like ``evaluate``: at equal counts against the val split, mean ± spread
over random draws, beside the real-data floor, with the classifier two-sample test against
the training images and the memorisation ratio (nearest training image against held-out real
images). If the posterior scores far better than the prior, quality is lost in the holes of
the prior; if a fitted density or a lower temperature closes the gap, drawing from it is the
cheap fix. Writes the grids side by side in one PNG. Prints a table (not a test).

    python benchmarks/latent_prior.py [--checkpoint models/checkpoint.pt] [--prepared data/prepared]
        [--samples 1000] [--components 10,50] [--temperatures 0.8,0.6] [--draws 5] [--seed 0]
        [--out reports/latent_prior.png]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from alphagan.benchmarking import machine_line, png_output
from alphagan.evaluation import VALIDATED_METRICS, generate, image_grid, posterior_samples, quality_scores, to_uint8
from alphagan.metrics.memorisation import memorisation_report
from alphagan.plots import side_by_side
from alphagan.training import load_generator, to_tensor

SHOWN = ["swd_ratio", "c2st_accuracy", "fd_random", "precision_random", "recall_random"]
HIGHER_IS_BETTER = {"precision_random", "recall_random"}


@torch.no_grad()
def posterior_draws(encoder: torch.nn.Module, images: np.ndarray, per_image: int, seed: int, batch_size: int = 500) -> np.ndarray:
    """``per_image`` codes z ~ q(z|x) for every image, float64, (per_image * N, latent_dim)."""
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        mu, logvar = encoder(to_tensor(images[start:start + batch_size], torch.device("cpu")))
        means.append(mu.double().numpy())
        stds.append(torch.exp(0.5 * logvar).double().numpy())
    mu, std = np.concatenate(means), np.concatenate(stds)
    rng = np.random.default_rng([seed, 2])
    return np.concatenate([mu + std * rng.standard_normal(mu.shape) for _ in range(per_image)])


@torch.no_grad()
def decode(decoder: torch.nn.Module, codes: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """uint8 NHWC images for float latent codes."""
    latent = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32))
    return np.concatenate([to_uint8(decoder(latent[s:s + batch_size])) for s in range(0, len(latent), batch_size)])


def fitted_sources(codes: np.ndarray, components: list[int], count: int, seed: int) -> dict[str, np.ndarray]:
    """``count`` codes from a full-covariance Gaussian and from each mixture fitted to ``codes``."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng([seed, 3])
    # The same small ridge as the mixtures' reg_covar: with fewer codes than latent dimensions
    # (a small training set) the sample covariance is singular.
    mean, covariance = codes.mean(axis=0), np.cov(codes, rowvar=False) + 1e-4 * np.eye(codes.shape[1])
    out = {"fitted Gaussian": rng.multivariate_normal(mean, covariance, size=count, method="cholesky")}
    for k in components:
        if k > len(codes) // 2:
            print(f"latent_prior: no mixture of {k}: {len(codes)} codes are too few to fit it")
            continue
        # Full covariances for few components; diagonal ones when there are too few codes per component to estimate them.
        kind = "full" if len(codes) / k > 4 * codes.shape[1] else "diag"
        mixture = GaussianMixture(k, covariance_type=kind, reg_covar=1e-4, max_iter=200, random_state=seed).fit(codes)
        sampled, _ = mixture.sample(count)  # grouped by component: shuffled so that a grid shows the mix
        out[f"mixture of {k} ({kind})"] = sampled[rng.permutation(count)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="models/checkpoint.pt")
    parser.add_argument("--prepared", default="data/prepared", help="the folder with train.npy and val.npy")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--components", default="10,50", help="mixture sizes, comma-separated (empty: none)")
    parser.add_argument("--temperatures", default="0.8,0.6",
                        help="prior temperatures below 1, comma-separated (empty: none): codes from N(0, T² I)")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="reports/latent_prior.png", type=png_output)
    args = parser.parse_args()
    try:
        temperatures = [float(t) for t in args.temperatures.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--temperatures: not a comma-separated list of numbers: {args.temperatures!r}")
    if not all(0 < t < 1 for t in temperatures):
        parser.error(f"--temperatures: each must lie between 0 and 1 (1 is the prior's row): {args.temperatures}")
    checkpoint, prepared = Path(args.checkpoint), Path(args.prepared)
    for needed, how in ((checkpoint, "dvc repro train"), (prepared / "train.npy", "dvc repro prepare"),
                        (prepared / "val.npy", "dvc repro prepare")):
        if not needed.exists():
            raise SystemExit(f"latent_prior: {needed} is missing; run `{how}` first")
    train_images, val_images = np.load(prepared / "train.npy"), np.load(prepared / "val.npy")
    if len(val_images) == 0:
        raise SystemExit("latent_prior: the val split is empty; scores need held-out images (prepare.val_fraction)")
    busy, machine, started = os.getloadavg()[0], machine_line(), time.perf_counter()
    decoder, encoder, config = load_generator(checkpoint)
    device = torch.device("cpu")

    codes = posterior_draws(encoder, train_images, 2, args.seed)
    components = [int(k) for k in args.components.split(",") if k.strip()]
    generated = {"N(0, I) (the prior)": generate(decoder, args.samples, config.latent_dim, args.seed, 250, device)}
    generated.update({f"temperature {t:g}": generate(decoder, args.samples, config.latent_dim, args.seed, 250, device, t)
                      for t in temperatures})
    generated.update({name: decode(decoder, z) for name, z in fitted_sources(codes, components, args.samples, args.seed).items()})
    rows = np.sort(np.random.default_rng([args.seed, 1]).choice(len(train_images), min(len(train_images), args.samples),
                                                                replace=False))
    generated["posterior (ceiling)"] = posterior_samples(encoder, decoder, train_images[rows], args.seed, 250, device)
    scores = {name: quality_scores(val_images, images, train_images, args.seed, draws=args.draws, two_sample=True)
              for name, images in generated.items()}
    memo = {name: memorisation_report(images, train_images, val_images).ratio for name, images in generated.items()}

    first = next(iter(scores.values()))
    print(f"\n{checkpoint}: {config.image_size} px, latent {config.latent_dim}; {machine}; load average {busy:.2f} at start")
    print(f"each metric: mean ± spread over {first['draws']} draws of {first['count']} images a side against the val split "
          f"({len(val_images)} images); floor = held-out real (train) images scored the same way; mixtures fitted to "
          f"{len(codes)} codes (2 per training image)"
          + (f"; c2st_accuracy: a classifier's held-out accuracy between the samples and {first['c2st_count']} training "
             "images a side (0.5 = chance)" if "c2st_count" in first else "") + "\n")
    metrics = [m for m in SHOWN if m in first]
    header = "".join(f" {m + (' (validated)' if m in VALIDATED_METRICS else ''):>24} |" for m in metrics)
    print(f"| {'latent codes from':<24} |{header} {'memorisation':>12} |")
    print(f"|{'-' * 26}|" + "".join(f"{'-' * 26}|" for _ in metrics) + f"{'-' * 14}|")
    floor_row = "".join(f" {first[m + '_floor']:>16.4f} ±{first[m + '_floor_std']:<6.4f} |" for m in metrics)
    print(f"| {'real images (floor)':<24} |{floor_row} {1.0:>12.3f} |")
    for name, score in scores.items():
        cells = "".join(f" {score[m]:>16.4f} ±{score[m + '_std']:<6.4f} |" for m in metrics)
        print(f"| {name:<24} |{cells} {memo[name]:>12.3f} |")
    prior = scores["N(0, I) (the prior)"]
    for metric in metrics:
        better = [name for name, score in scores.items() if name != "N(0, I) (the prior)" and
                  (score[metric] - prior[metric]) * (1 if metric in HIGHER_IS_BETTER else -1)
                  > score[metric + "_std"] + prior[metric + "_std"]]
        print(f"{metric}: beyond both spreads better than N(0, I): {', '.join(better) if better else 'none'}")
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    side_by_side({name: image_grid(images[:64], 8) for name, images in generated.items()}).save(out)
    print(f"grids side by side: {out}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
