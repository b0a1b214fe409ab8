import numpy as np
import pandas as pd
import pytest
from PIL import Image

from alphagan.config import PrepareParams, ValidateParams
from alphagan.imaging import prepare_image
from alphagan.preprocess import prepare_dataset, split_indices
from alphagan.validation import validate_images
from tests.oddfiles import make_odd_files


def test_split_is_deterministic_and_disjoint():
    train, val = split_indices(10, 0.3, seed=1)
    again_train, again_val = split_indices(10, 0.3, seed=1)
    assert (train == again_train).all() and (val == again_val).all()
    assert len(val) == 3 and sorted([*train, *val]) == list(range(10))
    assert not np.array_equal(val, split_indices(10, 0.3, seed=2)[1])
    assert len(split_indices(3, 0.01, seed=0)[1]) == 1  # a val split that was asked for is never empty


def test_exif_orientation_and_alpha_are_applied(tmp_path):
    # Left half red, right half blue; EXIF 6 = rotate 90 degrees clockwise for display.
    array = np.zeros((40, 80, 3), np.uint8); array[:, :40] = (255, 0, 0); array[:, 40:] = (0, 0, 255)
    exif = Image.Exif(); exif[0x0112] = 6
    Image.fromarray(array).save(tmp_path / "r.jpg", quality=95, exif=exif.tobytes())
    out = prepare_image(tmp_path / "r.jpg", 16, fit="pad", background=(0, 255, 0))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    # After rotation red is on top, blue below; padding (green) left and right.
    assert out[2, 8, 0] > 200 and out[13, 8, 2] > 200 and out[8, 0, 1] > 200

    rgba = np.zeros((20, 20, 4), np.uint8)  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert (prepare_image(tmp_path / "t.png", 8, background=(10, 20, 30)) == (10, 20, 30)).all()


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((20, 20), 32768, np.uint16)).save(tmp_path / "g16.png")
    assert abs(int(prepare_image(tmp_path / "g16.png", 8)[0, 0, 0]) - 128) <= 1


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_writes_accepted_images_only(tmp_path, workers):
    make_odd_files(tmp_path / "raw")
    validate_images(tmp_path / "raw", ValidateParams(max_reject_fraction=1.0), tmp_path / "validated", tmp_path / "reports")
    counts = prepare_dataset(tmp_path / "validated" / "manifest.csv", tmp_path / "raw", tmp_path / "prepared", 32,
                             PrepareParams(val_fraction=0.2, workers=workers), seed=0)
    manifest = pd.read_csv(tmp_path / "validated" / "manifest.csv", keep_default_na=False)
    accepted = int((manifest["accepted"].astype(str) == "True").sum())
    train = np.load(tmp_path / "prepared" / "train.npy", mmap_mode="r")
    val = np.load(tmp_path / "prepared" / "val.npy", mmap_mode="r")
    assert counts == {"train": len(train), "val": len(val), "image_size": 32}
    assert len(train) + len(val) == accepted and len(val) == 2
    assert train.dtype == np.uint8 and train.shape[1:] == (32, 32, 3)
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    assert len(index) == accepted and set(index["split"]) == {"train", "val"}
    row = index[index["split"] == "train"].iloc[0]
    assert np.array_equal(train[row["row"]], prepare_image(tmp_path / "raw" / row["path"], 32))
