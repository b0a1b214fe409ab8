"""A user's own images: a local directory, or a .zip / .tar / .tar.gz / .tgz archive.

Archives are untrusted input. Every entry is checked before anything is written: an
absolute name, a ``..`` component, a link or a device entry refuses the whole archive
with an error naming the entry. Extraction goes to a temporary sibling directory that is
renamed into place only when complete, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from tqdm import tqdm

from alphagan.sources import SourceError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
#: Refuse archives that declare more than this many uncompressed bytes (zip-bomb guard).
MAX_ARCHIVE_BYTES = 20 * 1024**3


class UnsafeArchiveError(SourceError):
    """An archive entry would land outside the target or is not a plain file."""


def import_folder(path: Path, out_dir: Path) -> int:
    """Copy every file of a directory, or extract an archive, into ``out_dir``."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"data.folder.path {str(path)!r} does not exist")
    if path.is_dir():
        return _copy_tree(path, out_dir)
    name = path.name.lower()
    if name.endswith(".zip"):
        return extract_archive(path, out_dir)
    if any(name.endswith(s) for s in ARCHIVE_SUFFIXES):
        return extract_archive(path, out_dir)
    raise SourceError(f"data.folder.path {str(path)!r} is neither a directory nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")


def _copy_tree(root: Path, out_dir: Path) -> int:
    files = sorted(p for p in root.rglob("*") if (p.is_file() or p.is_symlink())
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    for source in tqdm(files, desc="copy folder", unit="file"):
        target = out_dir / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink() and not source.exists():
            # Keep a dangling link as it is, so validate reports it instead of it vanishing.
            target.symlink_to(source.readlink())
        else:
            shutil.copyfile(source, target)
    return len(files)


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


def extract_archive(path: Path, out_dir: Path) -> int:
    """Vet every entry, then extract the files; returns the number of files written."""
    archive, entries, opener = _open_archive(path)
    with archive:
        total = 0
        for entry in entries:
            safe_member_path(entry.name)
            total += entry.size
        if total > MAX_ARCHIVE_BYTES:
            raise UnsafeArchiveError(f"{path} declares {total} uncompressed bytes (limit {MAX_ARCHIVE_BYTES}); refusing the archive")
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=out_dir.parent))
        try:
            written = 0
            for entry in tqdm(entries, desc="extract", unit="file"):
                member = safe_member_path(entry.name)
                if entry.is_dir or _is_skipped(member):
                    continue
                target = staging.joinpath(*member.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with opener(entry.handle) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                written += 1
            for child in staging.iterdir():
                child.rename(out_dir / child.name)
            return written
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise SourceError(f"{path}: archive is corrupt or unreadable: {exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
