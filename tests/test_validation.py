import json

import pandas as pd
import pytest

from alphagan.config import ValidateParams
from alphagan.validation import ValidationFailed, validate_images
from tests.oddfiles import make_odd_files


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    expected = make_odd_files(root / "raw")
    params = ValidateParams(min_side=16, max_reject_fraction=1.0)
    summary = validate_images(root / "raw", params, root / "validated", root / "reports", draft_size=32)
    manifest = pd.read_csv(root / "validated" / "manifest.csv", keep_default_na=False)
    return root, expected, summary, manifest


def test_every_file_is_accounted_for(odd_run):
    _, expected, summary, manifest = odd_run
    assert sorted(manifest["path"]) == sorted(expected)
    assert summary["files_seen"] == len(expected) == summary["accepted"] + summary["rejected"]
    assert summary["accepted"] == sum(code == "" for code in expected.values())


def test_each_odd_file_gets_the_expected_verdict(odd_run):
    _, expected, _, manifest = odd_run
    verdicts = dict(zip(manifest["path"], manifest["reason_code"], strict=True))
    assert verdicts == expected
    accepted = dict(zip(manifest["path"], manifest["accepted"].astype(str), strict=True))
    assert all((accepted[p] == "True") == (code == "") for p, code in expected.items())


def test_reasons_are_readable(odd_run):
    _, _, _, manifest = odd_run
    reason = dict(zip(manifest["path"], manifest["reason"], strict=True))
    assert reason["good_copy.jpg"] == "duplicate of good.jpg"
    assert reason["empty.jpg"] == "not decodable: empty file (0 bytes)"
    assert reason["truncated.jpg"].startswith("not decodable: decoding failed: OSError: image file is truncated")
    assert reason["bomb.png"].startswith("not decodable: decompression bomb refused before decoding")
    assert reason["animated.gif"] == "animated (3 frames); only still images are used"
    assert reason["tiny.png"].startswith("too small: 8x8 px")
    assert reason["dangling.jpg"].startswith("not decodable: unreadable file")
    assert reason["good.jpg"] == ""


def test_exif_rotation_swaps_reported_size(odd_run):
    _, _, _, manifest = odd_run
    row = manifest.set_index("path").loc["rotated.jpg"]
    assert (int(row["width"]), int(row["height"]), int(row["exif_orientation"])) == (90, 120, 6)


def test_reports_written(odd_run):
    root, expected, summary, _ = odd_run
    assert json.loads((root / "reports" / "summary.json").read_text()) | {} == summary | {"max_reject_fraction": 1.0}
    assert summary["rejected_by_reason"]["not_decodable"] == 5
    gx_result = json.loads((root / "reports" / "gx_result.json").read_text())
    assert gx_result["success"] is False and len(gx_result["results"]) == 9
    assert (root / "reports" / "data_docs" / "index.html").exists()


def test_too_many_rejects_fails_after_writing(tmp_path):
    make_odd_files(tmp_path / "raw")
    params = ValidateParams(max_reject_fraction=0.1)
    with pytest.raises(ValidationFailed, match=r"rejected \(.*> validate.max_reject_fraction 10.0%\)"):
        validate_images(tmp_path / "raw", params, tmp_path / "validated", tmp_path / "reports")
    assert (tmp_path / "validated" / "manifest.csv").exists()
