"""VAE-GAN losses: small pure functions over tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor, values_per_image: int) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) = -1/2 sum(1 + logvar - mu^2 - exp(logvar)), per image.

    Divided by the number of image values (C*H*W) so its weight does not have to change
    with resolution, then averaged over the batch.
    """
    per_image = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    return per_image.mean() / values_per_image


def kl_warmup(step: int, warmup_steps: int) -> float:
    """Linear KL annealing from 0 to 1 over ``warmup_steps`` (Bowman et al. 2016)."""
    return 1.0 if warmup_steps <= 0 else min(1.0, step / warmup_steps)


def feature_reconstruction_loss(reconstructed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Learned similarity (Larsen et al. 2016, eq. 9): MSE between discriminator features.

    ``real`` is detached: the encoder/decoder move toward the real features, not the reverse.
    """
    return F.mse_loss(reconstructed, real.detach())


def pixel_reconstruction_loss(reconstructed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel error: anchors colours the feature term is blind to."""
    return F.l1_loss(reconstructed, real)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The discriminator's loss on real and fake logits.

    - ``bce``: binary cross-entropy with labels 1 / 0, as in the Keras original (the
      logistic loss of Goodfellow et al. 2014; "non-saturating" names the same thing).
    - ``hinge``: mean(relu(1 - real)) + mean(relu(1 + fake)) (Lim and Ye 2017; Miyato et al. 2018).
    """
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    raise ValueError(f"unknown adversarial loss {kind!r}")


def generator_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The generator's adversarial loss: ``-mean(fake)`` for hinge; for ``bce`` the
    non-saturating ``-log D(G(z))`` (BCE against label 1), as in the Keras original."""
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    raise ValueError(f"unknown adversarial loss {kind!r}")
