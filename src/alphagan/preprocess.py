"""Turn accepted images into training-ready uint8 arrays and a deterministic split.

Outputs ``train.npy`` and ``val.npy`` (N x H x W x 3, uint8, memory-mappable with
``np.load(..., mmap_mode="r")``) and ``index.csv`` mapping each row back to its source.
Decoding is spread over processes; each worker writes its runs of rows into the
pre-allocated ``.npy`` files, so memory stays flat however many images there are. The
whole output directory is built under a temporary name beside ``paths.prepared`` and renamed into place only when every
array is complete and fsynced: no reader ever sees a half-filled (zero) array.
"""

from __future__ import annotations

import errno
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from alphagan.processes import process_pool
from alphagan.progress import progress

from alphagan import atomic
from alphagan.config import PrepareParams
from alphagan.errors import AlphaGanError
from alphagan.imaging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, prepare_image
from alphagan.phases import phase


class PrepareError(AlphaGanError):
    """No usable images, or an accepted image failed to decode on the second read."""


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, val) row indices; deterministic in ``seed``.

    With ``val_fraction > 0`` and at least two images, val holds at least one image and
    train keeps at least one.
    """
    order = np.random.default_rng(seed).permutation(count)
    val_count = int(round(count * val_fraction))
    if val_fraction > 0 and count >= 2:
        val_count = min(max(val_count, 1), count - 1)
    return np.sort(order[val_count:]), np.sort(order[:val_count])


def _load(path: str, root: str, size: int, params: PrepareParams, limits: tuple[int, int]) -> np.ndarray:
    try:
        return prepare_image(os.path.join(root, path), size, params.fit, params.background, params.resample, *limits)
    except Exception as exc:  # noqa: BLE001 - a plain message always pickles back from a worker
        raise PrepareError(f"{path}: {type(exc).__name__}: {exc}") from None


def _fill_rows(job: tuple[str, int, int, list[str]], root: str, size: int, params: PrepareParams, limits: tuple[int, int]) -> int:
    """Worker: decode a run of paths into one buffer, then write it to its rows of the ``.npy``
    with ``pwrite`` (nothing pickled back).

    Not through a memmap: every dirty page of it cost a fault, and counted in the worker's RSS.
    """
    out_file, data_offset, start, paths = job
    rows = np.empty((len(paths), size, size, 3), np.uint8)
    for index, path in enumerate(paths):
        rows[index] = _load(path, root, size, params, limits)
    view, position = memoryview(rows).cast("B"), data_offset + start * rows[0].nbytes
    fd = os.open(out_file, os.O_WRONLY)
    try:
        while view:  # pwrite may write less than asked
            written = os.pwrite(fd, view, position)
            view, position = view[written:], position + written
    finally:
        os.close(fd)
    return len(paths)


def reserve_space(path: Path) -> None:
    """Allocate a (sparse) file's blocks now: a full disk is then an ``OSError`` here, not a
    SIGBUS in whichever worker first touches an unbacked page of the memmap."""
    with open(path, "r+b") as stream:
        try:
            os.posix_fallocate(stream.fileno(), 0, os.fstat(stream.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
        except AttributeError:  # no posix_fallocate on this platform
            pass


def load_arrays(root: Path, outputs: dict[Path, list[str]], size: int, params: PrepareParams,
                max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Decode each list of paths (relative to ``root``) into a new ``.npy`` file, rows in list order.

    One process pool serves every output; each worker writes its rows into the file itself,
    so only file names cross process boundaries.
    """
    data_offsets = {}
    for out_file, paths in outputs.items():
        array = np.lib.format.open_memmap(out_file, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        data_offsets[out_file] = array.offset  # where row 0 starts, after the .npy header
        del array
        reserve_space(out_file)
    total = sum(len(paths) for paths in outputs.values())
    workers = min(params.workers or os.cpu_count() or 1, max(1, total // 64))
    # Runs of at most 2 MiB of rows (170 images at 64 px, 682 at 32): the worker's buffer stays
    # in its core's cache between decoding and pwrite, and no worker idles long at the end
    # (runs of total/(4 x workers) images once left one worker alone for the last ~5 s of the
    # 63.6k Kaggle set). At 64 px on 2 cores, runs of 128 instead of 1,024 images decoded
    # 20k images ~9% faster (~7,100 against ~6,500 img/s, 3 alternating tries each); at 63.6k
    # the two were within noise. A run costs one pickled list of names and one pwrite.
    chunk = min(max(16, -(-total // (workers * 4))), max(1, 2**21 // (size * size * 3)))
    jobs = [(str(out_file), data_offsets[out_file], start, paths[start:start + chunk])
            for out_file, paths in outputs.items() for start in range(0, len(paths), chunk)]
    work = partial(_fill_rows, root=str(root), size=size, params=params, limits=(max_pixels, max_bytes))
    try:
        with progress(total=total, desc="prepare", unit="img") as bar:
            if workers == 1:
                for job in jobs:
                    bar.update(work(job))
            else:
                with process_pool(workers) as pool:
                    for done in pool.imap_unordered(work, jobs):
                        bar.update(done)
    except PrepareError as exc:
        raise PrepareError(f"an accepted image failed to prepare: {exc}") from None


def prepare_dataset(manifest_csv: Path, raw_dir: Path, out_dir: Path, image_size: int, params: PrepareParams, seed: int,
                    max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Write ``train.npy``, ``val.npy`` and ``index.csv`` from the accepted rows of the manifest.

    ``max_pixels`` and ``max_bytes`` are validate's limits (``validate.*``): an image validate
    accepted is read under the same ones.
    """
    atomic.ensure_owned(out_dir, "paths.prepared")
    try:
        with phase("read manifest"):
            manifest = pd.read_csv(manifest_csv, dtype={"path": str, "sha256": str}, keep_default_na=False)
    except FileNotFoundError:
        raise PrepareError(f"{manifest_csv} is missing; run the validate stage first (dvc repro validate)") from None
    accepted = manifest[manifest["accepted"].astype(str).str.lower() == "true"].sort_values("path")
    if accepted.empty:
        raise PrepareError(f"{manifest_csv} accepts no images; nothing to prepare")
    paths = accepted["path"].tolist()
    hashes = accepted["sha256"].tolist()
    train_rows, val_rows = split_indices(len(paths), params.val_fraction, seed)
    splits = {"train": train_rows, "val": val_rows}
    with atomic.staged_directory(out_dir, "paths.prepared") as staging:
        with phase("decode + resize + write rows"):
            load_arrays(Path(raw_dir), {staging / f"{split}.npy": [paths[i] for i in rows] for split, rows in splits.items()},
                        image_size, params, max_pixels, max_bytes)
        index = [{"split": split, "row": r, "path": paths[i], "sha256": hashes[i]}
                 for split, rows in splits.items() for r, i in enumerate(rows)]
        pd.DataFrame(index, columns=["split", "row", "path", "sha256"]).to_csv(staging / "index.csv", index=False)
    return {"train": int(len(train_rows)), "val": int(len(val_rows)), "image_size": image_size}
