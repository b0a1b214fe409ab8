"""A folder of broken and odd image files, each with the verdict validate must give it."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def _face(size=(96, 96), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def make_odd_files(root: Path) -> dict[str, str]:
    """Write the fixture set under ``root``; returns {relative path: expected reason_code ('' = accepted)}."""
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}

    def put(name: str, data: bytes, code: str) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        expected[name] = code

    good = _jpeg(_face(seed=1))
    put("good.jpg", good, "")
    put("good_copy.jpg", good, "duplicate")  # sorts after good.jpg: the first copy is kept
    put("empty.jpg", b"", "not_decodable")
    truncated = _jpeg(_face(seed=2))
    put("truncated.jpg", truncated[: len(truncated) * 2 // 3], "not_decodable")  # header intact, scan data cut
    put("notes.png", b"this is not an image, just text with an image name\n", "not_decodable")
    rgba = _face(seed=3).convert("RGBA")
    rgba.putalpha(128)
    buffer = io.BytesIO(); rgba.save(buffer, "PNG"); put("alpha.png", buffer.getvalue(), "")
    buffer = io.BytesIO(); _face(seed=4).convert("P").save(buffer, "PNG"); put("palette.png", buffer.getvalue(), "")
    buffer = io.BytesIO(); _face(seed=5).convert("L").save(buffer, "PNG"); put("gray.png", buffer.getvalue(), "")
    put("cmyk.jpg", _jpeg(_face(seed=6).convert("CMYK")), "")
    sixteen = Image.fromarray((np.random.default_rng(7).integers(0, 65535, (80, 80))).astype(np.uint16))
    buffer = io.BytesIO(); sixteen.save(buffer, "PNG"); put("sixteen-bit.png", buffer.getvalue(), "")
    exif = Image.Exif(); exif[0x0112] = 6  # rotate 90 degrees on display
    put("rotated.jpg", _jpeg(_face((120, 90), seed=8), exif=exif.tobytes()), "")
    frames = [_face((64, 64), seed=s) for s in (9, 10, 11)]
    buffer = io.BytesIO(); frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:]); put("animated.gif", buffer.getvalue(), "animated")
    # 8000 x 8000 one-bit image: compresses to a few kB, 64 M pixels declared.
    buffer = io.BytesIO(); Image.new("1", (8000, 8000)).save(buffer, "PNG"); put("bomb.png", buffer.getvalue(), "not_decodable")
    buffer = io.BytesIO(); _face((8, 8), seed=12).save(buffer, "PNG"); put("tiny.png", buffer.getvalue(), "too_small")
    buffer = io.BytesIO(); Image.new("RGB", (64, 64), (40, 90, 200)).save(buffer, "PNG"); put("blank.png", buffer.getvalue(), "blank")
    put("wide.jpg", _jpeg(_face((300, 60), seed=13)), "aspect_ratio")
    put("sub dir/face with spaces.jpg", _jpeg(_face(seed=14)), "")
    put("лицо-ü.jpg", _jpeg(_face(seed=15)), "")
    buffer = io.BytesIO(); _face(seed=16).save(buffer, "WEBP"); put("face.webp", buffer.getvalue(), "")
    # Unreadable: a dangling link (readable-permission tricks do not work as root).
    os.symlink(root / "gone.jpg", root / "dangling.jpg")
    expected["dangling.jpg"] = "not_decodable"
    return expected


def copy_odd_files(root: Path, target: Path) -> None:
    shutil.copytree(root, target, symlinks=True)
