"""Fixed embeddings of uint8 images, available offline."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RANDOM_FEATURES_SIZE = 64  # every image is resized (bilinear, antialiased) to this side first


class RandomFeatures(nn.Module):
    """A fixed random embedding: uint8 (B, 3, H, W) -> (B, 512).

    Resize to 64x64 (bilinear, antialiased), scale to [-1, 1], four stride-2 3x3 convs
    (64-128-256-512 channels, ReLU, He-normal weights from ``torch.Generator`` seed 0),
    global average pool. Same seed, same space, on any machine. Naeem et al. 2020 found
    random embeddings informative; global pooling makes it mostly a colour and texture
    statistic, which is why the ladder (:mod:`~alphagan.metrics.baselines`) decides
    whether a distance in it may judge samples.
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


@torch.no_grad()
def extract(model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Features (float64, (N, D)) of uint8 NHWC images, in batches."""
    model = model.to(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start:start + batch_size], dtype=np.uint8)).permute(0, 3, 1, 2).to(device)
        features = model(batch)
        if isinstance(features, (tuple, list)):
            features = features[0]
        out.append(features.reshape(len(batch), -1).double().cpu().numpy())
    return np.concatenate(out)
