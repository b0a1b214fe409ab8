"""Worker-process pools that neither deadlock at birth nor hang at the end.

The data stages (render, validate, prepare) fan out over ``multiprocessing.Pool``. Two
things could make such a pool hang for ever; :func:`process_pool` removes both:

* **Forking a process that has other threads.** ``fork`` copies the memory but only the
  calling thread: a lock that another thread (tqdm's monitor, a logging handler, MLflow's
  async logger) held at that instant stays held in the child, and the child waits on it
  for ever. A stage run by ``dvc repro`` is single-threaded when it builds its pool and
  forks (cheap: nothing is imported again). A caller with other threads, such as a notebook
  or the test process calling a stage's ``main`` in-process, gets ``forkserver`` workers,
  forked from a clean one-thread server process (Python 3.14's default on Linux, for this
  reason).
* **Waiting on a worker that will not exit.** ``with Pool(...)`` ends in ``terminate()``,
  which sends SIGTERM and then joins each worker with no time limit; CI once waited there
  for ten minutes after all 24 renders of a test had come back. Here a watchdog kills any
  worker still alive ``exit_grace_s`` seconds after the end with SIGKILL, which cannot be
  caught, ignored or blocked, and says so on stderr.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool

#: Seconds the workers get to exit by themselves once the work is done, before SIGKILL.
EXIT_GRACE_S = 30.0


def start_method() -> str:
    """``fork`` when this process runs a single Python thread, else ``forkserver``."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


@contextmanager
def process_pool(workers: int, *, initializer: Callable[[], None] | None = None,
                 exit_grace_s: float = EXIT_GRACE_S) -> Iterator[Pool]:
    """A ``multiprocessing.Pool`` of ``workers`` processes, safe to build from any process.

    Use it as ``with process_pool(n) as pool:`` and consume every result inside the block.
    On leaving normally the workers are closed and joined; if the block raised, they are
    terminated (as ``with Pool(...)`` does). Either way a worker still running
    ``exit_grace_s`` seconds later is killed with SIGKILL, so leaving never hangs on a
    worker that will not exit. ``initializer`` runs once in each worker as it starts.
    """
    pool = multiprocessing.get_context(start_method()).Pool(workers, initializer=initializer)
    failed = True
    try:
        yield pool
        failed = False
    finally:
        _shut_down(pool, exit_grace_s, failed)


def _shut_down(pool: Pool, exit_grace_s: float, failed: bool) -> None:
    def kill_stragglers() -> None:
        # ``_pool`` is Pool's own worker list (the name has not changed since Python 2.6).
        stragglers = [w for w in list(pool._pool) if w.exitcode is None]  # noqa: SLF001
        for worker in stragglers:
            worker.kill()
        if stragglers:
            print(f"worker pool: {len(stragglers)} worker(s) still running {exit_grace_s:g} s after the end; "
                  "killed (SIGKILL)", file=sys.stderr)

    watchdog = threading.Timer(exit_grace_s, kill_stragglers)
    watchdog.daemon = True
    watchdog.start()
    try:
        if failed:
            pool.terminate()  # SIGTERM now: the queued work is not wanted any more
        else:
            pool.close()  # each worker gets a stop sentinel and exits by itself
        pool.join()
    finally:
        watchdog.cancel()
        # Wait for the cancelled timer's thread to end: left alive, it would make the next
        # pool of this process (a stage with two) start from a forkserver instead of forking.
        watchdog.join()
