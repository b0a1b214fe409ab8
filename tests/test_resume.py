"""Part 3: resume that is hard to misuse (device-independent loading, RNG states, refusals)."""

import numpy as np
import pytest
import torch

from alphagan import training
from alphagan.training import TrainingError, load_checkpoint, train
from tests.test_training import _all_tensors, tiny_params


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8), rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)


def _differences(a_path, b_path):
    a, b = _all_tensors(load_checkpoint(a_path)), _all_tensors(load_checkpoint(b_path))
    assert a.keys() == b.keys() and len(a) > 40
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_resume_without_a_checkpoint_is_an_error(tmp_path, images):
    with pytest.raises(TrainingError, match=r"train.resume is true but there is no checkpoint at .*c.pt; set train.resume=false"):
        train(*images, tiny_params(max_steps=2, resume=True).train, 16, 0, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


def test_resume_with_changed_hyperparameters_is_refused_naming_them(tmp_path, images):
    train(*images, tiny_params(max_steps=2).train, 16, 0, tmp_path / "c.pt")
    before = (tmp_path / "c.pt").read_bytes()
    with pytest.raises(TrainingError) as info:
        train(*images, tiny_params(max_steps=4, resume=True, lr=0.001, kl_weight=2.0).train, 16, 0, tmp_path / "c.pt")
    message = str(info.value)
    assert "hyper-parameters changed" in message and "\n" not in message
    assert "train.lr 0.0005 -> 0.001" in message and "train.kl_weight 8.0 -> 2.0" in message
    assert "max_steps" not in message
    with pytest.raises(TrainingError, match="seed 0 -> 1"):
        train(*images, tiny_params(max_steps=4, resume=True).train, 16, 1, tmp_path / "c.pt")
    assert (tmp_path / "c.pt").read_bytes() == before  # refused before anything was written
    # Longer training, another device setting or reporting cadence is what resume is for.
    result = train(*images, tiny_params(max_steps=3, resume=True, epochs=50, log_every=3, checkpoint_every=7).train,
                   16, 0, tmp_path / "c.pt")
    assert result.step == 3


def _save_as_if_on_cuda(monkeypatch):
    """Make torch.save tag every storage 'cuda:0', as a checkpoint written on a GPU is."""
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    real_save = training.save_checkpoint

    def save_with_a_cuda_generator(*args, **kwargs):
        # One saved generator state per (fake) CUDA device, as on a one-GPU machine.
        with pytest.MonkeyPatch.context() as inner:
            inner.setattr(torch.cuda, "is_available", lambda: True)
            inner.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.get_rng_state().clone()])
            real_save(*args, **kwargs)

    monkeypatch.setattr(training, "save_checkpoint", save_with_a_cuda_generator)


def test_a_checkpoint_saved_on_a_gpu_resumes_bit_exactly_on_cpu(tmp_path, images, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("simulates a GPU checkpoint on a machine without one")
    straight = tmp_path / "straight.pt"
    train(*images, tiny_params(max_steps=4).train, 16, 3, straight)
    with monkeypatch.context() as patch:
        _save_as_if_on_cuda(patch)
        train(*images, tiny_params(max_steps=2, device="cpu").train, 16, 3, tmp_path / "gpu.pt")
    # The simulation is real: without map_location torch refuses this file on a CPU-only machine.
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(tmp_path / "gpu.pt", weights_only=True)
    state = load_checkpoint(tmp_path / "gpu.pt")
    assert state["torch_rng"].device.type == "cpu" and len(state["cuda_rng"]) == 1
    resumed = train(*images, tiny_params(max_steps=4, resume=True).train, 16, 3, tmp_path / "gpu.pt")
    assert resumed.step == 4
    assert _differences(straight, tmp_path / "gpu.pt") == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_resume_is_bit_exact(tmp_path, images):
    torch.backends.cudnn.deterministic = True  # bit-exactness needs deterministic kernels
    straight = tmp_path / "straight.pt"
    train(*images, tiny_params(max_steps=6, device="cuda").train, 16, 3, straight)
    train(*images, tiny_params(max_steps=3, device="cuda").train, 16, 3, tmp_path / "resumed.pt")
    state = load_checkpoint(tmp_path / "resumed.pt")
    assert state["cuda_rng"] and all(s.device.type == "cpu" for s in state["cuda_rng"])
    train(*images, tiny_params(max_steps=6, resume=True, device="cuda").train, 16, 3, tmp_path / "resumed.pt")
    assert _differences(straight, tmp_path / "resumed.pt") == []
    # And a GPU checkpoint continues on the CPU, and a CPU one on the GPU.
    train(*images, tiny_params(max_steps=2, device="cuda").train, 16, 3, tmp_path / "moved.pt")
    assert train(*images, tiny_params(max_steps=4, resume=True, device="cpu").train, 16, 3, tmp_path / "moved.pt").step == 4
    assert train(*images, tiny_params(max_steps=6, resume=True, device="cuda").train, 16, 3, tmp_path / "moved.pt").step == 6
    state = load_checkpoint(tmp_path / "moved.pt")
    assert all(torch.isfinite(v).all() for v in _all_tensors(state).values() if v.is_floating_point())


KILL_AT_STEP = r"""
import os, signal, sys
from alphagan import training
real_step = training.train_step

def step_or_die(model, real, params, step, autocast):
    if step == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` mid-training: no cleanup of any kind
    return real_step(model, real, params, step, autocast)

training.train_step = step_or_die
from pipelines import train
sys.exit(train.main(["--params", sys.argv[1]]))
"""


@pytest.mark.slow
def test_kill_then_resume_leaves_no_step_twice_in_losses_or_mlflow(write_params, tmp_path, monkeypatch):
    import csv
    import json
    import os
    import signal
    import subprocess
    import sys

    import mlflow

    from pipelines import fetch, prepare, validate
    from pipelines import train as train_stage
    from tests.conftest import REPO_ROOT
    from tests.test_training import TINY_TRAIN

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = {"train": {**TINY_TRAIN, "epochs": 2, "log_every": 1, "checkpoint_every": 3, "experiment_name": "kill"}}
    params = str(write_params(overrides))
    for stage in (fetch, validate, prepare):
        assert stage.main(["--params", params]) == 0
    losses, checkpoint = tmp_path / "reports/train/losses.csv", tmp_path / "models/checkpoint.pt"

    assert train_stage.main(["--params", params]) == 0  # uninterrupted: 8 steps
    straight_losses = losses.read_bytes()
    straight_weights = _all_tensors(load_checkpoint(checkpoint))
    straight_run = json.loads((tmp_path / "reports/train/run.json").read_text())["run_id"]

    env = {**os.environ, "KILL_AT_STEP": "5", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", KILL_AT_STEP, params], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert load_checkpoint(checkpoint)["step"] == 3  # the last checkpoint before the kill
    assert [int(r["step"]) for r in csv.DictReader(open(losses))] == [1, 2, 3, 4, 5]  # logged after it too
    killed_run = json.loads((tmp_path / "reports/train/run.json").read_text())["run_id"]
    assert killed_run != straight_run

    resumed = str(write_params({"train": {**overrides["train"], "resume": True}}))
    assert train_stage.main(["--params", resumed]) == 0
    assert json.loads((tmp_path / "reports/train/run.json").read_text())["run_id"] == killed_run  # the same MLflow run
    assert losses.read_bytes() == straight_losses  # rows 4 and 5 once, and equal to the uninterrupted run's
    resumed_weights = _all_tensors(load_checkpoint(checkpoint))
    assert [k for k in straight_weights if not torch.equal(straight_weights[k], resumed_weights[k])] == []

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}")
    client = mlflow.MlflowClient()
    for name in ("train/loss_d", "train/loss_vae", "train/images_per_second"):
        steps = [m.step for m in client.get_metric_history(killed_run, name)]
        assert sorted(steps) == list(range(1, 9)), (name, steps)
    straight_d = {m.step: m.value for m in client.get_metric_history(straight_run, "train/loss_d")}
    resumed_d = {m.step: m.value for m in client.get_metric_history(killed_run, "train/loss_d")}
    assert resumed_d == straight_d


def test_stage_resume_misuse_stops_before_an_mlflow_run(write_params, tmp_path, monkeypatch, capsys):
    from pipelines import fetch, prepare, validate
    from pipelines import train as train_stage
    from tests.test_training import TINY_TRAIN

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = str(write_params({"train": {**TINY_TRAIN, "max_steps": 1, "resume": True}}))
    for stage in (fetch, validate, prepare):
        assert stage.main(["--params", params]) == 0
    capsys.readouterr()
    assert train_stage.main(["--params", params]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"train: error: train.resume is true but there is no checkpoint at {tmp_path / 'models/checkpoint.pt'}; " \
                  "set train.resume=false to start a new run"
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "reports/train/run.json").exists()
