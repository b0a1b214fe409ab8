"""MLflow tracking: the only module that imports mlflow.

Store: ``sqlite:///<root>/mlflow.db`` with artifacts under ``<root>/artifacts`` (root is
``mlruns/`` in the repo), unless ``MLFLOW_TRACKING_URI`` points at a team server.
Browse it with ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from alphagan.redaction import redact, redact_mapping, redact_uri
from alphagan.training import TrainingCallbacks

# Before mlflow is imported: no usage reporting from a pipeline run.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

import mlflow  # noqa: E402
from mlflow.entities import Metric  # noqa: E402

# MLflow caps one log_params call at 100 entries and a param value at 6000 characters.
_PARAM_BATCH = 100


def tracking_uri(root: str | Path = "mlruns") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's sqlite store under ``root``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def display_uri(root: str | Path = "mlruns") -> str:
    """The tracking URI as it may be shown or stored: credentials masked (``user:***@``, ``token=***``)."""
    return redact(redact_uri(tracking_uri(root)))


def use_experiment(name: str, root: str | Path = "mlruns") -> str:
    """Point MLflow at the store and return the experiment id, creating it (artifacts under root)."""
    mlflow.set_tracking_uri(tracking_uri(root))
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if "MLFLOW_TRACKING_URI" not in os.environ:
        artifact_location = (Path(root).resolve() / "artifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=artifact_location)


def git_state(cwd: str | Path = ".") -> dict[str, str]:
    """The commit and whether the work tree has uncommitted changes ('unknown' outside git)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit or "unknown", "git_dirty": "unknown" if status is None else str(bool(status)).lower()}


def start_run(experiment_id: str, run_name: str | None, tags: dict[str, str], resume_run_id: str | None = None):
    """Start (or, to resume training, reopen) a run; use as a context manager."""
    tags = redact_mapping(tags)
    if resume_run_id:
        try:
            return mlflow.start_run(run_id=resume_run_id, tags=tags)
        except mlflow.exceptions.MlflowException:
            pass  # the store was reset since: a new run is the honest record
    return mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)


def log_params(flat_params: dict[str, Any]) -> None:
    """Log flattened params in batches MLflow accepts."""
    items = sorted(flat_params.items())
    for start in range(0, len(items), _PARAM_BATCH):
        mlflow.log_params({k: redact(str(v))[:6000] for k, v in items[start:start + _PARAM_BATCH]})


def log_metrics(metrics: dict[str, float], step: int | None = None, run_id: str | None = None) -> None:
    if run_id is None:
        mlflow.log_metrics(metrics, step=step)
    else:  # into a run that is not active (evaluate writes into train's): one batched write
        timestamp = int(time.time() * 1000)
        mlflow.MlflowClient().log_batch(run_id, metrics=[Metric(name, value, timestamp, step or 0) for name, value in metrics.items()])


def log_artifact(path: str | Path, artifact_path: str | None = None, run_id: str | None = None) -> None:
    """A file, or a whole directory (kept under its own name), as run artifacts."""
    path = Path(path)
    if path.is_dir():
        artifact_path = f"{artifact_path}/{path.name}" if artifact_path else path.name
    if run_id is not None:
        client = mlflow.MlflowClient()
        (client.log_artifacts if path.is_dir() else client.log_artifact)(run_id, str(path), artifact_path)
    elif path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path)


def set_tags(tags: dict[str, str], run_id: str) -> None:
    client = mlflow.MlflowClient()
    for key, value in redact_mapping(tags).items():
        client.set_tag(run_id, key, value)


def last_logged_step(run_id: str, prefix: str = "train/") -> int:
    """The highest step of any ``prefix`` metric already in the run (-1 when none)."""
    client = mlflow.MlflowClient()
    names = [name for name in client.get_run(run_id).data.metrics if name.startswith(prefix)]
    steps = [m.step for name in names for m in client.get_metric_history(run_id, name)]
    return max(steps, default=-1)


class MlflowCallbacks(TrainingCallbacks):
    """Training numbers and epoch pictures into the active MLflow run.

    On resume, steps the run already holds (logged after the checkpoint by the killed run)
    are not logged again, so a metric's history never holds a step twice. Resume is
    bit-exact on CPU, so the values kept are those the resumed run computes too.
    """

    def __init__(self) -> None:
        self.skip_through = -1

    def on_resume(self, step: int) -> None:
        run = mlflow.active_run()
        self.skip_through = last_logged_step(run.info.run_id) if run is not None else -1

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if step <= self.skip_through:
            return
        mlflow.log_metrics(metrics, step=step)

    def on_images(self, step: int, epoch: int, images: dict[str, np.ndarray]) -> None:
        if step <= self.skip_through:
            return
        for key, image in images.items():
            # key + step: the UI shows each series as one card with a step slider.
            mlflow.log_image(image, key=key, step=step)


def log_torch_model(module, name: str, input_example: np.ndarray, registered_model_name: str | None) -> str:
    """Log a module in MLflow's ``pt2`` format (torch.export: no pickled code); returns the model URI.

    Loads back with ``mlflow.pytorch.load_model(uri)``. Give an example batch of at
    least 2: torch.export fixes a dimension of size 1, and the model would take no other.
    """
    if input_example.shape[0] < 2:
        raise ValueError("input_example needs a batch of at least 2 to keep the batch size free")
    import mlflow.pytorch
    import torch

    info = mlflow.pytorch.log_model(
        module.eval(), name=name, input_example=input_example, serialization_format="pt2",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
        registered_model_name=registered_model_name,
    )
    return info.model_uri
