"""The instrument is tested: every validated metric must see what a person sees.

Real faces (DiceBear, rendered and prepared as the pipeline does, at the default 32 px)
are damaged in seven ways at two strengths plus a harmless flip; each validated metric
must rank every damage worse than the equal-count real floor by a clear margin, more
damage worse than less, and the flip within noise of the floor.
"""

import numpy as np
import pytest

from alphagan.evaluation import VALIDATED_METRICS
from alphagan.metrics.baselines import LADDER, degrade, ladder_sets, ladder_verdicts, score_at_equal_counts


@pytest.fixture(scope="module")
def scores(real_faces):
    reference, source = real_faces[:300], real_faces[300:]
    return score_at_equal_counts(reference, {"real": source, **ladder_sets(source)}, count=200, draws=3, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("metric", VALIDATED_METRICS)
def test_validated_metric_passes_the_ladder(scores, metric):
    verdicts = ladder_verdicts(scores, metric)
    assert set(verdicts) == {f"{k}/{s}" for k, (_, strengths, _) in LADDER.items() for s in range(strengths)}
    assert {rung: why for rung, why in verdicts.items() if why != "ok"} == {}


def test_the_ladder_has_six_kinds_of_damage_at_two_strengths_and_a_harmless_control():
    harmful = [kind for kind, (_, strengths, is_harmful) in LADDER.items() if is_harmful and strengths >= 2]
    assert len(harmful) >= 6 and any(not is_harmful for _, _, is_harmful in LADDER.values())


def test_each_rung_changes_the_images_and_stronger_changes_more(real_faces):
    images = real_faces[:20]
    for kind, (_, strengths, harmful) in LADDER.items():
        changes = [np.abs(degrade(images, kind, s).astype(int) - images).mean() for s in range(strengths)]
        assert all(c > 0 for c in changes), kind
        assert degrade(images, kind, 0).dtype == np.uint8 and degrade(images, kind, 0).shape == images.shape
        if harmful and kind != "scramble":  # tiles moved: any count of them changes about as many pixels
            assert changes[1] > changes[0], kind


def test_a_metric_that_cannot_see_damage_fails_the_ladder(scores):
    # The ladder is not a rubber stamp: a colour-blind statistic (mean brightness) fails it.
    from alphagan.metrics.baselines import DrawSummary

    blind = {rung: {"brightness": DrawSummary(1.0, 0.01, (1.0,))} for rung in scores}
    assert all(why != "ok" for rung, why in ladder_verdicts(blind, "brightness").items() if rung != "flip/0")
