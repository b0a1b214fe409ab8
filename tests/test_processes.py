"""alphagan.processes: pools built beside other threads, and workers that will not exit."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from multiprocessing.util import Finalize

import pytest

from alphagan.processes import process_pool, start_method

# Held by a side thread while a pool is built: what a forked child would inherit locked.
SHARED_LOCK = threading.Lock()


def _can_take_shared_lock(_: int) -> bool:
    taken = SHARED_LOCK.acquire(timeout=3)
    if taken:
        SHARED_LOCK.release()
    return taken


def _sleep_at_exit() -> None:
    # Run by the worker's exit handlers: a worker that does not exit once told to.
    Finalize(None, time.sleep, args=(3600,), exitpriority=0)


def _ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _pid_after_a_moment(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    time.sleep(3600 if x > 3 else 0)
    return x


@contextmanager
def another_thread_holding_the_lock():
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with SHARED_LOCK:
            holding.set()
            release.wait()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    holding.wait()
    try:
        yield
    finally:
        release.set()
        thread.join()


def test_forks_only_when_no_other_thread_runs(monkeypatch):
    with another_thread_holding_the_lock():
        assert start_method() == "forkserver"
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert start_method() == "fork"


def test_pool_built_beside_a_thread_holding_a_lock_does_not_inherit_it():
    with another_thread_holding_the_lock():
        # What plain fork does: the child's copy of the lock is held for ever.
        with multiprocessing.get_context("fork").Pool(1) as plain:
            assert plain.map(_can_take_shared_lock, [0]) == [False]
        with process_pool(2) as pool:
            assert pool.map(_can_take_shared_lock, range(4)) == [True] * 4


def test_results_come_back_in_order_and_workers_exit(capsys):
    with process_pool(2) as pool:
        assert pool.map(_square, range(50)) == [x * x for x in range(50)]
        workers = list(pool._pool)
    assert all(w.exitcode == 0 for w in workers)
    assert "killed" not in capsys.readouterr().err


def test_a_worker_that_will_not_exit_is_killed_after_the_grace(capsys):
    started = time.monotonic()
    with process_pool(2, initializer=_sleep_at_exit, exit_grace_s=1) as pool:
        assert pool.map(_square, range(4)) == [0, 1, 4, 9]
        workers = list(pool._pool)
    assert time.monotonic() - started < 30
    assert [w.exitcode for w in workers] == [-signal.SIGKILL] * 2
    assert "2 worker(s) still running 1 s after the end; killed (SIGKILL)" in capsys.readouterr().err


def test_an_error_inside_the_block_still_ends_workers_that_ignore_sigterm(capsys):
    started = time.monotonic()
    with pytest.raises(ValueError, match="three"):
        with process_pool(2, initializer=_ignore_sigterm, exit_grace_s=1) as pool:
            workers = list(pool._pool)
            # A worker runs its initializer before any task: once both have answered, both ignore SIGTERM.
            # (forkserver workers start slower than forked ones; an early error would SIGTERM one still starting.)
            answered, deadline = set(), time.monotonic() + 60
            while len(answered) < 2 and time.monotonic() < deadline:
                answered |= set(pool.map(_pid_after_a_moment, range(4), chunksize=1))
            assert answered == {w.pid for w in workers}
            list(pool.imap(_fail_on_three, range(6)))
    assert time.monotonic() - started < 30
    assert [w.exitcode for w in workers] == [-signal.SIGKILL] * 2
    assert "killed (SIGKILL)" in capsys.readouterr().err


# Run in a fresh interpreter (this test process has threads of its own): prepare's pool of
# two workers, under each progress style, with start_method() recorded as the pool is built.
_PREPARE_IN_A_FRESH_PROCESS = r"""
import sys
from pathlib import Path
import numpy as np
from PIL import Image
import alphagan.processes as processes
from alphagan.config import PrepareParams
from alphagan.preprocess import load_arrays

chosen = []
original = processes.start_method
processes.start_method = lambda: chosen.append(original()) or chosen[-1]
root = Path(sys.argv[1])
names = []
for index in range(160):  # >= 128 images, or load_arrays keeps to one worker
    Image.fromarray(np.full((20, 20, 3), index, np.uint8)).save(root / f"{index}.png")
    names.append(f"{index}.png")
for _ in range(2):  # a second pool in the same process forks too (the first one's watchdog has ended)
    load_arrays(root, {root / "rows.npy": names}, 16, PrepareParams(workers=2))
rows = np.load(root / "rows.npy")
assert [int(row[0, 0, 0]) for row in rows] == list(range(160))
print(chosen, "torch" in sys.modules)
"""


@pytest.mark.parametrize("style", ["bar", "lines", "off"])
def test_a_data_stage_forks_its_workers_and_never_imports_torch(tmp_path, style):
    """tqdm starts a monitor thread with its first bar (even a disabled one), and a pool
    built after it cannot fork safely: its workers then come from a forkserver, each
    importing numpy and pandas again (prepare measured 1.4 GB instead of ~0.4 GB). torch
    (a second and ~500 MB a process) has no business in the data stages either."""
    result = subprocess.run([sys.executable, "-c", _PREPARE_IN_A_FRESH_PROCESS, str(tmp_path)],
                            env={**os.environ, "ALPHAGAN_PROGRESS": style}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-3:] == ["['fork',", "'fork']", "False"], result.stdout
    for stage in ("fetch", "validate", "prepare"):
        imported = subprocess.run([sys.executable, "-c", f"import sys, pipelines.{stage}; print('torch' in sys.modules)"],
                                  capture_output=True, text=True, timeout=120)
        assert imported.stdout.strip() == "False", (stage, imported.stdout, imported.stderr[-2000:])
