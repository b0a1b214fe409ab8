"""Scores that mean what they say: equal counts, random draws, one reference, and a floor.

Why: the Fréchet distance and the SWD are biased upwards by a finite sample (FD's bias
grows roughly as 1/N1 + 1/N2), and a path-ordered array split in halves compares two
different sub-populations. So a "real-vs-real floor" is only a floor when it is measured
exactly as the score is: the same reference images, the same number of images on the
candidate side, drawn at random with a seed. :func:`score_at_equal_counts` scores every
candidate set (generated images, held-out real images, degraded real images) against the
*same* reference draw in each of several draws, so differences between candidates are
paired and the spread over draws says what is noise.

The ladder (:func:`degrade`, :data:`LADDER`) validates the instruments: a metric may judge
samples only if it ranks every kind of visible damage worse than the floor, more damage
worse than less, and a harmless change (a horizontal flip) within noise of the floor.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

from alphagan.metrics.distances import MultiscaleSWD, frechet_distance_of, kernel_distance, precision_recall
from alphagan.metrics.features import RandomFeatures, extract

#: Metrics whose lower value is better and whose floor is a positive bias: read as a ratio to the floor.
RATIO_METRICS = ("fd_random",)


@dataclass(frozen=True)
class DrawSummary:
    """One metric of one candidate set over the draws."""

    mean: float
    std: float
    values: tuple[float, ...]


def score_pair(swd_reference: MultiscaleSWD, reference_features: np.ndarray, candidate_images: np.ndarray,
               candidate_features: np.ndarray, seed: int) -> dict[str, float]:
    """Every metric between two equal-count sets: FD, KID, precision/recall (random
    features) and the SWD per pyramid band (``swd_32`` ...)."""
    kid, _, _ = kernel_distance(reference_features, candidate_features, subsets=50, seed=seed)
    precision, recall = precision_recall(reference_features, candidate_features)
    swd = swd_reference(candidate_images)
    scores = {"fd_random": frechet_distance_of(reference_features, candidate_features), "kid_random": kid,
              "precision_random": precision, "recall_random": recall}
    scores.update({f"swd_{size}": value for size, value in swd.items()})
    return scores


def score_at_equal_counts(reference: np.ndarray, candidates: dict[str, np.ndarray], count: int, draws: int, seed: int,
                          batch_size: int = 100, device: torch.device | None = None,
                          floor: str = "real", floor_from_reference: bool = False) -> dict[str, dict[str, DrawSummary]]:
    """Score each candidate image set against ``reference`` at ``count`` images a side.

    In draw d, ``count`` reference images and ``count`` images of each candidate are drawn
    without replacement (seeded by (seed, d)); every candidate meets the same reference
    draw, and candidates of the same length get the same rows (so a degraded copy of a
    set is paired with the set itself). Returns ``{candidate: {metric: DrawSummary}}``.

    When a candidate named ``floor`` (real images) is present, every candidate also gets
    ``swd_ratio``: per draw, the mean over pyramid bands of the band's SWD divided by the
    floor's SWD in that band and draw. The raw bands differ several-fold in scale and
    noise (the 8x8 band of 32 px faces is the noisiest and largest), so a plain mean of
    them is mostly the coarse band and hides fine speckle; relative to the floor, each
    band counts the same, and 1.0 means "as far from the reference as real images".

    ``floor_from_reference``: there is no separate real set (a few-shot run scored against
    its own training set). Each draw then splits ``reference`` into two disjoint random
    halves of ``count`` images: one is the reference, the other the ``floor`` candidate.
    ``count`` may then be at most half the reference. A candidate as long as the reference
    (a degraded copy of it, for the ladder) gets the floor half's rows.
    """
    device = device or torch.device("cpu")
    sizes = {name: len(images) for name, images in {"reference": reference, **candidates}.items()}
    if floor_from_reference:
        if floor in candidates:
            raise ValueError(f"floor_from_reference draws the {floor!r} floor from the reference: do not pass one")
        sizes["reference"] = len(reference) // 2  # each half must hold `count`
    if count < 2 or any(size < count for size in sizes.values()):
        raise ValueError(f"equal-count scoring at {count} images needs at least that many in every set"
                         f"{' (the reference split in halves)' if floor_from_reference else ''}, got {sizes}")
    net = RandomFeatures()
    features = {name: extract(net, images, batch_size, device) for name, images in {"reference": reference, **candidates}.items()}
    per_draw: dict[str, list[dict[str, float]]] = {name: [] for name in ([floor] if floor_from_reference else []) + list(candidates)}
    for draw in range(draws):
        rng = np.random.default_rng([seed, draw])
        if floor_from_reference:
            halves = rng.permutation(len(reference))
            ref_rows, floor_rows = np.sort(halves[:count]), np.sort(halves[count:2 * count])
        else:
            ref_rows = np.sort(rng.choice(len(reference), count, replace=False))
        swd_reference = MultiscaleSWD(np.asarray(reference[ref_rows]), seed=seed + draw)
        ref_features = features["reference"][ref_rows]
        if floor_from_reference:
            per_draw[floor].append(score_pair(swd_reference, ref_features, np.asarray(reference[floor_rows]),
                                              features["reference"][floor_rows], seed=seed + draw))
        # A damaged copy of the reference pool meets it through the floor half only, never as
        # copies of the very images it is scored against.
        rows_by_length: dict[int, np.ndarray] = {len(reference): floor_rows} if floor_from_reference else {}
        for name, images in candidates.items():
            if len(images) not in rows_by_length:
                rows_by_length[len(images)] = np.sort(rng.choice(len(images), count, replace=False))
            rows = rows_by_length[len(images)]
            per_draw[name].append(score_pair(swd_reference, ref_features, np.asarray(images[rows]), features[name][rows],
                                             seed=seed + draw))
        if floor in per_draw:
            floor_scores = per_draw[floor][-1]
            bands = [key for key in floor_scores if key.startswith("swd_")]
            for name in per_draw:
                latest = per_draw[name][-1]
                latest["swd_ratio"] = float(np.mean([latest[band] / floor_scores[band] for band in bands]))
    return {name: {metric: DrawSummary(float(np.mean(v := [d[metric] for d in rows])), float(np.std(v)), tuple(v))
                   for metric in rows[0]} for name, rows in per_draw.items()}


# --- The degradation ladder: visible damage at two strengths each, and harmless controls.

def _per_image(images: np.ndarray, transform: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(transform(Image.fromarray(image)).convert("RGB")) for image in images])


def _blur(images, strength, rng):
    radius = images.shape[1] / 32 * (0.6, 1.2)[strength]
    return _per_image(images, lambda im: im.filter(ImageFilter.GaussianBlur(radius)))


def _noise(images, strength, rng):
    sigma = (12.0, 30.0)[strength]
    return np.clip(images + rng.normal(0, sigma, images.shape), 0, 255).round().astype(np.uint8)


def _speckle(images, strength, rng):
    fraction = (0.03, 0.10)[strength]
    out = images.copy()
    hit = rng.random(images.shape[:3]) < fraction
    out[hit] = rng.choice(np.array([0, 255], np.uint8), size=(int(hit.sum()), 1))
    return out


def _jpeg(images, strength, rng):
    quality = (25, 8)[strength]

    def encode(im):
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue()))

    return _per_image(images, encode)


def _pixelate(images, strength, rng):
    factor = (2, 4)[strength]
    side = images.shape[1]
    return _per_image(images, lambda im: im.resize((side // factor,) * 2, Image.BOX).resize((side, side), Image.NEAREST))


def _scramble(images, strength, rng):
    tiles = (2, 4)[strength]  # a tiles x tiles grid, shuffled independently in every image
    n, side = len(images), images.shape[1]
    tile = side // tiles
    blocks = images.reshape(n, tiles, tile, tiles, tile, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, tiles * tiles, tile, tile, 3)
    order = np.argsort(rng.random((n, tiles * tiles)), axis=1)
    blocks = blocks[np.arange(n)[:, None], order]
    return blocks.reshape(n, tiles, tiles, tile, tile, 3).transpose(0, 1, 3, 2, 4, 5).reshape(images.shape)


def _desaturate(images, strength, rng):
    amount = (0.6, 1.0)[strength]
    grey = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    mixed = (1 - amount) * images + amount * grey[..., None]
    return mixed.round().clip(0, 255).astype(np.uint8)


def _flip(images, strength, rng):
    return np.ascontiguousarray(images[:, :, ::-1])


#: kind -> (transform(images, strength index, rng), number of strengths, harmful?)
LADDER: dict[str, tuple[Callable, int, bool]] = {
    "blur": (_blur, 2, True), "noise": (_noise, 2, True), "speckle": (_speckle, 2, True), "jpeg": (_jpeg, 2, True),
    "pixelate": (_pixelate, 2, True), "scramble": (_scramble, 2, True), "desaturate": (_desaturate, 2, True),
    "flip": (_flip, 1, False),
}


def degrade(images: np.ndarray, kind: str, strength: int, seed: int = 0) -> np.ndarray:
    """``images`` (uint8 NHWC) damaged by ``kind`` at ``strength`` (0 = mild, 1 = strong)."""
    transform, strengths, _ = LADDER[kind]
    if not 0 <= strength < strengths:
        raise ValueError(f"{kind} has strengths 0..{strengths - 1}, got {strength}")
    return transform(np.asarray(images), strength, np.random.default_rng([seed, strength]))


def ladder_sets(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Every rung of the ladder applied to ``images``: ``{"blur/0": ..., "flip/0": ...}``."""
    return {f"{kind}/{strength}": degrade(images, kind, strength, seed)
            for kind, (_, strengths, _) in LADDER.items() for strength in range(strengths)}


#: Damage on top of damage, named "<base rung>+<added rung>". The single rungs above cannot
#: tell whether a metric ranks two kinds of damage the way a person does. Generated faces
#: are rarely one clean degradation: a smooth, smeared sample and a grainy one are both
#: wrong, and the choice between recipes turns on which the metric calls closer to real.
#: Fresh pixel noise on a blurred image puts energy back into the finest band that the
#: blur took out, so any statistic of band energy can call blur + noise *closer* to real
#: than blur alone, while a person sees both damages. Measured (``benchmarks/metrics_ladder.py``,
#: README "Damage on damage"): ``swd_ratio`` fails both; the metrics that pass both
#: (``kid_random``, ``recall_random``, ``swd_8``) fail the single-damage ladder.
COMPOUND: tuple[tuple[str, str], ...] = (("blur/0", "noise/0"), ("blur/1", "noise/0"))


def _rung(name: str) -> tuple[str, int]:
    kind, strength = name.split("/")
    return kind, int(strength)


def compound_sets(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Each :data:`COMPOUND` pair applied in turn to ``images``: ``{"blur/0+noise/0": ...}``."""
    return {f"{base}+{added}": degrade(degrade(images, *_rung(base), seed), *_rung(added), seed)
            for base, added in COMPOUND}


def compound_verdicts(scores: dict[str, dict[str, DrawSummary]], metric: str) -> dict[str, str]:
    """``{compound rung: "ok" or why not}``: more damage must score worse than its base alone.

    ``scores`` holds each :func:`compound_sets` set and its base rung, scored in the same
    draws (:func:`score_at_equal_counts`, so the two are paired image for image). A
    metric that ranks base + added damage as better than the base alone rewards the added
    damage for hiding the base: it cannot choose between a smeared recipe and a grainy one.
    """
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
    verdicts = {}
    for base, added in COMPOUND:
        name = f"{base}+{added}"
        both, alone = scores[name][metric].mean, scores[base][metric].mean
        verdicts[name] = ("ok" if sign * (both - alone) > 0 else
                          f"{name} ({both:.4g}) is judged no worse than {base} alone ({alone:.4g}): {added} hides {base}")
    return verdicts


#: Metrics where a larger value is better (everything else: smaller is better).
HIGHER_IS_BETTER = ("precision_random", "recall_random")


def ladder_verdicts(scores: dict[str, dict[str, DrawSummary]], metric: str, margin: float = 1.1,
                    sigmas: float = 3.0) -> dict[str, str]:
    """Judge one metric on the ladder: ``{rung: "ok" or why not}``.

    ``scores`` comes from :func:`score_at_equal_counts` with a ``"real"`` candidate (the
    undamaged images) and every rung of :func:`ladder_sets` made from the same images.
    A harmful rung must be worse than the floor by ``sigmas`` times the larger spread of
    the two over the draws, and by the factor ``margin``; strength 1 must be worse than
    strength 0. A harmless rung must stay within ``sigmas`` spreads or 10% of the floor.
    """
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0
    floor = scores["real"][metric]
    badness = {rung: sign * summary[metric].mean for rung, summary in scores.items()}  # larger = judged worse
    verdicts = {}
    for rung, summary in scores.items():
        if rung == "real" or "+" in rung:  # compound rungs: compound_verdicts
            continue
        kind, strength = rung.split("/")
        value, noise = summary[metric].mean, max(floor.std, summary[metric].std, 1e-12)
        if not LADDER[kind][2]:
            close = abs(value - floor.mean) <= max(sigmas * noise, 0.1 * abs(floor.mean))
            verdicts[rung] = "ok" if close else f"{value:.4g} is not within noise of the floor {floor.mean:.4g}"
            continue
        worse_by = sign * (value - floor.mean)
        ratio_ok = sign > 0 and value >= margin * floor.mean or sign < 0 and value * margin <= floor.mean
        if worse_by <= sigmas * noise or not ratio_ok:
            verdicts[rung] = f"{value:.4g} is not clearly worse than the floor {floor.mean:.4g} (spread {noise:.2g})"
        elif strength == "1" and badness[rung] <= badness[f"{kind}/0"]:
            verdicts[rung] = f"strong {kind} ({value:.4g}) is not worse than mild ({scores[f'{kind}/0'][metric].mean:.4g})"
        else:
            verdicts[rung] = "ok"
    return verdicts
