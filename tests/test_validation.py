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
    summary = validate_images(root / "raw", params, root / "validated", root / "reports")
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


def test_pixel_std_is_the_channel_std_of_the_image():
    """The histogram formula against numpy's std on the pixels themselves (an independent computation)."""
    import numpy as np
    from PIL import Image

    from alphagan.imaging import mean_channel_std

    rng = np.random.default_rng(0)
    pixels = np.concatenate([rng.integers(0, 256, (40, 50, 1)), rng.integers(100, 110, (40, 50, 1)),
                             np.full((40, 50, 1), 7)], axis=2).astype(np.uint8)
    expected = pixels.reshape(-1, 3).astype(np.float64).std(axis=0).mean()
    assert abs(mean_channel_std(Image.fromarray(pixels)) - expected) < 1e-9
    assert mean_channel_std(Image.new("RGB", (30, 30), (12, 200, 90))) == 0.0


def test_reduced_scale_decoding_still_finds_a_damaged_stream():
    """Validate decodes a JPEG at a reduced DCT scale; a file cut short must fail as at full size."""
    import io

    import numpy as np
    from PIL import Image

    from alphagan.imaging import BLANK_CHECK_SIZE, inspect_image

    pixels = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    whole = buffer.getvalue()
    row = inspect_image(whole, 50_000_000)
    assert row["decodable"] and (row["width"], row["height"]) == (512, 512)
    # Measured at ~64 px a side, here the 8x8 block means (the JPEG's DC terms): noise averages out.
    block_means = pixels.reshape(64, 8, 64, 8, 3).mean(axis=(1, 3))
    assert abs(row["pixel_std"] - block_means.reshape(-1, 3).std(axis=0).mean()) < 1.0
    for cut in (0.5, 0.95):
        row = inspect_image(whole[: int(len(whole) * cut)], 50_000_000)
        assert not row["decodable"] and "truncated" in row["error"], row
    assert BLANK_CHECK_SIZE <= 64


def test_list_files_gives_relative_paths_in_component_order(tmp_path):
    from alphagan.atomic import MARKER
    from alphagan.validation import list_files

    for name in ("b.jpg", "a/z.jpg", "a-b.jpg", "a/b/c.jpg", f"a/{MARKER}"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / MARKER).write_text("the pipeline's own")
    (tmp_path / "link-to-dir").symlink_to(tmp_path / "a", target_is_directory=True)
    # Sorted as path components ("a" before "a-b.jpg"), as sorted(Path) did; the top-level marker is not an image.
    assert list_files(tmp_path) == [f"a/{MARKER}", "a/b/c.jpg", "a/z.jpg", "a-b.jpg", "b.jpg", "link-to-dir"]
