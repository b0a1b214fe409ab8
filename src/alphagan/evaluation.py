"""Evaluation: sample quality, reconstruction and memorisation, with honest baselines.

Two feature spaces:
  - ``random``: a seeded, randomly initialised conv net (:class:`RandomFeatures`), always
    available offline. Naeem et al. 2020 ("Reliable Fidelity and Diversity Metrics for
    Generative Models") found random embeddings informative for such metrics. Scores in
    it compare runs of this project, not papers; real-vs-real and noise baselines are
    reported beside them so a reader can place a score.
  - ``inception``: the standard InceptionV3 (2015 TF weights) through torch-fidelity, when
    its weights can be had. Offline without them the metrics are not computed, and the
    result says why; nothing is substituted under their names.

One Fréchet distance implementation (:func:`frechet_distance`) serves both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alphagan.training import to_tensor

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
RANDOM_FEATURES_SIZE = 64  # every image is resized (bilinear, antialiased) to this side first


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)) (Heusel et al. 2017), in float64.

    tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the inner matrix is symmetric PSD,
    so two symmetric eigen-decompositions replace the general ``sqrtm`` (faster and stable
    for singular covariances).
    """
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    s1, s2 = torch.as_tensor(sigma1, dtype=torch.float64), torch.as_tensor(sigma2, dtype=torch.float64)
    values, vectors = torch.linalg.eigh((s1 + s1.T) / 2)
    s1_half = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    inner = s1_half @ s2 @ s1_half
    trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt
    return float(distance.clamp(min=0))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_of(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def kernel_distance(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float, int]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3.

    Averaged over random subsets; the subset size shrinks to the smaller sample count, so
    few samples never crash. Returns (mean, std, subset size).
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError("KID needs at least 2 samples on each side")
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
    k-th real neighbour); recall: the same with the roles swapped.
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


class RandomFeatures(nn.Module):
    """A fixed random embedding: uint8 (B, 3, H, W) -> (B, 512).

    Resize to 64x64 (bilinear, antialiased), scale to [-1, 1], four stride-2 3x3 convs
    (64-128-256-512 channels, ReLU, He-normal weights from ``torch.Generator`` seed 0),
    global average pool. Same seed, same space, on any machine.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        widths = [3, 64, 128, 256, 512]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, 2, 1) for a, b in zip(widths, widths[1:]))
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                conv.bias.zero_()
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0
        if x.shape[-1] != RANDOM_FEATURES_SIZE:
            x = F.interpolate(x, size=(RANDOM_FEATURES_SIZE, RANDOM_FEATURES_SIZE), mode="bilinear", antialias=True, align_corners=False)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x.mean(dim=(2, 3))


def find_inception_weights(configured: str) -> tuple[str | None, str]:
    """(path or None, how it was found or why not). None with an empty reason means: try the download."""
    if configured:
        path = Path(configured).expanduser()
        return (str(path), f"evaluate.inception_weights {path}") if path.is_file() else (None, f"evaluate.inception_weights {path} does not exist")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    if cached.is_file():
        return str(cached), f"torch hub cache {cached}"
    return None, ""


def inception_extractor(configured_weights: str) -> tuple[nn.Module | None, str]:
    """torch-fidelity's InceptionV3 (2048-d pool features), or (None, why it is unavailable)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path, source = find_inception_weights(configured_weights)
    if path is None and source:
        return None, source
    if path is not None:
        try:
            # Refuse pickled code before torch-fidelity loads the file (it uses weights_only=False).
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            return None, f"{path} is not a plain weights file: {type(exc).__name__}: {exc}"
    try:
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)
    except Exception as exc:  # noqa: BLE001 - offline download, corrupt file, wrong shapes
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return None, (f"InceptionV3 weights could not be downloaded ({why}); put {INCEPTION_WEIGHTS_FILE} in "
                      f"{Path(torch.hub.get_dir()) / 'checkpoints'} or set evaluate.inception_weights")
    return model, source or "downloaded by torch-fidelity"


@torch.no_grad()
def extract(model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Features of uint8 NHWC images, in batches."""
    model = model.to(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start:start + batch_size], dtype=np.uint8)).permute(0, 3, 1, 2).to(device)
        features = model(batch)
        if isinstance(features, (tuple, list)):
            features = features[0]
        out.append(features.reshape(len(batch), -1).double().cpu().numpy())
    return np.concatenate(out)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC, quantised as prepare's arrays are."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(decoder: nn.Module, count: int, latent_dim: int, seed: int, batch_size: int, device: torch.device) -> np.ndarray:
    """``count`` uint8 images from N(0, I), seeded."""
    generator = torch.Generator().manual_seed(seed)
    decoder = decoder.to(device).eval()
    chunks = []
    for start in range(0, count, batch_size):
        latent = torch.randn(min(batch_size, count - start), latent_dim, generator=generator).to(device)
        chunks.append(to_uint8(decoder(latent)))
    return np.concatenate(chunks)


@torch.no_grad()
def reconstruct(encoder: nn.Module, decoder: nn.Module, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Deterministic reconstructions (the posterior mean through the decoder), uint8 NHWC."""
    encoder, decoder = encoder.to(device).eval(), decoder.to(device).eval()
    out = []
    for start in range(0, len(images), batch_size):
        mu, _ = encoder(to_tensor(images[start:start + batch_size], device))
        out.append(to_uint8(decoder(mu)))
    return np.concatenate(out)


def reconstruction_quality(real: np.ndarray, reconstructed: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM (torchmetrics) on [0, 1] images."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    a = torch.from_numpy(np.array(real)).permute(0, 3, 1, 2).float() / 255
    b = torch.from_numpy(np.array(reconstructed)).permute(0, 3, 1, 2).float() / 255
    return {"psnr": float(PeakSignalNoiseRatio(data_range=1.0)(b, a)),
            "ssim": float(StructuralSimilarityIndexMeasure(data_range=1.0)(b, a))}


def nearest_neighbours(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and L2 distance of each query's nearest reference (feature space)."""
    distances = torch.cdist(torch.as_tensor(queries, dtype=torch.float32), torch.as_tensor(references, dtype=torch.float32))
    best = distances.min(dim=1)
    return best.indices.numpy(), best.values.numpy()


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 NHWC -> one HxWx3 grid with 2 px black padding."""
    from torchvision.utils import make_grid

    tensor = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)
    return make_grid(tensor, nrow=columns, padding=2).permute(1, 2, 0).numpy()


@dataclass
class SpaceScores:
    """Scores of generated (and baseline) images in one feature space."""

    fd: float
    kid: float
    kid_std: float
    kid_subset_size: int
    precision: float
    recall: float


def score_space(real: np.ndarray, fake: np.ndarray, seed: int) -> SpaceScores:
    kid, kid_std, subset = kernel_distance(real, fake, seed=seed)
    precision, recall = precision_recall(real, fake)
    return SpaceScores(frechet_distance_of(real, fake), kid, kid_std, subset, precision, recall)


def evaluate_model(
    decoder: nn.Module, encoder: nn.Module, latent_dim: int, train_images: np.ndarray, val_images: np.ndarray,
    num_samples: int, batch_size: int, seed: int, inception_weights: str = "", nearest: int = 8,
    device: torch.device | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """All evaluation metrics (``eval/...``) and the pictures (samples, nearest neighbours)."""
    device = device or torch.device("cpu")
    real = np.asarray(val_images) if len(val_images) >= 2 else np.asarray(train_images)
    fake = generate(decoder, num_samples, latent_dim, seed, batch_size, device)
    noise = np.random.default_rng(seed).integers(0, 256, (len(real),) + real.shape[1:], dtype=np.uint8)
    metrics: dict[str, Any] = {"eval/num_generated": len(fake), "eval/num_real": len(real)}

    random_net = RandomFeatures()
    real_f, fake_f = extract(random_net, real, batch_size, device), extract(random_net, fake, batch_size, device)
    scores = score_space(real_f, fake_f, seed)
    metrics.update({"eval/fd_random": scores.fd, "eval/kid_random": scores.kid, "eval/kid_random_std": scores.kid_std,
                    "eval/kid_subset_size": scores.kid_subset_size,
                    "eval/precision_random": scores.precision, "eval/recall_random": scores.recall})
    half = len(real_f) // 2
    metrics["eval/fd_random_real_vs_real"] = frechet_distance_of(real_f[:half], real_f[half:2 * half])
    metrics["eval/fd_random_noise"] = frechet_distance_of(real_f, extract(random_net, noise, batch_size, device))

    reconstructed = reconstruct(encoder, decoder, real, batch_size, device)
    quality = reconstruction_quality(real, reconstructed)
    rec_f = extract(random_net, reconstructed, batch_size, device)
    metrics.update({"eval/psnr": quality["psnr"], "eval/ssim": quality["ssim"],
                    "eval/recon_feature_mse_random": float(np.mean(np.sum((rec_f - real_f) ** 2, axis=1)) / real_f.shape[1])})

    train_f = extract(random_net, train_images, batch_size, device)
    shown = min(nearest, len(fake))
    index, distance = nearest_neighbours(fake_f[:shown], train_f)
    pairs = np.stack([fake[:shown], np.asarray(train_images)[index]], axis=1).reshape(-1, *fake.shape[1:])
    metrics["eval/nn_distance_random_mean"] = float(distance.mean())

    inception, source = inception_extractor(inception_weights)
    if inception is None:
        metrics["eval/inception_note"] = f"FID/KID (Inception) not computed: {source}"
    else:
        real_i, fake_i = extract(inception, real, batch_size, device), extract(inception, fake, batch_size, device)
        kid, kid_std, _ = kernel_distance(real_i, fake_i, seed=seed)
        metrics.update({"eval/fid_inception": frechet_distance_of(real_i, fake_i), "eval/kid_inception": kid,
                        "eval/kid_inception_std": kid_std, "eval/inception_note": f"InceptionV3 weights from {source}"})
    pictures = {"samples": image_grid(fake[:64], 8), "nearest_neighbours": image_grid(pairs, 2 * min(4, shown))}
    return metrics, pictures
