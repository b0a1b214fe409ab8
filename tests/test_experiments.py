"""`make exps`: the params that differ and the validated metrics with floors, within 160 columns."""

from __future__ import annotations

from alphagan.experiments import Experiment, differing_params, experiments_from_dvc_json, table


def _metrics(value: float, small: int = 0) -> dict:
    return {"validated_metrics": ["swd_ratio"], "swd_ratio": value, "swd_ratio_std": 0.1, "swd_ratio_floor": 1.0,
            "small_sample": small, "fd_random": 9.9, "run_id": "x" * 32, "inception_note": "n" * 260}


def _entry(rev: str, name: str | None, params: dict, metrics: dict, experiments: list | None = None) -> dict:
    return {"rev": rev, "name": name, "experiments": experiments, "data": {
        "rev": rev, "params": {"params.yaml": {"data": params}},
        "metrics": {"reports/evaluate/metrics.json": {"data": metrics}, "reports/train/metrics.json": {"data": {"steps": 3}}},
        "deps": {"src/alphagan/training.py": {"hash": "f" * 32}}}}


def _dvc_json() -> list:
    base = {"seed": 7, "train": {"lr": 0.0005, "epochs": 110, "adversarial_loss": "hinge"}, "data": {"styles": ["a", "b"]}}
    variants = [("lr-high", {"lr": 0.002}), ("bce", {"adversarial_loss": "bce", "epochs": 30}), ("long", {"epochs": 300})]
    experiments = [{"name": name, "executor": None, "revs": [_entry("e" * 40, name, {**base, "train": {**base["train"], **change}},
                                                                    _metrics(1.2 + i / 10))]}
                   for i, (name, change) in enumerate(variants)]
    return [_entry("workspace", None, base, _metrics(1.5)), _entry("a" * 40, "main", base, _metrics(1.5), experiments)]


def test_rows_come_from_dvc_json_in_order():
    rows = experiments_from_dvc_json(_dvc_json())
    assert [row.name for row in rows] == ["workspace", "main", "lr-high", "bce", "long"]
    assert rows[2].params["train.lr"] == 0.002 and rows[3].metrics["swd_ratio"] == 1.3


def test_only_differing_params_and_validated_metrics_are_shown():
    text = table(experiments_from_dvc_json(_dvc_json()))
    header = text.splitlines()[0]
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "experiment", "swd_ratio", "swd_ratio floor", "adversarial_loss", "epochs", "lr"]
    assert "1.400 ±0.100" in text and "| 1.000 " in text
    for hidden in ("fd_random", "run_id", "inception_note", "seed", "styles", "hash", "steps"):
        assert hidden not in text
    assert max(len(line) for line in text.splitlines()) <= 160


def test_many_differing_params_are_cut_to_the_width_and_named():
    rows = [Experiment(f"exp-{i}", {f"train.knob_{k}": f"value-{i}-{k}-{'x' * 10}" for k in range(12)}, _metrics(1 + i, small=1))
            for i in range(3)]
    assert len(differing_params(rows)) == 12
    text = table(rows, width=120)
    lines = text.splitlines()
    assert max(len(line) for line in lines[:5]) <= 120
    assert "more params differ, not shown at 120 columns: train.knob_" in text
    assert "1.000 ±0.100!" in text and "! = fewer than 100 images a side" in text


def test_no_experiments_is_a_sentence():
    assert table([]).startswith("No experiments yet")


def test_runs_scored_against_their_training_set_are_marked():
    rows = [Experiment("val-run", {}, _metrics(1.2)), Experiment("few-shot", {}, {**_metrics(0.9, small=1), "reference": "train"})]
    text = table(rows)
    assert "0.900 ±0.100!T" in text and "1.200 ±0.100 " in text
    assert "T = scored against its own training set" in text and "! = fewer than 100 images" in text
    assert "T = scored" not in table(rows[:1])
