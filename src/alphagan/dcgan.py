"""The plain DCGAN recipe (Radford et al. 2015, as in pytorch/examples/dcgan): the anchor a
user would try first, scaled to ``image_size``. Benchmarks train it beside the VAE-GAN on
the same data and budget; tests import it like any other model.

Generator: transposed convs from a 1x1 latent with batch norm and ReLU, tanh out.
Discriminator: strided convs with batch norm (not on the first) and LeakyReLU(0.2).
BCE, Adam 2e-4, betas (0.5, 0.999), N(0, 0.02) init. Widths: ``width`` at the image side
doubling to the 4x4 bottleneck (``ngf = ndf = width``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alphagan.models import init_weights


@dataclass(frozen=True)
class DcganConfig:
    image_size: int = 32
    latent_dim: int = 100
    width: int = 32
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)

    @property
    def channels(self) -> list[int]:
        """Widths from the 4x4 bottleneck out to the last hidden layer, e.g. 128, 64, 32 at 32 px."""
        depth = int(math.log2(self.image_size // 4))
        return [self.width * 2 ** (depth - 1 - i) for i in range(depth)]


class DcganGenerator(nn.Module):
    """(B, latent_dim) -> (B, 3, S, S) in [-1, 1]."""

    def __init__(self, config: DcganConfig):
        super().__init__()
        channels = config.channels
        layers: list[nn.Module] = [nn.ConvTranspose2d(config.latent_dim, channels[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(channels[0]), nn.ReLU(True)]  # (B, c0, 4, 4)
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]  # (B, 3, S, S)
        self.net = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent[:, :, None, None])


class DcganDiscriminator(nn.Module):
    """(B, 3, S, S) -> logits (B,)."""

    def __init__(self, config: DcganConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(config.channels[::-1]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)] + ([nn.BatchNorm2d(c_out)] if i else [])
            layers += [nn.LeakyReLU(0.2, True)]
            c_in = c_out
        layers += [nn.Conv2d(c_in, 1, 4, 1, 0, bias=False)]  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).flatten()


class Dcgan:
    """Both networks and their optimisers; :meth:`step` is one update of each (D first)."""

    def __init__(self, config: DcganConfig, device: torch.device):
        self.config, self.device = config, device
        self.generator, self.discriminator = DcganGenerator(config), DcganDiscriminator(config)
        for module in (self.generator, self.discriminator):
            module.apply(init_weights)
            module.to(device=device, memory_format=torch.channels_last)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), config.lr, betas=config.betas)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), config.lr, betas=config.betas)

    def step(self, real: torch.Tensor, autocast) -> dict[str, torch.Tensor]:
        latent = torch.randn(real.shape[0], self.config.latent_dim, device=real.device)
        with autocast():
            fake = self.generator(latent)
            real_logits, fake_logits = self.discriminator(real).float(), self.discriminator(fake.detach()).float()
            loss_d = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                      + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        self.optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.optimizer_d.step()
        with autocast():
            logits = self.discriminator(fake).float()
            loss_g = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        self.optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.optimizer_g.step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}


def train_dcgan(images: np.ndarray, config: DcganConfig, seed: int, device: torch.device, batch_size: int = 64,
                max_steps: int = 0, max_seconds: float = 0.0, autocast=None) -> tuple[Dcgan, int, float]:
    """Train on uint8 NHWC images until ``max_steps`` or ``max_seconds`` (whichever is set
    and comes first). Batches follow the same seeded per-epoch permutation as the
    VAE-GAN's loop. Returns (model, steps, seconds)."""
    from alphagan.training import to_tensor

    if not (max_steps or max_seconds):
        raise ValueError("train_dcgan needs max_steps or max_seconds")
    autocast = autocast or (lambda: torch.autocast(device.type, enabled=False))
    torch.manual_seed(seed)
    model = Dcgan(config, device)
    count = len(images)
    batch_size = min(batch_size, count)
    steps_per_epoch = count // batch_size
    step, start = 0, time.perf_counter()
    order_epoch, order = -1, np.empty(0, dtype=np.int64)
    while True:
        elapsed = time.perf_counter() - start
        if (max_steps and step >= max_steps) or (max_seconds and elapsed >= max_seconds):
            break
        epoch, offset = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order_epoch, order = epoch, np.random.default_rng([seed, epoch]).permutation(count)
        rows = np.sort(order[offset * batch_size:(offset + 1) * batch_size])
        model.step(to_tensor(images[rows], device), autocast)
        step += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return model, step, time.perf_counter() - start
