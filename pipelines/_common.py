"""What every stage shares: argument parsing, params loading and one-line user errors."""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from alphagan.atomic import clean_pipeline_leftovers, describe_os_error
from alphagan.config import Params, load_params
from alphagan.envvars import launched_world
from alphagan.errors import AlphaGanError
from alphagan.phases import write_if_requested as write_phase_times
from alphagan.redaction import redact


def stage_main(name: str, body: Callable[[Params], None], argv: Sequence[str] | None) -> int:
    """Parse ``--params``, load them, run ``body``; an :class:`AlphaGanError` becomes one line on stderr.

    So does a full disk or a refused write anywhere in the stage (naming the path). Any
    other exception is a bug and keeps its traceback, with secrets masked like every message.
    In a data-parallel run (started by torchrun) only rank 0 touches files, here the
    leftovers of killed runs: another rank cleaning them could delete rank 0's temporaries
    mid-write. Other ranks name themselves in their messages.
    """
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{name}", description=f"alpha-gan {name} stage")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    world = launched_world()
    writes = world is None or world[0] == 0
    if not writes:
        name = f"{name} (rank {world[0]})"
    try:
        params = load_params(args.params)  # paths checked: inside the project, no overlaps
        if writes:
            clean_pipeline_leftovers(params.paths)  # temporaries of killed runs of any stage
        body(params)
        if writes:
            write_phase_times()  # only when a benchmark asked for them (ALPHAGAN_PHASE_TIMES)
    except AlphaGanError as exc:
        print(redact(f"{name}: error: {exc}"), file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
            print(redact("".join(traceback.format_exception(exc))), file=sys.stderr)
            return 2
        print(redact(f"{name}: error: {describe_os_error(exc, exc.filename or 'an output')}"), file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback, but never a secret in it
        print(redact("".join(traceback.format_exception(exc))), file=sys.stderr)
        return 2
    return 0


def load_prepared(params: Params) -> tuple[np.ndarray, np.ndarray]:
    """The prepare stage's train and val arrays, memory-mapped (nothing is read yet)."""
    prepared = Path(params.paths.prepared)
    try:
        return np.load(prepared / "train.npy", mmap_mode="r"), np.load(prepared / "val.npy", mmap_mode="r")
    except FileNotFoundError as exc:
        raise AlphaGanError(f"{exc.filename} is missing; run the prepare stage first (dvc repro prepare)") from None
