"""Environment variables: set for the length of a ``with`` block, and torchrun's.

Free of torch on purpose: every stage reads :func:`launched_world` at start, and the data
stages (fetch, validate, prepare) would otherwise pay torch's import (about a second and
500 MB of RSS per process) for three environment variables.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def environment_set(**values: str) -> Iterator[None]:
    """Set these environment variables inside the block; afterwards each one is back to its
    old value, or unset if it was unset. For libraries that read the environment on every
    call (MLflow's HTTP client) or hand it to the processes they start (torchrun)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


#: What torchrun sets in every worker; their presence means "already launched: do not relaunch".
LAUNCHED_BY = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when this process was started by torchrun; None otherwise."""
    if not all(name in os.environ for name in LAUNCHED_BY):
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
