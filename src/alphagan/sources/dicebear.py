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
from multiprocessing import Pool
from pathlib import Path

import numpy as np
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
    with Pool(workers) as pool:
        for _ in progress(pool.imap_unordered(_render_one, jobs, chunksize=64), total=len(jobs), desc="render dicebear", unit="img"):
            pass
    return len(jobs)


def style_credits(styles) -> list[str]:
    """One licence line per style, from each style's own ``meta``."""
    return [f"{s}: {style_definition(s)['meta']['license']['text']}" for s in styles]
