"""Evaluation: sample quality, reconstruction and memorisation, with honest floors.

The evaluate stage calls :func:`evaluate_model`; the instruments live in
:mod:`alphagan.metrics`. Every distance between generated and real images is measured
at equal counts on seeded random draws against the val split, beside the same distance
for held-out real images (train split, disjoint from val): the floor
(:mod:`alphagan.metrics.baselines` explains why both halves of that matter).

Which metrics judge samples: only those that pass the degradation ladder
(:data:`VALIDATED_METRICS`, checked by ``tests/test_metrics_ladder.py`` and printed by
``benchmarks/metrics_ladder.py``). The others are reported for context. One of them is
there to keep the validated one honest: the classifier two-sample test
(``c2st_accuracy``, :mod:`alphagan.metrics.classifier`) tells every damage of the ladder
from real faces and sees layout, which the patch SWD does not, but an accuracy stops at
1.0, so it cannot rank strong damage above mild once both are told apart every time.

The standard InceptionV3 FID (2015 TF weights, torch-fidelity) is computed when its
weights can be had; offline without them it is not, and the result says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alphagan.metrics.baselines import RATIO_METRICS, score_at_equal_counts
from alphagan.metrics.classifier import C2ST_METRIC, c2st_count, two_sample_scores
from alphagan.metrics.distances import frechet_distance_of, kernel_distance
from alphagan.metrics.features import extract
from alphagan.errors import AlphaGanError
from alphagan.metrics.memorisation import memorisation_report
from alphagan.metrics.variety import variety_report
from alphagan.plots import distance_histograms
from alphagan.training import to_tensor

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"

#: The metrics that passed the degradation ladder: the only ones used to choose settings.
VALIDATED_METRICS = ("swd_ratio",)

#: Below this many images per side, distances are too noisy to compare runs: flagged.
MIN_RELIABLE_COUNT = 100


class EvaluationError(AlphaGanError):
    """The data cannot be scored as asked (too few images for the chosen reference)."""


def find_inception_weights(configured: str) -> tuple[str | None, str]:
    """(path or None, how it was found or why not). None with an empty reason means: try the download."""
    if configured:
        path = Path(configured).expanduser()
        return (str(path), f"evaluate.inception_weights {path}") if path.is_file() else (None, f"evaluate.inception_weights {path} does not exist")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    if cached.is_file():
        return str(cached), f"torch hub cache {cached}"
    return None, ""


def inception_extractor(configured_weights: str) -> tuple[nn.Module | None, str]:
    """torch-fidelity's InceptionV3 (2048-d pool features), or (None, why it is unavailable)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path, source = find_inception_weights(configured_weights)
    if path is None and source:
        return None, source
    if path is not None:
        try:
            # Refuse pickled code before torch-fidelity loads the file (it uses weights_only=False).
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            return None, f"{path} is not a plain weights file: {type(exc).__name__}: {exc}"
    try:
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)
    except Exception as exc:  # noqa: BLE001 - offline download, corrupt file, wrong shapes
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return None, (f"InceptionV3 weights could not be downloaded ({why}); put {INCEPTION_WEIGHTS_FILE} in "
                      f"{Path(torch.hub.get_dir()) / 'checkpoints'} or set evaluate.inception_weights")
    return model, source or "downloaded by torch-fidelity"


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC, quantised as prepare's arrays are."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(decoder: nn.Module, count: int, latent_dim: int, seed: int, batch_size: int, device: torch.device,
             temperature: float = 1.0) -> np.ndarray:
    """``count`` uint8 images from N(0, temperature² I), seeded.

    A temperature below 1 is reduced-temperature sampling (Kingma & Dhariwal 2018, Glow; the
    smooth form of BigGAN's truncation trick): codes nearer the prior's mode, where training
    drew most often, trading variety for fidelity. The same seed draws the same directions at
    every temperature, so grids at two temperatures show the same cells, scaled.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    generator = torch.Generator().manual_seed(seed)
    decoder = decoder.to(device).eval()
    chunks = []
    for start in range(0, count, batch_size):
        # Scaling by 1.0 is exact in floating point: the default run's codes stay bit-identical.
        latent = temperature * torch.randn(min(batch_size, count - start), latent_dim, generator=generator).to(device)
        chunks.append(to_uint8(decoder(latent)))
    return np.concatenate(chunks)


@torch.no_grad()
def posterior_samples(encoder: nn.Module, decoder: nn.Module, images: np.ndarray, seed: int, batch_size: int,
                      device: torch.device) -> np.ndarray:
    """One seeded draw z ~ q(z|x) per image through the decoder, uint8 NHWC: what the decoder
    makes where reconstruction trained it, to set beside what it makes from the prior."""
    from alphagan.models import reparameterize

    encoder, decoder = encoder.to(device).eval(), decoder.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(images), batch_size):
        mu, logvar = encoder(to_tensor(images[start:start + batch_size], device))
        noise = torch.randn(mu.shape, generator=generator).to(device)
        out.append(to_uint8(decoder(mu + noise * torch.exp(0.5 * logvar))))
    return np.concatenate(out)


def training_posterior_samples(encoder: nn.Module, decoder: nn.Module, train_images: np.ndarray, num_generated: int,
                               seed: int, batch_size: int, device: torch.device) -> np.ndarray:
    """:func:`posterior_samples` of ``num_generated`` seeded random training images (all of them when fewer)."""
    rows = np.sort(np.random.default_rng([seed, 1]).choice(len(train_images), min(len(train_images), num_generated),
                                                           replace=False))
    return posterior_samples(encoder, decoder, train_images[rows], seed, batch_size, device)


def prior_gap(quality: dict[str, float]) -> dict[str, float]:
    """The same instruments on **posterior** samples, from :func:`quality_scores` run with
    ``also={"posterior": training_posterior_samples(...)}``: one z ~ q(z|x) per training
    image through the decoder, scored in the prior samples' draws (the same reference and
    floor images). Returns ``posterior_<metric>`` for every metric, ``posterior_swd_ratio_std``
    and ``prior_gap`` = prior ``swd_ratio`` / ``posterior_swd_ratio``.

    A VAE's prior samples can be no better than what its decoder draws where
    reconstruction trained it; comparing the two says whether quality is lost between
    the aggregate posterior and N(0, I) (gap above 1) or in the decoder itself. It also
    tests the instruments: on the 4,620-step default checkpoint of the spectral-norm
    discriminator a person saw clean, soft faces from the posterior and speckled, scrambled
    ones from the prior, and ``fd_random`` and precision agreed, while ``swd_ratio`` ranked
    the prior samples far ahead (gap 0.36): patch SWD weighs lost fine detail (its 32 px
    band) far above incoherent layout with the right local texture (README, "What a
    default run gives"). Only computed against the held-out val split: reconstructions of
    the reference's own images would be paired with their originals.
    """
    out = {key: value for key, value in quality.items() if key.startswith("posterior_") and not key.endswith("_std")}
    out["posterior_swd_ratio_std"] = quality["posterior_swd_ratio_std"]
    ratio = quality["posterior_swd_ratio"]
    out["prior_gap"] = quality["swd_ratio"] / ratio if ratio > 0 else float("nan")
    return out


@torch.no_grad()
def reconstruct(encoder: nn.Module, decoder: nn.Module, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Deterministic reconstructions (the posterior mean through the decoder), uint8 NHWC."""
    encoder, decoder = encoder.to(device).eval(), decoder.to(device).eval()
    out = []
    for start in range(0, len(images), batch_size):
        mu, _ = encoder(to_tensor(images[start:start + batch_size], device))
        out.append(to_uint8(decoder(mu)))
    return np.concatenate(out)


def reconstruction_quality(real: np.ndarray, reconstructed: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM (torchmetrics) on [0, 1] images."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    a = torch.from_numpy(np.array(real)).permute(0, 3, 1, 2).float() / 255
    b = torch.from_numpy(np.array(reconstructed)).permute(0, 3, 1, 2).float() / 255
    return {"psnr": float(PeakSignalNoiseRatio(data_range=1.0)(b, a)),
            "ssim": float(StructuralSimilarityIndexMeasure(data_range=1.0)(b, a))}


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 NHWC -> one HxWx3 grid with 2 px black padding."""
    from torchvision.utils import make_grid

    tensor = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)
    return make_grid(tensor, nrow=columns, padding=2).permute(1, 2, 0).numpy()


def quality_scores(reference: np.ndarray, generated: np.ndarray, held_out_real: np.ndarray | None, seed: int,
                   draws: int = 3, count: int | None = None, batch_size: int = 100,
                   device: torch.device | None = None, also: dict[str, np.ndarray] | None = None,
                   two_sample: bool = False) -> dict[str, float]:
    """Generated vs real at equal counts, against the same reference draws.

    For each metric ``m``: ``m`` (generated, mean over draws), ``m_std`` (its spread over
    draws), ``m_floor`` and ``m_floor_std`` (held-out real images scored the same way).
    ``fd_random_ratio`` = ``fd_random / fd_random_floor``; ``swd_ratio`` is the SWD
    relative to the floor band by band (see :func:`~alphagan.metrics.baselines.
    score_at_equal_counts`), so its floor is 1.0. Also ``count`` and ``draws``.

    ``held_out_real=None``: the floor is drawn from ``reference`` itself, in each draw the
    half not used as the reference (a few-shot set scored against its training images).

    ``also``: more image sets (each at least ``count`` long) scored in the same draws,
    against the same reference and floor images, which are featurised and scored once
    for all: ``<name>_<metric>`` and ``<name>_<metric>_std`` for each. A set as long as
    ``generated`` is drawn at the same rows, so the two are paired.

    ``two_sample``: also the classifier two-sample test (:mod:`~alphagan.metrics.classifier`):
    ``c2st_accuracy`` with ``_std``, ``_floor``, ``_floor_std`` and ``c2st_count``, against
    the training images (``held_out_real``, or ``reference`` when that is None), in
    ``draws`` draws. Not for ``also`` sets. Skipped (no keys) below 4 images a side.
    """
    split = held_out_real is None
    if count is None:
        count = min(len(reference) // 2, len(generated)) if split else min(len(reference), len(generated), len(held_out_real))
    candidates = {"generated": generated} if split else {"generated": generated, "real": held_out_real}
    also = also or {}
    if clash := set(also) & {"generated", "real"}:
        raise ValueError(f"quality_scores: also= names {sorted(clash)} are taken by the generated set and the floor")
    # After the generated set and the floor: their draws stay those of a call without `also`.
    scores = score_at_equal_counts(reference, {**candidates, **also}, count, draws, seed, batch_size, device,
                                   floor_from_reference=split)
    out: dict[str, float] = {"count": count, "draws": draws}
    for metric, summary in scores["generated"].items():
        floor = scores["real"][metric]
        out.update({metric: summary.mean, f"{metric}_std": summary.std, f"{metric}_floor": floor.mean,
                    f"{metric}_floor_std": floor.std})
        if metric in RATIO_METRICS:
            out[f"{metric}_ratio"] = summary.mean / floor.mean if floor.mean > 0 else float("nan")
    for name in also:
        for metric, summary in scores[name].items():
            out.update({f"{name}_{metric}": summary.mean, f"{name}_{metric}_std": summary.std})
    pool = reference if split else held_out_real
    if two_sample and (c2st_images := c2st_count(len(pool), len(generated))) >= 4:
        tested = two_sample_scores(pool, {"generated": generated}, c2st_images, draws, seed, device=device)
        summary, floor = tested["generated"][C2ST_METRIC], tested["real"][C2ST_METRIC]
        out.update({C2ST_METRIC: summary.mean, f"{C2ST_METRIC}_std": summary.std, f"{C2ST_METRIC}_floor": floor.mean,
                    f"{C2ST_METRIC}_floor_std": floor.std, "c2st_count": c2st_images})
    return out


def choose_reference(mode: str, val_count: int, train_count: int) -> tuple[str, list[str]]:
    """What the samples are scored against (``"val"`` or ``"train"``) for ``evaluate.reference``
    ``mode``, and the lines that say why when it is not the held-out val split."""
    if mode == "auto":
        mode = "val" if val_count >= MIN_RELIABLE_COUNT else "train"
        if mode == "train":
            notes = [f"the val split holds {val_count} images (fewer than {MIN_RELIABLE_COUNT}), so evaluate.reference: auto "
                     f"scores the samples against the {train_count} training images themselves"]
        else:
            return mode, []
    elif mode == "val" and val_count < 2:
        mode, notes = "train", [f"evaluate.reference is val but the val split holds {val_count} images; "
                                f"scoring against the {train_count} training images instead"]
    else:
        notes = []
    if mode == "train":
        if train_count < 4:
            raise EvaluationError(f"scoring against the training set needs at least 4 training images (two halves of 2), "
                                  f"got {train_count}")
        notes.append("against the training set (the DiffAugment paper's convention for 100-shot sets), the floor is one "
                     "random half of it against the other: this measures fit to the training images, and a copying "
                     "generator would score well, so read it with the memorisation numbers")
    return mode, notes


def evaluate_model(
    decoder: nn.Module, encoder: nn.Module, latent_dim: int, train_images: np.ndarray, val_images: np.ndarray,
    num_samples: int, batch_size: int, seed: int, inception_weights: str = "", nearest: int = 8,
    device: torch.device | None = None, draws: int = 3, reference: str = "val",
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """All evaluation metrics (``eval/...``), notes, warnings, and the pictures.

    ``reference`` (``evaluate.reference``): ``"val"`` scores against the val split, with
    random train images (disjoint from val) as the real-data floor and held-out val
    images as the memorisation reference; ``"train"`` scores against the training set
    itself, the floor being one random half of it against the other and the memorisation
    reference leave-one-out within it; ``"auto"`` picks val when it holds at least
    :data:`MIN_RELIABLE_COUNT` images. ``eval/reference_train`` records the choice.

    Small-data honesty: with fewer than :data:`MIN_RELIABLE_COUNT` images per side the
    distances are still reported, with ``eval/small_sample`` set and a warning; the same
    for the memorisation reference (``eval/memorisation_small_sample``).
    """
    device = device or torch.device("cpu")
    train_images, val_images = np.asarray(train_images), np.asarray(val_images)
    mode, notes = choose_reference(reference, len(val_images), len(train_images))
    against_train = mode == "train"
    scored_against = train_images if against_train else val_images
    fake = generate(decoder, num_samples, latent_dim, seed, batch_size, device)
    # Posterior samples are scored in the same draws as the prior ones (see prior_gap).
    also = {} if against_train else {
        "posterior": training_posterior_samples(encoder, decoder, train_images, len(fake), seed, batch_size, device)}
    quality = quality_scores(scored_against, fake, None if against_train else train_images, seed, draws=draws,
                             batch_size=batch_size, device=device, also=also, two_sample=True)
    gap = prior_gap(quality) if also else {}
    quality = {key: value for key, value in quality.items() if not key.startswith("posterior_")}
    metrics: dict[str, Any] = {f"eval/{k}": v for k, v in quality.items()}
    metrics["eval/num_generated"] = len(fake)
    metrics["eval/reference_train"] = int(against_train)
    warnings = []
    if quality["count"] < MIN_RELIABLE_COUNT:
        sizes = f"train {len(train_images)}, generated {len(fake)}" if against_train else \
            f"val {len(val_images)}, train {len(train_images)}, generated {len(fake)}"
        remedy = "so compare runs only by differences well beyond the _std spreads" if against_train else \
            "so compare runs on a larger val split (prepare.val_fraction) or set evaluate.reference: train"
        warnings.append(f"only {quality['count']} images per side ({sizes}): distances this small are noise, {remedy}")
    metrics["eval/small_sample"] = int(bool(warnings))

    reconstructed = reconstruct(encoder, decoder, scored_against, batch_size, device)
    metrics.update({f"eval/{k}": v for k, v in gap.items()})
    metrics.update({f"eval/{k}": v for k, v in reconstruction_quality(scored_against, reconstructed).items()})

    memo = memorisation_report(fake, train_images, None if against_train else val_images, shown=nearest)
    metrics.update({"eval/nn_distance_median": memo.generated_median, "eval/nn_distance_median_real": memo.real_median,
                    "eval/memorisation_ratio": memo.ratio, "eval/copy_fraction": memo.copy_fraction})
    memorisation_small = len(memo.real_distances) < MIN_RELIABLE_COUNT
    metrics["eval/memorisation_small_sample"] = int(memorisation_small)
    if memorisation_small:
        warnings.append(f"the memorisation reference has only {len(memo.real_distances)} real images ({memo.real_reference}): "
                        f"copy_fraction and memorisation_ratio are rough; look at nearest_neighbours.png")
    metrics.update({f"eval/{k}": v for k, v in variety_report(fake, train_images).items()})
    pairs = np.stack([fake[memo.closest], train_images[memo.closest_training]], axis=1).reshape(-1, *fake.shape[1:])

    inception, source = inception_extractor(inception_weights)
    if inception is None:
        metrics["eval/inception_note"] = f"FID/KID (Inception) not computed: {source}"
    else:
        count = quality["count"]
        rng = np.random.default_rng([seed, 0])
        if against_train:
            halves = rng.permutation(len(train_images))
            reference_rows, floor_rows = np.sort(halves[:count]), np.sort(halves[count:2 * count])
        else:
            reference_rows = np.sort(rng.choice(len(scored_against), count, replace=False))
            floor_rows = np.sort(rng.choice(len(train_images), count, replace=False))
        generated_rows = np.sort(rng.choice(len(fake), count, replace=False))
        real_i = extract(inception, scored_against[reference_rows], batch_size, device)
        fake_i = extract(inception, fake[generated_rows], batch_size, device)
        floor_i = extract(inception, train_images[floor_rows], batch_size, device)
        kid, kid_std, _ = kernel_distance(real_i, fake_i, seed=seed)
        metrics.update({"eval/fid_inception": frechet_distance_of(real_i, fake_i),
                        "eval/fid_inception_floor": frechet_distance_of(real_i, floor_i),
                        "eval/kid_inception": kid, "eval/kid_inception_std": kid_std,
                        "eval/inception_note": f"InceptionV3 weights from {source}, {count} images a side, one draw"})
    metrics["eval/warnings"] = "; ".join(warnings)
    metrics["eval/reference_note"] = "; ".join(notes) if notes else "against the held-out val split; floor: random train images"
    # Train's samples.png already shows the prior samples; evaluate shows what it alone has seen.
    shown = min(32, len(scored_against))
    originals_and_reconstructions = np.stack([scored_against[:shown], reconstructed[:shown]], axis=1).reshape(
        -1, *scored_against.shape[1:])
    real_label = "held-out real images" if memo.real_reference == "held-out" else "training images, leave-one-out"
    pictures = {"reconstructions": image_grid(originals_and_reconstructions, 8),
                "nearest_neighbours": image_grid(pairs, 2 * min(4, len(memo.closest))),
                "memorisation": distance_histograms(memo.generated_distances, memo.real_distances, real_label)}
    return metrics, pictures
