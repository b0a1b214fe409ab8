"""Part 2: SIGKILL any stage at a random point; no reader ever sees a partial file, and the next
`dvc repro` gives outputs identical to an uninterrupted run, with no temporary left behind.

Each stage runs as its own process on tiny real data (a git copy of this repository) and
is killed with SIGKILL (no handler can run) after a delay drawn uniformly over its
uninterrupted duration, for several seeds. After every kill, each output at its final
path must be complete: byte-identical to the reference, or a complete file of its kind
(a loadable checkpoint, a prefix of the loss history, parseable JSON, a decodable PNG),
or absent. Then `dvc repro` must rebuild exactly the reference.
"""

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from alphagan.atomic import TEMP_PATTERN
from tests.test_pipeline import BIN, git_copy_of_repo, write_tiny_repo_params
from tests.test_training import TINY_TRAIN, _all_tensors

STAGES = ("fetch", "validate", "prepare", "train")
SEEDS = range(int(os.environ.get("ALPHAGAN_KILL_SEEDS", "3")))
#: Outputs that are a pure function of params and seed (timings, run ids and GX run times are not).
DETERMINISTIC_PREFIXES = ("data/", "reports/validate/summary.json", "reports/train/losses.csv")
VOLATILE_METRICS = {"images_per_second", "peak_memory_bytes", "run_id", "generator_uri", "encoder_uri"}


def _outputs(root: Path) -> dict[str, bytes]:
    found = {}
    for folder in ("data", "models", "reports"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and not TEMP_PATTERN.match(path.name) and not any(TEMP_PATTERN.match(p) for p in path.relative_to(root).parts):
                found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def _temporaries(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob("*")
            if TEMP_PATTERN.match(p.name) and ".git" not in p.relative_to(root).parts]


def _loss_rows(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def _assert_complete(now: dict[str, bytes], reference: dict[str, bytes], context: str) -> None:
    """Every output visible at its final path is whole (never torn, never zero-filled)."""
    for name, data in now.items():
        where = f"{context}: {name}"
        if name.startswith("data/"):
            assert name in reference, f"{where}: a file the uninterrupted run does not have"
            assert data == reference[name], f"{where}: differs from the uninterrupted run (partial?)"
        elif name == "models/checkpoint.pt":
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            assert state["step"] >= 1, where
        elif name == "reports/train/losses.csv":
            rows, full = _loss_rows(data), _loss_rows(reference[name])
            assert rows == full[:len(rows)], f"{where}: not a prefix of the uninterrupted history"
        elif name.endswith(".json"):
            json.loads(data)
        elif name.endswith(".png"):
            Image.open(io.BytesIO(data)).load()


def _checkpoint_tensors(data: bytes) -> dict:
    return _all_tensors(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_random_points_then_dvc_repro_rebuilds_the_reference(tmp_path):
    env = git_copy_of_repo(tmp_path)
    write_tiny_repo_params(tmp_path, {"train": {**TINY_TRAIN, "epochs": 1, "log_every": 2, "checkpoint_every": 2}})
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=tmp_path, check=True, env=env)

    def dvc_repro() -> dict[str, float]:
        """Run `dvc repro train` to the end; returns when each stage started (seconds from the start)."""
        start, started, lines = time.perf_counter(), {}, []
        process = subprocess.Popen([str(BIN / "dvc"), "repro", "train"], cwd=tmp_path, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in process.stdout:
            lines.append(line)
            for stage in STAGES:
                if f"Running stage '{stage}'" in line:
                    started[stage] = time.perf_counter() - start
        assert process.wait() == 0, "".join(lines)[-4000:]
        started["end"] = time.perf_counter() - start
        return started

    # The uninterrupted reference, and how long each stage takes in it.
    started = dvc_repro()
    reference = _outputs(tmp_path)
    assert {"models/checkpoint.pt", "data/prepared/train.npy", "data/validated/manifest.csv"} <= reference.keys()
    marks = [started[stage] for stage in STAGES] + [started["end"]]
    durations = {stage: marks[i + 1] - marks[i] for i, stage in enumerate(STAGES)}

    kills = []
    for stage in STAGES:
        for seed in SEEDS:
            rng = random.Random(f"{stage}-{seed}")
            length = durations[stage]
            for _ in range(3):  # a run that finished before its kill is timed, and the next delay drawn within it
                delay = rng.uniform(0.05, 0.95) * length
                start = time.perf_counter()
                process = subprocess.Popen([sys.executable, "-m", f"pipelines.{stage}"], cwd=tmp_path, env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                while process.poll() is None and time.perf_counter() - start < delay:
                    time.sleep(0.01)
                killed = process.poll() is None
                if killed:
                    os.killpg(process.pid, signal.SIGKILL)  # the stage and any worker processes it started
                process.wait()
                length = time.perf_counter() - start
                _assert_complete(_outputs(tmp_path), reference, f"after SIGKILL of {stage} at {delay:.2f} s")
                if killed:
                    break
            kills.append((stage, seed, round(delay, 2), killed))
    assert sum(killed for *_, killed in kills) >= len(kills) // 2, kills  # most runs really were cut short

    dvc_repro()
    after = _outputs(tmp_path)
    assert _temporaries(tmp_path) == []
    for name, data in reference.items():
        if name.startswith(DETERMINISTIC_PREFIXES):
            assert after.get(name) == data, f"{name} differs from the uninterrupted run"
    assert after.keys() >= {k for k in reference if k.startswith(DETERMINISTIC_PREFIXES)}
    assert {k for k in after if k.startswith("data/")} == {k for k in reference if k.startswith("data/")}
    weights, expected = _checkpoint_tensors(after["models/checkpoint.pt"]), _checkpoint_tensors(reference["models/checkpoint.pt"])
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)
    metrics, expected = (json.loads(d["reports/train/metrics.json"]) for d in (after, reference))
    assert {k: v for k, v in metrics.items() if k not in VOLATILE_METRICS} == \
        {k: v for k, v in expected.items() if k not in VOLATILE_METRICS}
    status = subprocess.run([str(BIN / "dvc"), "status", "train"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout


# SIGKILL of the whole process group at a chosen point *inside* a write: with writes in place
# (the old code) the output at its final path would be torn or zero-filled here.
KILL_INSIDE_WRITE = r"""
import os, signal, sys
import numpy as np, pandas as pd, torch

def die():
    os.killpg(os.getpgid(0), signal.SIGKILL)

point = sys.argv[2]
if point == "fetch":  # the 10th of 24 images is being rendered (in a worker process)
    from alphagan.sources import dicebear
    real_render = dicebear._render_one
    def render(job):
        if job[0] == 10:
            die()
        return real_render(job)
    dicebear._render_one = render
elif point == "validate":  # half of manifest.csv is on disk
    real_to_csv = pd.DataFrame.to_csv
    def to_csv(self, path, *args, **kwargs):
        real_to_csv(self, path, *args, **kwargs)
        os.truncate(path, os.path.getsize(path) // 2)
        die()
    pd.DataFrame.to_csv = to_csv
elif point == "prepare":  # 10 of 24 rows of the memmap are filled
    from alphagan import preprocess
    real_load, calls = preprocess._load, []
    def load(*args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            die()
        return real_load(*args, **kwargs)
    preprocess._load = load
elif point == "train":  # half of the first new checkpoint is on disk
    real_save = torch.save
    def save(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        os.truncate(target, os.path.getsize(target) // 2)
        die()
    torch.save = save
import importlib
stage = importlib.import_module(f"pipelines.{point}")
sys.exit(stage.main(["--params", sys.argv[1]]))
"""


@pytest.fixture(scope="module")
def finished_project(tmp_path_factory):
    """A tiny project after one complete run of fetch, validate, prepare and train."""
    import yaml

    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("killed")
    paths = {k: str(root / v) for k, v in {"raw": "data/raw", "validated": "data/validated", "prepared": "data/prepared",
                                            "models": "models", "reports": "reports"}.items()}
    params = {**TINY, "paths": paths, "train": {**TINY_TRAIN, "epochs": 1, "log_every": 1, "checkpoint_every": 2}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("MLFLOW_TRACKING_URI", None)
    for stage in STAGES:
        subprocess.run([sys.executable, "-m", f"pipelines.{stage}"], cwd=root, env=env, check=True, capture_output=True)
    return root, env


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_inside_a_write_leaves_the_previous_output_whole(finished_project, stage):
    root, env = finished_project
    before = _outputs(root)
    process = subprocess.run([sys.executable, "-c", KILL_INSIDE_WRITE, str(root / "params.yaml"), stage], cwd=root, env=env,
                             capture_output=True, text=True, start_new_session=True)
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    now = _outputs(root)
    assert _temporaries(root), "the kill should have left a half-written temporary behind"
    if stage == "train":  # a new run has begun: its loss history is new, but whole; the checkpoint is the old one
        assert now["models/checkpoint.pt"] == before["models/checkpoint.pt"]
        _assert_complete(now, before, f"after SIGKILL inside {stage}'s write")
    else:
        # validate swaps its (complete) Data Docs in before it writes the manifest: new, but whole.
        docs = "reports/validate/data_docs/"
        assert {k: v for k, v in now.items() if not k.startswith(docs)} == {k: v for k, v in before.items() if not k.startswith(docs)}, \
            f"an output of {stage} changed although the stage never finished"
        _assert_complete(now, before, f"after SIGKILL inside {stage}'s write")
    # The next run cleans up and gives the same outputs again.
    subprocess.run([sys.executable, "-m", f"pipelines.{stage}"], cwd=root, env=env, check=True, capture_output=True)
    assert _temporaries(root) == []
    after = _outputs(root)
    for name, data in before.items():
        if name.startswith(DETERMINISTIC_PREFIXES):
            assert after[name] == data, name
    if stage == "train":
        a, b = _checkpoint_tensors(after["models/checkpoint.pt"]), _checkpoint_tensors(before["models/checkpoint.pt"])
        assert all(torch.equal(a[k], b[k]) for k in b)
