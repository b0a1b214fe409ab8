"""The train stage end to end on tiny data, with a temporary MLflow store."""

import csv
import json
import resource

import numpy as np
import pytest
import torch

from pipelines import fetch, prepare, train, validate
from tests.test_training import TINY_TRAIN


@pytest.fixture
def trained(write_params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the MLflow store is ./mlruns of the working directory
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")
    params = str(write_params({"train": {**TINY_TRAIN, "epochs": 2, "log_every": 2, "experiment_name": "tests",
                                         "registered_model_name": "tiny-gen"}}))
    for stage in (fetch, validate, prepare):
        assert stage.main(["--params", params]) == 0
    assert train.main(["--params", params]) == 0
    return tmp_path


def test_train_stage_writes_dvc_outputs(trained):
    metrics = json.loads((trained / "reports/train/metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["epochs"] == 2  # 18 train images, batch 4 -> 4 steps an epoch
    # The process's peak RSS in bytes (not kB): at most the peak read now, and most of it.
    peak_now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert metrics["images_per_second"] > 0 and 0.5 * peak_now <= metrics["peak_memory_bytes"] <= peak_now
    assert np.isfinite(metrics["loss_vae"]) and metrics["device"] == "cpu"
    rows = list(csv.DictReader(open(trained / "reports/train/losses.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8] and "loss_feature" in rows[0]
    assert (trained / "reports/train/samples.png").stat().st_size > 0
    assert (trained / "models/checkpoint.pt").exists()


def test_mlflow_run_holds_params_metrics_images_and_models(trained):
    import mlflow
    import mlflow.pytorch

    run_info = json.loads((trained / "reports/train/run.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{trained / 'mlruns/mlflow.db'}")
    client = mlflow.MlflowClient()
    run = client.get_run(run_info["run_id"])
    assert run.info.run_name == "tiny-exp" and run.data.tags["dvc_exp_name"] == "tiny-exp"
    assert {"git_commit", "git_dirty", "data_sha256", "device", "torch_version"} <= run.data.tags.keys()
    assert run.data.params["train.lr"] == "0.0005" and run.data.params["data.image_size"] == "16"
    assert run.data.params["data.dicebear.styles"] == "adventurer,lorelei"
    history = client.get_metric_history(run.info.run_id, "train/loss_d")
    assert [m.step for m in history] == [2, 4, 6, 8]
    assert len(client.get_metric_history(run.info.run_id, "train/images_per_second")) == 4
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"images", "validate"} <= artifacts
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("samples_ema" in p for p in images) and any("reconstructions" in p for p in images)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "validate")} >= {"validate/summary.json", "validate/data_docs"}

    metrics = json.loads((trained / "reports/train/metrics.json").read_text())
    generator = mlflow.pytorch.load_model(metrics["generator_uri"])
    assert generator(torch.randn(5, 8)).shape == (5, 3, 16, 16)
    encoder = mlflow.pytorch.load_model(metrics["encoder_uri"])
    assert encoder(torch.zeros(2, 3, 16, 16)).shape == (2, 2, 8)  # [mu, logvar]
    versions = client.search_model_versions("name='tiny-gen'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
