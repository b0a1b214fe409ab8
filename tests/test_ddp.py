"""Data-parallel training on CPU: two gloo ranks against one process with the same global batch.

The ranks draw different noise (seeded by (seed, rank, step)), so the single-process
reference here is given exactly the noise the two ranks drew, concatenated, and sees the
global batch's rows in the order the ranks read them: then the only differences left are
floating-point reduction order (all-reduced sums against one process's sums, in gradients
and in batch-norm statistics), which is what the tolerance below covers.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from alphagan import distributed
from alphagan.config import ConfigError, parse_params
from alphagan.distributed import DistributedError, per_rank_batch, step_seed
from alphagan.training import latent_noise, load_checkpoint, seeded_model, to_tensor, train, train_step
from tests.test_training import _all_tensors, tiny_params

SEED, WORLD, GLOBAL_BATCH, STEPS = 5, 2, 8, 4
#: Two configurations: Larsen's routing (three backward passes restricted by ``inputs=``) with a
#: spectral-norm discriminator, and the shared routing with batch norm in the discriminator too.
CONFIGS = {
    "larsen": {"gradient_routing": "larsen", "spectral_norm": True},
    "shared-batchnorm-discriminator": {"gradient_routing": "shared", "spectral_norm": False},
}
#: Largest |DDP - single process| over every weight, buffer and Adam moment after STEPS steps.
#: Measured here: weights within 1e-6, Adam's moments within 3e-6 (float reduction order). The
#: moments are compared too: Adam's step barely changes when every gradient is doubled (summed
#: instead of averaged), its first moment doubles. One training step moves weights by ~6e-4.
TOLERANCE = 2e-5
#: With spectral norm off, each discriminator conv after the first has a bias followed by batch
#: norm, which removes it: its true gradient is exactly zero, so what it gets is rounding noise,
#: which Adam scales up to steps of about lr whatever its sign. Those biases (and the running
#: means they shift) are not determined by the maths, in one process or two; they are only
#: held to Adam's largest possible drift, 2 x lr a step.
NOISE_ONLY = {"shared-batchnorm-discriminator": ("discriminator.blocks.1.0.bias", "discriminator.blocks.1.1.running_mean")}


def _images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8), rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)


def _params(name: str, **overrides):
    return tiny_params(**{"batch_size": GLOBAL_BATCH, "max_steps": STEPS, **CONFIGS[name], **overrides}).train


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(rank: int, port: int, directory: str) -> None:
    """One gloo rank, as torchrun would start it: the environment, then the library's own loop."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    directory = Path(directory)
    world = distributed.start(torch.device("cpu"))
    assert world is not None and world.world_size == WORLD
    try:
        train_images, val_images = _images()
        for name in CONFIGS:
            train(train_images, val_images, _params(name), 16, SEED, directory / f"{name}.pt", distributed=world)
        # Stopped halfway and resumed, by every rank from rank 0's checkpoint.
        train(train_images, val_images, _params("larsen", max_steps=STEPS // 2), 16, SEED, directory / "resumed.pt",
              distributed=world)
        train(train_images, val_images, _params("larsen", resume=True), 16, SEED, directory / "resumed.pt",
              distributed=world)
        # The drift guard: one rank's weights nudged must stop the run on every rank.
        module = torch.nn.Linear(3, 2)
        world.prepare([module])
        if rank == 1:
            with torch.no_grad():
                module.weight[0, 0] += 1e-6
        try:
            world.check_in_sync([module], step=9)
            outcome = "in sync"
        except DistributedError as exc:
            outcome = str(exc)
        (directory / f"guard-{rank}.txt").write_text(outcome)
    finally:
        distributed.stop()


@pytest.fixture(scope="module")
def ranks_trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_rank, args=(_free_port(), str(directory)), nprocs=WORLD, start_method="spawn")
    return directory


def _single_process(name: str, steps: int = STEPS) -> dict[str, torch.Tensor]:
    """One process on the whole global batch, fed the noise each rank drew and the rows in rank order."""
    params, cpu = _params(name), torch.device("cpu")
    train_images, _ = _images()
    model = seeded_model(params, 16, SEED, cpu)
    per_rank = GLOBAL_BATCH // WORLD
    for step in range(steps):
        epoch, offset = divmod(step, len(train_images) // GLOBAL_BATCH)
        rows = np.random.default_rng([SEED, epoch]).permutation(len(train_images))[offset * GLOBAL_BATCH:(offset + 1) * GLOBAL_BATCH]
        shards = [np.sort(rows[r * per_rank:(r + 1) * per_rank]) for r in range(WORLD)]
        draws = []
        for rank in range(WORLD):
            torch.manual_seed(step_seed(SEED, rank, step))
            draws.append(latent_noise(per_rank, params.latent_dim, cpu))
        noise = (torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws]))
        train_step(model, to_tensor(train_images[np.concatenate(shards)], cpu), params, step,
                   lambda: torch.autocast("cpu", enabled=False), noise=noise)
    return _all_tensors({"models": model.state_dict()})


def _largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip=()) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in b if b[k].is_floating_point() and k not in skip)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_two_ranks_train_as_one_process_on_the_global_batch(ranks_trained, name):
    state = load_checkpoint(ranks_trained / f"{name}.pt")
    assert state["step"] == STEPS
    ddp = _all_tensors(state)
    reference = _single_process(name)
    assert reference.keys() == ddp.keys() and any(".exp_avg" in k for k in ddp)
    noise_only = NOISE_ONLY.get(name, ())
    assert _largest_difference(ddp, reference, skip=noise_only) < TOLERANCE
    for key in noise_only:
        assert float((ddp[key] - reference[key]).abs().max()) <= 2 * 5e-4 * STEPS
    # Batch-norm statistics over the global batch, updated once per forward as in one process.
    tracked = [k for k in reference if k.endswith("num_batches_tracked")]
    assert tracked and all(torch.equal(ddp[k], reference[k]) for k in tracked)
    # The tolerance is far below what one step moves the weights:
    weights = [k for k in reference if k.split(".")[0] in ("encoder", "decoder", "discriminator") and "running_" not in k]
    one_step_less = _single_process(name, steps=STEPS - 1)
    assert _largest_difference(ddp, {k: one_step_less[k] for k in weights}, skip=noise_only) > 10 * TOLERANCE


def test_two_ranks_resume_bit_exactly_from_rank_0s_checkpoint(ranks_trained):
    straight, resumed = _all_tensors(load_checkpoint(ranks_trained / "larsen.pt")), _all_tensors(load_checkpoint(ranks_trained / "resumed.pt"))
    assert straight.keys() == resumed.keys() and len(straight) > 40
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []


def test_drifted_ranks_are_refused_on_every_rank(ranks_trained):
    for rank in range(WORLD):
        message = (ranks_trained / f"guard-{rank}.txt").read_text()
        assert "step 9: the weights of rank(s) [1] differ from rank 0's" in message


def test_only_rank_0_wrote_checkpoints(ranks_trained):
    assert sorted(p.name for p in ranks_trained.iterdir()) == sorted(
        [*(f"{name}.pt" for name in CONFIGS), "resumed.pt", *(f"guard-{r}.txt" for r in range(WORLD))])


def test_a_global_batch_must_split_evenly_over_the_processes():
    assert per_rank_batch(64, 4) == 16
    with pytest.raises(DistributedError, match="^batch size 6 does not divide evenly over 4 processes; set train.batch_size to a multiple of 4$"):
        per_rank_batch(6, 4)
    with pytest.raises(ConfigError, match="batch_size 10 is the global batch and must divide evenly over nproc 4"):
        parse_params({"train": {"batch_size": 10, "nproc": 4}})
    with pytest.raises(ConfigError, match="nproc"):
        parse_params({"train": {"nproc": 0}})


def test_each_rank_and_step_has_its_own_seed():
    seeds = {step_seed(s, rank, step) for s in (0, 1) for rank in range(4) for step in range(50)}
    assert len(seeds) == 2 * 4 * 50 and all(0 <= value < 2**63 for value in seeds)
    assert step_seed(3, 1, 7) == step_seed(3, 1, 7)


# ---- the train stage with train.nproc: 2 (torchrun's launcher, two `python -m pipelines.train` ranks)

@pytest.fixture(scope="module")
def stage_run(tmp_path_factory):
    from tests.conftest import TINY, deep_update

    import yaml

    from pipelines import fetch, prepare, train as train_stage, validate

    root = tmp_path_factory.mktemp("stage")
    paths = {k: str(root / v) for k, v in {"raw": "data/raw", "validated": "data/validated", "prepared": "data/prepared",
                                           "models": "models", "reports": "reports"}.items()}
    params = deep_update({**TINY, "paths": paths}, {"train": {
        "batch_size": 4, "nproc": 2, "latent_dim": 8, "base_channels": 8, "max_channels": 16, "epochs": 2,
        "log_every": 2, "checkpoint_every": 3, "grid_size": 4, "kl_warmup_steps": 2, "device": "cpu",
        "experiment_name": "tests", "registered_model_name": "tiny-gen"}})
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the MLflow store is ./mlruns of the working directory, the ranks' too
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("DVC_EXP_NAME", "ddp-exp")
        patch.setenv("ALPHAGAN_PROGRESS", "off")
        for stage in (fetch, validate, prepare):
            assert stage.main(["--params", str(params_file)]) == 0
        assert train_stage.main(["--params", str(params_file)]) == 0
    return root


def test_train_stage_with_two_processes_writes_one_of_everything(stage_run, capfd):
    root = stage_run
    metrics = json.loads((root / "reports/train/metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["processes"] == 2  # 18 train images, global batch 4: 4 steps an epoch
    assert sorted(p.name for p in (root / "models").iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(root / "models/checkpoint.pt")["hyperparameters"]["train.nproc"] == 2
    lines = (root / "reports/train/losses.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in lines[1:]] == [2, 4, 6, 8]  # each step once: one writer
    assert sorted(p.name for p in (root / "reports/train").iterdir()) == sorted(
        ["losses.csv", "losses.png", "metrics.json", "run.json", "samples.png", "samples_through_training.png"])

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns/mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == metrics["run_id"] and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["processes"] == "2" and runs[0].data.params["train.nproc"] == "2"
    assert [m.step for m in client.get_metric_history(metrics["run_id"], "train/loss_d")] == [2, 4, 6, 8]
    assert len(client.search_model_versions("name='tiny-gen'")) == 1


def test_an_uneven_global_batch_is_one_line_before_any_process_starts(write_params, capsys):
    from pipelines import train as train_stage

    params = write_params({"train": {"batch_size": 5, "nproc": 2}})
    assert train_stage.main(["--params", str(params)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("train: error: ") and "\n" not in error and "multiple of 2" in error
