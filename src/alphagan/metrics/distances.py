"""Distances between two sets of images or of their features.

Every distance here is biased by the number of samples (except KID, which is unbiased
but noisy): compare a score only with a floor measured at the same counts, which is
what :mod:`alphagan.metrics.baselines` does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)) (Heusel et al. 2017), in float64.

    tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the inner matrix is symmetric PSD,
    so two symmetric eigen-decompositions replace the general ``sqrtm`` (faster and stable
    for singular covariances). Not clamped: a tiny negative value is rounding, and a
    large one would be a bug that must show.
    """
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    s1, s2 = torch.as_tensor(sigma1, dtype=torch.float64), torch.as_tensor(sigma2, dtype=torch.float64)
    values, vectors = torch.linalg.eigh((s1 + s1.T) / 2)
    s1_half = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    inner = s1_half @ s2 @ s1_half
    trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt
    return float(distance)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, float64."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_of(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between two (N, D) feature sets."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def kernel_distance(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float, int]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3.

    Averaged over random subsets; the subset size shrinks to the smaller sample count, so
    few samples never crash. When both sets fit in one subset, every subset would hold all
    of both in some order, which MMD^2 does not see: one subset is computed, not ``subsets``
    copies of it (the evaluate stage's 300 a side: 50 identical subsets before). Returns
    (mean, std over subsets, subset size). Unbiased:
    its real-vs-real value scatters around 0, so it is read against that scatter, not
    as a ratio.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    if size == len(real) == len(fake):
        subsets = 1
    rng = np.random.default_rng(seed)
    dim = real.shape[1]
    scores = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), size, replace=False)]
        y = fake[rng.choice(len(fake), size, replace=False)]
        k_xx, k_yy, k_xy = ((x @ x.T / dim + 1) ** 3, (y @ y.T / dim + 1) ** 3, (x @ y.T / dim + 1) ** 3)
        off_diagonal = size * (size - 1)
        scores.append((k_xx.sum() - np.trace(k_xx)) / off_diagonal + (k_yy.sum() - np.trace(k_yy)) / off_diagonal
                      - 2 * k_xy.mean())
    return float(np.mean(scores)), float(np.std(scores)), size


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls.

    precision: share of fakes inside some real sample's ball (radius = distance to its
    k-th real neighbour); recall: the same with the roles swapped. Both depend on the
    counts on each side: compare them only at equal counts.
    """
    real_t, fake_t = torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(fake, dtype=torch.float32)

    def radii(points):
        k_eff = min(k, len(points) - 1)
        distances = torch.cdist(points, points)
        return distances.kthvalue(k_eff + 1, dim=1).values  # +1: the point itself is at 0

    def coverage(support, support_radii, queries):
        inside = torch.zeros(len(queries), dtype=torch.bool)
        for start in range(0, len(queries), 1024):
            d = torch.cdist(queries[start:start + 1024], support)
            inside[start:start + 1024] = (d <= support_radii[None, :]).any(dim=1)
        return float(inside.float().mean())

    return coverage(real_t, radii(real_t), fake_t), coverage(fake_t, radii(fake_t), real_t)


# --- Multi-scale sliced Wasserstein distance (Karras et al. 2018, "Progressive Growing of
# GANs", appendix D). No learned weights: it compares the distributions of small patches
# of each Laplacian-pyramid band, so the finest band sees speckle, noise and blur, and the
# coarsest (a low-pass image of 8x8) sees layout and colour.

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    kernel = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, [2, 2, 2, 2], mode="reflect"), kernel, groups=x.shape[1])


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Float (B, C, S, S) -> ``levels`` bands, finest first; the last is the low-pass residual.

    Burt and Adelson 1983 with the 5-tap binomial filter: G_{i+1} = down(blur(G_i)),
    L_i = G_i - blur(up(G_{i+1})) (zeros inserted, gain 4).
    """
    bands, current = [], images
    for _ in range(levels - 1):
        smaller = _blur(current)[:, :, ::2, ::2]
        upsampled = torch.zeros_like(current)
        upsampled[:, :, ::2, ::2] = smaller * 4
        bands.append(current - _blur(upsampled))
        current = smaller
    bands.append(current)
    return bands


def pyramid_levels(image_size: int, coarsest: int = 8) -> list[int]:
    """The band resolutions the SWD reports: ``image_size`` halved down to ``coarsest``."""
    sizes = [image_size]
    while sizes[-1] // 2 >= coarsest:
        sizes.append(sizes[-1] // 2)
    return sizes


def patch_descriptors(images: np.ndarray, patches_per_image: int = 128, patch_size: int = 7,
                      seed: int = 0, coarsest: int = 8) -> list[torch.Tensor]:
    """uint8 NHWC -> per pyramid band, (N * patches_per_image, 3 * patch_size^2) raw patches.

    Patch positions are drawn from ``seed``, the same for every image set of the same
    shape, so two sets are sampled alike.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    sizes = pyramid_levels(x.shape[-1], coarsest)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for band in laplacian_pyramid(x, len(sizes)):
        side = band.shape[-1]
        size = min(patch_size, side)
        windows = band.unfold(2, size, 1).unfold(3, size, 1)  # (N, C, P, P, size, size)
        positions = windows.shape[2]
        ys = torch.randint(0, positions, (len(band), patches_per_image), generator=generator)
        xs = torch.randint(0, positions, (len(band), patches_per_image), generator=generator)
        rows = torch.arange(len(band))[:, None]
        picked = windows.permute(0, 2, 3, 1, 4, 5)[rows, ys, xs]  # (N, patches, C, size, size)
        out.append(picked.reshape(len(band) * patches_per_image, -1))
    return out


def _sorted_projections(points: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    # (directions, points), sorted along the contiguous last axis: 3x faster than sorting columns.
    projected = directions.T @ points.T
    if projected.device.type != "cpu" or projected.requires_grad:
        return torch.sort(projected, dim=1).values
    # On the CPU numpy's vectorised sort gives the same values several times faster than
    # torch.sort (measured by benchmarks/evaluate.py); it was most of evaluate's SWD time.
    return torch.from_numpy(np.sort(projected.numpy(), axis=1))


def _unit_directions(dimension: int, count: int, seed: int) -> torch.Tensor:
    directions = torch.randn(dimension, count, generator=torch.Generator().manual_seed(seed))
    return directions / directions.norm(dim=0, keepdim=True)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two equal-sized point sets (rows).

    Mean over ``directions`` random unit vectors of the mean absolute difference between
    the sorted projections (Rabin et al. 2011).
    """
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal-sized sets, got {tuple(a.shape)} and {tuple(b.shape)}")
    units = _unit_directions(a.shape[1], directions, seed).to(a.dtype)
    return float((_sorted_projections(a, units) - _sorted_projections(b, units)).abs().mean())


class MultiscaleSWD:
    """SWD (x1000, as ProGAN reports it) per pyramid band, against one fixed reference set.

    The reference's descriptors are normalised and projected once; each call scores a
    candidate set of the same count. Both sides are normalised per channel with the
    *reference's* mean and standard deviation (ProGAN normalises each set by its own,
    which hides a global colour shift). ProGAN takes 128 patches of 7x7 per image and
    512 directions over 16k images; 64 patches and 256 directions keep a 300-image
    comparison under a second on two cores.
    """

    def __init__(self, reference: np.ndarray, patches_per_image: int = 64, directions: int = 256, seed: int = 0):
        self.count, self.sizes = len(reference), pyramid_levels(reference.shape[1])
        self.patches_per_image, self.seed = patches_per_image, seed
        self.bands = []
        for size, descriptors in zip(self.sizes, patch_descriptors(reference, patches_per_image, seed=seed), strict=True):
            channels = descriptors.view(len(descriptors), 3, -1)
            mean = channels.mean(dim=(0, 2)).repeat_interleave(channels.shape[2])
            std = channels.std(dim=(0, 2)).clamp(min=1e-8).repeat_interleave(channels.shape[2])
            units = _unit_directions(descriptors.shape[1], directions, seed + size)
            self.bands.append((size, mean, std, units, _sorted_projections((descriptors - mean) / std, units)))

    def __call__(self, candidate: np.ndarray) -> dict[int, float]:
        if len(candidate) != self.count:
            raise ValueError(f"multiscale SWD needs equal counts, got {self.count} reference and {len(candidate)} candidate images")
        result = {}
        bands = patch_descriptors(candidate, self.patches_per_image, seed=self.seed)
        for (size, mean, std, units, reference_sorted), descriptors in zip(self.bands, bands, strict=True):
            projected = _sorted_projections((descriptors - mean) / std, units)
            result[size] = 1e3 * float((projected - reference_sorted).abs().mean())
        return result


def multiscale_swd(reference: np.ndarray, candidate: np.ndarray, seed: int = 0) -> dict[int, float]:
    """SWD x1000 per pyramid band resolution between two equal-count uint8 NHWC sets."""
    return MultiscaleSWD(reference, seed=seed)(candidate)
