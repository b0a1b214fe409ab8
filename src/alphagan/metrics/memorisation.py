"""Does the generator copy its training images? Nearest neighbours in a structure space.

The space is colour-blind and contrast-normalised on purpose: each image becomes its
luminance with the image's own mean removed and divided by its own standard deviation,
at the training resolution. Two faces with the same drawing but another palette are
close here; two faces that only share a background colour are not (a colour-dominated
space would call every face on a pink background a near copy).

The number only means something beside its real-vs-real reference: held-out real images
are also at some distance from their nearest training image. A generator that copies
sits much closer than that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def structure_embedding(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> (N, H*W) float32: per-image standardised luminance."""
    luma = np.asarray(images, dtype=np.float32) @ _LUMA
    flat = luma.reshape(len(luma), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(flat.std(axis=1, keepdims=True), 1e-3) / np.sqrt(flat.shape[1])


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, chunk: int = 1024,
                       leave_one_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Index and L2 distance of each query row's nearest reference row.

    ``leave_one_out``: the queries are the references themselves; row i's own row is
    excluded, so each gets its nearest *other* reference.
    """
    references_t = torch.as_tensor(references, dtype=torch.float32)
    indices, distances = [], []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(torch.as_tensor(queries[start:start + chunk], dtype=torch.float32), references_t)
        if leave_one_out:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        best = d.min(dim=1)
        indices.append(best.indices.numpy())
        distances.append(best.values.numpy())
    return np.concatenate(indices), np.concatenate(distances)


@dataclass(frozen=True)
class MemorisationReport:
    """Nearest-training-image distances of generated and held-out real images."""

    generated_median: float
    real_median: float  # of held-out real images, or leave-one-out within the training set (see below)
    ratio: float  # generated_median / real_median: ~1 or above is healthy, well below 1 is copying
    copy_fraction: float  # generated images closer to the training set than 99% of held-out reals
    closest: np.ndarray  # indices of the generated images nearest to a training image, closest first
    closest_training: np.ndarray  # their nearest training image, same order
    closest_distances: np.ndarray
    generated_distances: np.ndarray  # every generated image's distance to its nearest training image
    real_distances: np.ndarray  # the same for the real reference images
    real_reference: str  # "held-out" or "leave-one-out"


def memorisation_report(generated: np.ndarray, training: np.ndarray, held_out: np.ndarray | None,
                        shown: int = 8) -> MemorisationReport:
    """Compare generated images' distance to the training set with real images'.

    The real reference is ``held_out`` (images the model never saw) when given; with
    ``None`` (a few-shot set with no split worth the name) it is each training image's
    distance to its nearest *other* training image (leave-one-out), which is what a
    generator that draws new members of the set, rather than copies, should match.
    """
    train_embedding = structure_embedding(training)
    generated_index, generated_distance = nearest_neighbours(structure_embedding(generated), train_embedding)
    if held_out is None:
        if len(training) < 2:
            raise ValueError("a leave-one-out reference needs at least two training images")
        _, real_distance = nearest_neighbours(train_embedding, train_embedding, leave_one_out=True)
    else:
        _, real_distance = nearest_neighbours(structure_embedding(held_out), train_embedding)
    threshold = np.percentile(real_distance, 1)
    order = np.argsort(generated_distance, kind="stable")[:shown]
    generated_median, real_median = float(np.median(generated_distance)), float(np.median(real_distance))
    return MemorisationReport(
        generated_median=generated_median, real_median=real_median, ratio=generated_median / max(real_median, 1e-12),
        copy_fraction=float(np.mean(generated_distance < threshold)), closest=order,
        closest_training=generated_index[order], closest_distances=generated_distance[order],
        generated_distances=generated_distance, real_distances=real_distance,
        real_reference="held-out" if held_out is not None else "leave-one-out")
