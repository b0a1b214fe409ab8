"""The VAE-GAN training loop: every network updated once per batch, from one shared forward.

Per batch (Larsen et al. 2016, Algorithm 1, with the usual modern cures):
  1. encode x -> (mu, logvar), sample z, reconstruct x_rec = Dec(z); draw z_p ~ N(0, I), x_p = Dec(z_p)
  2. the discriminator over x and [x_rec; x_p] (two batches with batch norm, else one pass) gives
     the logits and the similarity features
  3. losses: discriminator (real vs both fakes); encoder + decoder: KL (with warm-up) +
     feature reconstruction in a discriminator layer + optional pixel L1 + adversarial
  4. each loss's gradients go only to its own player; all three networks step; EMA of the
     decoder (used for samples and export)

The loop reports numbers through :class:`TrainingCallbacks` and knows nothing of MLflow or
DVC. Checkpoints hold everything needed to continue bit-for-bit (models, optimisers, EMA,
the CPU and every CUDA RNG state, step, and the hyper-parameters they were made with); they
load with ``torch.load(weights_only=True, map_location="cpu")`` whatever device wrote them,
and the states then move to the training device.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torchvision.utils import make_grid
from alphagan.progress import progress

from alphagan import atomic, losses
from alphagan.augment import diff_augment
from alphagan.config import TrainParams
from alphagan.distributed import Distributed, per_rank_batch
from alphagan.errors import AlphaGanError
from alphagan.models import Decoder, Discriminator, Encoder, ModelConfig, init_weights, reparameterize

CHECKPOINT_VERSION = 1


class TrainingError(AlphaGanError):
    """Training cannot start or continue (bad data, incompatible checkpoint)."""


class TrainingDiverged(TrainingError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


class TrainingCallbacks:
    """Where the loop's numbers and pictures go. The default drops them."""

    def on_resume(self, step: int) -> None:
        """Training continues from a checkpoint at ``step``: anything recorded after it is to be redone."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Scalar metrics (``train/...``) at ``step``."""

    def on_images(self, step: int, epoch: int, images: dict[str, np.ndarray]) -> None:
        """HxWx3 uint8 grids at the end of an epoch: ``samples_ema``, ``samples_raw``, ``reconstructions``."""

    def on_step(self, step: int, model: VaeGan) -> None:
        """After every optimiser step (``step`` counts them, from 1): the networks as they now
        are, to read, not to change (a benchmark keeps more averages of the decoder here)."""


def autocast_for(device: torch.device, precision: str):
    """A factory of autocast contexts: bf16 when ``precision`` is bf16, or auto on CUDA;
    fp32 otherwise (most CPUs have no bf16 units: autocast there is many times slower)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


def model_config(params: TrainParams, image_size: int) -> ModelConfig:
    return ModelConfig(
        image_size=image_size, latent_dim=params.latent_dim, base_channels=params.base_channels,
        max_channels=params.max_channels, upsample=params.upsample, spectral_norm=params.spectral_norm,
        feature_layer=params.feature_layer, discriminator_scales=params.discriminator_scales,
        decoder_channels=params.decoder_channels, discriminator_channels=params.discriminator_channels,
    )


def select_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error, not a fallback."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


#: The EMA ramp's constant: the decay after n updates is (1 + n) / (EMA_RAMP + n) until it
#: reaches ``train.ema_decay``, an average over about (EMA_RAMP + n) / (EMA_RAMP - 1) steps:
#: ~11% of the run so far (``benchmarks/ema_horizon.py`` compares others on one training run).
EMA_RAMP = 10.0


def ramped_decay(n: float, decay: float, ramp: float = EMA_RAMP) -> float:
    """The EMA's decay at its update ``n`` (from 0): min(decay, (1 + n) / (ramp + n))."""
    return min(decay, (1 + n) / (ramp + n))


def ema_with_warmup(decay: float, ramp: float = EMA_RAMP):
    """EMA update whose decay ramps up as min(decay, (1 + n) / (ramp + n)) over updates n.

    A fixed 0.995 keeps ~40% of the random initialisation after 170 steps, and an
    average of random and trained weights draws grey squares; the ramp (as in
    TensorFlow's ExponentialMovingAverage with num_updates, ramp 10) follows the live
    decoder early. A smaller ``ramp`` (> 1) averages over a longer stretch of the run.
    """
    if ramp <= 1:
        raise ValueError(f"ema ramp must be > 1, got {ramp}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        effective = ramped_decay(float(num_averaged), decay, ramp)
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 - effective)
        else:  # integer buffers (BatchNorm's num_batches_tracked): follow the live model
            for mine, live in zip(averaged, current, strict=True):
                mine.copy_(live)

    return update


@dataclass
class VaeGan:
    """The three networks, the decoder's EMA and both optimisers."""

    encoder: Encoder
    decoder: Decoder
    discriminator: Discriminator
    ema_decoder: AveragedModel
    optimizer_vae: torch.optim.Optimizer
    optimizer_discriminator: torch.optim.Optimizer
    config: ModelConfig

    @classmethod
    def build(cls, config: ModelConfig, params: TrainParams, device: torch.device) -> VaeGan:
        encoder, decoder, discriminator = Encoder(config), Decoder(config), Discriminator(config)
        for module in (encoder, decoder, discriminator):
            module.apply(init_weights)
            module.to(device=device, memory_format=torch.channels_last)
        ema = AveragedModel(decoder, multi_avg_fn=ema_with_warmup(params.ema_decay), use_buffers=True)
        betas = (params.beta1, params.beta2)
        optimizer_vae = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=params.lr, betas=betas)
        optimizer_discriminator = torch.optim.Adam(discriminator.parameters(), lr=params.lr_discriminator, betas=betas)
        return cls(encoder, decoder, discriminator, ema, optimizer_vae, optimizer_discriminator, config)

    def state_dict(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder.state_dict(), "decoder": self.decoder.state_dict(),
            "discriminator": self.discriminator.state_dict(), "ema_decoder": self.ema_decoder.state_dict(),
            "optimizer_vae": self.optimizer_vae.state_dict(),
            "optimizer_discriminator": self.optimizer_discriminator.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.decoder.load_state_dict(state["decoder"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.ema_decoder.load_state_dict(state["ema_decoder"])
        self.optimizer_vae.load_state_dict(state["optimizer_vae"])
        self.optimizer_discriminator.load_state_dict(state["optimizer_discriminator"])

    def generator(self) -> nn.Module:
        """The EMA decoder as a plain module (what samples and exports use)."""
        return self.ema_decoder.module


def lr_scale(step: int, total_steps: int, decay_fraction: float) -> float:
    """The factor on both learning rates for the update that ``step`` (from 0) is about to make.

    1 until the last ``decay_fraction`` of ``total_steps``, then a straight line to zero:
    min(1, (total_steps - step) / (decay_fraction * total_steps)), so the last update still
    moves (by 1 / (decay_fraction * total_steps) of the full rate). Why: the two players of a
    GAN trained at a constant rate keep circling each other (this project's discriminator
    loss swings between 0.2 and 2.2 to the end of the default run), and a step size that
    shrinks to zero lets the last stretch settle instead (the linear tail of pix2pix and
    CycleGAN). A pure function of the step, so resuming needs no saved schedule and stays
    bit-exact; a resume that changes the length (``epochs``, ``kimg``) moves the tail with it.
    """
    if decay_fraction <= 0:
        return 1.0
    return min(1.0, (total_steps - step) / (decay_fraction * total_steps))


def set_lr_scale(model: VaeGan, params: TrainParams, scale: float) -> None:
    """Both optimisers' learning rates to their configured values times ``scale``."""
    for optimizer, base in ((model.optimizer_vae, params.lr), (model.optimizer_discriminator, params.lr_discriminator)):
        for group in optimizer.param_groups:
            group["lr"] = base * scale


#: Train params that may change when resuming: how long, where, and how often to report.
#: Any other change (learning rates, loss weights, batch size, architecture, seed) is refused.
#: ``nproc`` may change too: the global batch, and so the maths, stay the same (only the noise
#: draws, which are per rank, differ from those of a run that never stopped).
RESUMABLE_CHANGES = frozenset({"resume", "epochs", "kimg", "max_steps", "device", "nproc", "log_every", "checkpoint_every",
                               "grid_size", "experiment_name", "registered_model_name"})


def save_checkpoint(path: Path, model: VaeGan, step: int, epoch: int, hyperparameters: dict[str, Any] | None = None) -> None:
    """Write atomically (temp file, fsync, rename): a crash mid-write never leaves a broken checkpoint behind.

    Every RNG is saved as a CPU ByteTensor: the CPU generator's and one per CUDA device.
    """
    state = {
        "version": CHECKPOINT_VERSION, "step": step, "epoch": epoch, "model_config": asdict(model.config),
        "models": model.state_dict(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "hyperparameters": hyperparameters or {},
    }
    atomic.save_with(path, lambda temporary: torch.save(state, temporary))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (tensors and plain containers only: no pickled code).

    Loads to the CPU by default whatever device saved it; move states to a device after.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"no checkpoint at {path}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file is a user-facing problem
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]  # torch's messages run to many lines
        raise TrainingError(f"checkpoint {path} cannot be read (not a checkpoint of this pipeline, or corrupt): "
                            f"{type(exc).__name__}: {first_line}") from None
    if state.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"checkpoint {path} has version {state.get('version')}, expected {CHECKPOINT_VERSION}")
    return state


def checkpoint_hyperparameters(params: TrainParams, seed: int) -> dict[str, Any]:
    """What a checkpoint records of the run that made it (compared when resuming)."""
    return {"seed": seed, **{f"train.{k}": v for k, v in params.model_dump(mode="json").items()}}


def check_resume(checkpoint_path: Path, params: TrainParams, image_size: int, seed: int) -> dict[str, Any] | None:
    """The checkpoint to resume from (loaded to CPU), ``None`` when not resuming; refuses misuse.

    ``train.resume: true`` needs a checkpoint; it must be of the same model, and every
    hyper-parameter outside :data:`RESUMABLE_CHANGES` must be unchanged. A change is refused
    with the keys and both values rather than silently kept or silently applied.
    """
    if not params.resume:
        return None
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.exists():
        raise TrainingError(f"train.resume is true but there is no checkpoint at {checkpoint_path}; "
                            "set train.resume=false to start a new run")
    state = load_checkpoint(checkpoint_path)
    config = model_config(params, image_size)
    if asdict(ModelConfig(**state["model_config"])) != asdict(config):  # fields added since: their defaults
        raise TrainingError(f"checkpoint {checkpoint_path} was made with a different model "
                            f"({state['model_config']}); set train.resume=false to start over")
    saved = state.get("hyperparameters") or {}
    now = checkpoint_hyperparameters(params, seed)
    changed = [f"{key} {saved[key]!r} -> {now.get(key)!r}" for key in sorted(saved)
               if key.removeprefix("train.") not in RESUMABLE_CHANGES and saved[key] != now.get(key)]
    if changed:
        raise TrainingError(f"cannot resume {checkpoint_path}: hyper-parameters changed since it was saved "
                            f"({'; '.join(changed)}); restore them, or set train.resume=false to start over with the new ones")
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """CPU generator from its saved ByteTensor; CUDA generators per device, only where CUDA is present."""
    torch.set_rng_state(state["torch_rng"].cpu())
    saved_cuda = state.get("cuda_rng") or []
    if saved_cuda and torch.cuda.is_available():
        for index, rng in enumerate(saved_cuda[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(rng.cpu(), index)


def load_generator(path: Path, map_location: str | torch.device = "cpu") -> tuple[Decoder, Encoder, ModelConfig]:
    """The EMA decoder and the encoder of a checkpoint, in eval mode with gradients off (for inference)."""
    state = load_checkpoint(path, map_location)
    config = ModelConfig(**state["model_config"])
    decoder, encoder = Decoder(config), Encoder(config)
    ema_state = {k.removeprefix("module."): v for k, v in state["models"]["ema_decoder"].items() if k.startswith("module.")}
    decoder.load_state_dict(ema_state)
    encoder.load_state_dict(state["models"]["encoder"])
    return decoder.eval().requires_grad_(False), encoder.eval().requires_grad_(False), config


def to_tensor(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1], channels_last."""
    # Copies only what needs it: a read-only memmap slice; a fancy-indexed batch is already fresh.
    tensor = torch.from_numpy(np.require(batch, np.uint8, ["C", "W"])).to(device, non_blocking=True)
    return (tensor.permute(0, 3, 1, 2).float() / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)


def to_grid(images: torch.Tensor, rows: int | None = None) -> np.ndarray:
    """A batch in [-1, 1] -> one HxWx3 uint8 picture."""
    nrow = rows or max(1, int(math.sqrt(images.shape[0])))
    grid = make_grid(images.detach().float().cpu().clamp(-1, 1), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA max allocated on a GPU; the process's peak resident set on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass
class TrainResult:
    step: int
    epoch: int
    device: str
    images_per_second: float
    peak_memory_bytes: int
    final_losses: dict[str, float] = field(default_factory=dict)
    images_shown: int = 0  # steps x batch size: what ``train.kimg`` counts (in thousands)


def training_steps(params: TrainParams, count: int) -> int:
    """Optimiser steps of a run on ``count`` images: ``kimg`` thousand images when set, else
    ``epochs`` passes over the data (each ``count // batch`` steps); ``max_steps`` caps both."""
    batch_size = min(params.batch_size, count)
    steps = math.ceil(params.kimg * 1000 / batch_size) if params.kimg else params.epochs * (count // batch_size)
    return min(steps, params.max_steps) if params.max_steps else steps


#: Below this many training images epochs mean little and a val split wastes data (Zhao et al.
#: 2020 treat a few thousand images and fewer as few-shot): the train stage points to the switch.
FEW_SHOT_IMAGES = 1000
#: Fewer optimiser steps than this do not learn faces here (the default run takes 4,620).
MIN_USEFUL_STEPS = 1000


def plan_warnings(params: TrainParams, count: int, total_steps: int) -> list[str]:
    """What a run about to start should be told about its own plan: few images with a length
    in epochs, or too few steps to learn anything (a smoke run capped by ``max_steps`` is
    left alone)."""
    warnings = []
    if count < FEW_SHOT_IMAGES and not params.kimg:
        warnings.append(f"{count} training images: with fewer than {FEW_SHOT_IMAGES}, use the few-shot switch (README, "
                        "'A few images of your own'): a length in images shown (train.kimg), every image for training, "
                        "scores against the training set beside the memorisation check")
    capped = params.max_steps and total_steps >= params.max_steps
    if total_steps < MIN_USEFUL_STEPS and not capped:
        warnings.append(f"only {total_steps} optimiser steps: too few to learn faces (the default run takes 4,620); "
                        "set the length in images shown with train.kimg")
    return warnings


def _grad_norm(parameters) -> torch.Tensor:
    """L2 norm over all gradients, left on the device: reading it back would make every
    step wait for the GPU, so the loop reads it only when it logs."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else torch.zeros(())


def latent_noise(batch: int, latent_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(prior latents, reparameterisation noise), each (batch, latent_dim) ~ N(0, I), drawn in that
    order from the global torch generator: what a data-parallel rank draws after seeding it
    with :meth:`Distributed.step_seed`."""
    prior = torch.randn(batch, latent_dim, device=device)
    return prior, torch.randn(batch, latent_dim, device=device)


def reconstruction_count(batch: int, fraction: float) -> int:
    """How many of a batch's images are encoded and reconstructed (at least one)."""
    return max(1, round(batch * fraction))


def discriminate_in_one_pass(discriminator: Discriminator, groups: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every group through the discriminator as one concatenated batch; (logits, features) per group."""
    logits, features = discriminator(torch.cat(groups))
    sizes = [group.shape[0] for group in groups]
    return list(zip(logits.split(sizes), features.split(sizes), strict=True))


def discriminate(discriminator: Discriminator, groups: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The discriminator's (logits, features) for each image group, in order.

    Without batch norm (spectral norm on) the groups go through in one pass: each image's
    output depends on that image alone. A batch-norm discriminator sees each group as a batch
    of its own, real images apart from fakes, as the DCGAN recipe feeds it: over one mixed
    batch the statistics are shared by both populations, which is measured to be what kept
    this discriminator from teaching the decoder (README, "Where the speckle comes from").
    Outputs stay per group (no concatenation to slice again): slicing a joined tensor costs a
    zero-filled gradient of the whole of it in the backward pass.
    """
    if not discriminator.has_batch_norm:
        return discriminate_in_one_pass(discriminator, groups)
    return [discriminator(group) for group in groups]


def train_step(model: VaeGan, real: torch.Tensor, params: TrainParams, step: int, autocast,
               noise: tuple[torch.Tensor, torch.Tensor] | None = None,
               distributed: Distributed | None = None) -> dict[str, torch.Tensor]:
    """One update of all three networks from one shared forward pass; returns the losses (detached).

    As in Larsen et al. 2016 (Algorithm 1), every gradient is taken against the same
    networks before any of them moves. The decoder runs once over [posterior; prior]
    latents, so its batch norm sees one mixed batch (not the two populations in turn),
    and the discriminator sees real images and [reconstructions; prior samples] through
    :func:`discriminate` (two batches for a batch-norm discriminator, else one pass). The
    discriminator loss reaches only the discriminator (``inputs=``). Gradient routing
    for the encoder/decoder (``train.gradient_routing``):

    - ``larsen``: Algorithm 1. The encoder gets KL + reconstruction (feature + pixel);
      the decoder gets reconstruction + adversarial. One more backward pass.
    - ``shared``: one backward of the whole VAE loss into both, so the adversarial term
      also reaches the encoder through the reconstructions.

    ``train.reconstruction_fraction`` < 1 encodes and reconstructs only the first share of
    ``real`` (:func:`reconstruction_count`); the prior samples stay a whole batch, and the
    discriminator sees [real; reconstructions; prior samples] all the same.

    ``noise`` gives the (prior latents, reparameterisation noise) from :func:`latent_noise`;
    None draws them here from the global generator (the single-process run's own order).
    With ``distributed``, ``real`` is this rank's shard: the returned losses are the global-batch
    means (so the NaN guard stops every rank at the same step), and after all backward passes
    each gradient is averaged over the ranks before the optimisers step (see
    :mod:`alphagan.distributed` for why this is not DistributedDataParallel).
    """
    kind, policy = params.adversarial_loss, params.diffaugment
    values_per_image = real[0].numel()
    batch = real.shape[0]
    encoder_parameters, decoder_parameters = list(model.encoder.parameters()), list(model.decoder.parameters())
    discriminator_parameters = list(model.discriminator.parameters())

    encoded = reconstruction_count(batch, params.reconstruction_fraction)
    with autocast():
        mu, logvar = model.encoder(real[:encoded])
        if noise is None:
            prior_latent = torch.randn(batch, model.config.latent_dim, device=real.device, dtype=mu.dtype)
            posterior_latent = reparameterize(mu, logvar)
        else:
            prior_latent = noise[0].to(mu.dtype)
            posterior_latent = reparameterize(mu, logvar, noise[1][:encoded])
        decoded = model.decoder(torch.cat([posterior_latent, prior_latent]))  # (encoded + B, 3, S, S)
        reconstructed = decoded[:encoded]
        (real_logits, real_features), (fake_logits, fake_features) = discriminate(
            model.discriminator, [diff_augment(real, policy), diff_augment(decoded, policy)])
        if policy:  # the similarity metric compares un-augmented images
            (_, real_features), (_, fake_features) = discriminate(model.discriminator, [real[:encoded], reconstructed])
        real_features, reconstructed_features = real_features[:encoded].float(), fake_features[:encoded].float()
        real_logits, fake_logits = real_logits.float(), fake_logits.float()

        loss_d = losses.discriminator_loss(real_logits, fake_logits, kind)
        loss_kl = losses.kl_loss(mu.float(), logvar.float(), values_per_image)
        loss_feature = losses.feature_reconstruction_loss(reconstructed_features, real_features)
        loss_pixel = losses.pixel_reconstruction_loss(reconstructed.float(), real[:encoded])
        loss_adv = losses.generator_loss(fake_logits, kind)
        kl_scale = losses.kl_warmup(step, params.kl_warmup_steps)
        loss_reconstruction = (params.kl_weight * kl_scale * loss_kl + params.feature_weight * loss_feature
                               + params.pixel_weight * loss_pixel)
        loss_vae = loss_reconstruction + params.adversarial_weight * loss_adv
    named = {"loss_d": loss_d, "loss_kl": loss_kl, "loss_feature": loss_feature, "loss_pixel": loss_pixel,
             "loss_adv_g": loss_adv, "loss_vae": loss_vae}
    reported = distributed.average_losses(named) if distributed else named
    for name, value in reported.items():  # before any update: the models in memory stay good too
        if not torch.isfinite(value):
            raise TrainingDiverged(f"step {step}: {name} is {value.item()}; stopping, last good checkpoint left intact")

    model.optimizer_vae.zero_grad(set_to_none=True)
    model.optimizer_discriminator.zero_grad(set_to_none=True)
    if params.gradient_routing == "larsen":
        loss_reconstruction.backward(inputs=encoder_parameters + decoder_parameters, retain_graph=True)
        (params.adversarial_weight * loss_adv).backward(inputs=decoder_parameters, retain_graph=True)
    else:
        loss_vae.backward(inputs=encoder_parameters + decoder_parameters, retain_graph=True)
    loss_d.backward(inputs=discriminator_parameters)
    if distributed:
        distributed.average_gradients(encoder_parameters + decoder_parameters + discriminator_parameters)
    grad_norm_vae = _grad_norm(encoder_parameters + decoder_parameters)
    grad_norm_d = _grad_norm(discriminator_parameters)
    model.optimizer_vae.step()
    model.optimizer_discriminator.step()
    model.ema_decoder.update_parameters(model.decoder)
    if distributed:
        distributed.broadcast_buffers([model.encoder, model.decoder, model.discriminator])
    result = {k: v.detach() for k, v in reported.items()}
    result["grad_norm_d"] = grad_norm_d
    result["grad_norm_vae"] = grad_norm_vae
    result["kl_scale"] = torch.tensor(kl_scale)
    return result


@torch.no_grad()
def epoch_images(model: VaeGan, fixed_latent: torch.Tensor, val_batch: torch.Tensor) -> dict[str, np.ndarray]:
    """Sample grids from the fixed latent batch (EMA and raw decoder) and val reconstructions."""
    was_training = model.decoder.training
    model.decoder.eval(); model.encoder.eval()
    generator = model.generator().eval()
    mu, _ = model.encoder(val_batch)
    reconstructed = generator(mu)
    pairs = torch.stack([val_batch, reconstructed], dim=1).flatten(0, 1)  # original, reconstruction, ...
    images = {
        "samples_ema": to_grid(generator(fixed_latent)),
        "samples_raw": to_grid(model.decoder(fixed_latent)),
        "reconstructions": to_grid(pairs, rows=max(2, 2 * int(math.sqrt(val_batch.shape[0])))),
    }
    model.decoder.train(was_training); model.encoder.train(was_training)
    return images


def seeded_model(params: TrainParams, image_size: int, seed: int, device: torch.device) -> VaeGan:
    """The networks as a run of ``seed`` starts them (the global torch seed is set first)."""
    torch.manual_seed(seed)
    return VaeGan.build(model_config(params, image_size), params, device)


def picture_inputs(params: TrainParams, seed: int, train_images: np.ndarray, val_images: np.ndarray,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed inputs for the epoch pictures: the same latents (their own seeded generator) and
    the first 16 val faces every epoch, so epochs compare."""
    fixed_latent = torch.randn(params.grid_size, params.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    shown = val_images if len(val_images) else train_images
    return fixed_latent, to_tensor(shown[: min(16, len(shown))], device)


def train(
    train_images: np.ndarray, val_images: np.ndarray, params: TrainParams, image_size: int, seed: int,
    checkpoint_path: Path, callbacks: TrainingCallbacks | None = None, max_seconds: float = 0.0,
    distributed: Distributed | None = None,
) -> TrainResult:
    """Train (or resume) the VAE-GAN on uint8 NHWC arrays; writes ``checkpoint_path``.

    ``max_seconds`` (0 = off) stops after that much wall time, for equal-time comparisons.
    The learning rates' tail (``train.lr_decay_fraction``, :func:`lr_scale`) follows the planned
    length, so a ``max_seconds`` stop cuts it short.

    With ``distributed`` (this process is one rank of a data-parallel run, from
    :func:`alphagan.distributed.start`), ``params.batch_size`` is the global batch: each
    step this rank reads only its shard of the global batch's rows of the epoch's
    permutation (which depends on (seed, epoch) alone), and draws its noise from the
    generator seeded by (seed, rank, step). All ranks load the same checkpoint to resume;
    only rank 0 writes checkpoints and reports through ``callbacks`` (other ranks' are ignored).
    """
    main = distributed is None or distributed.is_main
    callbacks = (callbacks if main else None) or TrainingCallbacks()
    if train_images.ndim != 4 or train_images.shape[1:] != (image_size, image_size, 3) or train_images.dtype != np.uint8:
        raise TrainingError(f"training data must be uint8 (N, {image_size}, {image_size}, 3), got {train_images.dtype} {train_images.shape}")
    count = len(train_images)
    if count == 0:
        raise TrainingError("training data is empty")
    device = distributed.device if distributed else select_device(params.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast = autocast_for(device, params.precision)
    model = seeded_model(params, image_size, seed, device)

    batch_size = min(params.batch_size, count)  # the global batch
    rank_batch = per_rank_batch(batch_size, distributed.world_size) if distributed else batch_size
    steps_per_epoch = count // batch_size
    total_steps = training_steps(params, count)
    if main:
        shared = f" ({rank_batch} on each of {distributed.world_size} processes)" if distributed else ""
        print(f"train: {total_steps} steps of {batch_size} images{shared} = {total_steps * batch_size / 1000:g} kimg = "
              f"{total_steps / steps_per_epoch:.4g} epochs of {count} images"
              f"{' (from train.kimg)' if params.kimg else ''}{' (capped by train.max_steps)' if params.max_steps and params.max_steps < total_steps else ''}",
              file=sys.stderr)
        for warning in plan_warnings(params, count, total_steps):
            print(f"train: warning: {warning}", file=sys.stderr)
    fixed_latent, val_batch = picture_inputs(params, seed, train_images, val_images, device)
    networks = [model.encoder, model.decoder, model.discriminator]

    def checkpoint(step: int, epoch: int) -> None:
        if distributed:  # rank 0's file stands for every rank's model: check that it does
            distributed.check_in_sync(networks, step)
        if main:
            save_checkpoint(checkpoint_path, model, step, epoch, hyperparameters)

    step = 0
    hyperparameters = checkpoint_hyperparameters(params, seed)
    state = check_resume(checkpoint_path, params, image_size, seed)
    if state is not None:
        model.load_state_dict(state["models"])  # CPU tensors copied into the models on `device`
        restore_rng(state)
        step = int(state["step"])
        callbacks.on_resume(step)
        del state
    if distributed:  # after any resume: batch norm over the global batch, rank 0's weights everywhere
        distributed.prepare(networks)

    bar = progress(total=total_steps, initial=step, desc="train", unit="step", enabled=main)
    window_start, window_images = time.perf_counter(), 0
    images_per_second = 0.0
    last: dict[str, float] = {}
    model.encoder.train(); model.decoder.train(); model.discriminator.train()
    order_epoch, order = -1, np.empty(0, dtype=np.int64)
    started = time.perf_counter()
    while step < total_steps:
        out_of_time = bool(max_seconds) and time.perf_counter() - started >= max_seconds
        if distributed and max_seconds:  # rank 0's clock is not rank 1's: stop together
            out_of_time = distributed.any(out_of_time)
        if out_of_time:
            total_steps = step  # the budget is spent: finish as if this were the last step
            break
        epoch, offset = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            # The order of epoch e depends only on (seed, e): resuming mid-epoch needs no saved state.
            order_epoch, order = epoch, np.random.default_rng([seed, epoch]).permutation(count)
        rows = order[offset * batch_size:(offset + 1) * batch_size]
        set_lr_scale(model, params, lr_scale(step, total_steps, params.lr_decay_fraction))
        if distributed:
            rows = distributed.shard(rows)
            torch.manual_seed(distributed.step_seed(seed, step))  # DiffAugment draws from it too
            noise = latent_noise(rank_batch, params.latent_dim, device)
            real = to_tensor(train_images[np.sort(rows)], device)
            named = train_step(model, real, params, step, autocast, noise=noise, distributed=distributed)
        else:  # the single-process call, as before (wrappers of train_step in tests rely on it)
            named = train_step(model, to_tensor(train_images[np.sort(rows)], device), params, step, autocast)
        step += 1
        window_images += batch_size
        bar.update(1)
        if main:
            callbacks.on_step(step, model)
        if main and (step % params.log_every == 0 or step == total_steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - window_start
            images_per_second = window_images / elapsed if elapsed > 0 else 0.0
            last = {name: float(value) for name, value in named.items()}
            metrics = {f"train/{name}": value for name, value in last.items()}
            metrics.update({
                "train/images_per_second": images_per_second, "train/peak_memory_bytes": float(peak_memory_bytes(device)),
                "train/lr_vae": model.optimizer_vae.param_groups[0]["lr"],
                "train/lr_discriminator": model.optimizer_discriminator.param_groups[0]["lr"],
                "train/epoch": float(epoch),
            })
            callbacks.on_metrics(step, metrics)
            bar.set_postfix(d=f"{last['loss_d']:.3f}", vae=f"{last['loss_vae']:.3f}", ips=f"{images_per_second:.0f}")
            window_start, window_images = time.perf_counter(), 0
        if step % params.checkpoint_every == 0 and step < total_steps:
            checkpoint(step, epoch)
        if main and (step % steps_per_epoch == 0 or step == total_steps):
            callbacks.on_images(step, epoch, epoch_images(model, fixed_latent, val_batch))
    bar.close()
    checkpoint(step, step // steps_per_epoch)
    if distributed:  # no rank returns before the final checkpoint is on disk (another run may resume from it)
        distributed.barrier()
    return TrainResult(step=step, epoch=step // steps_per_epoch, device=str(device), images_per_second=images_per_second,
                       images_shown=step * batch_size,
                       peak_memory_bytes=peak_memory_bytes(device), final_losses=last)
