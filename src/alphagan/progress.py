"""Progress for people, quiet logs for machines.

On a terminal a stage draws a tqdm bar. Anywhere else (a log file, CI, ``dvc exp run``'s
captured output) a bar would write thousands of carriage-return updates; there the same
calls print one plain line every ``ALPHAGAN_PROGRESS_EVERY`` percent (default 10) and a
last line at the end::

    train: 40% (1848/4620 step) 12.1 step/s, 3m49s left, d=1.203 vae=0.412

``ALPHAGAN_PROGRESS=bar|lines|off`` forces a style (tests, or a terminal you are piping).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class _Bar(tqdm):
    """tqdm without its monitor thread.

    tqdm starts a ``tqdm_monitor`` thread with its first bar, even a disabled one. A stage
    with a second thread can no longer fork its worker pool safely
    (:mod:`alphagan.processes` then starts the workers from a forkserver: slower to start,
    and each re-imports numpy and pandas). The monitor only lowers ``miniters`` after a
    stall, which these bars do not need.
    """

    monitor_interval = 0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class LineProgress:
    """tqdm's small API (update, set_postfix, close, iteration), printing whole lines.

    A line is printed each time the count crosses another ``every_percent`` of ``total``,
    and once at ``close()``; with no known total, only the closing line.
    """

    def __init__(self, iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, every_percent: float = 10.0, stream: IO[str] | None = None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.initial = initial
        self.stream = stream if stream is not None else sys.stderr
        self.every = max(1, int(total * every_percent / 100)) if total else None
        self.next_report = (initial // self.every + 1) * self.every if self.every else None
        self.postfix = ""
        self.started = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{key}={value}" for key, value in values.items())

    def update(self, count: int = 1) -> None:
        self.n += count
        if self.next_report is not None and self.n >= self.next_report and self.n < (self.total or 0):
            self._print()
            self.next_report = (self.n // self.every + 1) * self.every

    def line(self) -> str:
        """The status line as it would be printed now."""
        elapsed = time.monotonic() - self.started
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}:" if self.desc else ""]
        if self.total:
            parts.append(f"{100 * self.n / self.total:3.0f}% ({self.n}/{self.total} {self.unit})")
        else:
            parts.append(f"{self.n} {self.unit}")
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"{_duration((self.total - self.n) / rate)} left")
        elif self.n and (not self.total or self.n >= self.total):
            parts.append(f"done in {_duration(elapsed)}")
        return " ".join(filter(None, parts)) + (f", {self.postfix}" if self.postfix else "")

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n > self.initial or not self.total:
                self._print()


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, stream: IO[str] | None = None, enabled: bool = True) -> Any:
    """A tqdm bar when ``stream`` (stderr) is a terminal, a :class:`LineProgress` otherwise;
    a silent one when not ``enabled`` (data-parallel ranks other than 0)."""
    stream = stream if stream is not None else sys.stderr
    style = os.environ.get("ALPHAGAN_PROGRESS", "").lower() if enabled else "off"
    if style not in ("bar", "lines", "off"):
        style = "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
    if style == "bar":
        return _Bar(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream, dynamic_ncols=True)
    if style == "off":
        return _Bar(iterable, total=total, disable=True)
    try:
        every = float(os.environ.get("ALPHAGAN_PROGRESS_EVERY", "10"))
    except ValueError:
        every = 10.0
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                        every_percent=min(max(every, 1.0), 100.0), stream=stream)
