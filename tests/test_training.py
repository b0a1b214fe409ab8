"""Training loop: determinism and resume, the NaN guard, shapes; the stage with MLflow."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alphagan import losses
from alphagan.config import ConfigError, parse_params
from alphagan.models import Decoder, Discriminator, Encoder, ModelConfig, reparameterize
from alphagan.training import (TrainingCallbacks, TrainingDiverged, TrainingError, VaeGan, autocast_for, load_checkpoint, load_generator,
                                lr_scale, model_config, plan_warnings, reconstruction_count, to_tensor, train, train_step,
                                training_steps)

TINY_TRAIN = {"batch_size": 4, "latent_dim": 8, "base_channels": 8, "max_channels": 16, "feature_layer": 1,
              "log_every": 1, "checkpoint_every": 1, "grid_size": 4, "kl_warmup_steps": 2, "device": "cpu"}


def tiny_params(**train_overrides):
    return parse_params({"data": {"image_size": 16}, "train": {**TINY_TRAIN, **train_overrides}})


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8), rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("upsample", ["transposed", "resize"])
def test_model_shapes_follow_image_size(size, upsample):
    config = ModelConfig(image_size=size, latent_dim=16, base_channels=4, max_channels=16, upsample=upsample, feature_layer=2)
    x = torch.randn(2, 3, size, size)
    mu, logvar = Encoder(config)(x)
    assert mu.shape == logvar.shape == (2, 16)
    assert Decoder(config)(mu).shape == (2, 3, size, size)
    logits, features = Discriminator(config)(x)
    assert logits.shape == (2,) and features.shape == (2, 8, size // 4, size // 4)


def test_losses_match_their_formulas():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    assert losses.kl_loss(mu, logvar, values_per_image=2).item() == pytest.approx(0.25)  # 0.5 * 1^2 / 2
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert losses.discriminator_loss(real, fake, "hinge").item() == pytest.approx((0 + 0.5) / 2 + (0 + 1.5) / 2)
    softplus = lambda x: float(torch.log1p(torch.exp(torch.as_tensor(x))))  # noqa: E731
    assert losses.discriminator_loss(real, fake, "bce").item() == pytest.approx(
        (softplus(-2.0) + softplus(-0.5)) / 2 + (softplus(-2.0) + softplus(0.5)) / 2)
    assert losses.generator_loss(fake, "bce").item() == pytest.approx((softplus(2.0) + softplus(-0.5)) / 2)
    assert losses.generator_loss(fake, "hinge").item() == pytest.approx(0.75)
    assert losses.kl_warmup(5, 10) == 0.5 and losses.kl_warmup(50, 10) == 1.0


def _all_tensors(state):
    flat = {}
    for group, modules in state["models"].items():
        if group.startswith("optimizer"):
            for index, values in modules["state"].items():
                for key, value in values.items():
                    flat[f"{group}.{index}.{key}"] = value
        else:
            flat.update({f"{group}.{k}": v for k, v in modules.items()})
    return flat


def test_resume_gives_the_same_weights_as_straight_training(tmp_path, images):
    train_images, val_images = images
    straight = train(train_images, val_images, tiny_params(max_steps=4).train, 16, 3, tmp_path / "straight.pt")
    train(train_images, val_images, tiny_params(max_steps=2).train, 16, 3, tmp_path / "resumed.pt")
    assert load_checkpoint(tmp_path / "resumed.pt")["step"] == 2
    resumed = train(train_images, val_images, tiny_params(max_steps=4, resume=True).train, 16, 3, tmp_path / "resumed.pt")
    assert straight.step == resumed.step == 4
    a, b = _all_tensors(load_checkpoint(tmp_path / "straight.pt")), _all_tensors(load_checkpoint(tmp_path / "resumed.pt"))
    assert a.keys() == b.keys() and len(a) > 40
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []
    # And training did move the weights (the comparison above is not of two untouched models).
    fresh = train(train_images, val_images, tiny_params(max_steps=1).train, 16, 3, tmp_path / "one.pt")
    assert fresh.step == 1
    c = _all_tensors(load_checkpoint(tmp_path / "one.pt"))
    assert not torch.equal(a["decoder.project.0.weight"], c["decoder.project.0.weight"])


def test_lr_scale_is_constant_then_a_straight_line_to_zero():
    # 100 steps, the last quarter decays: 25 updates at 25/25, 24/25, ..., 1/25 of the full rate.
    scales = [lr_scale(step, 100, 0.25) for step in range(100)]
    assert scales[:76] == [1.0] * 76
    assert scales[76:] == pytest.approx([(100 - step) / 25 for step in range(76, 100)])
    assert scales[-1] == pytest.approx(0.04) and all(a > b for a, b in zip(scales[75:], scales[76:]))
    assert {lr_scale(step, 100, 0.0) for step in range(100)} == {1.0}
    assert lr_scale(0, 100, 1.0) == 1.0 and lr_scale(50, 100, 1.0) == pytest.approx(0.5)


class _LearningRates(TrainingCallbacks):
    def __init__(self):
        self.seen = {}

    def on_metrics(self, step, metrics):
        self.seen[step] = (metrics["train/lr_vae"], metrics["train/lr_discriminator"])


def test_learning_rates_decay_over_the_tail_and_reach_the_optimiser(tmp_path, images):
    train_images, val_images = images
    params = tiny_params(max_steps=4, lr_decay_fraction=0.5, lr=1e-3, lr_discriminator=4e-4).train
    rates = _LearningRates()
    train(train_images, val_images, params, 16, 3, tmp_path / "decayed.pt", callbacks=rates)
    # Steps 1-4 logged after their update; the last two updates ran at 2/2 and 1/2 of the rate.
    assert rates.seen == {1: (1e-3, 4e-4), 2: (1e-3, 4e-4), 3: (1e-3, 4e-4), 4: (5e-4, 2e-4)}
    # The optimiser really used it: the same run at constant rates ends with other weights.
    train(train_images, val_images, tiny_params(max_steps=4, lr=1e-3, lr_discriminator=4e-4).train, 16, 3, tmp_path / "constant.pt")
    decayed, constant = _all_tensors(load_checkpoint(tmp_path / "decayed.pt")), _all_tensors(load_checkpoint(tmp_path / "constant.pt"))
    assert not torch.equal(decayed["decoder.project.0.weight"], constant["decoder.project.0.weight"])


class _Interrupt(TrainingCallbacks):
    """Stops the run after ``at`` updates, before that step's checkpoint (as a kill would)."""

    def __init__(self, at):
        self.at = at

    def on_step(self, step, model):
        if step == self.at:
            raise KeyboardInterrupt


def test_a_run_killed_mid_decay_resumes_to_the_same_bits(tmp_path, images):
    # The whole run decays (scales 1, 3/4, 1/2, 1/4); killed after 3 updates it restarts from the
    # checkpoint of step 2, so steps 3 and 4 rerun from the schedule alone.
    train_images, val_images = images
    params = tiny_params(max_steps=4, lr_decay_fraction=1.0)
    rates = _LearningRates()
    train(train_images, val_images, params.train, 16, 3, tmp_path / "straight.pt", callbacks=rates)
    assert [rates.seen[step][0] for step in (1, 2, 3, 4)] == pytest.approx([5e-4 * f for f in (1, 0.75, 0.5, 0.25)])
    with pytest.raises(KeyboardInterrupt):
        train(train_images, val_images, params.train, 16, 3, tmp_path / "resumed.pt", callbacks=_Interrupt(3))
    assert load_checkpoint(tmp_path / "resumed.pt")["step"] == 2
    train(train_images, val_images, params.train.model_copy(update={"resume": True}), 16, 3, tmp_path / "resumed.pt")
    straight, resumed = _all_tensors(load_checkpoint(tmp_path / "straight.pt")), _all_tensors(load_checkpoint(tmp_path / "resumed.pt"))
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []


def _one_step(params, images):
    """A fresh tiny model (seeded) after one train_step; its three networks' weights."""
    torch.manual_seed(0)
    model = VaeGan.build(model_config(params.train, 16), params.train, torch.device("cpu"))
    real = to_tensor(images[0][:4], torch.device("cpu"))
    train_step(model, real, params.train, step=5, autocast=lambda: torch.autocast("cpu", enabled=False))
    return {name: {k: v.clone() for k, v in getattr(model, name).state_dict().items()}
            for name in ("encoder", "decoder", "discriminator")}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_each_players_loss_moves_only_its_own_network(images):
    # One forward serves both players; the two backward passes must keep their gradients apart.
    # The discriminator's update depends on the fakes, not on the encoder/decoder's loss weights:
    base = _one_step(tiny_params(), images)
    other_vae_weights = _one_step(tiny_params(kl_weight=0.5, pixel_weight=3.0, feature_weight=1.0), images)
    assert _same(base["discriminator"], other_vae_weights["discriminator"])
    assert not _same(base["decoder"], other_vae_weights["decoder"])  # the weights did matter where they should
    # With no discriminator terms in the encoder/decoder loss, the kind of the discriminator's
    # loss must not reach the encoder or decoder:
    no_gan = {"adversarial_weight": 0.0, "feature_weight": 0.0}
    hinge, bce = _one_step(tiny_params(adversarial_loss="hinge", **no_gan), images), _one_step(tiny_params(adversarial_loss="bce", **no_gan), images)
    assert _same(hinge["encoder"], bce["encoder"]) and _same(hinge["decoder"], bce["decoder"])
    assert not _same(hinge["discriminator"], bce["discriminator"])


def test_resume_refuses_a_different_model(tmp_path, images):
    train(*images, tiny_params(max_steps=1).train, 16, 0, tmp_path / "c.pt")
    with pytest.raises(TrainingError, match="different model"):
        train(*images, tiny_params(max_steps=2, resume=True, latent_dim=4).train, 16, 0, tmp_path / "c.pt")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, images, monkeypatch):
    real_kl = losses.kl_loss
    calls = {"n": 0}

    def kl_that_breaks_on_the_third_step(*args, **kwargs):
        calls["n"] += 1
        value = real_kl(*args, **kwargs)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(losses, "kl_loss", kl_that_breaks_on_the_third_step)
    with pytest.raises(TrainingDiverged, match=r"step 2: loss_kl is nan"):
        train(*images, tiny_params(max_steps=5).train, 16, 0, tmp_path / "c.pt")
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in _all_tensors(state).values() if v.is_floating_point())


def test_generator_loads_from_checkpoint_and_draws(tmp_path, images):
    train(*images, tiny_params(max_steps=2).train, 16, 0, tmp_path / "c.pt")
    decoder, encoder, config = load_generator(tmp_path / "c.pt")
    with torch.no_grad():
        out = decoder(torch.randn(3, config.latent_dim))
    assert out.shape == (3, 3, 16, 16) and out.abs().max() <= 1


def test_cuda_requested_without_gpu_is_a_clear_error(images, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(TrainingError, match="no CUDA device"):
        train(*images, tiny_params(device="cuda").train, 16, 0, tmp_path / "c.pt")


def test_feature_layer_must_fit_the_depth():
    with pytest.raises(ConfigError, match=r"train.feature_layer 3 exceeds .* 2 blocks at data.image_size 16"):
        parse_params({"data": {"image_size": 16}, "train": {"feature_layer": 3}})


def test_cli_sample_draws_a_grid(tmp_path, images):
    from PIL import Image

    from alphagan.cli import main

    train(*images, tiny_params(max_steps=1).train, 16, 0, tmp_path / "c.pt")
    assert main(["sample", "--checkpoint", str(tmp_path / "c.pt"), "--count", "4", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size == (2 * 18 + 2, 2 * 18 + 2)  # 2x2 faces, 2 px padding
    assert main(["sample", "--checkpoint", str(tmp_path / "missing.pt")]) == 1


def test_larsen_routing_keeps_the_adversarial_term_out_of_the_encoder(images):
    # Algorithm 1: the encoder's update depends on KL + reconstruction only; the decoder's on the GAN term too.
    quiet, loud = (_one_step(tiny_params(adversarial_weight=w, gradient_routing="larsen"), images) for w in (0.0, 5.0))
    assert _same(quiet["encoder"], loud["encoder"])
    assert not _same(quiet["decoder"], loud["decoder"])
    # The shared routing sends it to the encoder as well (the deviation the param names).
    quiet, loud = (_one_step(tiny_params(adversarial_weight=w, gradient_routing="shared"), images) for w in (0.0, 5.0))
    assert not _same(quiet["encoder"], loud["encoder"])


def test_decoder_batch_norm_sees_posterior_and_prior_latents_as_one_batch(images, monkeypatch):
    params = tiny_params()
    torch.manual_seed(0)
    model = VaeGan.build(model_config(params.train, 16), params.train, torch.device("cpu"))
    seen = []
    model.decoder.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    train_step(model, to_tensor(images[0][:4], torch.device("cpu")), params.train, 0, lambda: torch.autocast("cpu", enabled=False))
    assert seen == [8]  # one call over [posterior; prior], not two of 4


def test_ema_follows_the_warm_up_formula(images):
    from alphagan.training import ema_with_warmup

    update = ema_with_warmup(0.999)
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    update(averaged, current, torch.tensor(0))  # decay min(0.999, 1/10): 90% of the live weights
    assert torch.allclose(averaged[0], torch.full((3,), 0.9))
    update(averaged, [torch.full((3,), 2.0)], torch.tensor(10**6))  # late: the configured decay
    assert torch.allclose(averaged[0], torch.full((3,), 0.999 * 0.9 + 0.001 * 2.0))
    counts = [torch.tensor(5)]
    update(counts, [torch.tensor(9)], torch.tensor(3))  # integer buffers follow the live model
    assert counts[0].item() == 9
    slower = ema_with_warmup(0.999, ramp=3)  # a longer average: decay (1 + n) / (3 + n)
    averaged = [torch.zeros(3)]
    slower(averaged, current, torch.tensor(0))  # decay 1/3: two thirds of the live weights
    assert torch.allclose(averaged[0], torch.full((3,), 2 / 3))
    slower(averaged, [torch.full((3,), 2.0)], torch.tensor(7))  # decay 8/10
    assert torch.allclose(averaged[0], torch.full((3,), 0.8 * 2 / 3 + 0.2 * 2.0))
    with pytest.raises(ValueError, match="ramp must be > 1"):
        ema_with_warmup(0.999, ramp=1)  # decay (1 + n) / (1 + n) = 1: the average would never move


def test_spectral_norm_off_gives_a_batch_norm_discriminator_that_trains(tmp_path, images):
    config = model_config(tiny_params(spectral_norm=False).train, 16)
    plain, normed = Discriminator(config), Discriminator(model_config(tiny_params(spectral_norm=True).train, 16))
    assert not any(name.endswith("weight_orig") for name, _ in plain.named_parameters())
    assert any(name.endswith("weight_orig") for name, _ in normed.named_parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    result = train(*images, tiny_params(spectral_norm=False, max_steps=2).train, 16, 0, tmp_path / "c.pt")
    assert result.step == 2 and np.isfinite(result.final_losses["loss_d"])


@pytest.mark.parametrize("spectral_norm", [True, False])
@pytest.mark.parametrize("diffaugment", [[], ["translation"]])
def test_a_batch_norm_discriminator_never_sees_real_and_fake_images_in_one_batch(images, spectral_norm, diffaugment):
    params = tiny_params(spectral_norm=spectral_norm, diffaugment=diffaugment).train
    device = torch.device("cpu")
    model = VaeGan.build(model_config(params, 16), params, device)
    real = to_tensor(images[0][:4], device)
    batches = []
    model.discriminator.register_forward_pre_hook(lambda module, args: batches.append(args[0].detach().clone()))
    train_step(model, real, params, 0, autocast_for(device, "fp32"))
    # Which rows of each pass are real images (exact copies; augmented passes are checked by size only).
    real_rows = [[any(torch.equal(row, r) for r in real) for row in batch] for batch in batches]
    if spectral_norm:  # [real; reconstructions; prior samples] in one pass (+ [real; reconstructions] un-augmented)
        assert [len(b) for b in batches] == [12] + ([8] if diffaugment else [])
        assert real_rows[-1] == [True] * 4 + [False] * (len(batches[-1]) - 4)
    else:  # a pass of real images, then one of generated images (twice with DiffAugment)
        assert [len(b) for b in batches] == [4, 8] + ([4, 4] if diffaugment else [])
        assert all(real_rows[-2]) and not any(real_rows[-1])


def test_diffaugment_translation_and_cutout_do_what_they_say():
    from alphagan.augment import diff_augment

    torch.manual_seed(0)
    images = torch.rand(16, 3, 16, 16) + 1.0  # strictly positive: zeros can only come from the augmentation
    shifted = diff_augment(images, ["translation"])
    for original, moved in zip(images, shifted):
        # Each image is its original shifted by whole pixels (at most 2 at 16 px), zeros shifted in.
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(moved, torch.roll(F.pad(original, [2, 2, 2, 2]), (dy, dx), (1, 2))[:, 2:-2, 2:-2])]
        assert matches, "not a pure integer shift"
    cut = diff_augment(images, ["cutout"])
    zeros = (cut == 0).all(dim=1).sum(dim=(1, 2))
    assert ((zeros > 0) & (zeros <= 64)).all()  # an 8x8 hole at most (half the side), clipped at borders
    coloured = diff_augment(images, ["color"])
    assert not torch.equal(coloured, images) and coloured.shape == images.shape
    assert torch.equal(diff_augment(images, []), images)
    # Differentiable: gradients reach the input through every augmentation.
    x = images.clone().requires_grad_(True)
    diff_augment(x, ["color", "translation", "cutout"]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_time_budget_stops_training(tmp_path, images):
    result = train(*images, tiny_params(epochs=10**4).train, 16, 0, tmp_path / "c.pt", max_seconds=1.0)
    assert 0 < result.step < 10**4 * 3 and load_checkpoint(tmp_path / "c.pt")["step"] == result.step


def test_dcgan_anchor_is_the_examples_recipe_and_trains():
    from alphagan.dcgan import DcganConfig, DcganDiscriminator, DcganGenerator, train_dcgan

    config = DcganConfig(image_size=32, width=8)
    generator, discriminator = DcganGenerator(config), DcganDiscriminator(config)
    assert generator(torch.randn(2, 100)).shape == (2, 3, 32, 32) and discriminator(torch.zeros(2, 3, 32, 32)).shape == (2,)
    widths = [m.out_channels for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [8, 16, 32, 1]
    data = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    model, steps, _ = train_dcgan(data, config, seed=0, device=torch.device("cpu"), batch_size=8, max_steps=3)
    assert steps == 3 and model.optimizer_g.param_groups[0]["lr"] == 2e-4
    again, _, _ = train_dcgan(data, config, seed=0, device=torch.device("cpu"), batch_size=8, max_steps=3)
    assert all(torch.equal(a, b) for a, b in zip(model.generator.state_dict().values(), again.generator.state_dict().values()))


def test_the_gpu_precision_path_runs_on_the_cpu(tmp_path, images, monkeypatch):
    """The bf16 autocast branch that CUDA takes by default, exercised on the CPU: the same
    ``autocast_for`` factory, channels_last inputs and the memory accounting, end to end."""
    from alphagan import training

    seen: dict[str, torch.dtype] = {}
    original_step = training.train_step

    def watched_step(model, real, params, step, autocast):
        assert real.is_contiguous(memory_format=torch.channels_last)
        def record(module, inputs, output) -> None:  # a hook that returned a value would replace the output
            seen.setdefault("discriminator", (output[0] if isinstance(output, tuple) else output).dtype)

        hook = model.discriminator.register_forward_hook(record)
        try:
            return original_step(model, real, params, step, autocast)
        finally:
            hook.remove()

    monkeypatch.setattr(training, "train_step", watched_step)
    result = train(*images, tiny_params(max_steps=3, precision="bf16").train, 16, 0, tmp_path / "c.pt")
    assert seen["discriminator"] == torch.bfloat16  # autocast really ran the networks in bf16
    assert result.step == 3 and all(np.isfinite(v) for v in result.final_losses.values())
    assert result.peak_memory_bytes > 0
    state = load_checkpoint(tmp_path / "c.pt")
    assert all(t.dtype == torch.float32 for t in state["models"]["decoder"].values() if t.is_floating_point())


def test_cuda_defaults_to_bf16_and_the_cpu_to_fp32():
    import warnings

    from alphagan.training import autocast_for

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA is absent and disables it
        on_cuda = autocast_for(torch.device("cuda"), "auto")()
    assert on_cuda.device == "cuda" and on_cuda.fast_dtype == torch.bfloat16
    assert autocast_for(torch.device("cpu"), "auto")()._enabled is False
    assert autocast_for(torch.device("cpu"), "bf16")()._enabled is True
    assert autocast_for(torch.device("cpu"), "fp32")()._enabled is False


def test_training_length_in_thousands_of_images(tmp_path, images, capsys):
    """train.kimg fixes the images shown whatever the dataset size; epochs are derived and printed."""
    from alphagan.training import training_steps

    params = tiny_params(kimg=0.1, epochs=1000).train  # kimg wins over epochs: 100 images at batch 4 = 25 steps
    assert training_steps(params, count=12) == 25 and training_steps(params, count=1200) == 25
    assert training_steps(tiny_params(epochs=3).train, count=12) == 9  # no kimg: 3 epochs of 12 // 4 steps
    assert training_steps(tiny_params(kimg=0.1, max_steps=5).train, count=12) == 5
    assert training_steps(tiny_params(kimg=0.001).train, count=12) == 1  # a part of a batch is still one step
    result = train(*images, tiny_params(kimg=0.02).train, 16, 0, tmp_path / "c.pt")
    assert result.step == 5 and result.images_shown == 20
    assert "train: 5 steps of 4 images = 0.02 kimg = 1.667 epochs of 12 images (from train.kimg)" in capsys.readouterr().err


def test_a_run_is_told_when_its_plan_cannot_work(tmp_path, images, capsys):
    """Few images without DiffAugment, or too few steps, are said before training starts (never silently)."""
    few = plan_warnings(tiny_params(epochs=110, batch_size=64).train, 90, 110)
    assert len(few) == 2 and "90 training images" in few[0] and "few-shot switch" in few[0]
    assert "only 110 optimiser steps" in few[1] and "train.kimg" in few[1]
    fixed = tiny_params(kimg=100.0, batch_size=64).train
    assert plan_warnings(fixed, 90, training_steps(fixed, 90)) == []  # the few-shot switch's length: 1,563 steps
    assert plan_warnings(tiny_params().train, 5000, 4620) == []  # the default run's size and length
    smoke = tiny_params(max_steps=2).train
    assert plan_warnings(smoke, 5000, training_steps(smoke, 5000)) == []  # a capped smoke run is not a plan
    train(*images, tiny_params(max_steps=3).train, 16, 0, tmp_path / "c.pt")
    assert "train: warning: 12 training images" in capsys.readouterr().err


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs intra-op threads for contention to matter")
def test_training_is_bit_exact_while_other_processes_load_every_core(tmp_path):
    """The default model size and batch (large enough for torch's kernels to split work over
    threads), trained on a quiet machine and again while busy processes take every core: a
    kernel whose result depended on thread timing would make the two differ."""
    rng = np.random.default_rng(1)
    train_images, val_images = rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    params = parse_params({"data": {"image_size": 32}, "train": {"device": "cpu", "max_steps": 12, "checkpoint_every": 100}}).train
    train(train_images, val_images, params, 32, 0, tmp_path / "quiet.pt")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        train(train_images, val_images, params, 32, 0, tmp_path / "busy.pt")
    finally:
        for process in busy:
            process.kill()
            process.wait()
    quiet, loaded = _all_tensors(load_checkpoint(tmp_path / "quiet.pt")), _all_tensors(load_checkpoint(tmp_path / "busy.pt"))
    assert quiet.keys() == loaded.keys()
    assert [k for k in quiet if not torch.equal(quiet[k], loaded[k])] == []


def test_reconstruction_fraction_encodes_only_the_first_share_of_the_batch(images):
    assert [reconstruction_count(64, f) for f in (1.0, 0.25, 0.001)] == [64, 16, 1]
    params = tiny_params(reconstruction_fraction=0.5, spectral_norm=True)  # batch 4: 2 encoded and reconstructed, 4 prior; one D pass
    torch.manual_seed(0)
    model = VaeGan.build(model_config(params.train, 16), params.train, torch.device("cpu"))
    real = to_tensor(images[0][:4], torch.device("cpu"))
    noise = (torch.randn(4, 8), torch.randn(4, 8))
    with torch.no_grad():  # the pixel term as the formula gives it, from the same networks before the step
        mu, logvar = model.encoder(real[:2])
        decoded = model.decoder(torch.cat([reparameterize(mu, logvar, noise[1][:2]), noise[0]]))
        expected_pixel = F.l1_loss(decoded[:2], real[:2])
    seen = {}
    for name in ("encoder", "decoder", "discriminator"):
        getattr(model, name).register_forward_hook(  # returns None: the output is left as it is
            lambda module, args, out, name=name: None if name in seen else seen.update({name: args[0].detach().clone()}))
    result = train_step(model, real, params.train, 0, lambda: torch.autocast("cpu", enabled=False), noise=noise)
    assert torch.equal(seen["encoder"], real[:2])
    assert seen["decoder"].shape[0] == 6 and seen["discriminator"].shape[0] == 4 + 6
    assert torch.equal(seen["discriminator"][:4], real)
    assert torch.allclose(result["loss_pixel"], expected_pixel, atol=1e-6)


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_a_multi_scale_discriminator_judges_each_scale_on_the_pooled_image(spectral_norm):
    config = ModelConfig(image_size=32, latent_dim=8, base_channels=4, max_channels=16, feature_layer=1,
                         spectral_norm=spectral_norm, discriminator_scales=3)
    torch.manual_seed(0)
    multi = Discriminator(config).eval()
    images = torch.randn(5, 3, 32, 32)
    logits, features = multi(images)
    assert logits.shape == (5, 3) and features.shape == (5, 4, 16, 16)
    # Column 0 is the full-resolution network alone; column k the k-th coarser one on the image
    # average-pooled 2**k times (pooled here by a reshape, independently of the module).
    single = Discriminator(dataclasses.replace(config, discriminator_scales=1)).eval()
    single.load_state_dict({k: v for k, v in multi.state_dict().items() if not k.startswith("coarser.")})
    alone_logits, alone_features = single(images)
    assert torch.allclose(logits[:, 0], alone_logits) and torch.equal(features, alone_features)
    for k in (1, 2):
        side = 32 >> k
        pooled = images.reshape(5, 3, side, 2**k, side, 2**k).mean(dim=(3, 5))
        assert multi.coarser[k - 1].blocks[0][0].in_channels == 3
        assert torch.allclose(logits[:, k], multi.coarser[k - 1](pooled)[0], atol=1e-6)
    # The losses average the scales' losses (elementwise means over the (B, scales) logits).
    per_scale = [losses.discriminator_loss(logits[:, k], -logits[:, k], "bce") for k in range(3)]
    assert losses.discriminator_loss(logits, -logits, "bce").item() == pytest.approx(sum(per_scale).item() / 3)
    # One scale adds no keys to the state dict (checkpoints from before the option load).
    assert set(single.state_dict()) == {k for k in multi.state_dict() if not k.startswith("coarser.")}
    assert not any("coarser" in k for k in single.state_dict())


def test_discriminator_scales_must_leave_at_least_8x8():
    with pytest.raises(ConfigError, match=r"train.discriminator_scales 3 would pool data.image_size 16 below 8x8; use 1..2"):
        parse_params({"data": {"image_size": 16}, "train": {"discriminator_scales": 3}})
    with pytest.raises(ValueError, match="discriminator_scales must be in 1..2 for image_size 16"):
        Discriminator(ModelConfig(image_size=16, feature_layer=1, discriminator_scales=3))


def test_every_scale_of_the_discriminator_trains_and_resumes(tmp_path, images):
    params = tiny_params(discriminator_scales=2, spectral_norm=False)
    before = _one_step(params, images)["discriminator"]
    torch.manual_seed(0)
    untouched = VaeGan.build(model_config(params.train, 16), params.train, torch.device("cpu")).discriminator.state_dict()
    coarse_weights = [k for k in untouched if k.startswith("coarser.0.") and k.endswith("weight")]
    assert coarse_weights and all(not torch.equal(before[k], untouched[k]) for k in coarse_weights)
    train_images, val_images = images
    straight = train(train_images, val_images, tiny_params(discriminator_scales=2, max_steps=3).train, 16, 1, tmp_path / "a.pt")
    train(train_images, val_images, tiny_params(discriminator_scales=2, max_steps=1).train, 16, 1, tmp_path / "b.pt")
    resumed = train(train_images, val_images, tiny_params(discriminator_scales=2, max_steps=3, resume=True).train, 16, 1, tmp_path / "b.pt")
    assert straight.step == resumed.step == 3
    a, b = _all_tensors(load_checkpoint(tmp_path / "a.pt")), _all_tensors(load_checkpoint(tmp_path / "b.pt"))
    assert any(k.startswith("discriminator.coarser.") for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    with pytest.raises(TrainingError, match="different model"):  # the scale count is part of the model
        train(train_images, val_images, tiny_params(max_steps=4, resume=True).train, 16, 1, tmp_path / "b.pt")


def test_decoder_and_discriminator_widths_change_their_own_network_alone():
    narrow = ModelConfig(image_size=32, latent_dim=8, base_channels=4, max_channels=64, feature_layer=1)
    assert narrow.decoder_widths() == narrow.discriminator_widths() == narrow.widths() == [4, 8, 16]
    shapes = lambda network, config: [p.shape for p in network(config).parameters()]  # noqa: E731

    wide_decoder = dataclasses.replace(narrow, decoder_channels=8)
    assert wide_decoder.decoder_widths() == [8, 16, 32] and wide_decoder.widths() == [4, 8, 16]
    assert dataclasses.replace(narrow, decoder_channels=32).decoder_widths() == [32, 64, 64]  # capped by max_channels
    decoder = Decoder(wide_decoder)
    convs = [m for m in decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert decoder.project[0].weight.shape == (32 * 16, 8)
    assert [tuple(c.weight.shape[:2]) for c in convs] == [(32, 16), (16, 8), (8, 3)]
    assert decoder(torch.randn(2, 8)).shape == (2, 3, 32, 32)
    assert shapes(Encoder, wide_decoder) == shapes(Encoder, narrow)
    assert shapes(Discriminator, wide_decoder) == shapes(Discriminator, narrow)

    wide_discriminator = dataclasses.replace(narrow, discriminator_channels=8, discriminator_scales=2)
    discriminator = Discriminator(wide_discriminator)
    convs = [m for m in discriminator.blocks.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(c.weight.shape[:2]) for c in convs] == [(8, 3), (16, 8), (32, 16)]
    assert discriminator.classify.weight.shape == (1, 32 * 16)
    assert discriminator.coarser[0].classify.weight.shape == (1, 16 * 16)  # every scale is widened: 8 -> 16 at 16 px
    logits, features = discriminator(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 2) and features.shape == (2, 8, 16, 16)  # the similarity features widen with it
    assert shapes(Encoder, wide_discriminator) == shapes(Encoder, narrow)
    assert shapes(Decoder, wide_discriminator) == shapes(Decoder, narrow)


def test_wider_networks_train_reload_and_are_part_of_the_model(tmp_path, images):
    widths = {"max_channels": 32, "decoder_channels": 16, "discriminator_channels": 4}
    train(*images, tiny_params(max_steps=2, **widths).train, 16, 0, tmp_path / "c.pt")
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["models"]["discriminator"]["blocks.0.0.weight"].shape == (4, 3, 4, 4)
    decoder, encoder, config = load_generator(tmp_path / "c.pt")
    assert (config.decoder_channels, config.discriminator_channels) == (16, 4)
    assert decoder.project[0].weight.shape == (32 * 16, 8)
    assert encoder.to_moments.weight.shape == (16, 16 * 16)  # base width 8: 8 -> 16 channels at 4x4
    with torch.no_grad():
        assert decoder(torch.randn(3, 8)).shape == (3, 3, 16, 16)
    for changed in ({"decoder_channels": 0}, {"discriminator_channels": 0}):
        with pytest.raises(TrainingError, match="different model"):
            train(*images, tiny_params(max_steps=3, resume=True, **{**widths, **changed}).train, 16, 0, tmp_path / "c.pt")
    resumed = train(*images, tiny_params(max_steps=3, resume=True, **widths).train, 16, 0, tmp_path / "c.pt")
    assert resumed.step == 3
