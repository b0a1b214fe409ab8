"""The classifier two-sample test: chance on real against real, and sees damage, layout included."""

import numpy as np
import pytest

from alphagan.metrics.baselines import LADDER, degrade, ladder_sets, ladder_verdicts
from alphagan.metrics.classifier import C2ST_METRIC, c2st_count, classifier_accuracy, two_sample_classifier, two_sample_scores


def _with_dark_square(images: np.ndarray) -> np.ndarray:
    """A 6x6 black square at the same off-centre place in every image: a layout change that
    leaves most pixels, colours and strokes as they were."""
    out = images.copy()
    out[:, 4:10, 20:26] = 0
    return out


def test_real_against_real_is_chance_and_a_fixed_change_of_layout_is_told_apart(real_faces):
    reference, other = real_faces[:300], real_faces[300:600]
    same = classifier_accuracy(reference, other, seed=0)
    marked = classifier_accuracy(reference, _with_dark_square(other), seed=0)
    # 90 held-out images a side: chance scatters by about 0.04.
    assert abs(same - 0.5) < 0.12, same
    assert marked > 0.85, marked  # 0.93 measured; chance is 0.5 ± 0.04


def test_the_same_seed_gives_the_same_accuracy_and_another_seed_another_split(real_faces):
    import torch

    reference, candidate = real_faces[:100], degrade(real_faces[100:200], "blur", 0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = classifier_accuracy(reference, candidate, seed=3, epochs=3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is left alone
    assert classifier_accuracy(reference, candidate, seed=3, epochs=3) == first
    assert any(classifier_accuracy(reference, candidate, seed=s, epochs=3) != first for s in (4, 5))


def test_the_classifier_ends_at_four_by_four_for_any_size_and_sees_position():
    import torch

    for size, blocks in ((16, 2), (32, 3), (64, 4)):
        net = two_sample_classifier(size)
        assert sum(isinstance(layer, torch.nn.Conv2d) for layer in net) == blocks
        assert net[-1].in_features == 16 * min(16 * 2 ** (blocks - 1), 128)  # 4x4 positions, no global pooling
        assert net(torch.zeros(2, 3, size, size)).shape == (2, 1)


@pytest.mark.parametrize(("reference", "candidate", "why"), [
    (np.zeros((10, 8, 8, 3), np.uint8), np.zeros((9, 8, 8, 3), np.uint8), "equal counts"),
    (np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 3), np.uint8), "at least 4"),
    (np.zeros((6, 8, 8, 3), np.uint8), np.zeros((6, 16, 16, 3), np.uint8), "one size"),
])
def test_unequal_or_too_few_images_are_refused(reference, candidate, why):
    with pytest.raises(ValueError, match="two-sample test needs"):
        classifier_accuracy(reference, candidate, seed=0)


def test_a_copy_of_the_pool_is_scored_on_the_floors_rows(real_faces):
    # A candidate as long as the pool (a damaged copy, for the ladder) must meet the floor's
    # very images: an undamaged copy then scores exactly the floor, draw for draw.
    pool = real_faces[:80]
    scores = two_sample_scores(pool, {"copy": pool.copy(), "other": real_faces[100:140]}, count=40, draws=2, seed=1, epochs=2)
    assert list(scores) == ["real", "copy", "other"]
    assert scores["copy"][C2ST_METRIC].values == scores["real"][C2ST_METRIC].values
    assert scores["other"][C2ST_METRIC].values != scores["real"][C2ST_METRIC].values
    with pytest.raises(ValueError, match="twice that many pool images"):
        two_sample_scores(pool, {"other": real_faces[100:140]}, count=41, draws=1, seed=0)
    with pytest.raises(ValueError, match="drawn from the pool"):
        two_sample_scores(pool, {"real": pool}, count=40, draws=1, seed=0)


def test_the_count_is_half_the_pool_the_samples_or_the_cap():
    assert c2st_count(2700, 1000) == 1000 and c2st_count(90, 1000) == 45 and c2st_count(10_000, 5000) == 1000


@pytest.mark.slow
def test_every_damage_is_told_apart_from_real_faces_and_the_flip_is_not(many_real_faces):
    # The ladder's first two rules, which the README relies on when it reads c2st_accuracy:
    # every harmful rung clearly above the real floor, the harmless flip within its noise,
    # at the evaluate stage's 1,000 a side (at 300 a side mild noise is seen in some draws
    # only). Its third rule, strong damage above mild, fails where both are told apart
    # nearly every time: an accuracy cannot pass 1.0. The README says so.
    pool = many_real_faces
    scores = two_sample_scores(pool, ladder_sets(pool), count=1000, draws=2, seed=0)
    verdicts = ladder_verdicts(scores, C2ST_METRIC)
    failed = {rung: why for rung, why in verdicts.items() if why != "ok"}
    assert all(why.startswith("strong ") for why in failed.values()), failed
    for rung, why in failed.items():  # an ordering missed only at the ceiling
        kind = rung.split("/")[0]
        assert min(scores[f"{kind}/0"][C2ST_METRIC].mean, scores[rung][C2ST_METRIC].mean) > 0.95, (rung, why)
    assert abs(scores["real"][C2ST_METRIC].mean - 0.5) < 0.08
    assert set(verdicts) == {f"{k}/{s}" for k, (_, strengths, _) in LADDER.items() for s in range(strengths)}
