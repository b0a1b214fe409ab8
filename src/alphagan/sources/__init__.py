"""Image sources for the fetch stage: each writes raw image files into a directory.

``fetch_images`` dispatches on ``data.source``; every source leaves files exactly as
obtained (no decoding or re-encoding) so that validate sees what came in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alphagan.errors import AlphaGanError

if TYPE_CHECKING:  # config imports sources.dicebear to check style names
    from alphagan.config import Params


class SourceError(AlphaGanError):
    """The source could not deliver images; the message says what to do."""


def fetch_images(params: Params, out_dir: Path) -> int:
    """Fill ``out_dir`` (which must be empty or missing, apart from the pipeline's marker) from the source.

    Returns the number of files written; a source that delivers none is an error.
    """
    from alphagan.atomic import MARKER

    out_dir = Path(out_dir)
    if out_dir.exists() and any(p.name != MARKER for p in out_dir.iterdir()):
        raise SourceError(f"{out_dir} is not empty; remove it first (dvc repro does this for you)")
    out_dir.mkdir(parents=True, exist_ok=True)
    source = params.data.source
    if source == "dicebear":
        from alphagan.sources.dicebear import render_avatars

        return render_avatars(params.data.dicebear, params.data.image_size, params.seed, out_dir)
    if source == "kaggle":
        from alphagan.sources.kaggle import fetch_kaggle

        return fetch_kaggle(params.data.kaggle.handle, out_dir, params.validate_params.max_bytes)
    if source == "folder":
        from alphagan.sources.folder import import_folder

        return import_folder(Path(params.data.folder.path), out_dir, params.validate_params.max_bytes)
    raise SourceError(f"unknown data.source {source!r}")  # unreachable: config validates it
