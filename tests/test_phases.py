"""alphagan.phases: the per-phase wall times that the data benchmarks print."""

from __future__ import annotations

import json
import time

from alphagan import phases


def test_phases_add_up_in_first_seen_order():
    phases.reset()
    with phases.phase("scan"):
        time.sleep(0.02)
    with phases.phase("suite"):
        pass
    with phases.phase("scan"):
        time.sleep(0.02)
    seconds = phases.recorded()
    assert list(seconds) == ["scan", "suite"]
    assert 0.04 <= seconds["scan"] < 1.0 and seconds["suite"] < seconds["scan"]
    phases.reset()
    assert phases.recorded() == {}


def test_a_phase_that_raises_is_still_counted():
    phases.reset()
    try:
        with phases.phase("fails"):
            raise ValueError("boom")
    except ValueError:
        pass
    assert "fails" in phases.recorded()


def test_phases_beside_others_are_not_added_to_the_total():
    seconds = {"scan": 3.0, "import great_expectations (beside the scan)": 2.0, "suite": 1.0}
    assert phases.sequential_total(seconds) == 4.0
    assert phases.line(seconds) == "scan 3.0 s (75%), import great_expectations (beside the scan) 2.0 s (50%), suite 1.0 s (25%)"


def test_a_stage_writes_its_phases_only_when_asked(write_params, tmp_path, monkeypatch):
    """The data stages record where their time goes; the stage writes it when $ALPHAGAN_PHASE_TIMES names a file."""
    from pipelines import fetch, prepare, validate

    params = str(write_params())
    assert fetch.main(["--params", params]) == 0
    assert not list(tmp_path.rglob("*.phases.json"))
    for stage, expected in ((validate, {"list files", "scan: read, hash, header, decode", "scan: table",
                                        "import great_expectations (beside the scan)", "GX suite + data docs",
                                        "manifest + reports", "fsync outputs"}),
                            (prepare, {"read manifest", "decode + resize + write rows", "fsync outputs"})):
        target = tmp_path / f"{stage.__name__.split('.')[-1]}.phases.json"
        monkeypatch.setenv(phases.ENV_VAR, str(target))
        phases.reset()
        assert stage.main(["--params", params]) == 0
        seconds = json.loads(target.read_text())
        assert expected <= set(seconds), sorted(seconds)
        assert all(value >= 0 for value in seconds.values())
