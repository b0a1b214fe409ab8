"""The static pictures: loss curves readable without vega, samples through training."""

from __future__ import annotations

import numpy as np
import pytest

from alphagan.plots import loss_curves, samples_through_training


def test_loss_curves_draw_each_series_in_its_own_colour():
    rows = [{"step": s, "loss_d": 1 + 0.1 * np.sin(s), "loss_adv_g": -0.2 + 0.1 * np.cos(s), "loss_vae": 3.0 / s, "loss_feature": 0.02 + 0.01 * np.cos(s),
             "loss_pixel": 0.3 + 0.1 * np.sin(s), "loss_kl": 0.05 * s} for s in range(1, 60)]
    picture = loss_curves(rows)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    # matplotlib's first colours (blue, orange, green, red) all appear: one per series.
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)):
        close = np.abs(picture.astype(int) - colour).sum(axis=2) < 60
        assert close.sum() > 50, colour


def test_samples_through_training_keeps_first_and_last_epochs():
    strips = [(epoch, np.full((20, 80, 3), epoch * 8, np.uint8)) for epoch in range(1, 31)]
    picture = samples_through_training(strips, keep=8)
    assert picture.shape == (8 * 20, 64 + 80, 3)
    faces = picture[:, 64:]
    rows = [int(faces[r * 20, 0, 0]) for r in range(8)]
    assert rows[0] == 8 and rows[-1] == 240 and len(set(rows)) == 8
    assert picture[:, :64].min() < 128  # the labels are drawn


def test_samples_through_training_needs_a_snapshot():
    with pytest.raises(ValueError):
        samples_through_training([])
