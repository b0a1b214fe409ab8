"""Reading images safely: metadata scans for validation and RGB conversion for prepare.

Both stages go through :func:`open_image` so they agree on what a file is: the
decompression-bomb guard runs on the header before any pixel is decoded, EXIF
orientation is honoured, and every mode Pillow knows (palette, 16-bit, CMYK, alpha)
reaches RGB the same way.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

# EXIF orientations 5-8 swap width and height.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112

RESAMPLING = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
}


#: The byte cap when none is given (``validate.max_bytes`` in params.yaml).
DEFAULT_MAX_BYTES = 100_000_000
DEFAULT_MAX_PIXELS = 50_000_000
#: ``pixel_std`` (the blank check) is measured on the image reduced to about this many pixels a side.
BLANK_CHECK_SIZE = 64


class ImageRejected(ValueError):
    """The file cannot be used as an image; the message is the human-readable reason."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def file_problem(path: str | os.PathLike, max_bytes: int) -> str:
    """'' when ``path`` is (or links to) a regular file of at most ``max_bytes``, else why not.

    Decided from ``lstat``/``stat`` alone: nothing is opened, so a FIFO or device never blocks or streams.
    (Plain ``os`` calls on a string: this runs once per image, and ``Path`` parsing was a tenth of the scan.)
    """
    path = os.fspath(path)
    try:
        own = os.lstat(path)
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    is_link = stat.S_ISLNK(own.st_mode)
    try:
        info = os.stat(path) if is_link else own
    except OSError:
        return f"dangling symbolic link to {os.readlink(path)}"
    if not stat.S_ISREG(info.st_mode):
        what = _kind(info.st_mode)
        return f"symbolic link to {what}; only regular files are read" if is_link else f"{what}; only regular files are read"
    if info.st_size > max_bytes:
        return f"{info.st_size} bytes, over validate.max_bytes {max_bytes}"
    return ""


def read_limited(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, or :class:`ImageRejected` saying why not.

    Checked before opening, then opened non-blocking and checked again on the descriptor:
    a FIFO or device swapped in between is still never read.
    """
    problem = file_problem(path, max_bytes)
    if problem:
        raise ImageRejected(problem)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb", buffering=0) as stream:
            info = os.fstat(stream.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ImageRejected(f"{_kind(info.st_mode)}; only regular files are read")
            # Ask for the size fstat gave (+1 to see growth): read(max_bytes + 1) allocated a
            # 100 MB buffer per file, a sixth of prepare's time per image. A file that grew
            # since is read on, still never past max_bytes + 1.
            data = stream.read(min(info.st_size, max_bytes) + 1)
            if len(data) > info.st_size and len(data) <= max_bytes:
                data += stream.read(max_bytes + 1 - len(data))
    except OSError as exc:
        raise ImageRejected(f"unreadable file: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ImageRejected(f"over validate.max_bytes {max_bytes} bytes")
    return data


def open_image(data: bytes, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Open image bytes lazily and refuse oversized headers before decoding.

    ``draft_size`` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while decoding
    (never below ``draft_size`` on either side): most of the speed of prepare.
    """
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, above its own limit; ours is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"decompression bomb refused before decoding: {exc}") from None
    except UnidentifiedImageError:
        raise ImageRejected("not an image Pillow can identify") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a property of the file
        raise ImageRejected(f"unreadable header: {type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(f"decompression bomb refused before decoding: header declares {width}x{height} = {width * height} pixels, limit {max_pixels}")
    if draft_size and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent or unreadable)."""
    if image.format == "JPEG" and "exif" not in image.info:
        return 1  # a JPEG's EXIF lives only in its APP1 segment, which the header parse put in info
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not reject the image
        return 1


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode to 8-bit RGB, compositing transparency onto ``background``."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # Pillow's own I->L conversion clips at 255; scale 16-bit range down instead.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array * (255.0 / peak), 0, 255).round().astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


_LEVELS = np.arange(256, dtype=np.float64)


def mean_channel_std(image: Image.Image) -> float:
    """Population standard deviation of each channel, averaged; from Pillow's C histogram
    (no float copy of the pixels, and not ImageStat's Python loops)."""
    counts = np.asarray(image.histogram(), dtype=np.float64).reshape(-1, 256)
    total = counts.sum(axis=1)
    mean = counts @ _LEVELS / total
    variance = np.maximum(counts @ (_LEVELS ** 2) / total - mean ** 2, 0.0)
    return float(np.sqrt(variance).mean())


def inspect_image(data: bytes, max_pixels: int) -> dict[str, Any]:
    """Metadata of one file for the validation table; never raises for a bad file.

    Every pixel is decoded (a truncated or corrupt file fails here), but a JPEG is decoded at
    the smallest DCT scale that keeps at least half of :data:`BLANK_CHECK_SIZE` a side: the
    decoder still reads every entropy-coded block, so a damaged stream fails exactly as at
    full size, and only the inverse transform gets cheaper. ``pixel_std`` is the per-channel
    standard deviation, averaged, of that image box-reduced to about :data:`BLANK_CHECK_SIZE`
    a side (a flat colour is blank whatever its hue).
    """
    row: dict[str, Any] = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "format": None, "mode": None, "width": None, "height": None, "frames": None,
        "exif_orientation": None, "aspect_ratio": None, "pixel_std": None,
        "decodable": False, "error": "",
    }
    try:
        image = open_image(data, max_pixels)
        row["format"], row["mode"] = image.format, image.mode
        width, height = image.size
        orientation = exif_orientation(image)
        if orientation in _TRANSPOSED_ORIENTATIONS:
            width, height = height, width
        row.update(width=width, height=height, exif_orientation=orientation, aspect_ratio=width / height,
                   frames=int(getattr(image, "n_frames", 1)))
        if image.format == "JPEG":
            image.draft("RGB", (BLANK_CHECK_SIZE // 2, BLANK_CHECK_SIZE // 2))
        image.load()  # full decode: truncated or corrupt data fails here
        small = to_rgb(image)
        factor = max(1, max(small.size) // BLANK_CHECK_SIZE)
        if factor > 1:
            small = small.reduce(factor)
        row["pixel_std"] = mean_channel_std(small)
        row["decodable"] = True
    except ImageRejected as exc:
        row["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - decoder errors are a property of the file
        row["error"] = f"decoding failed: {type(exc).__name__}: {exc}"
    return row


def inspect_file(path: str | os.PathLike, max_pixels: int, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """:func:`inspect_image` of a file on disk; an unreadable, special or oversized file becomes a row with its error."""
    try:
        data = read_limited(path, max_bytes)
    except ImageRejected as exc:
        row = inspect_image(b"", max_pixels)
        row.update(bytes=None, sha256=None, error=f"unreadable file: {str(exc).removeprefix('unreadable file: ')}")
        return row
    return inspect_image(data, max_pixels)


def _scaled_jpeg(data: bytes, size: int, max_pixels: int) -> Image.Image | None:
    """A plain baseline/progressive JPEG decoded by libjpeg-turbo through simplejpeg, at the
    same power-of-two DCT scale Pillow's ``draft`` picks; ``None`` when the general path must
    handle the file (not a JPEG, EXIF present, CMYK/YCCK, over ``max_pixels``, or any
    complaint from libjpeg-turbo, which then gets Pillow's verdict).

    The pixels are the ones Pillow decodes (tests/test_prepare.py compares them bit for
    bit); what is saved is Pillow's header parsing in Python and a copy.
    """
    if not data.startswith(b"\xff\xd8") or _has_exif(data):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "Gray") or width * height > max_pixels:
            return None
        # Pillow's draft rule: the largest power-of-two reduction that keeps both sides >= size.
        # (libjpeg-turbo's n/8 scales in between alias: measured 5-9 dB further from a
        # lossless source than a full decode + Lanczos, so they are not used.)
        factor = next((k for k in (8, 4, 2) if min(width // size, height // size) >= k), 1)
        array = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True,
                                       min_height=-(-height // factor), min_width=-(-width // factor))
        return Image.fromarray(array, "RGB")
    except ValueError:
        return None


def _has_exif(data: bytes) -> bool:
    """Whether a JPEG's header segments (before the image data) hold an EXIF block."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker == 0xDA:  # start of scan: no more header segments
            return False
        length = int.from_bytes(data[offset + 2:offset + 4], "big")
        if marker == 0xE1 and data[offset + 4:offset + 10] == b"Exif\x00\x00":
            return True
        offset += 2 + length
    return True  # a header we cannot walk: let Pillow read it


def prepare_image(
    path: str | os.PathLike, size: int, fit: str = "crop", background: tuple[int, int, int] = (255, 255, 255),
    resample: str = "lanczos", max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """One file to a ``(size, size, 3)`` uint8 array: orientation, RGB, crop or pad, resize.

    Reads under the same limits as validate (``validate.max_pixels``, ``validate.max_bytes``).
    Plain JPEGs are decoded by libjpeg-turbo at a reduced DCT scale (:func:`_scaled_jpeg`);
    everything else through Pillow (:func:`open_image`), which honours EXIF orientation.
    """
    data = read_limited(path, max_bytes)
    image = _scaled_jpeg(data, size, max_pixels)
    if image is None:
        image = open_image(data, max_pixels, draft_size=size)
        if exif_orientation(image) != 1:
            image = ImageOps.exif_transpose(image)
        image = to_rgb(image, background)
    width, height = image.size
    if fit == "crop":
        # Crop and resize in one pass (resize's box): no intermediate copy.
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
    else:
        side = max(width, height)
        canvas = Image.new("RGB", (side, side), background)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image, box = canvas, (0, 0, side, side)
    if image.size != (size, size) or box != (0, 0, size, size):
        image = image.resize((size, size), RESAMPLING[resample], box=box)
    return np.asarray(image, dtype=np.uint8)
