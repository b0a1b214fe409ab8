"""Atomic outputs: a reader sees the old file or the complete new one, never a partial one.

Files are written under a temporary name in the same directory (``.<name>.tmp-<pid>``),
flushed and fsynced, then renamed over the target with :func:`os.replace` (atomic on
POSIX within one filesystem). A directory output is built in a sibling temporary
directory and swapped in. Every directory the pipeline builds carries an ownership
marker (:data:`MARKER`); a stage only ever replaces or removes a directory that is
empty or carries it, so a folder the pipeline did not create is never deleted.

A killed run leaves temporary names behind; :func:`clean_leftovers` removes those whose
process is gone at the start of the next run (only names matching the pipeline's own
pattern, never anything else).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from alphagan.errors import AlphaGanError
from alphagan.phases import phase

#: The file that marks a directory as built by this pipeline (and so replaceable by it).
MARKER = ".alphagan-output"
MARKER_TEXT = "This directory is an output of the alpha-gan pipeline; a stage may replace it.\n"
#: Temporary names of this module: ``.<name>.tmp-<pid>`` and ``.<name>.old-<pid>``.
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)$")


#: errno values that mean "this output cannot be written here" (full, over quota, read-only).
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class OutputError(AlphaGanError):
    """An output cannot be written (a foreign directory in the way, no space, no permission)."""


def temp_name(path: Path, kind: str = "tmp") -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def describe_os_error(exc: OSError, path: Path | str) -> str:
    """One line naming the path and what went wrong (disk full gets its own advice)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device while writing {path}; free some space and run the stage again (previous outputs are unchanged)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: {exc.strerror or exc}; check the permissions of {Path(path).parent}"
    return f"cannot write {path}: {exc.strerror or exc}"


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory below ``root`` (before it is renamed into place)."""
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(directory))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On any error the temporary file is removed and ``path`` is left as it was; an
    :class:`OSError` (disk full, permissions) becomes one :class:`OutputError` line.
    """
    path = Path(path)
    temporary = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise OutputError(describe_os_error(exc, path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open`` for writing, atomically: the target appears complete or not at all."""
    with atomic_path(path) as temporary, open(temporary, mode, **kwargs) as stream:
        yield stream
        stream.flush()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as stream:
        stream.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="") as stream:
        stream.write(text)


def save_with(path: str | Path, saver: Callable[[Path], None]) -> None:
    """Atomic write through a library's own saver (``torch.save``, ``Image.save``, ...)."""
    with atomic_path(path) as temporary:
        saver(temporary)


def is_owned(directory: Path) -> bool:
    """True when ``directory`` is missing, empty, or carries the pipeline's marker."""
    directory = Path(directory)
    if not directory.exists() and not directory.is_symlink():
        return True
    if directory.is_symlink() or not directory.is_dir():
        return False
    return (directory / MARKER).is_file() or not any(directory.iterdir())


def ensure_owned(directory: Path, setting: str = "") -> None:
    """Stop, before anything is touched, when ``directory`` holds things the pipeline did not make."""
    directory = Path(directory)
    if not is_owned(directory):
        what = "a file or link" if directory.is_symlink() or not directory.is_dir() else "a non-empty directory"
        named = f" ({setting})" if setting else ""
        raise OutputError(f"output path {directory}{named} is {what} the pipeline did not create (no {MARKER} marker); "
                          f"it is left untouched: move it away or point {setting or 'the path'} elsewhere")


@contextlib.contextmanager
def staged_directory(target: str | Path, setting: str = "") -> Iterator[Path]:
    """Build a directory output in a sibling temporary directory; swap it in when complete.

    The old ``target`` (if any) must be owned by the pipeline (checked before anything is
    written); it is replaced only after the new tree is complete and fsynced. On any
    failure the temporary tree is removed and ``target`` stays as it was.
    """
    target = Path(target)
    ensure_owned(target, setting)
    staging, old = temp_name(target), temp_name(target, "old")
    in_body = False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        (staging / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
        in_body = True
        yield staging
        in_body = False
        with phase("fsync outputs"):
            fsync_tree(staging)
        ensure_owned(target, setting)  # nothing foreign appeared while we worked
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        _fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if in_body and exc.errno not in _WRITE_ERRNOS:  # e.g. a source that cannot be read: not ours to reword
            raise
        raise OutputError(describe_os_error(exc, target)) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(*directories: str | Path, only: set[str] | None = None) -> list[Path]:
    """Remove temporary files and directories of killed runs (``.<name>.tmp-<pid>``) in ``directories``.

    Only names matching the pipeline's own pattern whose process no longer exists are
    removed (and, with ``only``, only temporaries of those output names); returns what was removed.
    """
    removed = []
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            match = TEMP_PATTERN.match(entry.name)
            if not match or (only is not None and match["name"] not in only) or _pid_alive(int(match["pid"])):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            removed.append(entry)
    return removed


def clean_pipeline_leftovers(paths: Any) -> list[Path]:
    """Every stage's leftovers, removed at the start of any stage.

    A stage that `dvc repro` skips (its outputs are intact) would otherwise never remove
    the temporaries a killed run of it left. Beside each directory output only that
    output's own temporaries are touched; inside the pipeline's report and model
    directories, any of the pipeline's temporaries.
    """
    removed = []
    for name in ("raw", "validated", "prepared"):
        output = Path(getattr(paths, name))
        removed += clean_leftovers(output.parent, only={output.name})
        removed += clean_leftovers(output)
    reports = Path(paths.reports)
    removed += clean_leftovers(Path(paths.models), reports / "validate", reports / "train", reports / "evaluate")
    return removed
