"""Benchmark: 90 images of one character, trained with and without DiffAugment.

The seed write-up's case: one character in different poses, expressions, outline colours
and backgrounds (``alphagan.sources.dicebear.render_character_set``, offline), or a
folder of your own (``--images``). The images go through the project's own fetch
(folder source), validate and prepare stages in a scratch project with the few-shot
switch of the README (``prepare.val_fraction: 0``, ``evaluate.reference: train``);
then the VAE-GAN trains twice for the same number of images shown (``--kimg``) from the
same seed, once without and once with DiffAugment (color, translation, cutout), one run
after the other on this machine. Both are scored against the training set (the
DiffAugment paper's convention for 100-shot sets) at equal counts over ``--draws`` random
half splits, with the memorisation check (leave-one-out real reference) and the variety
of backgrounds and poses beside the training set's. Prints a table (not a test) and
writes the training images and both sample grids side by side.

    python benchmarks/few_shot.py [--kimg 100] [--policy color,translation,cutout] [--seed 0] [--out reports/few_shot.png]
    python benchmarks/few_shot.py --images-only DIR     # just write the 90 pictures into DIR
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from alphagan.augment import AUGMENTATIONS
from alphagan.benchmarking import machine_line, png_output
from alphagan.config import load_params
from alphagan.evaluation import VALIDATED_METRICS, evaluate_model, generate, image_grid
from alphagan.metrics.baselines import ladder_sets, ladder_verdicts, score_at_equal_counts
from alphagan.plots import side_by_side
from alphagan.sources.dicebear import render_character_set
from alphagan.training import load_generator, select_device, train

#: The few-shot switch of the README, as params (the benchmark adds its own length and size).
FEW_SHOT_PARAMS = {"prepare": {"val_fraction": 0.0}, "evaluate": {"reference": "train"}}
DIFFAUGMENT = "color,translation,cutout"
ROWS = [  # (metric, label, how to read it)
    ("swd_ratio", "swd_ratio (validated)", "lower; floor 1.0"),
    ("fd_random", "fd_random", "lower"),
    ("precision_random", "precision", "higher"),
    ("recall_random", "recall", "higher"),
    ("memorisation_ratio", "memorisation ratio", "~1 healthy, <<1 copies"),
    ("copy_fraction", "copy fraction", "share of near copies"),
    ("background_variety_ratio", "background variety", "1 = the training set's"),
    ("position_variety_ratio", "position variety", "1 = the training set's"),
    ("size_variety_ratio", "size variety", "1 = the training set's"),
]


def prepared_images(images_dir: Path, project: Path, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Run fetch -> validate -> prepare on ``images_dir`` in the scratch ``project``; the arrays and the stages' output."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the stages live in the repo's pipelines/
    from pipelines import fetch, prepare, validate

    params = {"seed": seed, "data": {"source": "folder", "image_size": size, "folder": {"path": str(images_dir)}},
              **FEW_SHOT_PARAMS}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    log = io.StringIO()
    before = Path.cwd()
    os.chdir(project)
    try:
        for stage in (fetch, validate, prepare):
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                code = stage.main(["--params", "params.yaml"])
            if code != 0:
                raise SystemExit(f"few_shot: the {stage.__name__} stage failed:\n{log.getvalue()[-2000:]}")
    finally:
        os.chdir(before)
    prepared = project / "data/prepared"
    return np.load(prepared / "train.npy"), np.load(prepared / "val.npy"), log.getvalue()


def instrument_check(images: np.ndarray, draws: int, seed: int) -> str:
    """Does ``swd_ratio`` still rank damage at this set's size? The degradation ladder of
    ``tests/test_metrics_ladder.py``, made from these images and scored as the runs are."""
    count = len(images) // 2
    scores = score_at_equal_counts(images, ladder_sets(images, seed), count, draws, seed, floor_from_reference=True)
    verdicts = ladder_verdicts(scores, "swd_ratio")
    failed = {rung: why for rung, why in verdicts.items() if why != "ok"}
    values = ", ".join(f"{rung} {scores[rung]['swd_ratio'].mean:.2f}" for rung in verdicts)
    return (f"instrument check: swd_ratio on the degradation ladder of these {len(images)} images, {count} a side, {draws} draws: "
            f"passes {len(verdicts) - len(failed)} of {len(verdicts)} rungs ({values})"
            + ("" if not failed else "; fails " + "; ".join(f"{rung}: {why}" for rung, why in failed.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="train and evaluate defaults (default: params.yaml)")
    parser.add_argument("--images", default="", help="a folder of your own images instead of the rendered character")
    parser.add_argument("--images-only", metavar="DIR", default="", help="write the character's pictures into DIR and stop")
    parser.add_argument("--count", type=int, default=90, help="pictures of the character (default 90)")
    parser.add_argument("--size", type=int, default=None, help="image size (default: params.yaml's data.image_size)")
    parser.add_argument("--kimg", type=float, default=100.0, help="length of each run in thousands of images shown")
    parser.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed")
    parser.add_argument("--policy", default=DIFFAUGMENT, help=f"the DiffAugment run's policy (default {DIFFAUGMENT})")
    parser.add_argument("--draws", type=int, default=10, help="random half splits per score")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--out", default="reports/few_shot.png", type=png_output)
    args = parser.parse_args()
    benchmark_started = time.perf_counter()
    if args.images_only:
        written = render_character_set(Path(args.images_only), args.count, seed=0)
        print(f"few_shot: {len(written)} pictures of one character -> {args.images_only}")
        return
    policy_given = [name.strip() for name in args.policy.split(",") if name.strip()]
    if not policy_given or set(policy_given) - set(AUGMENTATIONS):
        parser.error(f"--policy {args.policy!r}: give one or more of {', '.join(AUGMENTATIONS)}, comma-separated")
    params = load_params(args.params)
    seed = params.seed if args.seed is None else args.seed
    size = args.size or params.data.image_size
    device = select_device(params.train.device)
    busy, machine = os.getloadavg()[0], machine_line()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        images_dir = Path(args.images).expanduser().resolve() if args.images else scratch / "character"
        if not args.images:
            render_character_set(images_dir, args.count, seed=seed)
        project = scratch / "project"
        project.mkdir()
        train_images, val_images, stages_log = prepared_images(images_dir, project, size, seed)
        print(stages_log.strip())
        print(instrument_check(train_images, args.draws, seed))
        runs = {}
        for label, policy in (("without DiffAugment", []), ("with DiffAugment", policy_given)):
            train_params = params.train.model_copy(update={"kimg": args.kimg, "diffaugment": tuple(policy), "max_steps": 0,
                                                           "resume": False})
            checkpoint = scratch / f"{len(runs)}.pt"
            started = time.perf_counter()
            result = train(train_images, val_images, train_params, size, seed, checkpoint)
            seconds = time.perf_counter() - started
            decoder, encoder, config = load_generator(checkpoint)
            # The offline instruments only: InceptionV3 FID on 45 images a side would be noise anyway.
            metrics, pictures = evaluate_model(decoder, encoder, config.latent_dim, train_images, val_images, args.samples,
                                               params.evaluate.batch_size, seed, inception_weights=str(scratch / "no-inception"),
                                               device=device, draws=args.draws, reference="train")
            runs[label] = {"metrics": metrics, "seconds": seconds, "steps": result.step, "pictures": pictures,
                           "samples": generate(decoder, 64, config.latent_dim, seed, 64, device)}

    first = next(iter(runs.values()))["metrics"]
    print(f"\n{len(train_images)} training images at {size} px, seed {seed}; {machine}; "
          f"load average {busy:.2f} at start, {os.getloadavg()[0]:.2f} at the end")
    print("; ".join(f"{label}: {run['steps']} steps ({args.kimg:g} kimg) in {run['seconds']:.0f} s" for label, run in runs.items())
          + f"; DiffAugment policy: {','.join(policy_given)}")
    print(f"each score: mean ± std over {int(first['eval/draws'])} draws of {int(first['eval/count'])} images a side against "
          "one random half of the training set; floor = the other half, scored the same way\n")
    labels = list(runs)
    print(f"| {'metric':<22} | {labels[0]:>21} | {labels[1]:>21} | {'real (floor)':>14} | {'read':<22} |")
    print(f"|{'-' * 24}|{'-' * 23}|{'-' * 23}|{'-' * 16}|{'-' * 24}|")
    for metric, label, read in ROWS:
        cells = []
        for run in runs.values():
            value, spread = run["metrics"][f"eval/{metric}"], run["metrics"].get(f"eval/{metric}_std")
            cells.append(f"{value:.4f}" + (f" ±{spread:.4f}" if spread is not None else ""))
        floor = first.get(f"eval/{metric}_floor")
        floor_text = f"{floor:.4f}" if floor is not None else {"memorisation_ratio": "1.0", "copy_fraction": "0.01"}.get(metric, "1.0")
        print(f"| {label:<22} | {cells[0]:>21} | {cells[1]:>21} | {floor_text:>14} | {read:<22} |")
    for metric in VALIDATED_METRICS:
        a, b = (run["metrics"][f"eval/{metric}"] for run in runs.values())
        sa, sb = (run["metrics"][f"eval/{metric}_std"] for run in runs.values())
        margin = 2 * max(sa, sb)
        verdict = (f"DiffAugment better by {a - b:.3f}" if b < a else f"DiffAugment worse by {b - a:.3f}") + \
            (f", beyond twice the larger spread ({margin:.3f})" if abs(a - b) > margin else f", within twice the larger spread ({margin:.3f}): not shown")
        print(f"\n{metric}: {verdict}")
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    grids = {f"training images ({len(train_images)})": image_grid(train_images[:64], 8)}
    grids.update({f"{label} ({run['steps']} steps)": image_grid(run["samples"], 8) for label, run in runs.items()})
    side_by_side(grids).save(out)
    pairs = {f"{label}: closest pairs": run["pictures"]["nearest_neighbours"] for label, run in runs.items()}
    side_by_side(pairs).save(out.with_name(out.stem + "_nearest.png"))
    print(f"grids side by side: {out}; closest sample/training pairs: {out.with_name(out.stem + '_nearest.png')}")
    print(f"whole benchmark (render, stages, ladder, both runs, scoring): {time.perf_counter() - benchmark_started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
