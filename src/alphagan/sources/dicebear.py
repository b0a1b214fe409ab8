"""The built-in offline sample: cartoon faces from DiceBear styles, rasterised with resvg.

Each image is a pure function of (seed, index): the style cycles through the list, and
background colour, scale, rotation, offset and mirroring are drawn from a generator
seeded by both, so the same params give byte-identical files on any machine.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib.resources import files
from pathlib import Path

import numpy as np
from alphagan.processes import process_pool
from alphagan.progress import progress

from alphagan.sources import SourceError

# Soft backgrounds: the seed's author asked for faces with backgrounds, not on white.
BACKGROUNDS = (
    "b6e3f4", "c0aede", "d1d4f9", "ffd5dc", "ffdfbf", "c1f0c1", "f4e4b6", "e0e0e0",
    "a3c9e2", "f2b5a0", "9fd3c7", "ead7f7",
)


@cache
def available_styles() -> frozenset[str]:
    """Names of the DiceBear styles shipped by ``dicebear-styles``."""
    return frozenset(p.name.removesuffix(".json") for p in files("dicebear_styles").iterdir() if p.name.endswith(".json"))


@cache
def style_definition(name: str) -> dict:
    """The parsed JSON definition of one style (its ``meta`` holds the licence)."""
    return json.loads(files("dicebear_styles").joinpath(f"{name}.json").read_text("utf-8"))


@cache
def _style(name: str):
    from dicebear import Style

    return Style(style_definition(name))


def avatar_options(seed: int, index: int, size: int) -> dict:
    """The DiceBear options of image ``index``: deterministic in (seed, index)."""
    rng = np.random.default_rng([seed, index])
    return {
        "seed": f"{seed}-{index}",
        "size": size,
        "backgroundColor": [BACKGROUNDS[rng.integers(len(BACKGROUNDS))]],
        # Mild pose variation: the face is not always centred and upright.
        "scale": round(float(rng.uniform(0.85, 1.15)), 3),
        "rotate": int(rng.integers(-12, 13)),
        "translateX": int(rng.integers(-6, 7)),
        "translateY": int(rng.integers(-6, 7)),
        "flip": bool(rng.integers(2)) and "horizontal" or "none",
    }


def render_avatar(style: str, options: dict) -> bytes:
    """One avatar as PNG bytes."""
    import resvg_py
    from dicebear import Avatar

    svg = Avatar(_style(style), options).to_string()
    return bytes(resvg_py.svg_to_bytes(svg_string=svg))


def _render_one(job: tuple[int, str, int, int, str]) -> str:
    index, style, seed, size, out_dir = job
    path = Path(out_dir) / style / f"{index:06d}.png"
    try:
        path.write_bytes(render_avatar(style, avatar_options(seed, index, size)))
    except Exception as exc:  # noqa: BLE001
        # Re-raised as a plain message: some library exceptions do not pickle back
        # from a worker, and the pool then waits forever instead of failing.
        raise SourceError(f"dicebear style {style!r}, image {index}: {type(exc).__name__}: {exc}") from None
    return str(path)


def render_avatars(params, image_size: int, seed: int, out_dir: Path, workers: int = 0) -> int:
    """Render ``params.count`` avatars into ``out_dir/<style>/<index>.png`` over all cores."""
    styles = list(params.styles)
    for style in styles:
        (out_dir / style).mkdir(parents=True, exist_ok=True)
    jobs = [(i, styles[i % len(styles)], seed, image_size, str(out_dir)) for i in range(params.count)]
    workers = workers or os.cpu_count() or 1
    with process_pool(workers) as pool:
        for _ in progress(pool.imap_unordered(_render_one, jobs, chunksize=64), total=len(jobs), desc="render dicebear", unit="img"):
            pass
    return len(jobs)


def style_credits(styles) -> list[str]:
    """One licence line per style, from each style's own ``meta``."""
    return [f"{s}: {style_definition(s)['meta']['license']['text']}" for s in styles]


# --- One character, many pictures: the seed write-up's 90-image case, made offline.

#: Outline colours: the same character drawn with different ink (black, brown, navy, plum).
CHARACTER_INKS = ("000000", "5b3a29", "1f3a93", "6b2d5c")


def character_options(seed: int, index: int, size: int, style: str = "adventurer") -> dict:
    """Picture ``index`` of one character: DiceBear seed fixed by ``seed`` (so the face, hair
    and skin stay), while the expression (eyes, eyebrows, mouth), outline colour, pose
    (mirroring, rotation, scale, position) and background (plain or a two-colour
    gradient) change from picture to picture. Deterministic in (seed, index)."""
    rng = np.random.default_rng([seed, index, 90])
    components = style_definition(style)["components"]

    def variant(name: str) -> list[str]:
        names = sorted(components[name]["variants"])
        return [names[rng.integers(len(names))]]

    colours = [BACKGROUNDS[i] for i in rng.choice(len(BACKGROUNDS), 2, replace=False)]
    options = {
        "seed": f"character-{seed}", "size": size,
        "eyesVariant": variant("eyes"), "eyebrowsVariant": variant("eyebrows"), "mouthVariant": variant("mouth"),
        "inkColor": [CHARACTER_INKS[rng.integers(len(CHARACTER_INKS))]],
        "flip": "horizontal" if rng.integers(2) else "none",
        "rotate": int(rng.integers(-25, 26)), "scale": round(float(rng.uniform(0.7, 1.1)), 3),
        "translateX": int(rng.integers(-14, 15)), "translateY": int(rng.integers(-10, 11)),
    }
    if rng.random() < 0.5:
        options["backgroundColor"] = colours[:1]
    else:
        options.update({"backgroundColor": colours, "backgroundColorFill": ["linear"],
                        "backgroundColorAngle": [int(rng.integers(0, 360))]})
    return options


def render_character_set(out_dir: Path, count: int = 90, seed: int = 0, size: int = 128,
                         style: str = "adventurer") -> list[Path]:
    """Write ``count`` PNG pictures of one character (:func:`character_options`) into
    ``out_dir``, which must not exist yet or be empty: nothing of the user's is overwritten."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SourceError(f"{out_dir} already exists and is not an empty folder: choose a new one (nothing was written)")
    if style not in available_styles():
        raise SourceError(f"unknown DiceBear style {style!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        path = out_dir / f"character-{index:03d}.png"
        path.write_bytes(render_avatar(style, character_options(seed, index, size, style)))
        written.append(path)
    return written
