"""Evaluation maths against references, the Inception paths offline, and the stage."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from alphagan import evaluation
from alphagan.evaluation import (RandomFeatures, frechet_distance, kernel_distance, precision_recall)


def reference_fd(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("dim", [8, 64, 256])
def test_frechet_distance_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    a, b = rng.normal(size=(dim, 2 * dim)), rng.normal(size=(dim, 2 * dim))
    s1, s2 = a @ a.T / dim, b @ b.T / dim + 0.1 * np.eye(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    ours, reference = frechet_distance(mu1, s1, mu2, s2), reference_fd(mu1, s1, mu2, s2)
    assert ours == pytest.approx(reference, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6 * np.trace(s1))


def test_kid_and_precision_recall_behave():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 16))
    same, shifted = rng.normal(size=(60, 16)), rng.normal(loc=3.0, size=(60, 16))
    kid_same, _, _ = kernel_distance(real, same, subsets=20)
    kid_far, _, _ = kernel_distance(real, shifted, subsets=20)
    assert abs(kid_same) < kid_far / 20
    _, _, subset = kernel_distance(real[:5], same, subsets=3)  # fewer samples than the subset size
    assert subset == 5
    assert precision_recall(real, real) == (1.0, 1.0)
    precision, recall = precision_recall(real, shifted + 10)
    assert precision == 0.0 and recall == 0.0


def test_random_features_are_fixed_and_size_independent():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
    a, b = RandomFeatures()(images), RandomFeatures()(images)
    assert a.shape == (2, 512) and torch.equal(a, b)
    assert not torch.equal(a, RandomFeatures(seed=1)(images))


@pytest.fixture(scope="module")
def standin_inception_weights(tmp_path_factory):
    """A weights file of the right shapes (values meaningless), made from the real module."""
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity

    original = fidelity.FeatureExtractorInceptionV3.load_state_dict
    fidelity_loader = fidelity.load_state_dict_from_url
    try:
        fidelity.load_state_dict_from_url = lambda *a, **k: {}
        fidelity.FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None
        model = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fidelity.FeatureExtractorInceptionV3.load_state_dict = original
        fidelity.load_state_dict_from_url = fidelity_loader
    hub = tmp_path_factory.mktemp("torch_home") / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    path = hub / "checkpoints" / evaluation.INCEPTION_WEIGHTS_FILE
    torch.save(model.state_dict(), path)
    return hub


def _tiny_inputs():
    rng = np.random.default_rng(0)
    from alphagan.models import Decoder, Encoder, ModelConfig

    config = ModelConfig(image_size=16, latent_dim=8, base_channels=8, max_channels=16, feature_layer=1)
    train = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    val = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    return Decoder(config).eval(), Encoder(config).eval(), train, val


def test_inception_path_runs_offline_with_weights_in_the_hub_cache(standin_inception_weights):
    decoder, encoder, train, val = _tiny_inputs()
    hub_before = torch.hub.get_dir()
    torch.hub.set_dir(str(standin_inception_weights))
    try:
        metrics, _ = evaluation.evaluate_model(decoder, encoder, 8, train, val, num_samples=6, batch_size=4, seed=0)
    finally:
        torch.hub.set_dir(hub_before)
    assert np.isfinite(metrics["eval/fid_inception"]) and metrics["eval/fid_inception"] >= 0
    assert "kid_inception" in json.dumps(list(metrics))
    assert metrics["eval/inception_note"].startswith("InceptionV3 weights from torch hub cache")


def test_missing_inception_weights_are_reported_not_substituted(tmp_path):
    decoder, encoder, train, val = _tiny_inputs()
    metrics, pictures = evaluation.evaluate_model(decoder, encoder, 8, train, val, num_samples=12, batch_size=5, seed=0,
                                                  inception_weights=str(tmp_path / "nope.pth"))
    assert "eval/fid_inception" not in metrics and "eval/kid_inception" not in metrics
    assert metrics["eval/inception_note"] == f"FID/KID (Inception) not computed: evaluate.inception_weights {tmp_path / 'nope.pth'} does not exist"
    # The offline metrics are all there, with their baselines and sample counts.
    for name in ("fd_random", "kid_random", "precision_random", "recall_random", "fd_random_real_vs_real",
                 "fd_random_noise", "psnr", "ssim", "recon_feature_mse_random", "nn_distance_random_mean"):
        assert np.isfinite(metrics[f"eval/{name}"]), name
    assert metrics["eval/num_generated"] == 12 and metrics["eval/num_real"] == 6 and metrics["eval/kid_subset_size"] == 6
    assert pictures["samples"].shape == (2 + 2 * 18, 8 * 18 + 2, 3)
    assert pictures["nearest_neighbours"].dtype == np.uint8
