"""The stages end to end: through each main(argv), and through `dvc repro` in a git copy of the repo."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines import fetch, prepare, validate
from tests.conftest import REPO_ROOT, TINY

BIN = Path(sys.executable).parent


def test_stages_chain_through_main(write_params, tmp_path):
    params = str(write_params())
    assert fetch.main(["--params", params]) == 0
    assert len(list((tmp_path / "data/raw").rglob("*.png"))) == 24
    assert validate.main(["--params", params]) == 0
    summary = json.loads((tmp_path / "reports/validate/summary.json").read_text())
    assert summary["files_seen"] == 24 and summary["accepted"] == 24
    assert prepare.main(["--params", params]) == 0
    train = np.load(tmp_path / "data/prepared/train.npy")
    val = np.load(tmp_path / "data/prepared/val.npy")
    assert train.shape == (18, 16, 16, 3) and val.shape == (6, 16, 16, 3)
    # Cartoon faces on coloured backgrounds, not blank frames.
    assert train.reshape(len(train), -1).std(axis=1).min() > 10


def test_folder_source_with_odd_files_runs_through(write_params, tmp_path):
    from tests.oddfiles import make_odd_files

    make_odd_files(tmp_path / "mine")
    params = str(write_params({"data": {"source": "folder", "folder": {"path": str(tmp_path / "mine")}}}))
    assert fetch.main(["--params", params]) == 0
    assert validate.main(["--params", params]) == 0
    assert prepare.main(["--params", params]) == 0
    index = pd.read_csv(tmp_path / "data/prepared/index.csv")
    assert len(index) == 11


def test_validate_fails_clearly_over_reject_fraction(write_params, tmp_path, capsys):
    from tests.oddfiles import make_odd_files

    make_odd_files(tmp_path / "mine")
    params = str(write_params({"data": {"source": "folder", "folder": {"path": str(tmp_path / "mine")}},
                               "validate": {"max_reject_fraction": 0.05}}))
    assert fetch.main(["--params", params]) == 0
    assert validate.main(["--params", params]) == 1
    assert "validate: error: 9 of 20 files rejected" in capsys.readouterr().err


def git_copy_of_repo(target: Path) -> dict:
    """The tracked files of this repo in a fresh git repository (no commit yet); returns its env,
    in which the stages import the copy's own code (pipelines/ and src/), not an installed one."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO_ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, target / name)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.invalid",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.invalid", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join([str(target), str(target / "src")])}
    subprocess.run(["git", "init", "-q"], cwd=target, check=True, env=env)
    return env


def write_tiny_repo_params(target: Path, overrides: dict | None = None) -> None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, values in {**TINY, **(overrides or {})}.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, dict):
                    params[section][key].update(value)
                else:
                    params[section][key] = value
        else:
            params[section] = values
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_dvc_repro_runs_the_pipeline_and_is_idempotent(tmp_path):
    from tests.test_training import TINY_TRAIN

    env = git_copy_of_repo(tmp_path)
    write_tiny_repo_params(tmp_path, {"train": {**TINY_TRAIN, "epochs": 1, "log_every": 2}})
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=tmp_path, check=True, env=env)

    def dvc(*args, check=True):
        done = subprocess.run([str(BIN / "dvc"), *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert not check or done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    dvc("repro")
    assert (tmp_path / "data/prepared/train.npy").exists()
    assert (tmp_path / "data/validated/manifest.csv").exists()
    assert (tmp_path / "reports/validate/data_docs/index.html").exists()
    assert (tmp_path / "models/checkpoint.pt").exists()
    assert (tmp_path / "mlruns/mlflow.db").exists()
    second = dvc("repro")
    assert "didn't change, skipping" in second and "Running stage" not in second
    dag = dvc("dag")
    assert all(stage in dag for stage in ("fetch", "validate", "prepare", "train"))
    metrics = json.loads(dvc("metrics", "show", "--json"))
    workspace = json.dumps(metrics)
    assert "images_per_second" in workspace and "files_seen" in workspace
    dvc("plots", "show", "-o", str(tmp_path / "plots"))
    assert (tmp_path / "plots" / "index.html").exists()
    # Loss charts: against the logged step, one colour per series, titled axes.
    plots = json.loads(dvc("plots", "show", "--json"))["data"]
    charts = {name: entries[0]["content"] for name, entries in plots.items() if entries[0]["type"] == "vega"}
    assert len(charts) == 2
    for chart in charts.values():
        encoding = chart["encoding"]
        assert encoding["color"]["field"] == "field" and encoding["x"]["field"] == "step"
        assert encoding["x"]["title"] == "training step" and encoding["y"]["title"].startswith("loss")
        series = {row["field"] for row in chart["data"]["values"]}
        assert len(series) >= 2 and series <= {"loss_d", "loss_adv_g", "loss_vae", "loss_feature", "loss_pixel", "loss_kl"}
        logged_steps = [int(row["step"]) for row in chart["data"]["values"]]
        last = max(logged_steps)  # log_every 2: every second real step, and the last one (not a row index)
        assert sorted(set(logged_steps)) == [step for step in range(1, last + 1) if step % 2 == 0 or step == last]
    # One picture per distinct thing: no two image plots are the same bytes.
    images = {name: entries[0]["url"] for name, entries in plots.items() if entries[0]["type"] == "image"}
    assert {Path(name).name for name in images} == {"losses.png", "samples_through_training.png", "samples.png",
                                                     "reconstructions.png", "nearest_neighbours.png", "memorisation.png"}
    contents = [Path(url).read_bytes() for url in images.values()]
    assert len(set(contents)) == len(contents)
    evaluate_metrics = json.loads((tmp_path / "reports/evaluate/metrics.json").read_text())
    # Either a FID with its floor, or a note that says why not: never both, never neither.
    assert ("fid_inception" in evaluate_metrics) != evaluate_metrics["inception_note"].startswith("FID/KID (Inception) not computed")
    assert ("fid_inception" in evaluate_metrics) == ("fid_inception_floor" in evaluate_metrics)
    assert evaluate_metrics["swd_ratio_floor"] == 1.0 and evaluate_metrics["swd_ratio"] > 0
    assert evaluate_metrics["validated_metrics"] == ["swd_ratio"]
    val_count = len(np.load(tmp_path / "data/prepared/val.npy", mmap_mode="r"))
    assert val_count < 100  # the tiny run: evaluate.reference auto scores against the training set, and says so everywhere
    assert evaluate_metrics["reference"] == "train" and evaluate_metrics["reference_train"] == 1
    assert f"the val split holds {val_count} images" in evaluate_metrics["reference_note"]
    assert evaluate_metrics["small_sample"] == 1 and evaluate_metrics["memorisation_small_sample"] == 1
    assert "memorisation reference" in evaluate_metrics["warnings"]

    # Two experiments, compared by `dvc exp show`; each MLflow run carries its experiment's name.
    for name, lr in (("lr-high", "0.002"), ("lr-low", "0.0001")):
        dvc("exp", "run", "-n", name, "-S", f"train.lr={lr}")
    shown = json.loads(dvc("exp", "show", "--json"))
    found = {}

    def collect(node):
        if isinstance(node, dict):
            if node.get("name") in ("lr-high", "lr-low") and isinstance(node.get("data"), dict):
                found[node["name"]] = node["data"]
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(shown)
    assert set(found) == {"lr-high", "lr-low"}
    def first(node, key):
        if isinstance(node, dict):
            if key in node and not isinstance(node[key], (dict, list)):
                return node[key]
            for value in node.values():
                if (hit := first(value, key)) is not None:
                    return hit
        return None

    lrs = {name: first(data.get("params"), "lr") for name, data in found.items()}
    assert lrs == {"lr-high": 0.002, "lr-low": 0.0001}
    fds = {name: first(data.get("metrics"), "swd_ratio") for name, data in found.items()}
    assert None not in fds.values()
    assert fds["lr-high"] != fds["lr-low"]

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}")
    run_names = {run.info.run_name for run in mlflow.search_runs(experiment_names=["alpha-gan"], output_format="list")}
    assert {"lr-high", "lr-low"} <= run_names

    # A third experiment, then `make exps`'s table: three experiments side by side in 160 columns.
    dvc("exp", "run", "-n", "hinge", "-S", "train.adversarial_loss=hinge")  # not the default (bce)
    done = subprocess.run([sys.executable, "-m", "alphagan.experiments"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 160, done.stdout
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["experiment", "swd_ratio", "swd_ratio floor", "adversarial_loss", "lr"], done.stdout
    names = [line.split("|")[1].strip() for line in lines[2:] if line.startswith("|")]
    assert {"lr-high", "lr-low", "hinge"} <= set(names)
