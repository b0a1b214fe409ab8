"""Where a stage's time goes: wall seconds per named phase, for the benchmarks.

The data stages wrap their steps in :func:`phase`; that costs two clock reads per phase,
so it is always on. A benchmark reads the totals in-process with :func:`recorded`, or, for
a stage run as its own process (as ``dvc repro`` runs it), sets the environment variable
``ALPHAGAN_PHASE_TIMES`` to a file name: the stage writes its phases there as JSON when it
ends (:func:`write_if_requested`). Nothing else reads them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Environment variable naming the JSON file a stage writes its phase times to.
ENV_VAR = "ALPHAGAN_PHASE_TIMES"

_seconds: dict[str, float] = {}


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the wall time of the ``with`` body to phase ``name`` (phases keep their first-seen order)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _seconds[name] = _seconds.get(name, 0.0) + time.perf_counter() - start


def recorded() -> dict[str, float]:
    """The phases recorded in this process so far: name -> seconds."""
    return dict(_seconds)


def reset() -> None:
    """Forget every recorded phase."""
    _seconds.clear()


def write_if_requested() -> None:
    """Write :func:`recorded` as JSON to the file named by ``$ALPHAGAN_PHASE_TIMES``, if it is set."""
    target = os.environ.get(ENV_VAR)
    if target:
        Path(target).write_text(json.dumps(recorded(), indent=1))


#: A phase named with this word ran in a thread beside other phases: its time is inside theirs.
BESIDE = "(beside"


def sequential_total(seconds: dict[str, float]) -> float:
    """Sum of the phases that ran one after another (not those marked :data:`BESIDE`)."""
    return sum(value for name, value in seconds.items() if BESIDE not in name)


def line(seconds: dict[str, float]) -> str:
    """``scan 12.3 s (61%), suite 4.0 s (20%), ...``: one line for a benchmark's table.

    Percentages are of :func:`sequential_total`; a phase that ran beside others shows its
    own share of that too, though its time is already counted inside theirs.
    """
    total = sequential_total(seconds) or 1.0
    return ", ".join(f"{name} {value:.1f} s ({100 * value / total:.0f}%)" for name, value in seconds.items())
