"""Evaluation maths against references, the Inception paths offline, and the stage."""

import json

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from alphagan import evaluation
from alphagan.metrics.distances import (MultiscaleSWD, _sorted_projections, frechet_distance, kernel_distance, laplacian_pyramid,
                                        multiscale_swd, precision_recall, sliced_wasserstein)
from alphagan.metrics.features import RandomFeatures
from alphagan.metrics.baselines import degrade, score_at_equal_counts
from alphagan.metrics.memorisation import memorisation_report, nearest_neighbours


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


def reference_kid(x, y):
    """Unbiased MMD^2 with the cubic kernel, written out with loops (Binkowski et al. 2018, eq. 3)."""
    def k(a, b):
        return (a @ b / len(a) + 1) ** 3
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_written_out_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(loc=0.5, size=(12, 5))
    # One subset of all 12 rows: a permutation, which MMD^2 does not see.
    ours, _, size = kernel_distance(x, y, subsets=1, subset_size=12)
    assert size == 12 and ours == pytest.approx(reference_kid(x, y), rel=1e-10)
    _, _, subset = kernel_distance(x[:5], y, subsets=3)  # fewer samples than the subset size
    assert subset == 5
    # Both sets within one subset: every subset is all of both, so one is computed (std exactly 0).
    whole, spread, size = kernel_distance(x, y, subsets=50)
    assert size == 12 and spread == 0.0 and whole == pytest.approx(reference_kid(x, y), rel=1e-10)
    # Subsets smaller than the sets still differ from one another.
    assert kernel_distance(x, y, subsets=50, subset_size=6)[1] > 0


def reference_precision_recall(real, fake, k=3):
    """Kynkaenniemi et al. 2019 with explicit loops."""
    def radius(points, i):
        return sorted(np.linalg.norm(points - points[i], axis=1))[k]

    def covered(support, query):
        radii = [radius(support, i) for i in range(len(support))]
        return np.mean([any(np.linalg.norm(q - s) <= r for s, r in zip(support, radii)) for q in query])

    return covered(real, fake), covered(fake, real)


def test_precision_recall_match_an_independent_computation():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(40, 3)), rng.normal(loc=0.8, scale=1.5, size=(30, 3))
    precision, recall = precision_recall(real, fake)
    expected = reference_precision_recall(real, fake)
    assert (precision, recall) == pytest.approx(expected)
    assert 0 < precision < 1 and 0 < recall < 1  # a case where both can be wrong


def test_random_features_are_fixed_and_resize_any_input_to_64_px():
    import torch.nn.functional as F

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
    a, b = RandomFeatures()(images), RandomFeatures()(images)
    assert a.shape == (2, 512) and torch.equal(a, b)
    assert not torch.equal(a, RandomFeatures(seed=1)(images))
    # Feeding the 64 px version (resized as documented) gives the same features as the 32 px input.
    as_float = images.float() / 127.5 - 1
    upsized = ((F.interpolate(as_float, size=(64, 64), mode="bilinear", antialias=True, align_corners=False) + 1) * 127.5)
    net = RandomFeatures()
    x = upsized / 127.5 - 1.0
    for conv in net.convs:
        x = torch.relu(conv(x))
    assert torch.allclose(a, x.mean(dim=(2, 3)), atol=1e-5)
    assert net(upsized.round().clamp(0, 255).to(torch.uint8)).shape == (2, 512)


def test_laplacian_pyramid_bands_add_back_to_the_image():
    from alphagan.metrics.distances import _blur

    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    bands = laplacian_pyramid(images, 3)
    assert [b.shape[-1] for b in bands] == [32, 16, 8]
    current = bands[-1]
    for band in reversed(bands[:-1]):  # collapse: upsample, blur, add the band back
        upsampled = torch.zeros_like(band)
        upsampled[:, :, ::2, ::2] = current * 4
        current = band + _blur(upsampled)
    assert torch.allclose(current, images, atol=1e-10)


def test_sliced_wasserstein_of_a_shift_is_the_mean_projected_shift():
    points = torch.randn(500, 4, dtype=torch.float64)
    assert sliced_wasserstein(points, points) == 0
    # Shifting every point by s moves each sorted projection by s.u: W1 per direction = |s.u|.
    shift = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    directions = torch.randn(4, 256, generator=torch.Generator().manual_seed(3)).double()  # as drawn inside
    directions /= directions.norm(dim=0, keepdim=True)
    assert sliced_wasserstein(points, points + shift, seed=3) == pytest.approx(float((shift @ directions).abs().mean()), rel=1e-6)


def test_sliced_wasserstein_is_the_mean_of_scipys_one_dimensional_distances():
    # An independent computation of the same quantity: scipy's 1-D Wasserstein-1 distance of
    # the two sets' projections on each direction, for two differently shaped distributions.
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=generator, dtype=torch.float64)
    b = 3 * torch.rand(300, 5, generator=generator, dtype=torch.float64) ** 2
    directions = torch.randn(5, 64, generator=torch.Generator().manual_seed(7)).double()  # as drawn inside
    directions /= directions.norm(dim=0, keepdim=True)
    expected = np.mean([scipy.stats.wasserstein_distance((a @ unit).numpy(), (b @ unit).numpy()) for unit in directions.T])
    assert sliced_wasserstein(a, b, directions=64, seed=7) == pytest.approx(expected, rel=1e-6)
    # The CPU sort goes through numpy, a tensor that needs gradients through torch.sort: the same values.
    through_numpy = _sorted_projections(a, directions)
    assert torch.equal(through_numpy, _sorted_projections(a.clone().requires_grad_(), directions).detach())
    assert through_numpy.shape == (64, 300) and bool((through_numpy.diff(dim=1) >= 0).all())


def test_multiscale_swd_sees_the_right_band(real_faces):
    reference, same_kind = real_faces[:150], real_faces[150:300]
    swd = MultiscaleSWD(reference)
    floor = swd(same_kind)
    assert set(floor) == {32, 16, 8} and swd(reference) == {32: 0.0, 16: 0.0, 8: 0.0}
    rng = np.random.default_rng(0)
    speckled = np.clip(same_kind + rng.normal(0, 30, same_kind.shape), 0, 255).astype(np.uint8)
    darker = (same_kind * 0.6).astype(np.uint8)
    assert swd(speckled)[32] > 3 * floor[32]  # fine noise: finest band
    assert swd(darker)[8] > 3 * floor[8]  # a global colour change: the coarse low-pass band
    with pytest.raises(ValueError, match="equal counts"):
        multiscale_swd(reference, same_kind[:100])


def test_memorisation_flags_copies_and_not_held_out_faces(real_faces):
    training, held_out = real_faces[:400], real_faces[400:500]
    rng = np.random.default_rng(0)
    copies = np.clip(training[:100].astype(int) + rng.integers(-3, 4, training[:100].shape), 0, 255).astype(np.uint8)
    copied = memorisation_report(copies, training, held_out)
    honest = memorisation_report(real_faces[500:600], training, held_out)
    assert copied.ratio < 0.3 and copied.copy_fraction > 0.9
    assert 0.7 < honest.ratio < 1.3 and honest.copy_fraction < 0.1
    assert np.all(np.diff(copied.closest_distances) >= 0)  # closest pairs first
    assert set(copied.closest_training) <= set(range(100))  # each copy found its own original
    # Colour-blind: a recoloured copy is still a copy.
    recoloured = copies[:, :, :, ::-1].copy()
    assert memorisation_report(recoloured, training, held_out).copy_fraction > 0.5


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
    assert np.isfinite(metrics["eval/fid_inception"]) and np.isfinite(metrics["eval/fid_inception_floor"])
    assert metrics["eval/fid_inception"] != metrics["eval/fid_inception_floor"]
    assert "kid_inception" in json.dumps(list(metrics))
    assert metrics["eval/inception_note"].startswith("InceptionV3 weights from torch hub cache")


def test_missing_inception_weights_are_reported_not_substituted(tmp_path):
    decoder, encoder, train, val = _tiny_inputs()
    metrics, pictures = evaluation.evaluate_model(decoder, encoder, 8, train, val, num_samples=12, batch_size=5, seed=0,
                                                  inception_weights=str(tmp_path / "nope.pth"))
    assert "eval/fid_inception" not in metrics and "eval/kid_inception" not in metrics
    assert metrics["eval/inception_note"] == f"FID/KID (Inception) not computed: evaluate.inception_weights {tmp_path / 'nope.pth'} does not exist"
    # The offline metrics are all there, with their baselines and sample counts.
    for name in ("fd_random", "kid_random", "precision_random", "recall_random", "swd_ratio", "swd_16", "swd_8",
                 "psnr", "ssim", "memorisation_ratio", "nn_distance_median_real"):
        for suffix in ("", "_floor") if not name.startswith(("psnr", "ssim", "memo", "nn_")) else ("",):
            assert np.isfinite(metrics[f"eval/{name}{suffix}"]), name + suffix
    # Equal counts: the val split (6) bounds every draw; 6 images a side is flagged as noise.
    assert metrics["eval/num_generated"] == 12 and metrics["eval/count"] == 6
    assert metrics["eval/small_sample"] == 1 and "only 6 images per side" in metrics["eval/warnings"]
    assert metrics["eval/swd_ratio_floor"] == 1.0
    bands = [metrics[f"eval/swd_{s}"] / metrics[f"eval/swd_{s}_floor"] for s in (16, 8)]
    assert metrics["eval/count"] == 6 and metrics["eval/draws"] == 3 and min(bands) <= metrics["eval/swd_ratio"] * 1.5
    # Val originals beside their reconstructions: 6 pairs in rows of 8 cells, the original first.
    assert set(pictures) == {"reconstructions", "nearest_neighbours", "memorisation"}
    assert metrics["eval/reference_train"] == 0 and metrics["eval/memorisation_small_sample"] == 1
    assert pictures["reconstructions"].shape == (2 + 2 * 18, 8 * 18 + 2, 3)
    assert np.array_equal(pictures["reconstructions"][2:18, 2:18], np.asarray(val)[0])
    assert pictures["nearest_neighbours"].dtype == np.uint8


def test_leave_one_out_neighbours_match_a_brute_force_search():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(50, 7)).astype(np.float32)
    points[10] = points[20]  # an exact duplicate: its nearest *other* point is at distance 0
    index, distance = nearest_neighbours(points, points, chunk=16, leave_one_out=True)  # chunks cross the diagonal
    full = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(full, np.inf)
    assert np.array_equal(index[[i for i in range(50) if i not in (10, 20)]],
                          full.argmin(axis=1)[[i for i in range(50) if i not in (10, 20)]])
    assert np.allclose(distance, full.min(axis=1), atol=1e-4)
    assert index[10] == 20 and index[20] == 10 and distance[10] < 1e-3
    plain_index, plain_distance = nearest_neighbours(points, points)
    assert np.array_equal(np.delete(plain_index, 20), np.delete(np.arange(50), 20))  # 20 ties with its duplicate 10
    assert np.allclose(plain_distance, 0, atol=1e-2)  # cdist in float32: self-distances of ~1e-3, neighbours ~3


def test_memorisation_against_the_training_set_itself(real_faces):
    training = real_faces[:300]
    honest = memorisation_report(real_faces[300:400], training, None)
    copies = memorisation_report(training[:100].copy(), training, None)
    assert honest.real_reference == "leave-one-out" and len(honest.real_distances) == 300
    assert 0.7 < honest.ratio < 1.4 and honest.copy_fraction < 0.1
    assert copies.ratio < 0.05 and copies.copy_fraction > 0.95
    with pytest.raises(ValueError, match="two training images"):
        memorisation_report(real_faces[:3], real_faces[:1], None)


def test_split_halves_floor_is_disjoint_and_ranks_damage(real_faces):
    pool, unseen = real_faces[:200], real_faces[200:400]
    scores = score_at_equal_counts(pool, {"unseen": unseen, "blurred": degrade(unseen, "blur", 1)}, 100, 3, seed=0,
                                   floor_from_reference=True)
    assert scores["real"]["swd_ratio"].mean == 1.0
    unseen_ratio, blurred_ratio = scores["unseen"]["swd_ratio"], scores["blurred"]["swd_ratio"]
    assert abs(unseen_ratio.mean - 1.0) < 3 * unseen_ratio.std + 0.15  # new faces of the same kind: at the floor
    assert min(blurred_ratio.values) > 1.5 and min(blurred_ratio.values) > max(unseen_ratio.values)  # in every draw
    # A half of the pool against the other half: identical halves would give 0, so the two draws are disjoint.
    assert scores["real"]["swd_32"].mean > 0 and min(scores["real"]["swd_32"].values) > 0
    with pytest.raises(ValueError, match="split in halves"):
        score_at_equal_counts(pool, {"unseen": unseen}, 101, 1, seed=0, floor_from_reference=True)
    with pytest.raises(ValueError, match="do not pass one"):
        score_at_equal_counts(pool, {"real": unseen}, 50, 1, seed=0, floor_from_reference=True)


def test_copies_of_one_half_beat_the_floor_against_the_training_set(real_faces):
    """Why the memorisation check must sit beside a training-set score: copying scores *better* than real."""
    pool = real_faces[:200]
    twice = np.concatenate([pool, pool])  # a generator that draws training images: half of its draw copies the reference half
    scores = score_at_equal_counts(pool, {"copies": twice}, 100, 3, seed=0, floor_from_reference=True)
    assert scores["copies"]["swd_ratio"].mean < 0.9
    # A candidate as long as the pool (a damaged copy, for the ladder) meets it through the floor half only.
    paired = score_at_equal_counts(pool, {"same": pool.copy()}, 100, 2, seed=0, floor_from_reference=True)
    assert paired["same"]["swd_32"].values == paired["real"]["swd_32"].values


@pytest.mark.parametrize(("mode", "val_count", "expected", "note"), [
    ("auto", 300, "val", None), ("auto", 99, "train", "holds 99 images"), ("auto", 0, "train", "holds 0 images"),
    ("val", 10, "val", None), ("val", 1, "train", "is val but the val split holds 1"), ("train", 500, "train", "DiffAugment"),
])
def test_reference_choice(mode, val_count, expected, note):
    chosen, notes = evaluation.choose_reference(mode, val_count, 90)
    assert chosen == expected
    assert (not notes) if note is None else any(note in line for line in notes)
    if chosen == "train":
        assert any("memorisation" in line for line in notes)


def test_too_few_training_images_for_the_train_reference_is_a_clear_error():
    with pytest.raises(evaluation.EvaluationError, match="at least 4 training images"):
        evaluation.choose_reference("auto", 0, 3)


def test_few_shot_evaluation_scores_against_the_training_set_and_flags_small_samples():
    decoder, encoder, train, _ = _tiny_inputs()
    metrics, pictures = evaluation.evaluate_model(decoder, encoder, 8, train, train[:0], num_samples=20, batch_size=8,
                                                  seed=0, inception_weights="/nonexistent.pth", reference="auto", draws=4)
    assert metrics["eval/reference_train"] == 1 and "holds 0 images" in metrics["eval/reference_note"]
    assert metrics["eval/count"] == 5 and metrics["eval/draws"] == 4  # halves of the 10 training images
    assert metrics["eval/swd_ratio_floor"] == 1.0 and np.isfinite(metrics["eval/swd_ratio"])
    assert metrics["eval/small_sample"] == 1 and metrics["eval/memorisation_small_sample"] == 1
    assert "only 5 images per side (train 10, generated 20)" in metrics["eval/warnings"]
    assert "memorisation reference has only 10 real images (leave-one-out)" in metrics["eval/warnings"]
    for name in ("background_spread", "position_spread", "size_spread"):
        assert np.isfinite(metrics[f"eval/{name}"]) and np.isfinite(metrics[f"eval/{name}_real"])
    histogram = pictures["memorisation"]
    assert histogram.dtype == np.uint8 and histogram.ndim == 3 and histogram.std() > 0


class _FlattenEncoder(torch.nn.Module):
    """A perfect, noiseless autoencoder's encoder: the latent is the image itself."""

    def forward(self, images):
        mu = images.flatten(1)
        return mu, torch.full_like(mu, -60.0)  # sigma = e^-30: posterior samples are the images


class _ReshapeDecoder(torch.nn.Module):
    def forward(self, latent):
        return latent.view(-1, 3, 32, 32)


def test_prior_gap_separates_posterior_samples_from_prior_holes(real_faces):
    """A perfect autoencoder draws real faces from its posterior and pure noise from N(0, I):
    its posterior samples must score at the real floor and its prior samples far from it."""
    train, val = real_faces[:400], real_faces[400:]
    posterior = evaluation.posterior_samples(_FlattenEncoder(), _ReshapeDecoder(), train[:50], 0, 16, torch.device("cpu"))
    np.testing.assert_array_equal(posterior, train[:50])
    metrics, _ = evaluation.evaluate_model(_ReshapeDecoder(), _FlattenEncoder(), 3 * 32 * 32, train, val, num_samples=300,
                                           batch_size=100, seed=0, inception_weights="/nonexistent.pth", reference="val")
    assert metrics["eval/reference_train"] == 0
    assert 0.8 < metrics["eval/posterior_swd_ratio"] < 1.25  # real faces: within noise of the floor (1.0)
    assert metrics["eval/swd_ratio"] > 3  # noise from the prior
    assert metrics["eval/prior_gap"] == pytest.approx(metrics["eval/swd_ratio"] / metrics["eval/posterior_swd_ratio"])
    assert metrics["eval/prior_gap"] > 3


def test_a_set_scored_alongside_gets_exactly_the_scores_it_gets_alone(real_faces):
    """``quality_scores(also=...)`` scores an extra set in the same draws as the generated set:
    as long as it, it meets the same reference, floor and rows, so its numbers must be those
    of a call where it is the generated set, to the bit; and the generated set's must not move."""
    reference, real, first, second = real_faces[:150], real_faces[150:300], real_faces[300:450], real_faces[450:600]
    blurred = degrade(second, "blur", 1)
    together = evaluation.quality_scores(reference, first, real, seed=3, draws=2, also={"posterior": blurred})
    alone = evaluation.quality_scores(reference, blurred, real, seed=3, draws=2)
    without = evaluation.quality_scores(reference, first, real, seed=3, draws=2)
    metrics = [key for key in alone if not key.endswith(("_floor", "_floor_std", "_ratio")) and key not in ("count", "draws")]
    assert {metric: together[f"posterior_{metric}"] for metric in metrics} == {metric: alone[metric] for metric in metrics}
    assert together["posterior_swd_ratio"] == alone["swd_ratio"] > 1.5  # blurred: far from the floor
    assert {key: together[key] for key in without} == without
    with pytest.raises(ValueError, match="taken"):
        evaluation.quality_scores(reference, first, real, seed=3, draws=2, also={"real": blurred})


class _CodeAsImage(torch.nn.Module):
    """A decoder whose 1x1 image is its latent code, a quarter as large: what it draws is the code."""

    def forward(self, latent):
        return (0.25 * latent)[:, :, None, None]


def test_generate_at_a_lower_temperature_decodes_the_same_codes_scaled():
    count, latent_dim, seed = 40, 6, 3
    codes = torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed))
    device = torch.device("cpu")
    at = {t: evaluation.generate(_CodeAsImage(), count, latent_dim, seed, count, device, t) for t in (1.0, 0.5)}
    for temperature, images in at.items():
        expected = evaluation.to_uint8((0.25 * temperature * codes)[:, :, None, None])
        assert images.shape == (count, 1, 1, latent_dim) and np.array_equal(images, expected)
    # Halving the codes pulls every pixel towards mid-grey (127.5): the spread halves.
    assert at[0.5].astype(float).std() == pytest.approx(at[1.0].astype(float).std() / 2, rel=0.05)
    assert np.array_equal(evaluation.generate(_CodeAsImage(), count, latent_dim, seed, count, device), at[1.0])
    for wrong in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature must be positive"):
            evaluation.generate(_CodeAsImage(), count, latent_dim, seed, count, device, wrong)
