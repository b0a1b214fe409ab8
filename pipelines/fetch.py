"""fetch: fill ``paths.raw`` from ``data.source`` (dicebear sample, Kaggle, or a folder/archive)."""

from __future__ import annotations

import sys
from pathlib import Path

from alphagan.atomic import staged_directory
from alphagan.config import Params
from alphagan.sources import SourceError, fetch_images
from pipelines._common import stage_main


def run(params: Params) -> None:
    out_dir = Path(params.paths.raw)
    # Built beside paths.raw and swapped in when complete; an old paths.raw is replaced only
    # if the pipeline made it (its marker file), never a folder of someone's own files.
    with staged_directory(out_dir, "paths.raw") as staging:
        count = fetch_images(params, staging)
        if count == 0:
            raise SourceError(f"source '{params.data.source}' delivered no files; {out_dir} is left as it was")
    print(f"fetch: {count} files from source '{params.data.source}' -> {out_dir}")


def main(argv=None) -> int:
    return stage_main("fetch", run, argv)


if __name__ == "__main__":
    sys.exit(main())
