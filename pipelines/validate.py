"""validate: scan every raw file, judge it with the Great Expectations suite, write the manifest."""

from __future__ import annotations

import sys
from pathlib import Path

from alphagan.config import Params
from alphagan.validation import validate_images
from pipelines._common import stage_main


def run(params: Params) -> None:
    summary = validate_images(
        Path(params.paths.raw), params.validate_params, Path(params.paths.validated),
        Path(params.paths.reports) / "validate",
    )
    print(f"validate: {summary['files_seen']} files seen, {summary['accepted']} accepted, {summary['rejected']} rejected")
    for code, count in summary["rejected_by_reason"].items():
        print(f"  {code:<14} {count}")


def main(argv=None) -> int:
    return stage_main("validate", run, argv)


if __name__ == "__main__":
    sys.exit(main())
