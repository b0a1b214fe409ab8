"""The variety instrument: it finds a known background, position and size, and its spreads
fall to zero when variety collapses."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from alphagan.metrics.variety import layout, spreads, variety_report

SIDE = 32


def disc(background, centre, radius, colour=(20, 20, 20)):
    image = Image.new("RGB", (SIDE, SIDE), tuple(background))
    x, y = centre
    ImageDraw.Draw(image).ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
    return np.asarray(image)


def test_layout_recovers_background_centre_and_size():
    rng = np.random.default_rng(0)
    backgrounds = rng.integers(120, 256, (40, 3))
    centres = rng.uniform(10, 22, (40, 2))
    radii = rng.uniform(4, 8, 40)
    images = np.stack([disc(b, c, r) for b, c, r in zip(backgrounds, centres, radii)])
    measured = layout(images)
    assert np.array_equal(measured.background, backgrounds.astype(float))
    assert np.abs(measured.centroid * SIDE - centres).max() < 0.6  # within a pixel of the drawn centre
    # PIL fills the bounding box inclusively: the drawn disc has about half a pixel more radius.
    assert np.abs(measured.size - np.sqrt(np.pi * (radii + 0.5) ** 2) / SIDE).max() < 0.02


def test_spreads_collapse_when_variety_does():
    rng = np.random.default_rng(1)
    varied = np.stack([disc(rng.integers(120, 256, 3), rng.uniform(10, 22, 2), rng.uniform(4, 8)) for _ in range(60)])
    one_place = np.stack([disc(rng.integers(120, 256, 3), (16, 16), 6) for _ in range(60)])
    one_background = np.stack([disc((200, 180, 230), rng.uniform(10, 22, 2), rng.uniform(4, 8)) for _ in range(60)])
    assert spreads(one_place)["position_spread"] == pytest.approx(0, abs=1e-9)
    assert spreads(one_place)["size_spread"] == pytest.approx(0, abs=1e-9)
    assert spreads(one_place)["background_spread"] > 30
    assert spreads(one_background)["background_spread"] == 0 and spreads(one_background)["position_spread"] > 0.05
    report = variety_report(one_background, varied)
    assert report["background_variety_ratio"] == 0 and report["background_spread_real"] > 30
    assert 0.6 < report["position_variety_ratio"] < 1.6


def test_variety_of_real_faces(real_faces):
    """Two disjoint sets of the offline faces keep each other's variety; a flip keeps it too;
    the same face everywhere has none."""
    a, b = real_faces[:300], real_faces[300:600]
    report = variety_report(a, b)
    for name in ("background", "position", "size"):
        assert 0.8 < report[f"{name}_variety_ratio"] < 1.25, (name, report)
    flipped = variety_report(np.ascontiguousarray(a[:, :, ::-1]), a)
    assert all(abs(flipped[f"{n}_variety_ratio"] - 1) < 0.05 for n in ("background", "position", "size"))
    same = variety_report(np.repeat(a[:1], 50, axis=0), b)
    assert all(same[f"{n}_variety_ratio"] < 1e-6 for n in ("background", "position", "size"))
