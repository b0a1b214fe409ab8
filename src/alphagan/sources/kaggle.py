"""The Kaggle Anime Face Dataset (``splcher/animefacedataset``) through kagglehub.

The handle is pinned to a version: kagglehub then serves it from ``$KAGGLEHUB_CACHE``
without calling the API, so a machine that downloaded it once works offline.
Credentials come from kagglehub's usual places (``KAGGLE_USERNAME``/``KAGGLE_KEY``,
``KAGGLE_API_TOKEN``, ``~/.kaggle/kaggle.json``); they never reach an output or a log.
"""

from __future__ import annotations

from pathlib import Path

from alphagan.progress import progress

from alphagan.imaging import DEFAULT_MAX_BYTES, ImageRejected, read_limited
from alphagan.sources import SourceError
from alphagan.sources.folder import write_skipped

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

HELP = (
    "could not download Kaggle dataset {handle} ({kind}). Either set Kaggle credentials "
    "(KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json) on a machine with network, "
    "or download the archive from https://www.kaggle.com/datasets/splcher/animefacedataset "
    "yourself and run with data.source=folder and data.folder.path=<archive.zip>"
)


def download_dataset(handle: str) -> Path:
    """The local directory of the dataset version (downloaded unless already cached)."""
    import kagglehub
    import requests

    try:
        return Path(kagglehub.dataset_download(handle))
    except requests.exceptions.ConnectionError:
        kind = "no network"
    except requests.exceptions.HTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        kind = {401: "credentials refused", 403: "access refused; accept the dataset's terms on kaggle.com",
                404: "no such dataset version"}.get(status, f"HTTP {status}")
    except Exception as exc:  # kagglehub raises many kinds; none should become a traceback
        # Only the class name: an exception's text could echo a credential.
        kind = f"{type(exc).__name__}"
    raise SourceError(HELP.format(handle=handle, kind=kind))


def fetch_kaggle(handle: str, out_dir: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Copy the dataset's images (bytes untouched) into ``out_dir``, keeping their relative paths.

    Read like any other source: regular files of at most ``max_bytes`` only; anything else
    is recorded with its reason for validate's manifest.
    """
    root = download_dataset(handle)
    images = sorted(p for p in root.rglob("*") if (p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SourceError(f"Kaggle dataset {handle} at {root} holds no images")
    written, skipped = 0, []
    for path in progress(images, desc="copy kaggle", unit="img"):
        relative = path.relative_to(root)
        try:
            data = read_limited(path, max_bytes)
        except ImageRejected as exc:
            skipped.append((relative.as_posix(), f"skipped: {exc}"))
            continue
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += 1
    if skipped:
        write_skipped(out_dir, skipped)
    return written
