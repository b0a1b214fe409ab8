"""train: the VAE-GAN on ``paths.prepared``, tracked in MLflow; checkpoint, metrics and plots for DVC.

With ``train.nproc`` above 1 this process starts that many copies of itself through
torchrun's launcher (one node) and waits; under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
set, as on each node of a multi-node run) it is one rank and never relaunches. Rank 0 alone
opens the MLflow run and writes the checkpoint, reports and pictures; the other ranks only train.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alphagan import atomic, distributed, plots
from alphagan.config import Params, flatten
from alphagan.models import EncoderMoments
from alphagan.redaction import redact_mapping
from alphagan.training import (TrainingCallbacks, check_resume, epoch_images, load_generator, picture_inputs,
                               seeded_model, select_device, train)
from pipelines._common import load_prepared, stage_main


def train_outputs(params: Params) -> dict[str, Path]:
    """Where this stage writes (dvc.yaml names the same paths)."""
    reports = Path(params.paths.reports) / "train"
    return {"checkpoint": Path(params.paths.models) / "checkpoint.pt", "metrics": reports / "metrics.json",
            "run": reports / "run.json", "losses": reports / "losses.csv", "samples": reports / "samples.png",
            "loss_curves": reports / "losses.png", "samples_through_training": reports / "samples_through_training.png"}


def file_digest(*paths: Path) -> str:
    """sha256 over the files' bytes, in order: ties the MLflow run to the exact data."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_loss_rows(losses_csv: Path) -> list[dict[str, str]]:
    try:
        with open(losses_csv, newline="") as stream:
            return list(csv.DictReader(stream))
    except FileNotFoundError:
        return []


class StageCallbacks(TrainingCallbacks):
    """Fan out to MLflow, and keep DVC's files: the loss history, its chart, the last grid
    and a strip of the same faces through training.

    ``losses.csv`` is rewritten atomically at each report (it is small), so a kill never
    leaves a torn row; on resume it keeps only the rows up to the checkpoint's step, and
    the resumed run writes the rest again: no step appears twice. ``losses.png`` follows
    it at every epoch, for readers without vega (DVC's charts load it from a CDN).
    """

    def __init__(self, mlflow_callbacks: TrainingCallbacks, outputs: dict[str, Path], image_size: int, resume: bool):
        self.forward = mlflow_callbacks
        self.outputs, self.image_size = outputs, image_size
        self.rows: list[dict] = read_loss_rows(outputs["losses"]) if resume else []
        # The first row of each epoch's grid (a resumed run starts its strip at the resume).
        self.snapshots: list[tuple[int, np.ndarray]] = []
        self.chart_drawn = -float("inf")
        self.last_images: dict[str, np.ndarray] = {}

    def on_resume(self, step: int) -> None:
        self.forward.on_resume(step)
        self.rows = [row for row in self.rows if int(row["step"]) <= step]

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.forward.on_metrics(step, metrics)
        self.rows.append({"step": step, **{k.removeprefix("train/"): round(v, 6) for k, v in metrics.items() if "loss" in k}})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.rows[-1]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.outputs["losses"], buffer.getvalue())

    def on_images(self, step: int, epoch: int, images: dict[str, np.ndarray]) -> None:
        self.forward.on_images(step, epoch, images)
        self.last_images = images
        grid = images["samples_ema"]
        self.snapshots.append((epoch + 1, grid[: self.image_size + 4]))  # to_grid pads 2 px around each face
        pictures = {"samples": grid, "samples_through_training": plots.samples_through_training(self.snapshots)}
        # The chart costs ~0.2 s: redrawn at most once a minute here, and once at the end (finish).
        if self.rows and time.monotonic() - self.chart_drawn >= 60:
            pictures["loss_curves"] = plots.loss_curves(self.rows)
            self.chart_drawn = time.monotonic()
        self._save(pictures)

    def finish(self) -> None:
        """Draw the loss chart of the whole history (after the last step)."""
        if self.rows:
            self._save({"loss_curves": plots.loss_curves(self.rows)})

    def _save(self, pictures: dict[str, np.ndarray]) -> None:
        for name, picture in pictures.items():
            atomic.save_with(self.outputs[name], lambda temporary, p=picture: Image.fromarray(p).save(temporary, format="PNG"))


def initial_images(params: Params, train_images: np.ndarray, val_images: np.ndarray, device: torch.device) -> dict[str, np.ndarray]:
    """The epoch pictures of the model as ``train`` builds it, before its first step: the
    same seeded networks and picture inputs, so the step-0 grids are the run's own starting
    point. ``train`` seeds again itself: nothing here changes what it computes."""
    model = seeded_model(params.train, params.data.image_size, params.seed, device)
    return epoch_images(model, *picture_inputs(params.train, params.seed, train_images, val_images, device))


def device_name(device: torch.device) -> str:
    """What the ``device`` tag claims: ``cpu``, or the CUDA card's name."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def launch(params: Params, argv: list[str]) -> None:
    """Start ``train.nproc`` ranks of this stage on this machine; they write everything.

    What would fail on every rank (no prepared data, misuse of resume, more processes than
    GPUs) is refused here first, once."""
    load_prepared(params)
    check_resume(train_outputs(params)["checkpoint"], params.train, params.data.image_size, params.seed)
    device, nproc = select_device(params.train.device), params.train.nproc
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise distributed.DistributedError(f"train.nproc is {nproc} but this machine has {torch.cuda.device_count()} GPU(s); "
                                           "use one process per GPU")
    print(f"train: starting {nproc} processes on this machine (torchrun, {'NCCL' if device.type == 'cuda' else 'gloo'})",
          file=sys.stderr)
    distributed.launch(nproc, "pipelines.train", argv)


def run(params: Params) -> None:
    """The stage in this process: alone, or as one rank of a data-parallel run."""
    world = distributed.start(select_device(params.train.device))
    try:
        if world is not None and not world.is_main:
            train_images, val_images = load_prepared(params)
            train(train_images, val_images, params.train, params.data.image_size, params.seed,
                  train_outputs(params)["checkpoint"], distributed=world)
        else:
            run_main(params, world)
    finally:
        distributed.stop()


def run_main(params: Params, world: distributed.Distributed | None) -> None:
    """Everything a single process does, and what rank 0 does in a data-parallel run."""
    from alphagan import tracking  # mlflow loads only in the stages that log

    tracking.check_server()  # a team server that is down: one line now, not after the data is loaded
    started = time.time()
    outputs = train_outputs(params)
    outputs["metrics"].parent.mkdir(parents=True, exist_ok=True)
    prepared = Path(params.paths.prepared)
    train_images, val_images = load_prepared(params)
    device = world.device if world else select_device(params.train.device)
    processes = world.world_size if world else 1
    # Misuse of resume (no checkpoint, changed hyper-parameters) stops before an MLflow run opens.
    check_resume(outputs["checkpoint"], params.train, params.data.image_size, params.seed)
    # The workspace's last run: continued when resuming, else closed honestly if it never finished.
    last_run = json.loads(outputs["run"].read_text()).get("run_id") if outputs["run"].exists() else None
    previous_run = last_run if params.train.resume else None
    # What DVC itself writes during a run is not "dirty code": dvc.lock, the params file
    # (`dvc exp run -S` edits it; the values are the run's params) and the outputs.
    managed = ["dvc.lock", "params.yaml", *(getattr(params.paths, name) for name in type(params.paths).model_fields)]
    tags = {
        **tracking.git_state(managed=managed), "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc_exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
        "data_sha256": file_digest(prepared / "train.npy", prepared / "val.npy"),
        "device": device_name(device), "processes": str(processes), "torch_version": torch.__version__,
        "data_source": params.data.source,
    }
    try:
        with tracking.lost_server_is_one_line():
            experiment_id = tracking.use_experiment(params.train.experiment_name)
            tracking.link_dvc_experiments(outputs["metrics"])  # earlier experiments, committed by DVC since
            last_state = tracking.run_state(last_run)
        run_id, result = track_training(params, outputs, tags, experiment_id, previous_run, last_run, last_state,
                                        train_images, val_images, device, world)
    except tracking.TrackingServerUnavailable as exc:
        raise tracking.TrackingServerUnavailable(
            f"{exc}; {checkpoint_note(outputs['checkpoint'], None if params.train.resume else started)}") from None
    print(f"train: {result.step} steps on {result.device}{f' x {processes}' if processes > 1 else ''}, "
          f"{result.images_per_second:.0f} img/s; MLflow run {run_id} at {tracking.display_uri()}")


def checkpoint_note(checkpoint: Path, written_since: float | None) -> str:
    """What a user can do after the tracking server went away: resume from the checkpoint
    (when it belongs to this run: written since ``written_since``, or any when resuming)."""
    from alphagan.training import TrainingError, load_checkpoint

    try:
        if written_since is not None and checkpoint.stat().st_mtime < written_since:
            raise TrainingError("an earlier run's checkpoint")
        step = load_checkpoint(checkpoint)["step"]
    except (TrainingError, OSError):
        return "no checkpoint of this run was written yet: run the stage again once the server answers"
    return (f"{checkpoint} holds step {step}: once the server answers, continue the same run with "
            "train.resume: true (dvc exp run -S train.resume=true)")


def track_training(params: Params, outputs: dict[str, Path], tags: dict[str, str], experiment_id: str,
                   previous_run: str | None, last_run: str | None, last_state, train_images, val_images, device,
                   world: distributed.Distributed | None):
    """Train inside one MLflow run (reopened when resuming); returns its id and the training result.
    In a data-parallel run this is rank 0 (``world``); the other ranks train without tracking."""
    from alphagan import tracking

    processes = world.world_size if world else 1

    run_name = os.environ.get("DVC_EXP_NAME") or None
    with tracking.tracked_run(experiment_id, run_name, tags, resume_run_id=previous_run) as active:
        run_id = active.info.run_id
        tracking.settle_previous_run(last_run, last_state, run_id)
        # The tracking URI may carry a token (user:token@host, ?token=): only its redacted form is stored.
        atomic.write_text(outputs["run"], json.dumps({"run_id": run_id, "experiment_id": experiment_id,
                                                      "tracking_uri": tracking.display_uri()}, indent=2))
        if previous_run != run_id:
            tracking.log_params(flatten(params.as_dict()))
            tracking.log_images(initial_images(params, train_images, val_images, device), step=0)
        callbacks = StageCallbacks(tracking.MlflowCallbacks(), outputs, params.data.image_size, params.train.resume)
        result = train(train_images, val_images, params.train, params.data.image_size, params.seed,
                       outputs["checkpoint"], callbacks, distributed=world)
        callbacks.finish()
        decoder, encoder, config = load_generator(outputs["checkpoint"])
        name = params.train.registered_model_name
        generator_uri = tracking.log_torch_model(decoder, "generator", np.zeros((2, config.latent_dim), np.float32), name)
        encoder_uri = tracking.log_torch_model(
            EncoderMoments(encoder), "encoder", np.zeros((2, 3, config.image_size, config.image_size), np.float32), f"{name}-encoder")
        final = {"samples_ema": "train/samples_ema.png", "reconstructions": "train/reconstructions.png"}
        with tempfile.TemporaryDirectory() as scratch:
            for key, path in final.items():
                if key in callbacks.last_images:
                    Image.fromarray(callbacks.last_images[key]).save(Path(scratch) / Path(path).name)
                    tracking.log_artifact(Path(scratch) / Path(path).name, "train")
        for key in ("samples_through_training", "loss_curves"):  # DVC's pictures, in the run too
            if outputs[key].exists():
                tracking.log_artifact(outputs[key], "train")
        tracking.set_description(run_id, tracking.description(
            run_id, f"Step {result.step} (epoch {result.epoch}) on {device_name(device)}"
                    f"{f' x {processes} processes' if processes > 1 else ''}",
            {"Samples (EMA generator, fixed latents)": final["samples_ema"],
             "Reconstructions (validation face, reconstruction)": final["reconstructions"],
             "The same latents through training": "train/samples_through_training.png",
             "Losses": "train/losses.png"},
            ["Every epoch's grids: Model metrics (cards open at step 0, the untrained model; "
             "drag the slider in full screen) and Artifacts > images."]))
        validate_reports = Path(params.paths.reports) / "validate"
        for report in ("summary.json", "data_docs"):
            if (validate_reports / report).exists():
                tracking.log_artifact(validate_reports / report, "validate")
        metrics = {"steps": result.step, "epochs": result.epoch, "kimg": round(result.images_shown / 1000, 3),
                   "images_per_second": round(result.images_per_second, 2), "processes": processes,
                   "peak_memory_bytes": result.peak_memory_bytes, "device": result.device,
                   **{k: round(v, 6) for k, v in result.final_losses.items()},
                   "run_id": run_id, "generator_uri": generator_uri, "encoder_uri": encoder_uri}
        atomic.write_text(outputs["metrics"], json.dumps(redact_mapping(metrics), indent=2))
    return run_id, result


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body(params: Params) -> None:
        if params.train.nproc > 1 and distributed.launched_world() is None:
            launch(params, argv)  # the ranks get this process's own arguments
        else:
            run(params)

    return stage_main("train", body, argv)


if __name__ == "__main__":
    sys.exit(main())
