"""The champion rule (pure): who holds the ``champion`` alias after an evaluation."""

import math

import pytest

from alphagan.champion import Standing, decide, standing_from_tags, version_tags

V = ("swd_ratio",)
DATA = "a" * 64


def standing(version, swd=1.2, small=False, data=DATA, std=0.1):
    return Standing(str(version), {"swd_ratio": swd}, {"swd_ratio": std}, small, data)


def test_no_champion_takes_the_alias_even_on_a_small_sample():
    assert decide(standing(1), None, V).move
    small = decide(standing(1, small=True), None, V)
    assert small.move and "small sample" in small.reason


def test_strictly_lower_moves_a_tie_or_higher_keeps():
    moved = decide(standing(2, swd=1.1), standing(1, swd=1.2), V)
    assert moved.move and moved.reason.startswith("beats version 1: swd_ratio 1.1 ±0.1 vs 1.2 ±0.1")
    tie = decide(standing(2, swd=1.2), standing(1, swd=1.2), V)
    assert not tie.move and tie.reason.startswith("ties version 1")
    worse = decide(standing(2, swd=1.3), standing(1, swd=1.2), V)
    assert not worse.move and worse.reason.startswith("does not beat version 1")


def test_nan_is_worst():
    assert not decide(standing(2, swd=math.nan), standing(1, swd=5.0), V).move
    assert decide(standing(2, swd=5.0), standing(1, swd=math.nan), V).move


def test_the_same_version_stays_champion():
    again = decide(standing(1, swd=9.0), standing(1, swd=1.0), V)
    assert not again.move and "already the champion" in again.reason


def test_a_hand_set_champion_without_tags_stays():
    decision = decide(standing(2, swd=0.5), Standing("1"), V)
    assert not decision.move and "set by hand" in decision.reason


@pytest.mark.parametrize("champion_data, candidate_data", [("b" * 64, DATA), ("", DATA), (DATA, "")])
def test_other_or_unknown_data_do_not_compare(champion_data, candidate_data):
    decision = decide(standing(2, swd=0.5, data=candidate_data), standing(1, swd=2.0, data=champion_data), V)
    assert not decision.move and "other data" in decision.reason


def test_small_samples():
    # A small-sample candidate never displaces a reliable champion, however good its number.
    assert not decide(standing(2, swd=0.5, small=True), standing(1, swd=2.0), V).move
    # A reliable candidate always displaces a small-sample champion, however bad its number.
    assert decide(standing(2, swd=3.0), standing(1, swd=1.0, small=True), V).move
    # Two small samples compare by numbers, and say they are noisy.
    both = decide(standing(2, swd=1.0, small=True), standing(1, swd=1.5, small=True), V)
    assert both.move and "noisy" in both.reason
    assert not decide(standing(2, swd=2.0, small=True), standing(1, swd=1.5, small=True), V).move


def test_several_validated_metrics_need_no_worse_on_all():
    v2 = ("swd_ratio", "other")
    champion = Standing("1", {"swd_ratio": 1.0, "other": 1.0}, {}, False, DATA)
    assert decide(Standing("2", {"swd_ratio": 0.9, "other": 1.0}, {}, False, DATA), champion, v2).move
    assert not decide(Standing("2", {"swd_ratio": 0.5, "other": 1.1}, {}, False, DATA), champion, v2).move
    # A candidate missing a metric counts it as worst.
    assert not decide(Standing("2", {"swd_ratio": 0.5}, {}, False, DATA), champion, v2).move


def test_tags_round_trip():
    metrics = {"eval/swd_ratio": 1.22929, "eval/swd_ratio_std": 0.219877, "eval/swd_ratio_floor": 1.0,
               "eval/swd_ratio_floor_std": 0.0, "eval/count": 300, "eval/small_sample": 0, "eval/psnr": 18.3}
    tags = version_tags(metrics, V, DATA)
    assert tags == {"eval/swd_ratio": "1.22929", "eval/swd_ratio_std": "0.219877", "eval/swd_ratio_floor": "1",
                    "eval/swd_ratio_floor_std": "0", "eval/count": "300", "eval/small_sample": "0", "data_sha256": DATA}
    assert standing_from_tags("3", tags, V) == Standing("3", {"swd_ratio": 1.22929}, {"swd_ratio": 0.219877}, False, DATA)
    assert standing_from_tags("3", {"eval/swd_ratio": "oops"}, V) == Standing("3")
    assert math.isnan(standing_from_tags("3", version_tags({"eval/swd_ratio": math.nan}, V, DATA), V).metrics["swd_ratio"])


def test_scores_against_the_training_set_do_not_compare_with_val_scores():
    def scored(version, swd, against_train):
        return Standing(str(version), {"swd_ratio": swd}, {"swd_ratio": 0.1}, False, DATA, against_train)

    decision = decide(scored(2, 0.5, True), scored(1, 2.0, False), V)
    assert not decision.move and "scored against the val split, this run against the training set" in decision.reason
    assert decide(scored(2, 0.5, True), scored(1, 2.0, True), V).move
    assert decide(scored(2, 0.5, True), scored(1, 2.0, None), V).move  # a champion from before the tag: numbers decide
    tags = version_tags({"eval/swd_ratio": 1.0, "eval/reference_train": 1}, V, DATA)
    assert tags["eval/reference_train"] == "1" and standing_from_tags("3", tags, V).reference_train is True
