"""The MLflow store as a user meets it: a portable store, honest tags, and the real UI in Chromium.

One tiny real training run (DiceBear faces, 16 px, 8 steps) makes the store; the browser
test serves it with ``mlflow server`` on 127.0.0.1 and drives Debian's Chromium with
Playwright. Screenshots go to ``$ALPHAGAN_TEST_ARTIFACTS/mlflow-ui`` (default:
``test-artifacts/mlflow-ui`` in the repository, git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO_ROOT, TINY, deep_update
from tests.test_training import TINY_TRAIN

BIN = Path(sys.executable).parent
LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "storage_location"))


def locations(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [row[0] for table, column in LOCATION_COLUMNS for row in connection.execute(f"SELECT {column} FROM {table}")]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project directory after fetch, validate, prepare and train (2 epochs of 4 steps)."""
    from pipelines import fetch, prepare, train, validate

    root = tmp_path_factory.mktemp("project")
    # Relative paths, as in the repository's params.yaml: the project can move.
    params = deep_update({**TINY, "paths": {"raw": "data/raw", "validated": "data/validated", "prepared": "data/prepared",
                                            "models": "models", "reports": "reports"}},
                         {"train": {**TINY_TRAIN, "epochs": 2, "log_every": 2, "checkpoint_every": 100,
                                    "experiment_name": "ui", "registered_model_name": "ui-gen"}})
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    saved_cwd, saved_env = os.getcwd(), {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")}
    for key in saved_env:
        os.environ.pop(key, None)
    os.chdir(root)
    try:
        for stage in (fetch, validate, prepare, train):
            assert stage.main(["--params", "params.yaml"]) == 0
    finally:
        os.chdir(saved_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return root


def run_of(project_dir: Path):
    import mlflow

    run_id = json.loads((project_dir / "reports/train/run.json").read_text())["run_id"]
    mlflow.set_tracking_uri(f"sqlite:///{project_dir / 'mlruns/mlflow.db'}")
    return mlflow.MlflowClient().get_run(run_id)


def test_store_records_only_relative_locations(project):
    found = locations(project / "mlruns/mlflow.db")
    assert "mlruns/artifacts" in found and not [value for value in found if value.startswith(("/", "file:"))]
    run = run_of(project)
    assert run.info.artifact_uri == f"mlruns/artifacts/{run.info.run_id}/artifacts"
    assert (project / run.info.artifact_uri / "train/samples_ema.png").is_file()


def read_back(project_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """From ``project_dir`` as the working directory: an artifact, a logged image and the model load."""
    import mlflow
    import mlflow.pytorch
    import torch

    monkeypatch.chdir(project_dir)
    run = run_of(project_dir)
    client = mlflow.MlflowClient()
    grid = np.asarray(Image.open(client.download_artifacts(run.info.run_id, "train/samples_ema.png", str(tmp_path))))
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.std() > 0
    logged = [a.path for a in client.list_artifacts(run.info.run_id, "images") if "samples_ema+step+8+" in a.path and a.path.endswith(".png")]
    assert len(logged) == 1
    step_image = np.asarray(Image.open(client.download_artifacts(run.info.run_id, logged[0], str(tmp_path))))
    assert np.array_equal(step_image, grid)  # the final grid, once as a stable artifact, once at its step
    generator_uri = json.loads((project_dir / "reports/train/metrics.json").read_text())["generator_uri"]
    assert mlflow.pytorch.load_model(generator_uri)(torch.randn(3, 8)).shape == (3, 3, 16, 16)
    assert mlflow.pytorch.load_model("models:/ui-gen/1")(torch.randn(2, 8)).shape == (2, 3, 16, 16)


def test_moved_project_reads_its_artifacts_and_models(project, tmp_path, monkeypatch):
    copied = shutil.copytree(project, tmp_path / "copy")
    moved = Path(shutil.move(copied, tmp_path / "elsewhere" / "moved"))
    assert not copied.exists()
    read_back(moved, tmp_path, monkeypatch)


def test_old_absolute_store_is_healed_after_a_move(project, tmp_path, monkeypatch):
    """A store written before the fix (absolute paths) and then moved: the next stage to open
    it (use_experiment) rewrites its locations, relative, to where it is now."""
    from alphagan import tracking

    moved = Path(shutil.copytree(project, tmp_path / "moved"))
    with sqlite3.connect(moved / "mlruns/mlflow.db") as connection:
        for table, column in LOCATION_COLUMNS:
            connection.execute(f"UPDATE {table} SET {column} = '/old/machine/project/' || {column}")
    monkeypatch.chdir(moved)
    with pytest.raises(Exception):  # the old paths really are gone
        read_back(moved, tmp_path, monkeypatch)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.use_experiment("ui")
    assert not [value for value in locations(moved / "mlruns/mlflow.db") if value.startswith("/")]
    read_back(moved, tmp_path, monkeypatch)


def test_run_tags_metrics_and_description(project, monkeypatch):
    import mlflow

    monkeypatch.chdir(project)  # artifact locations are relative to the project root
    run = run_of(project)
    tags = run.data.tags
    assert tags["device"] == "cpu"
    assert tags["git_commit"] == "unknown" and tags["git_dirty"] == "unknown"  # the tmp project is no git repository
    # Learning rates on a readable scale; the raw value is a param.
    assert run.data.metrics["train/lr_vae_log10"] == pytest.approx(np.log10(float(run.data.params["train.lr"])))
    assert "train/lr_vae" not in run.data.metrics
    # Every image card has a picture at step 0 (the untrained model), where the UI's slider opens.
    client = mlflow.MlflowClient()
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    for key in ("samples_ema", "samples_raw", "reconstructions"):
        assert {int(p.split("+step+")[1].split("+")[0]) for p in images if p.startswith(f"images/{key}+")} == {0, 4, 8}
    description = tags["mlflow.note.content"]
    assert f"get-artifact?path=train%2Fsamples_ema.png&run_uuid={run.info.run_id}" in description
    assert {a.path for a in client.list_artifacts(run.info.run_id, "train")} == {"train/samples_ema.png", "train/reconstructions.png",
                                                                                    "train/samples_through_training.png", "train/losses.png"}


def test_initial_images_are_the_untrained_model_of_the_run(project, tmp_path, monkeypatch):
    """The step-0 reconstructions show the first validation faces beside the model's first try."""
    import mlflow

    monkeypatch.chdir(project)
    run = run_of(project)
    client = mlflow.MlflowClient()
    path = next(a.path for a in client.list_artifacts(run.info.run_id, "images")
                if a.path.startswith("images/reconstructions+step+0+") and a.path.endswith(".png"))
    grid = np.asarray(Image.open(client.download_artifacts(run.info.run_id, path, str(tmp_path))))
    first_val = np.load(project / "data/prepared/val.npy")[0]
    assert np.array_equal(grid[2:18, 2:18], first_val)  # padding 2, then the first original face
    assert not np.array_equal(grid[2:18, 20:36], first_val)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def git_env(monkeypatch):
    for key, value in {"GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.invalid",
                       "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.invalid"}.items():
        monkeypatch.setenv(key, value)


def test_git_dirty_ignores_what_dvc_writes(tmp_path, git_env):
    from alphagan.tracking import git_state

    for name in ("src/model.py", "dvc.lock", "params.yaml", "reports/train/metrics.json", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    managed = ["dvc.lock", "params.yaml", str(tmp_path / "reports"), "data/raw"]
    for name in ("dvc.lock", "params.yaml", "reports/train/metrics.json"):  # what a DVC run changes
        (tmp_path / name).write_text("v2\n")
    (tmp_path / "untracked.txt").write_text("scratch\n")
    clean = git_state(tmp_path, managed)
    assert clean == {"git_commit": git(tmp_path, "rev-parse", "HEAD"), "git_dirty": "false"}
    (tmp_path / "src/model.py").write_text("edited\n")
    git(tmp_path, "mv", "README.md", "README.txt")
    dirty = git_state(tmp_path, managed)
    assert dirty["git_dirty"] == "true" and dirty["git_changed_files"] == "README.txt, src/model.py"
    assert git_state(tmp_path / "nowhere") == {"git_commit": "unknown", "git_dirty": "unknown"}


def test_dvc_experiment_commit_is_linked_to_its_run_afterwards(tmp_path, git_env, monkeypatch):
    """DVC commits an experiment after its stages; the next stage run finds that commit
    (refs/exps/..) by the run id in its metrics.json and tags the run with it."""
    import mlflow

    from alphagan import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment_id = tracking.use_experiment("link")
    run_ids = []
    for name in ("exp-a", "exp-b"):
        with tracking.start_run(experiment_id, name, {"dvc_exp_name": name}) as run:
            run_ids.append(run.info.run_id)
    metrics = tmp_path / "reports/train/metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"run_id": "not-yet"}))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "reports")
    git(tmp_path, "commit", "-qm", "baseline")
    baseline = git(tmp_path, "rev-parse", "HEAD")
    metrics.write_text(json.dumps({"run_id": run_ids[0], "steps": 8}))
    git(tmp_path, "commit", "-qam", "exp-a")
    commit = git(tmp_path, "rev-parse", "HEAD")
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/exp-a"  # DVC's layout
    git(tmp_path, "update-ref", ref, commit)
    git(tmp_path, "reset", "-q", "--hard", baseline)

    assert tracking.link_dvc_experiments(metrics) == {run_ids[0]: commit}
    client = mlflow.MlflowClient()
    tags = client.get_run(run_ids[0]).data.tags
    assert tags["dvc_exp_commit"] == commit and tags["dvc_exp_ref"] == ref
    assert "dvc_exp_commit" not in client.get_run(run_ids[1]).data.tags
    assert tracking.link_dvc_experiments(metrics) == {}  # once


# --- the real UI in a real browser -------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(os.environ.get("ALPHAGAN_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts") / "mlflow-ui"


def playwright_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM:
        return "no chromium on PATH (Debian: apt-get install -y chromium; .ci/run installs it)"
    return None


@pytest.fixture(scope="module")
def ui_server(project):
    """``mlflow server`` on the project's store, from the project root as ``make ui`` runs it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
    log = open(project / "mlflow-server.log", "wb")
    server = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", "sqlite:///mlruns/mlflow.db",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not answer: {(project / 'mlflow-server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


LOADED = "el => el.complete && el.naturalWidth > 0"


@pytest.mark.slow
def test_mlflow_ui_shows_faces_charts_and_artifacts(project, ui_server):
    if (reason := playwright_missing()):
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    run = run_of(project)
    page_url = f"{ui_server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    left_loopback = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def only_loopback(route):
                if route.request.url.startswith(("http://127.0.0.1:", "data:", "blob:")):
                    route.continue_()
                else:
                    left_loopback.append(route.request.url)
                    route.abort()

            page.route("**/*", only_loopback)

            # 1. The run page as it opens (Overview): the description shows the final sample grid.
            page.goto(page_url)
            samples = page.locator("img[src*='get-artifact'][src*='train%2Fsamples_ema.png']")
            samples.wait_for(timeout=60_000)
            page.wait_for_function(f"() => {{ const el = document.querySelector(\"img[src*='train%2Fsamples_ema.png']\"); return el && ({LOADED})(el); }}", timeout=30_000)
            assert samples.evaluate("el => el.naturalWidth") == 38  # 2x2 faces of 16 px, padding 2
            box = samples.bounding_box()
            assert box and box["width"] > 0 and 0 <= box["y"] < 1000  # on screen without scrolling
            page.screenshot(path=str(SCREENSHOTS / "1-run-overview.png"))

            # 2. Model metrics: the loss charts, the learning rate on a readable axis, the image cards.
            page.goto(f"{page_url}/model-metrics")
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
            page.get_by_text("loss_d", exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "2-model-metrics-as-opened.png"))
            search = page.get_by_placeholder("Search metric charts")
            search.fill("loss")  # charts render as they scroll into view: filter rather than scroll
            for title in ("loss_d", "loss_vae", "loss_kl", "loss_feature"):
                page.get_by_text(title, exact=True).first.wait_for(timeout=30_000)
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 4", timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "3-model-metrics-loss-charts.png"))
            search.fill("lr_")
            page.get_by_text("lr_vae_log10", exact=True).first.wait_for(timeout=30_000)
            # The axis reads -3.3 (log10 of 5e-4), not a flat 0.00 on a +-0.5 axis.
            page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot .ytick text')]"
                                   ".some(t => /^[-\u2212]3/.test(t.textContent))", timeout=30_000)
            search.fill("samples")
            card_image = page.locator("img[src*='get-artifact'][src*='samples_ema'][src*='step%2B0']")
            card_image.first.wait_for(state="attached", timeout=30_000)
            page.wait_for_function(f"() => [...document.querySelectorAll(\"img[src*='samples_ema'][src*='step%2B0']\")].some({LOADED})", timeout=30_000)
            assert page.get_by_text("No image logged at this step").count() == 0
            page.screenshot(path=str(SCREENSHOTS / "4-model-metrics-image-cards.png"))

            # 3. Artifacts: the final grid, previewed from the (relative) artifact location.
            page.goto(f"{page_url}/artifacts/train/samples_ema.png")
            preview = page.locator("img[alt='train/samples_ema.png']")
            preview.first.wait_for(timeout=60_000)
            page.wait_for_function(f"() => [...document.querySelectorAll(\"img[alt='train/samples_ema.png']\")].some({LOADED})", timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "5-artifacts-samples.png"))
        finally:
            browser.close()
    assert left_loopback == []
