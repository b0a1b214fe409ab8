"""Benchmark: does each metric see what a person sees? The degradation ladder, printed.

Real prepared images (``paths.prepared`` of params.yaml: run ``dvc repro prepare`` first)
are damaged in seven ways at two strengths each (blur, pixel noise, speckle, JPEG blocks,
pixelation, scrambled layout, colour loss) plus a harmless horizontal flip, and every set
is scored against the val split at equal counts beside the undamaged images (the floor).
A metric may judge samples only if every rung passes (``alphagan.metrics.baselines.
ladder_verdicts``); ``tests/test_metrics_ladder.py`` asserts it for the validated metrics.

The classifier two-sample test (``c2st_accuracy``, :mod:`alphagan.metrics.classifier`)
learns from the training split, so its column is scored on a ladder made from the whole
split (up to 1,000 images a side), beside its own real floor.

A second table scores damage on top of damage (``COMPOUND``: pixel noise on blurred
images) against the base damage alone: a metric that calls blur + noise closer to real
than blur alone rewards grain that hides a smear, so it cannot choose between a smooth
recipe and a grainy one by itself (README, "Damage on damage").

    python benchmarks/metrics_ladder.py [--params params.yaml] [--count 300] [--draws 3] [--c2st-count 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from alphagan.config import load_params
from alphagan.evaluation import VALIDATED_METRICS
from alphagan.metrics.baselines import (COMPOUND, DrawSummary, compound_sets, compound_verdicts, ladder_sets, ladder_verdicts,
                                        score_at_equal_counts)
from alphagan.metrics.classifier import C2ST_METRIC, MAX_COUNT, c2st_count, two_sample_scores


def cell(summary: DrawSummary, failed: bool) -> str:
    """One table cell: mean ± spread over the draws, ' x' where the metric fails the rung."""
    return f"{summary.mean:.4g} ±{summary.std:.2g}{' x' if failed else ''}".rjust(16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--count", type=int, default=300, help="images a side")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--c2st-count", type=int, default=MAX_COUNT,
                        help="training images a side for the classifier test (at most half the training split)")
    args = parser.parse_args()
    params = load_params(args.params)
    prepared = Path(params.paths.prepared)
    if not (prepared / "train.npy").exists():
        raise SystemExit(f"metrics_ladder: {prepared / 'train.npy'} is missing; run `dvc repro prepare` first")
    train, val = np.load(prepared / "train.npy"), np.load(prepared / "val.npy")
    count = min(args.count, len(val), len(train))
    if count < args.count:
        print(f"metrics_ladder: only {len(val)} val and {len(train)} train images: {count} a side instead of {args.count}"
              f"{' (below 100 a side the verdicts are noise)' if count < 100 else ''}")
    if count < 2:
        raise SystemExit(f"metrics_ladder: {count} images a side cannot be scored; prepare a larger dataset")
    args.count = count
    source = train[np.sort(np.random.default_rng(params.seed).choice(len(train), min(len(train), 2 * args.count), replace=False))]
    start = time.perf_counter()
    damaged = {**ladder_sets(source, params.seed), **compound_sets(source, params.seed)}
    scores = score_at_equal_counts(val, {"real": source, **damaged}, args.count, args.draws, params.seed)
    seconds = time.perf_counter() - start
    # The classifier test learns from the training split (alphagan.metrics.classifier): its
    # ladder is made from the whole split, each rung paired with the floor's real images.
    pool = np.asarray(train)
    start = time.perf_counter()
    c2st_images = c2st_count(len(pool), min(len(pool), args.c2st_count))
    tested = two_sample_scores(pool, {**ladder_sets(pool, params.seed), **compound_sets(pool, params.seed)}, c2st_images,
                               args.draws, params.seed) if c2st_images >= 4 else {}
    c2st_seconds = time.perf_counter() - start
    for rung, summary in tested.items():
        scores[rung][C2ST_METRIC] = summary[C2ST_METRIC]
    metrics = list(scores["real"])
    verdicts = {metric: ladder_verdicts(scores, metric) for metric in metrics}
    print(f"\n{args.count} images a side, mean over {args.draws} draws against the val split ({seconds:.0f} s); "
          + (f"{C2ST_METRIC}: {c2st_images} a side against training images ({c2st_seconds:.0f} s); " if tested else "") +
          "'x' marks a rung the metric fails\n")
    print("| rung          | " + " | ".join(f"{m:>16}" for m in metrics) + " |")
    print("|---------------|" + "|".join("-" * 18 for _ in metrics) + "|")
    for rung, summary in scores.items():
        if "+" in rung:
            continue
        cells = [cell(summary[metric], rung != "real" and verdicts[metric][rung] != "ok") for metric in metrics]
        print(f"| {'floor (real)' if rung == 'real' else rung:<13} | " + " | ".join(cells) + " |")
    print()
    for metric in metrics:
        failed = {rung: why for rung, why in verdicts[metric].items() if why != "ok"}
        status = "passes every rung" if not failed else f"fails {len(failed)}: " + "; ".join(f"{r}: {w}" for r, w in failed.items())
        print(f"{metric:<17} {'(validated) ' if metric in VALIDATED_METRICS else ''}{status}")

    compounds = {metric: compound_verdicts(scores, metric) for metric in metrics}
    print("\nDamage on damage: must score worse than its base rung alone ('x': judged no worse)\n")
    print("| rung                | " + " | ".join(f"{m:>16}" for m in metrics) + " |")
    print("|---------------------|" + "|".join("-" * 18 for _ in metrics) + "|")
    for name in [base for base, _ in COMPOUND] + [f"{base}+{added}" for base, added in COMPOUND]:
        cells = [cell(scores[name][metric], "+" in name and compounds[metric][name] != "ok") for metric in metrics]
        print(f"| {name:<19} | " + " | ".join(cells) + " |")
    print()
    for metric in metrics:
        failed = [name for name, why in compounds[metric].items() if why != "ok"]
        print(f"{metric:<17} " + ("worse with the added damage on every base" if not failed
                                  else "rewards the added damage on " + ", ".join(failed)))


if __name__ == "__main__":
    main()
