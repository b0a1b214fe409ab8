"""Benchmarks that refuse noise: interleaved rounds, their spread, and a verdict.

A ratio of two throughputs is only a result when each side's rounds agree. On a shared
2-core machine one busy minute can halve a round, so every benchmark here:

* runs the compared programs **interleaved**, round by round (A, B, A, B, ...), so a slow
  stretch of the machine hits both sides rather than one;
* reports **min / median / max** of each side's rounds;
* prints ``UNSTABLE, not reported`` instead of a ratio or a target verdict when either
  side's rounds spread by more than :data:`MAX_SPREAD` of their median;
* says how busy the machine was before it started (:func:`busy_cores`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alphagan.config import Params

#: Largest (max - min) / median of a side's rounds for its numbers to count.
MAX_SPREAD = 0.25
UNSTABLE = "UNSTABLE, not reported"


@dataclass(frozen=True)
class Rounds:
    """One program's measurements (a rate: higher is better), one per round."""

    name: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """(max - min) / median; 0 for a single round (which can show no spread: see :meth:`stable`)."""
        return (max(self.values) - min(self.values)) / self.median if self.median > 0 else float("inf")

    @property
    def stable(self) -> bool:
        return len(self.values) >= 2 and self.spread <= MAX_SPREAD

    def summary(self, digits: int = 0) -> str:
        """``min / median / max (spread 12%)``."""
        return (f"{min(self.values):.{digits}f} / {self.median:.{digits}f} / {max(self.values):.{digits}f} "
                f"({100 * self.spread:.0f}%{'' if self.stable else ' !'})")


def interleaved(programs: dict[str, Callable[[], float]], rounds: int) -> dict[str, Rounds]:
    """Run every program once per round, in turn; each call returns its rate."""
    if rounds < 1:
        raise ValueError("at least one round")
    values: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(rounds):
        for name, program in programs.items():
            values[name].append(float(program()))
    return {name: Rounds(name, tuple(found)) for name, found in values.items()}


def ratio(numerator: Rounds, denominator: Rounds) -> float | None:
    """Median over median, or None when either side is not stable (fewer than 2 rounds, or spread too wide)."""
    if not (numerator.stable and denominator.stable):
        return None
    return numerator.median / denominator.median


def verdict(value: float | None, target: float, label: str) -> str:
    """``label: 1.52x (target >= 1.5x): MET`` or ``label: UNSTABLE, not reported``."""
    if value is None:
        return f"{label}: {UNSTABLE} (a side's rounds spread by more than {100 * MAX_SPREAD:.0f}%, or fewer than 2 rounds)"
    return f"{label}: {value:.2f}x (target >= {target}x): {'MET' if value >= target else 'NOT MET'}"


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores other processes kept busy over ``seconds`` (from /proc/stat; this process sleeps meanwhile)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stream:
            fields = [int(v) for v in stream.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return float("nan")
    elapsed = total1 - total0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / elapsed) if elapsed > 0 else float("nan")


def machine_line(seconds: float = 1.0) -> str:
    """One line for a benchmark's header: cores, and how many were busy before it started."""
    busy = busy_cores(seconds)
    return f"{os.cpu_count()} cores, {busy:.1f} busy with other work before the run" + (
        " (numbers below may be noise)" if busy >= 0.5 else "")


def result_of(process, queue, what: str):
    """The child's one result; a child that dies first (a crash, the OOM killer) is an error, not a hang."""
    import queue as queues

    while True:
        try:
            return queue.get(timeout=1.0)
        except queues.Empty:
            if not process.is_alive():
                raise SystemExit(f"{what}: the benchmark process died (exit code {process.exitcode}) before reporting; "
                                 "its error is printed above") from None


def params_with_train_overrides(params_path: str, assignments: list[str], script: str) -> Params:
    """The params file with a benchmark's ``--set train.KEY=VALUE`` assignments applied.

    Only ``train.*`` may change: the benchmark reads the prepared data that ``dvc repro
    prepare`` wrote from the file as it is. Any other section, or a bad value, ends the
    script with a one-line reason that names it. (The config module is imported here, not
    at the top: the timing helpers above stay free of pydantic's start-up.)
    """
    from alphagan.config import ConfigError, load_params, with_overrides

    if any(not assignment.startswith("train.") for assignment in assignments):
        raise SystemExit(f"{script}: --set changes train.* params only (the prepared data is fixed)")
    try:
        return with_overrides(load_params(params_path), assignments)
    except ConfigError as exc:
        raise SystemExit(f"{script}: {exc}") from None


def prepared_arrays(params: Params, script: str):
    """(train, val) uint8 arrays from ``paths.prepared``; a missing split ends ``script`` with
    one line that says how to make it."""
    import numpy as np

    prepared = Path(params.paths.prepared)
    for split in ("train.npy", "val.npy"):
        if not (prepared / split).exists():
            raise SystemExit(f"{script}: {prepared / split} is missing; run `dvc repro prepare` first")
    return np.load(prepared / "train.npy"), np.load(prepared / "val.npy")


def png_output(value: str) -> Path:
    """``argparse`` type of a benchmark's ``--out`` picture: a ``.png`` path, checked before any
    work (a directory or a suffix Pillow cannot name was refused only after the whole run)."""
    path = Path(value)
    if path.suffix.lower() != ".png" or path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not a .png file path (the picture is written as a PNG)")
    return path
