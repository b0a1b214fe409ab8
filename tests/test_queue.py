"""Parallel sweeps: `dvc exp run --queue` twice, `dvc queue start -j 2`, nothing lost.

DVC runs queued experiments in temporary copies of the project (``.dvc/tmp/exps/...``)
that it deletes afterwards; each run must land in the original project's MLflow store,
named after its experiment, with both experiments writing to the one sqlite file at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_pipeline import BIN, git_copy_of_repo, write_tiny_repo_params

NAMES = ("q-high", "q-low")


def _experiments(shown: list) -> dict[str, dict]:
    """``dvc exp show --json``'s experiments by name: their params, metrics."""
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if rev.get("name") in NAMES and isinstance(rev.get("data"), dict):
                    found[rev["name"]] = rev["data"]
    return found


@pytest.mark.slow
def test_queued_experiments_run_in_parallel_into_the_project_store(tmp_path):
    from tests.test_training import TINY_TRAIN

    project = tmp_path / "project"
    project.mkdir()
    env = git_copy_of_repo(project)
    # `dvc queue start` spawns its workers as `dvc exp queue-worker` found on PATH (DVC 3.x,
    # posix), so the venv's bin must be on PATH (git_copy_of_repo puts it first). The workers
    # run the stages with the caller's environment: this checkout's code (PYTHONPATH), and an
    # ALPHAGAN_PYTHON that records each stage's DVC_EXP_NAME, proving both reach the stage
    # (the temporary workspace has no .venv of its own).
    env["PYTHONPATH"] = f"{project / 'src'}{os.pathsep}{project}"
    wrapper, seen = tmp_path / "python", tmp_path / "stages-seen"
    wrapper.write_text(f'#!/bin/sh\necho "$DVC_EXP_NAME|$DVC_ROOT|$PWD" >> "{seen}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env["ALPHAGAN_PYTHON"] = str(wrapper)
    env.pop("MLFLOW_TRACKING_URI", None)
    write_tiny_repo_params(project, {"train": {**TINY_TRAIN, "epochs": 1}})

    def run(*args, check=True):
        # Output goes to files, not pipes: `dvc queue start` forks its workers with the caller's
        # stdout and stderr, so with pipes subprocess.run would wait for EOF, that is, until both
        # experiments had finished, and a slow machine would hit the timeout there (CI did).
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            done = subprocess.run(args, cwd=project, env=env, stdout=out, stderr=err, text=True, timeout=300)
            out.seek(0), err.seek(0)
            stdout, stderr = out.read(), err.read()
        assert not check or done.returncode == 0, f"{args}: {stdout}{stderr}"
        return stdout

    def dvc(*args, check=True):
        return run(str(BIN / "dvc"), *args, check=check)

    run("git", "add", "-A")
    run("git", "commit", "-qm", "init")
    dvc("repro", "prepare")  # data once: the queued experiments rerun only train and evaluate
    run("git", "add", "dvc.lock")
    run("git", "commit", "-qm", "data")
    assert not (project / "mlruns/mlflow.db").exists()  # both experiments create the store at once

    for name, lr in zip(NAMES, ("0.002", "0.0001")):
        dvc("exp", "run", "--queue", "-n", name, "-S", f"train.lr={lr}")
    try:
        dvc("queue", "start", "-j", "2")
        started = time.monotonic()
        deadline = started + 900  # two tiny experiments; CI's 2 cores have taken over 300 s
        while True:
            status = dvc("queue", "status")
            if not any(word in status for word in ("Queued", "Running")):
                break
            if "Running" not in status and "0 active" in status and time.monotonic() > started + 60:
                raise AssertionError(f"no queue worker started (is the venv's dvc on PATH?):\n{status}")
            assert time.monotonic() < deadline, f"queue still busy after 900 s:\n{status}"
            time.sleep(3)
    finally:
        dvc("queue", "stop", "--kill", check=False)

    logs = {name: dvc("queue", "logs", name, check=False) for name in NAMES}
    assert all(name in status and "Success" in status for name in NAMES), status + "\n".join(logs.values())
    for name, log in logs.items():
        assert "database is locked" not in log and "Traceback" not in log, f"{name}:\n{log}"

    # What DVC 3.x gives a queued stage: DVC_EXP_NAME, DVC_ROOT = the original project, and a
    # temporary workspace under .dvc/tmp/exps as the working directory.
    stages = [line.split("|") for line in seen.read_text().splitlines()]
    queued = [stage for stage in stages if stage[0]]  # the rest: `dvc repro prepare` above
    assert {name for name, _, _ in queued} == set(NAMES), stages
    assert all(root == str(project) and Path(cwd).is_relative_to(project / ".dvc/tmp/exps") for _, root, cwd in queued), stages

    found = _experiments(json.loads(dvc("exp", "show", "--json")))
    assert set(found) == set(NAMES)
    evaluated = {name: data["metrics"]["reports/evaluate/metrics.json"]["data"] for name, data in found.items()}
    assert all(metrics["swd_ratio"] > 0 for metrics in evaluated.values())

    # Every run in the original project's store, none left behind in a temporary workspace.
    assert not list((project / ".dvc/tmp/exps").rglob("mlflow.db"))
    assert (project / "mlruns/mlflow.db").is_file(), "no MLflow store in the project: the runs went to the temporary workspaces"
    with sqlite3.connect(project / "mlruns/mlflow.db") as db:
        runs = {name: (run_id, status, uri) for run_id, name, status, uri in
                db.execute("SELECT run_uuid, name, status, artifact_uri FROM runs")}
        assert set(runs) == set(NAMES), runs
        for name in NAMES:
            run_id, run_status, artifact_uri = runs[name]
            assert run_status == "FINISHED"
            assert evaluated[name]["run_id"] == run_id  # metrics.json -> MLflow run
            tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
            assert tags["dvc_exp_name"] == name and tags["dvc_exp_baseline_rev"]  # MLflow run -> experiment
            metrics = {key for (key,) in db.execute("SELECT DISTINCT key FROM metrics WHERE run_uuid = ?", (run_id,))}
            assert {"eval/swd_ratio", "train/loss_d"} <= metrics, metrics
            assert ".dvc/tmp" not in artifact_uri, artifact_uri
            artifacts = project / "mlruns/artifacts" / run_id / "artifacts"
            assert (artifacts / "evaluate/metrics.json").is_file(), sorted(p.name for p in artifacts.rglob("*"))


_OPEN_AND_LOG = """
import os, sys, time
os.chdir(sys.argv[1])
from alphagan import tracking
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all processes open the store together
experiment_id = tracking.use_experiment("alpha-gan")
import mlflow
with mlflow.start_run(experiment_id=experiment_id):
    for step in range(20):
        mlflow.log_metrics({"train/a": step, "train/b": -step}, step=step)
"""


@pytest.mark.slow
def test_processes_creating_the_store_at_once_all_succeed(tmp_path):
    """Without the lock in use_experiment, 3-4 of 4 such processes failed here (schema
    migrations raced: sqlite OperationalError, alembic 'expected to match one row')."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.time() + 15
    processes = [subprocess.Popen([sys.executable, "-c", _OPEN_AND_LOG, str(tmp_path), str(start)], env=env,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [process.communicate(timeout=180)[1] for process in processes]
    failed = [error.strip().splitlines()[-1] for process, error in zip(processes, errors) if process.returncode]
    assert not failed, failed
    with sqlite3.connect(tmp_path / "mlruns/mlflow.db") as db:
        assert db.execute("SELECT COUNT(*) FROM runs WHERE status = 'FINISHED'").fetchone()[0] == 4
        assert db.execute("SELECT COUNT(*) FROM experiments WHERE name = 'alpha-gan'").fetchone()[0] == 1
