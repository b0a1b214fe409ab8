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


def _jpeg_cases(tmp_path):
    """JPEGs of every kind the fast path takes or refuses: sizes, subsampling, progressive, grey, CMYK, EXIF."""
    rng = np.random.default_rng(3)
    smooth = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).resize((131, 97), Image.Resampling.BICUBIC)
    noisy = np.clip(np.asarray(smooth, np.int16) + rng.integers(-30, 31, (97, 131, 3)), 0, 255).astype(np.uint8)
    cases = {"noisy.jpg": (Image.fromarray(noisy), {}), "smooth-444.jpg": (smooth, {"subsampling": 0}),
             "progressive.jpg": (Image.fromarray(noisy), {"progressive": True}), "grey.jpg": (smooth.convert("L"), {}),
             "cmyk.jpg": (smooth.convert("CMYK"), {}), "tall.jpg": (Image.fromarray(noisy).rotate(90, expand=True), {}),
             "big.jpg": (Image.fromarray(noisy).resize((520, 390)), {}), "odd.jpg": (Image.fromarray(noisy).crop((0, 0, 33, 70)), {})}
    exif = Image.Exif(); exif[0x0112] = 3
    cases["exif.jpg"] = (Image.fromarray(noisy), {"exif": exif.tobytes()})
    for name, (image, options) in cases.items():
        image.save(tmp_path / name, quality=90, **options)
    return sorted(cases)


def test_the_fast_jpeg_path_gives_pillows_pixels_bit_for_bit(tmp_path, monkeypatch):
    """prepare decodes plain JPEGs with simplejpeg at Pillow's draft scale: the arrays must be Pillow's exactly."""
    from alphagan import imaging

    names = _jpeg_cases(tmp_path)
    settings = [(size, fit, resample) for size in (16, 32, 64) for fit in ("crop", "pad") for resample in ("lanczos", "box")]
    fast = {(n, *s): prepare_image(tmp_path / n, s[0], fit=s[1], resample=s[2]) for n in names for s in settings}
    taken = {n for n in names if imaging._scaled_jpeg((tmp_path / n).read_bytes(), 32, 10**9) is not None}
    assert taken == {"noisy.jpg", "smooth-444.jpg", "progressive.jpg", "grey.jpg", "tall.jpg", "big.jpg", "odd.jpg"}
    monkeypatch.setattr(imaging, "_scaled_jpeg", lambda *args: None)  # Pillow for everything
    for key, array in fast.items():
        name, size, fit, resample = key
        assert np.array_equal(array, prepare_image(tmp_path / name, size, fit=fit, resample=resample)), key


def test_the_fast_jpeg_path_keeps_the_pixel_limit(tmp_path):
    from alphagan.imaging import ImageRejected

    Image.new("RGB", (300, 200), (90, 10, 10)).save(tmp_path / "wide.jpg")
    with pytest.raises(ImageRejected, match="decompression bomb refused before decoding"):
        prepare_image(tmp_path / "wide.jpg", 16, max_pixels=300 * 200 - 1)


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
