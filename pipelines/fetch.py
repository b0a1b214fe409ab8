"""fetch: fill ``paths.raw`` from ``data.source`` (dicebear sample, Kaggle, or a folder/archive)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from alphagan.config import Params
from alphagan.sources import fetch_images
from pipelines._common import stage_main


def run(params: Params) -> None:
    out_dir = Path(params.paths.raw)
    # dvc repro removes outputs first; a direct run must not mix old and new files either.
    shutil.rmtree(out_dir, ignore_errors=True)
    count = fetch_images(params, out_dir)
    print(f"fetch: {count} files from source '{params.data.source}' -> {out_dir}")


def main(argv=None) -> int:
    return stage_main("fetch", run, argv)


if __name__ == "__main__":
    sys.exit(main())
