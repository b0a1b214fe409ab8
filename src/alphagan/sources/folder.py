"""A user's own images: a local directory, or a .zip / .tar / .tar.gz / .tgz archive.

A directory is walked without following links to directories. Only regular files (or
links to regular files) of at most ``validate.max_bytes`` are copied; everything else
(links to directories or devices, dangling links, FIFOs, sockets, device files, files
over the byte cap) is never opened and is recorded with its reason in
``SKIPPED_FILE`` inside the output, which validate turns into manifest rows.

Archives are untrusted input. Every entry is checked before anything is written: an
absolute name, a ``..`` component, a link or a device entry refuses the whole archive
with an error naming the entry. Extraction goes to a temporary sibling directory that is
renamed into place only when complete, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from alphagan.progress import progress

from alphagan.atomic import temp_name
from alphagan.imaging import ImageRejected, read_limited
from alphagan.phases import phase
from alphagan.sources import SourceError

#: Written into the fetch output: the files of the source that were not copied, and why.
SKIPPED_FILE = ".alphagan-skipped.csv"

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
#: Refuse archives that declare more than this many uncompressed bytes (zip-bomb guard).
MAX_ARCHIVE_BYTES = 20 * 1024**3


class UnsafeArchiveError(SourceError):
    """An archive entry would land outside the target or is not a plain file."""


def import_folder(path: Path, out_dir: Path, max_bytes: int = 100_000_000) -> int:
    """Copy every file of a directory, or extract an archive, into ``out_dir``; returns files written.

    An empty source (nothing to copy) is a :class:`SourceError`, never a success.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"data.folder.path {str(path)!r} does not exist")
    if path.is_dir():
        with phase("copy files"):
            written, skipped = _copy_tree(path, out_dir, max_bytes)
        if skipped:
            write_skipped(out_dir, skipped)
        if not written:
            detail = f"; {len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
            raise SourceError(f"data.folder.path {str(path)!r} holds no image files to copy (hidden files are ignored){detail}")
        return written
    name = path.name.lower()
    if any(name.endswith(s) for s in ARCHIVE_SUFFIXES) and stat.S_ISREG(path.stat().st_mode):
        written = extract_archive(path, out_dir, max_bytes)
        if not written:
            raise SourceError(f"archive {str(path)!r} holds no files")
        return written
    raise SourceError(f"data.folder.path {str(path)!r} is neither a directory nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")


def _copy_tree(root: Path, out_dir: Path, max_bytes: int) -> tuple[int, list[tuple[str, str]]]:
    """Copy what may be copied; returns (files written, [(relative path, reason)] skipped)."""
    entries = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(directory)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        # os.walk lists a link to a directory among dirnames and never enters it: account for it.
        entries += [base / d for d in dirnames if (base / d).is_symlink()]
        entries += [base / f for f in filenames if not f.startswith(".")]
    written, skipped = 0, []
    for source in progress(sorted(entries), desc="copy folder", unit="file"):
        relative = source.relative_to(root).as_posix()
        try:
            data = read_limited(source, max_bytes)
        except ImageRejected as exc:
            skipped.append((relative, f"skipped: {exc}"))
            continue
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += 1
    return written, skipped


def write_skipped(out_dir: Path, skipped: list[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(sorted(skipped))
    (Path(out_dir) / SKIPPED_FILE).write_text(buffer.getvalue(), encoding="utf-8")


def read_skipped(raw_dir: Path) -> list[tuple[str, str]]:
    """The (path, reason) rows fetch recorded for files it did not copy (none when absent)."""
    path = Path(raw_dir) / SKIPPED_FILE
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as stream:
        return [(row["path"], row["reason"]) for row in csv.DictReader(stream)]


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path an archive entry may be written to, or :class:`UnsafeArchiveError`."""
    normalised = name.replace("\\", "/")
    member = PurePosixPath(normalised)
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise UnsafeArchiveError(f"archive entry {name!r} has an absolute path; refusing the archive")
    if ".." in member.parts:
        raise UnsafeArchiveError(f"archive entry {name!r} would land outside the target ('..'); refusing the archive")
    return member


class _Entry(NamedTuple):
    name: str
    is_dir: bool
    size: int
    handle: object  # ZipInfo or TarInfo, opened by the archive it came from


def _open_archive(path: Path):
    """``(archive, entries, opener)`` for a zip or tar file; raises on links and special files."""
    if path.name.lower().endswith(".zip"):
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(f"{path} is not a readable zip archive: {exc}") from None
        entries = []
        for info in archive.infolist():
            if stat.S_ISLNK(info.external_attr >> 16):
                archive.close()
                raise UnsafeArchiveError(f"archive entry {info.filename!r} is a symbolic link; refusing the archive")
            entries.append(_Entry(info.filename, info.is_dir(), info.file_size, info))
        return archive, entries, archive.open
    try:
        archive = tarfile.open(path)
        members = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"{path} is not a readable tar archive: {exc}") from None
    entries = []
    for member in members:
        if member.issym() or member.islnk():
            archive.close()
            raise UnsafeArchiveError(f"archive entry {member.name!r} is a link; refusing the archive")
        if not (member.isfile() or member.isdir()):
            archive.close()
            raise UnsafeArchiveError(f"archive entry {member.name!r} is not a regular file; refusing the archive")
        entries.append(_Entry(member.name, member.isdir(), member.size, member))
    return archive, entries, archive.extractfile


def _is_skipped(member: PurePosixPath) -> bool:
    # Hidden files and macOS resource forks are archive litter, not the user's images.
    return not member.parts or any(p.startswith(".") for p in member.parts) or member.parts[0] == "__MACOSX"


def extract_archive(path: Path, out_dir: Path, max_bytes: int = 100_000_000) -> int:
    """Vet every entry, then extract the files; returns the number of files written.

    An entry over ``max_bytes`` (declared, or found while reading) is skipped with its reason.
    """
    archive, entries, opener = _open_archive(path)
    with archive:
        total = 0
        for entry in entries:
            safe_member_path(entry.name)
            total += entry.size
        if total > MAX_ARCHIVE_BYTES:
            raise UnsafeArchiveError(f"{path} declares {total} uncompressed bytes (limit {MAX_ARCHIVE_BYTES}); refusing the archive")
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = temp_name(out_dir)  # the pipeline's own temporary name: a killed run's is cleaned up
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            written, skipped = 0, []
            for entry in progress(entries, desc="extract", unit="file"):
                member = safe_member_path(entry.name)
                if entry.is_dir or _is_skipped(member):
                    continue
                if entry.size > max_bytes:
                    skipped.append((member.as_posix(), f"skipped: {entry.size} bytes, over validate.max_bytes {max_bytes}"))
                    continue
                with opener(entry.handle) as source:
                    data = source.read(max_bytes + 1)
                if len(data) > max_bytes:  # the declared size lied
                    skipped.append((member.as_posix(), f"skipped: over validate.max_bytes {max_bytes} bytes"))
                    continue
                target = staging.joinpath(*member.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                written += 1
            if skipped:
                write_skipped(staging, skipped)
            for child in staging.iterdir():
                child.rename(out_dir / child.name)
            return written
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise SourceError(f"{path}: archive is corrupt or unreadable: {exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
