"""Environment variables set for the length of a ``with`` block."""

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
