"""Do the samples keep the training set's variety of backgrounds and poses?

The seed write-up's author wanted faces "with a background and in different poses". A
distance such as the SWD can be near its floor while every sample sits on the same
background in the same place, so these three plain measurements say it directly (no
learned weights; pure numpy):

- **background colour**: the per-channel median of the image's outer ring of pixels
  (1/16 of the side wide, at least one pixel);
- **face position**: the centroid of the foreground, the pixels whose colour differs from
  that background by more than :data:`FOREGROUND_THRESHOLD` in some channel, as a
  fraction of the side (0.5, 0.5 is the centre);
- **face size**: the square root of the foreground's share of the image.

Over a set of images: ``background_spread`` is the RMS distance of the background colours
from their mean (0-255 units: 0 when every image has the same background),
``position_spread`` the RMS distance of the centroids from their mean (fractions of the
side), ``size_spread`` the standard deviation of the sizes. Each is reported beside the
same number for the training images: a ratio near 1 keeps their variety, near 0 has
collapsed it. Made for faces drawn on a background (the offline sample, a user's own
art); on tight crops whose border is hair and skin the "background" is the crop's edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A pixel belongs to the foreground when a channel differs from the background by more than this (0-255).
FOREGROUND_THRESHOLD = 32


@dataclass(frozen=True)
class Layout:
    """Per-image measurements of one set: (N, 3) colours, (N, 2) centroids (x, y), (N,) sizes."""

    background: np.ndarray
    centroid: np.ndarray
    size: np.ndarray


def layout(images: np.ndarray) -> Layout:
    """Background colour, foreground centroid and size of each uint8 NHWC image."""
    images = np.asarray(images)
    side = images.shape[1]
    ring = max(1, side // 16)
    border = np.ones((side, side), dtype=bool)
    border[ring:side - ring, ring:side - ring] = False
    background = np.median(images[:, border], axis=1)  # (N, 3)
    difference = np.abs(images.astype(np.int16) - background[:, None, None, :].astype(np.int16)).max(axis=3)
    foreground = difference > FOREGROUND_THRESHOLD  # (N, H, W)
    area = foreground.sum(axis=(1, 2))
    coordinates = (np.arange(side) + 0.5) / side
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(area > 0, (foreground.sum(axis=1) * coordinates).sum(axis=1) / area, 0.5)
        y = np.where(area > 0, (foreground.sum(axis=2) * coordinates).sum(axis=1) / area, 0.5)
    return Layout(background=background.astype(np.float64), centroid=np.stack([x, y], axis=1),
                  size=np.sqrt(area / float(side * side)))


def _rms_spread(points: np.ndarray) -> float:
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean())) if len(points) else 0.0


def spreads(images: np.ndarray) -> dict[str, float]:
    """``background_spread``, ``position_spread`` and ``size_spread`` of one image set."""
    measured = layout(images)
    return {"background_spread": _rms_spread(measured.background), "position_spread": _rms_spread(measured.centroid),
            "size_spread": float(np.std(measured.size))}


def variety_report(generated: np.ndarray, training: np.ndarray) -> dict[str, float]:
    """Each spread of the generated images, of the training images (``..._real``) and their ratio."""
    fake, real = spreads(generated), spreads(training)
    out: dict[str, float] = {}
    for name, value in fake.items():
        base = name.removesuffix("_spread")
        out.update({name: value, f"{name}_real": real[name],
                    f"{base}_variety_ratio": value / real[name] if real[name] > 0 else float("nan")})
    return out
