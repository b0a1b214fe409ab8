"""Sharing the pipeline's outputs through a DVC remote: push from one clone, pull into another.

One tiny ``dvc repro`` (every stage) in a git copy of the repo; ``dvc push`` to a local
directory remote and to an S3 remote (moto's S3 server on 127.0.0.1, a free port, fake
credentials: a real S3 API, no network); then a ``git clone`` of that repository pulls from
each and must be complete: ``dvc status`` up to date and ``dvc repro`` with nothing to run.
That holds only because every output DVC does not cache arrives through git (the small
metrics files and losses.csv); pictures, Data Docs and run.json are cached (dvc.yaml).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.test_pipeline import BIN, git_copy_of_repo, write_tiny_repo_params
from tests.test_training import TINY_TRAIN

#: What a user gets from `dvc pull`: data, model, and every report and picture.
PULLED = ("data/raw", "data/validated/manifest.csv", "data/prepared/train.npy", "models/checkpoint.pt",
          "reports/validate/data_docs/index.html", "reports/validate/gx_result.json", "reports/train/run.json",
          "reports/train/samples.png", "reports/train/losses.png", "reports/train/samples_through_training.png",
          "reports/evaluate/reconstructions.png", "reports/evaluate/nearest_neighbours.png", "reports/evaluate/memorisation.png")
#: Fake credentials: moto accepts any; they must never be real ones.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under the PULLED paths, by path relative to ``root``."""
    found = {}
    for name in PULLED:
        path = root / name
        for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            found[file.relative_to(root).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


@pytest.fixture
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 (a free port) with one bucket, ``alpha-gan``; stopped after."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/alpha-gan", method="PUT"), timeout=30).read()  # CreateBucket
        yield endpoint
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # one tiny `dvc repro` plus pushes and pulls: ~4 min alone, 10+ on a shared 2-core machine
def test_push_then_pull_into_a_clone_leaves_nothing_to_run(tmp_path, s3_endpoint):
    origin = tmp_path / "origin"
    origin.mkdir()
    aws_files = tmp_path / "aws"  # empty config and credentials files: a user's real ones are never read
    aws_files.mkdir()
    (aws_files / "config").touch()
    (aws_files / "credentials").touch()
    env = {**git_copy_of_repo(origin), **S3_ENV, "AWS_CONFIG_FILE": str(aws_files / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(aws_files / "credentials"), "ALPHAGAN_PROGRESS": "off"}
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    # No Inception download in a test: evaluate skips FID with a note and still scores swd_ratio.
    write_tiny_repo_params(origin, {"train": {**TINY_TRAIN, "epochs": 1}, "evaluate": {"num_samples": 64, "inception_weights": "none.pth"}})

    def run(cwd: Path, *argv: str) -> str:
        own_code = {"PYTHONPATH": os.pathsep.join([str(cwd), str(cwd / "src")])}  # each clone runs its own code
        done = subprocess.run(argv, cwd=cwd, env={**env, **own_code}, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(argv)} in {cwd.name}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    dvc = str(BIN / "dvc")
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "tiny params")
    run(origin, dvc, "repro")
    # The two remotes, as the README sets them up (a folder, and S3 with its endpoint).
    run(origin, dvc, "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote"))
    run(origin, dvc, "remote", "add", "s3", "s3://alpha-gan/cache")
    run(origin, dvc, "remote", "modify", "s3", "endpointurl", s3_endpoint)
    run(origin, dvc, "push")
    run(origin, dvc, "push", "-r", "s3")
    # The pipeline's record (dvc.lock, the git-tracked metrics) and the remotes' config, in git.
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "a run, pushed")
    assert "nothing to commit" in run(origin, "git", "status")
    expected = digests(origin)
    assert len(expected) > 20 and all(name in " ".join(expected) for name in PULLED)

    for remote in ("shared", "s3"):
        clone = tmp_path / f"clone-{remote}"
        run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
        assert not (clone / "models/checkpoint.pt").exists()
        run(clone, dvc, "pull", "-r", remote)
        assert digests(clone) == expected, f"pulled from {remote}"
        status = run(clone, dvc, "status")
        assert "Data and pipelines are up to date" in status, status
        repro = run(clone, dvc, "repro")
        assert "Running stage" not in repro and repro.count("didn't change, skipping") == 5, repro
        assert f"Cache and remote '{remote}' are in sync" in run(clone, dvc, "status", "-c", "-r", remote)  # the remote holds it all
