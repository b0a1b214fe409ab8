"""prepare: accepted images -> ``train.npy`` / ``val.npy`` (uint8 NHWC) and ``index.csv``."""

from __future__ import annotations

import sys
from pathlib import Path

from alphagan.config import Params
from alphagan.preprocess import prepare_dataset
from pipelines._common import stage_main


def run(params: Params) -> None:
    limits = params.validate_params
    counts = prepare_dataset(
        Path(params.paths.validated) / "manifest.csv", Path(params.paths.raw), Path(params.paths.prepared),
        params.data.image_size, params.prepare, params.seed, max_pixels=limits.max_pixels, max_bytes=limits.max_bytes,
    )
    print(f"prepare: {counts['train']} train + {counts['val']} val images at {counts['image_size']} px -> {params.paths.prepared}")


def main(argv=None) -> int:
    return stage_main("prepare", run, argv)


if __name__ == "__main__":
    sys.exit(main())
