"""A classifier two-sample test: how often can a small CNN tell the candidate images from real ones?

Why a second instrument: the patch SWD and the random-feature FD compare statistics of
local patches and of pooled texture. A face with the right colours and strokes in the
wrong places, a smear where the eyes should be, or two ghosted faces in one cell can
match those statistics: the default run sat at or below their real-data floor while a
person saw that most of its cells are not clean faces (README, "What a default run
gives"). A classifier trained to separate the two sets sees whatever differs, global
layout included, and its held-out accuracy has a meaning anyone can read: 0.5 is
"indistinguishable", 1.0 is "told apart every time" (Lopez-Paz and Oquab 2017,
"Revisiting classifier two-sample tests", who also used it to judge GAN samples).

How, so that the number means what it says:

- Equal counts, a fresh classifier per comparison: ``count`` reference and ``count``
  candidate images, of which a random ``holdout`` share of each is kept out of training
  and scored; the accuracy is over those held-out images only.
- The floor is measured the same way: real images against other real images at the same
  count (:func:`two_sample_scores`), because a finite training set leaves the held-out
  accuracy of a null comparison near, not at, 0.5.
- The reference is the training split, not the 300-image val split the distances use: a
  classifier learnt from 300 images a side sees mild pixel noise in some draws and not in
  others (``python benchmarks/metrics_ladder.py --c2st-count 300``: 0.78 ± 0.17); the val
  split still holds out the distances and the memorisation check. A generator that copies training images would score at
  the floor here, as it would against any real set: the memorisation check covers it.
- Horizontal flips are built in (random flips in training, the mean of both views when
  scoring): the ladder calls a flip harmless, and the data has no left and right.

The classifier is a plain 3x3-conv, batch-norm, average-pool CNN (16-32-64 channels at
32 px), ending at 4x4 in a linear layer that sees position (no global pooling: layout is
what the other metrics miss). It trains for a fixed number of epochs with Adam: no early
stopping on the held-out images, which would make the accuracy optimistic.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alphagan.metrics.baselines import DrawSummary

#: Held-out accuracy of a classifier between candidate and reference images.
C2ST_METRIC = "c2st_accuracy"
#: The most images a side: enough for a stable classifier, and a bounded cost per draw.
MAX_COUNT = 1000


def two_sample_classifier(image_size: int, width: int = 16, max_channels: int = 128) -> nn.Sequential:
    """conv3x3-BN-LeakyReLU-avgpool blocks from ``image_size`` down to 4x4, then dropout and one logit."""
    layers: list[nn.Module] = []
    channels, side, block = 3, image_size, 0
    while side > 4:
        out = min(width * 2 ** block, max_channels)  # doubling each block, as the discriminators do
        layers += [nn.Conv2d(channels, out, 3, 1, 1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
        channels, side, block = out, side // 2, block + 1
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.5), nn.Linear(channels * side * side, 1))


def _as_input(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def classifier_accuracy(reference: np.ndarray, candidate: np.ndarray, seed: int, epochs: int = 12, holdout: float = 0.3,
                        batch_size: int = 64, lr: float = 1e-3, device: torch.device | None = None) -> float:
    """Held-out accuracy of a fresh classifier trained to tell ``candidate`` from ``reference``.

    Both are uint8 NHWC of one size and of equal length (at least 4 each). A seeded random
    ``holdout`` share of each side is scored, the rest trains the classifier; everything
    (split, weights, batches, flips) follows ``seed``. 0.5 is chance.
    """
    if len(reference) != len(candidate) or len(reference) < 4:
        raise ValueError(f"the two-sample test needs equal counts of at least 4, got {len(reference)} and {len(candidate)}")
    if reference.shape[1:] != candidate.shape[1:] or reference.shape[1] != reference.shape[2] or reference.shape[1] < 4:
        raise ValueError(f"the two-sample test needs square images of one size, got {reference.shape[1:]} and {candidate.shape[1:]}")
    device = device or torch.device("cpu")
    count = len(reference)
    held = max(1, min(count - 1, round(holdout * count)))
    rng = np.random.default_rng(seed)
    order_reference, order_candidate = rng.permutation(count), rng.permutation(count)
    images = np.concatenate([reference[order_reference], candidate[order_candidate]])
    labels = np.repeat(np.array([0.0, 1.0], np.float32), count)
    test = np.r_[np.arange(held), count + np.arange(held)]
    train = np.setdiff1d(np.arange(2 * count), test)

    # The classifier's initial weights and dropout masks come from torch's global generator:
    # seeded here, on a fork, so that scoring leaves the caller's random state as it was.
    cuda_devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        return _train_and_score(images, labels, train, test, reference.shape[1], seed, epochs, batch_size, lr, device)


def _train_and_score(images: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, image_size: int, seed: int,
                     epochs: int, batch_size: int, lr: float, device: torch.device) -> float:
    generator = torch.Generator().manual_seed(seed)
    net = two_sample_classifier(image_size).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-3)
    inputs, targets = _as_input(images[train], device), torch.from_numpy(labels[train]).to(device)
    steps = epochs * -(-len(train) // batch_size)
    # One cycle, ending near zero: the last weights are a settled classifier, not one step's noise.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    for _ in range(epochs):
        net.train()
        for rows in torch.randperm(len(train), generator=generator).split(batch_size):
            flip = (torch.rand(len(rows), generator=generator) < 0.5).to(device)[:, None, None, None]
            rows = rows.to(device)
            batch = torch.where(flip, inputs[rows].flip(3), inputs[rows])
            loss = F.binary_cross_entropy_with_logits(net(batch).squeeze(1), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        scored = _as_input(images[test], device)
        logits = (net(scored) + net(scored.flip(3))).squeeze(1) / 2
        correct = ((logits > 0).float().cpu() == torch.from_numpy(labels[test])).float().mean()
    return float(correct)


def two_sample_scores(pool: np.ndarray, candidates: dict[str, np.ndarray], count: int, draws: int, seed: int,
                      floor: str = "real", epochs: int = 12, device: torch.device | None = None) -> dict[str, dict[str, DrawSummary]]:
    """:data:`C2ST_METRIC` of each candidate set against real images, beside the real floor.

    In draw d (seeded by (seed, d)), ``pool`` (real images, the training split) is shuffled:
    its first ``count`` images are the reference, the next ``count`` the ``floor`` candidate.
    Each other candidate gives ``count`` random images; a candidate as long as ``pool`` (a
    damaged copy of it, for the ladder) gives the floor's rows, so it is paired with the
    floor image for image and never holds a damaged copy of a reference image. Returns
    ``{name: {C2ST_METRIC: DrawSummary}}`` with ``floor`` first, as
    :func:`~alphagan.metrics.baselines.score_at_equal_counts` does.
    """
    if floor in candidates:
        raise ValueError(f"the {floor!r} floor is drawn from the pool: do not pass one")
    if count < 4 or 2 * count > len(pool) or any(len(images) < count for images in candidates.values()):
        raise ValueError(f"the two-sample test at {count} a side needs twice that many pool images and that many of each "
                         f"candidate, got pool {len(pool)}, {({k: len(v) for k, v in candidates.items()})}")
    values: dict[str, list[float]] = {floor: [], **{name: [] for name in candidates}}
    for draw in range(draws):
        rng = np.random.default_rng([seed, draw])
        shuffled = rng.permutation(len(pool))
        reference = np.asarray(pool[np.sort(shuffled[:count])])
        floor_rows = np.sort(shuffled[count:2 * count])
        values[floor].append(classifier_accuracy(reference, np.asarray(pool[floor_rows]), seed + draw, epochs, device=device))
        for name, images in candidates.items():
            rows = floor_rows if len(images) == len(pool) else np.sort(rng.choice(len(images), count, replace=False))
            values[name].append(classifier_accuracy(reference, np.asarray(images[rows]), seed + draw, epochs, device=device))
    return {name: {C2ST_METRIC: DrawSummary(float(np.mean(v)), float(np.std(v)), tuple(v))} for name, v in values.items()}


def c2st_count(pool_size: int, generated: int) -> int:
    """Images a side for :func:`two_sample_scores`: half the pool, the generated count, at most :data:`MAX_COUNT`."""
    return min(pool_size // 2, generated, MAX_COUNT)
