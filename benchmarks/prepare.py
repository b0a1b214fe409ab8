"""Benchmark: validate and prepare against a plain one-process Pillow loop, in one run.

Makes N JPEGs of 90-130 px (the Kaggle anime-face sizes), then times:
  plain loop   open / convert("RGB") / resize(64, LANCZOS), one process (the baseline)
  decode only  open / load, one process (the floor of any JPEG pipeline)
  validate     scan every file + the Great Expectations suite + manifest (alphagan)
  prepare      alphagan's prepare (draft decode, crop, resize, memmap; all cores)
Prints a table and where each stage's time goes (``alphagan.phases``); targets: prepare
>= 2.0x and validate >= 1.0x the plain loop. At this size validate's fixed costs (the ~5 s
import of Great Expectations, the suite, Data Docs) weigh far more than on the Kaggle set:
``benchmarks/data_path.py`` measures the full 63,565 images, each stage as its own process.

    python benchmarks/prepare.py [--count 5000] [--size 64]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from alphagan.benchmarking import interleaved, machine_line, ratio, result_of, verdict
from alphagan.config import PrepareParams, ValidateParams
from alphagan.phases import line as phases_line, recorded
from alphagan.preprocess import prepare_dataset
from alphagan.validation import validate_images


def make_jpegs(root: Path, count: int, seed: int = 0, start: int = 0) -> None:
    """Smooth colour fields with detail on top: JPEG sizes and decode costs like real crops.

    Files ``start`` .. ``start + count - 1``; each range draws from its own seed, so ranges
    can be written in parallel (benchmarks/data_path.py).
    """
    rng = np.random.default_rng([seed, start])
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        w, h = (int(v) for v in rng.integers(90, 131, 2))
        base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 18, (h, w, 3))
        array = np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=90)
        (root / f"{i}_{2000 + i % 20}.jpg").write_bytes(buffer.getvalue())


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _run_step(step: str, tmp: str, size: int, queue) -> None:
    tmp = Path(tmp)
    # A spawned child inherits "spawn" as its start method; the stages run with Linux's default.
    multiprocessing.set_start_method("fork", force=True)
    if step == "validate":
        fn = lambda: validate_images(tmp / "raw", ValidateParams(), tmp / "validated", tmp / "reports")  # noqa: E731
    else:
        fn = lambda: prepare_dataset(tmp / "validated" / "manifest.csv", tmp / "raw", tmp / "prepared", size, PrepareParams(), seed=0)  # noqa: E731
    seconds = timed(fn)
    queue.put((seconds, recorded()))


PHASES: dict[str, list[tuple[float, dict[str, float]]]] = {}


def timed_in_fresh_process(step: str, tmp: Path, size: int) -> float:
    """Time a stage function in its own interpreter, as `dvc repro` runs each stage.

    (Start-up and imports excluded.) Run in this process instead, prepare would fork
    workers from an interpreter that has Great Expectations loaded, which no stage does.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run_step, args=(step, str(tmp), size, queue))
    process.start()
    seconds, phases = result_of(process, queue, step)
    process.join()
    PHASES.setdefault(step, []).append((seconds, phases))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per program (>= 2 for a ratio)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = tmp / "raw" / "images"
        make_jpegs(raw, args.count)
        files = sorted(raw.iterdir())

        def plain_loop():
            for path in files:
                with Image.open(path) as image:
                    image.convert("RGB").resize((args.size, args.size), Image.Resampling.LANCZOS)

        def decode_only():
            for path in files:
                with Image.open(path) as image:
                    image.load()

        print(machine_line())
        # Round by round, every program in turn (rates in images/s): a busy stretch hits all.
        programs = {
            "plain loop (1 process)": lambda: args.count / timed(plain_loop),
            "decode only (1 process)": lambda: args.count / timed(decode_only),
            "validate (scan + GX suite)": lambda: args.count / timed_in_fresh_process("validate", tmp, args.size),
            "prepare (alphagan)": lambda: args.count / timed_in_fresh_process("prepare", tmp, args.size),
        }
        runs = interleaved(programs, args.rounds)
    plain = runs["plain loop (1 process)"]
    print(f"\n{args.count} JPEGs of 90-130 px -> {args.size} px on {os.cpu_count()} cores; {args.rounds} interleaved rounds\n")
    print(f"| {'step':<28} | {'images/s min / median / max (spread)':>38} | {'vs plain loop':>13} |")
    print(f"|{'-' * 30}|{'-' * 40}|{'-' * 15}|")
    for name, rounds in runs.items():
        relative = ratio(rounds, plain)
        print(f"| {name:<28} | {rounds.summary():>38} | {'unstable' if relative is None else f'{relative:.2f}x':>13} |")
    print("\nwhere the time goes (median round; imports before the call are not counted here):")
    for step, entries in PHASES.items():
        print(f"  {step}: {phases_line(sorted(entries)[len(entries) // 2][1])}")
    print()
    prepare = runs["prepare (alphagan)"]
    print(verdict(ratio(prepare, plain), 2.0, "prepare vs plain loop"))
    print(verdict(ratio(runs["validate (scan + GX suite)"], plain), 1.0, "validate vs plain loop"))
    print(f"projected prepare time for the 63,565-image Kaggle set: {63565 / prepare.median:.0f} s (median round)")

if __name__ == "__main__":
    main()
