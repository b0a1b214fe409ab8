"""Part 4: one max_pixels and one byte cap for every reader; links and special files never opened."""

import io
import os
import socket

import pandas as pd
import pytest
from PIL import Image

from pipelines import fetch, prepare, validate
from tests.oddfiles import _face, _jpeg


def _png(size, seed=0):
    buffer = io.BytesIO()
    _face(size, seed=seed).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def hostile_folder(tmp_path):
    """Good faces plus every kind of entry a folder source must not open."""
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):
        (folder / f"face-{i}.jpg").write_bytes(_jpeg(_face(seed=i)))
    (folder / "big.png").write_bytes(_png((200, 200), seed=9))  # ~120 kB: over the byte cap below
    (folder / "link-to-face.jpg").symlink_to(folder / "face-0.jpg")  # a link to a regular file: copied
    (folder / "link-to-dir").symlink_to(folder / "sub", target_is_directory=True)
    (folder / "link-to-device.jpg").symlink_to("/dev/zero")  # would fill the disk if copied
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    os.mkfifo(folder / "pipe.jpg")  # opening it for reading would block forever
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.jpg"))
    yield folder
    server.close()


@pytest.mark.timeout(120)
def test_folder_source_skips_links_and_special_files_with_reasons_in_the_manifest(hostile_folder, write_params, tmp_path):
    params = str(write_params({"data": {"source": "folder", "folder": {"path": str(hostile_folder)}},
                               "validate": {"max_bytes": 50_000, "max_reject_fraction": 1.0}}))
    assert fetch.main(["--params", params]) == 0
    raw = tmp_path / "data/raw"
    copied = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if not p.name.startswith("."))
    assert copied == ["face-0.jpg", "face-1.jpg", "face-2.jpg", "face-3.jpg", "face-4.jpg", "face-5.jpg", "link-to-face.jpg"]
    assert not any(p.is_symlink() for p in raw.rglob("*"))
    assert validate.main(["--params", params]) == 0
    manifest = pd.read_csv(tmp_path / "data/validated/manifest.csv", keep_default_na=False).set_index("path")
    # Every incoming entry is accounted for: accepted, or rejected with its reason.
    assert sorted(manifest.index) == sorted(["big.png", "dangling.jpg", "face-0.jpg", "face-1.jpg", "face-2.jpg", "face-3.jpg",
                                             "face-4.jpg", "face-5.jpg", "link-to-device.jpg", "link-to-dir", "link-to-face.jpg",
                                             "pipe.jpg", "sock.jpg"])
    reasons = manifest["reason"].to_dict()
    assert reasons["link-to-device.jpg"] == "skipped: symbolic link to a character device; only regular files are read"
    assert reasons["link-to-dir"] == "skipped: symbolic link to a directory; only regular files are read"
    assert reasons["pipe.jpg"] == "skipped: a FIFO; only regular files are read"
    assert reasons["sock.jpg"] == "skipped: a socket; only regular files are read"
    assert reasons["dangling.jpg"].startswith("skipped: dangling symbolic link to")
    assert reasons["big.png"].startswith("skipped: ") and "over validate.max_bytes 50000" in reasons["big.png"]
    skipped = manifest[manifest["reason_code"] == "skipped"]
    assert len(skipped) == 6 and (skipped["accepted"].astype(str) == "False").all()
    assert (manifest["accepted"].astype(str) == "True").sum() == 6
    # The link to a regular file was copied (its bytes, not the link): a duplicate of face-0.jpg.
    assert manifest.loc["link-to-face.jpg", "reason"] == "duplicate of face-0.jpg"


def test_validate_refuses_special_and_oversized_files_in_raw_without_opening_them(tmp_path):
    from alphagan.config import ValidateParams
    from alphagan.validation import validate_images

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ok.png").write_bytes(_png((64, 64), seed=1))
    (raw / "big.png").write_bytes(_png((200, 200), seed=2))
    os.mkfifo(raw / "pipe.png")
    (raw / "zero.png").symlink_to("/dev/zero")
    validate_images(raw, ValidateParams(max_bytes=50_000, max_reject_fraction=1.0), tmp_path / "validated", tmp_path / "reports")
    manifest = pd.read_csv(tmp_path / "validated/manifest.csv", keep_default_na=False).set_index("path")
    assert manifest.loc["ok.png", "reason"] == ""
    assert manifest.loc["big.png", "reason"].startswith("not decodable: unreadable file: ")
    assert "over validate.max_bytes 50000" in manifest.loc["big.png", "reason"]
    assert manifest.loc["pipe.png", "reason"] == "not decodable: unreadable file: a FIFO; only regular files are read"
    assert manifest.loc["zero.png", "reason"] == ("not decodable: unreadable file: symbolic link to a character device; "
                                                  "only regular files are read")


def test_prepare_reads_under_validate_max_pixels_from_params(write_params, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(4):
        (folder / f"f{i}.png").write_bytes(_png((100, 120), seed=i))  # 12,000 pixels each
    overrides = {"data": {"source": "folder", "folder": {"path": str(folder)}}, "validate": {"max_pixels": 20_000}}
    params = str(write_params(overrides))
    for stage in (fetch, validate, prepare):
        assert stage.main(["--params", params]) == 0
    assert (tmp_path / "data/prepared/train.npy").exists()
    # The same accepted images under a lower limit: prepare must apply the param, not a default of its own.
    stricter = str(write_params({**overrides, "validate": {"max_pixels": 10_000}}, name="stricter.yaml"))
    capsys.readouterr()
    assert prepare.main(["--params", stricter]) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error" in line]  # the rest is progress bars
    assert line.startswith("prepare: error: an accepted image failed to prepare") and "limit 10000" in line
    assert "Traceback" not in err
    # A limit above the old hard-coded 50,000,000 is passed through rather than replaced by it.
    from alphagan.imaging import ImageRejected, prepare_image

    big = tmp_path / "wide.png"
    Image.new("1", (8000, 7000)).save(big)  # 56 M pixels declared, a few kB on disk
    with pytest.raises(ImageRejected, match="56000000 pixels, limit 55000000"):
        prepare_image(big, 16, max_pixels=55_000_000)  # refused on the header: nothing decoded
