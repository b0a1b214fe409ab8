"""VAE-GAN networks after Larsen et al. 2016, "Autoencoding beyond pixels using a learned
similarity metric": an encoder to (mu, logvar), a decoder that is also the generator, and
a discriminator whose intermediate features measure reconstruction.

Pure ``nn.Module``s configured by :class:`ModelConfig`; depth follows the image size
(one stride-2 stage per halving from ``image_size`` down to 4x4). Channel widths go
``base_channels, 2x, 4x, ...`` capped at ``max_channels``, DCGAN style; ``decoder_channels``
and ``discriminator_channels`` start the decoder's and the discriminator's from another base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm as _spectral_norm


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 64
    latent_dim: int = 128
    base_channels: int = 32
    max_channels: int = 256
    decoder_channels: int = 0  # the decoder's base width; 0 = base_channels (the same widths as the encoder's)
    discriminator_channels: int = 0  # the discriminator's base width; 0 = base_channels
    upsample: str = "transposed"  # "transposed" | "resize" (nearest upsample + 3x3 conv)
    spectral_norm: bool = True
    feature_layer: int = 3  # discriminator block (1-based) whose output is the similarity feature
    discriminator_scales: int = 1  # 2+: more discriminators on the image average-pooled 2x, 4x, ...

    @property
    def depth(self) -> int:
        """Stride-2 stages between the image and the 4x4 bottleneck."""
        depth = int(math.log2(self.image_size // 4))
        if 4 * 2**depth != self.image_size or depth < 1:
            raise ValueError(f"image_size must be a power of two >= 8, got {self.image_size}")
        return depth

    def widths(self, base: int = 0) -> list[int]:
        """Channels after each downsampling stage (image side), from ``base`` (default
        ``base_channels``: the encoder's), doubling per stage up to ``max_channels``."""
        base = base or self.base_channels
        return [min(base * 2**i, self.max_channels) for i in range(self.depth)]

    def decoder_widths(self) -> list[int]:
        """The decoder's channels, image side first: from ``decoder_channels`` when it is set,
        so the generator can be wider or narrower than the networks it is trained with."""
        return self.widths(self.decoder_channels)

    def discriminator_widths(self) -> list[int]:
        """The discriminator's channels: from ``discriminator_channels`` when it is set."""
        return self.widths(self.discriminator_channels)


class Encoder(nn.Module):
    """(B, 3, S, S) in [-1, 1] -> mu, logvar, each (B, latent_dim)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for i, width in enumerate(config.widths()):
            layers += [nn.Conv2d(in_channels, width, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers += [nn.BatchNorm2d(width)]
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            in_channels = width
        self.features = nn.Sequential(*layers)  # (B, widths[-1], 4, 4)
        self.to_moments = nn.Linear(in_channels * 16, 2 * config.latent_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_moments(self.features(images).flatten(1)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """The generator: (B, latent_dim) -> (B, 3, S, S) in [-1, 1]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        widths = config.decoder_widths()[::-1]  # bottleneck first
        self.bottleneck_channels = widths[0]
        self.project = nn.Sequential(
            nn.Linear(config.latent_dim, widths[0] * 16, bias=False),
        )
        self.project_norm = nn.Sequential(nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))  # (B, w0, 4, 4)
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            out_channels = 3 if last else widths[i + 1]
            if config.upsample == "transposed":
                layers += [nn.ConvTranspose2d(width, out_channels, 4, 2, 1, bias=last)]
            else:
                # Resize then convolve: no checkerboard pattern (Odena et al. 2016).
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, out_channels, 3, 1, 1, bias=last)]
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        self.upsample = nn.Sequential(*layers)  # each stage doubles the side: 4 -> S

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.project(latent).view(-1, self.bottleneck_channels, 4, 4)
        return self.upsample(self.project_norm(x))


class Discriminator(nn.Module):
    """(B, 3, S, S) -> (logits (B,), features of block ``feature_layer``).

    ``spectral_norm=False`` (the default run's) gives the DCGAN discriminator: batch norm
    after every conv but the first. Its outputs then depend on the batch, so the training
    step feeds real and fake images as separate batches (``training.discriminate``).
    With spectral norm (Miyato et al. 2018) there is no batch norm: the Lipschitz bound
    steadies the game, and features stay a function of each image alone.

    ``discriminator_scales`` > 1 adds one discriminator of the same design per further scale,
    each on the image average-pooled 2x, 4x, ... (the multi-scale discriminator of Wang et al.
    2018, pix2pixHD): a network that sees a 16x16 thumbnail judges the face's layout (where
    hair, eyes and mouth sit), not its pixel texture. The logits are then (B, scales), one
    column per scale, so the losses (elementwise means) average the scales' losses; the
    similarity features come from the full-resolution network alone.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not 1 <= config.feature_layer <= config.depth:
            raise ValueError(f"feature_layer must be in 1..{config.depth} for image_size {config.image_size}, got {config.feature_layer}")
        norm = _spectral_norm if config.spectral_norm else (lambda module: module)
        blocks = []
        in_channels = 3
        for i, width in enumerate(config.discriminator_widths()):
            block: list[nn.Module] = [norm(nn.Conv2d(in_channels, width, 4, 2, 1))]
            if not config.spectral_norm and i > 0:
                block += [nn.BatchNorm2d(width)]
            block += [nn.LeakyReLU(0.2, inplace=True)]
            blocks.append(nn.Sequential(*block))  # side halves each block; last is 4x4
            in_channels = width
        self.blocks = nn.ModuleList(blocks)
        self.feature_layer = config.feature_layer
        self.has_batch_norm = not config.spectral_norm  # then real and fake batches must be fed apart
        self.classify = norm(nn.Linear(in_channels * 16, 1))
        scales = config.discriminator_scales
        if scales < 1 or config.image_size >> (scales - 1) < 8:
            raise ValueError(f"discriminator_scales must be in 1..{config.depth} for image_size {config.image_size} "
                             f"(the coarsest sees at least 8x8), got {scales}")
        # Empty at one scale, so the default discriminator's state dict keeps its keys.
        self.coarser = nn.ModuleList(
            Discriminator(replace(config, image_size=config.image_size >> k, feature_layer=1, discriminator_scales=1))
            for k in range(1, scales))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images
        features = x
        for index, block in enumerate(self.blocks, start=1):
            x = block(x)
            if index == self.feature_layer:
                features = x
        logits = self.classify(x.flatten(1)).squeeze(1)
        if not self.coarser:
            return logits, features
        coarse_logits = [coarse(F.avg_pool2d(images, 2**k))[0] for k, coarse in enumerate(self.coarser, start=1)]
        return torch.stack([logits, *coarse_logits], dim=1), features


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2015): N(0, 0.02) convs, N(1, 0.02) norm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        weight = getattr(module, "weight_orig", module.weight)
        nn.init.normal_(weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps (Kingma and Welling 2014); eps is ``noise`` when given, else drawn here."""
    eps = torch.randn_like(mu) if noise is None else noise.to(mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


class EncoderMoments(nn.Module):
    """The encoder with a single output tensor (B, 2, latent_dim) = [mu, logvar], for
    serving formats (MLflow model signatures) that take one tensor out."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.encoder(images), dim=1)
