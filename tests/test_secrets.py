"""Part 5: no secret in any artifact. A full tiny run with planted secrets, then every byte is scanned."""

import json
import os
import subprocess
import sys

import pytest

from alphagan.redaction import redact, redact_uri
from tests.conftest import REPO_ROOT
from tests.oddfiles import _face, _jpeg
from tests.test_sources import _fill_kagglehub_cache
from tests.test_training import TINY_TRAIN


@pytest.mark.parametrize(("text", "expected"), [
    ("https://alice:s3cr3tpw@mlflow.example.com/api", "https://alice:***@mlflow.example.com/api"),
    ("https://ghp_TOKEN1234@host/x", "https://***@host/x"),
    ("sqlite:////tmp/m.db?token=abcd1234&mode=ro", "sqlite:////tmp/m.db?token=***&mode=ro"),
    ("s3://b/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA123&x=1", "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***&x=1"),
    ("http://h/p?api_key=k1&password=p2&sig=s3&user=bob", "http://h/p?api_key=***&password=***&sig=***&user=bob"),
    ("no uri here, path/with@sign", "no uri here, path/with@sign"),
])
def test_uri_credentials_are_masked(text, expected):
    assert redact_uri(text) == expected


def test_secret_environment_values_are_masked_anywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle/kaggle.json").write_text(json.dumps({"username": "u", "key": "fromkagglejson"}))
    env = {"KAGGLE_KEY": "kagglekey123", "MY_API_TOKEN": "tok-456789", "PATH": "/usr/bin", "PORT_KEY": "8080"}
    text = "kagglekey123 / tok-456789 / fromkagglejson / /usr/bin / 8080"
    assert redact(text, env) == "*** / *** / *** / /usr/bin / 8080"


SECRETS = {
    "KAGGLE_KEY": "PLANTEDKAGGLEENVKEY7731",
    "AWS_SECRET_ACCESS_KEY": "PLANTEDAWSSECRET5519",
    "MLFLOW_TRACKING_TOKEN": "PLANTEDMLFLOWTOKEN2207",
}
URI_TOKEN = "PLANTEDURITOKEN8842"
KAGGLE_JSON_KEY = "PLANTEDKAGGLEJSONKEY6604"


@pytest.mark.slow
def test_full_run_with_planted_secrets_leaves_none_in_any_artifact(tmp_path):
    import yaml

    project, home, store, cache = tmp_path / "project", tmp_path / "home", tmp_path / "store", tmp_path / "cache"
    for folder in (project, home / ".kaggle", store):
        folder.mkdir(parents=True)
    (home / ".kaggle/kaggle.json").write_text(json.dumps({"username": "planted-user", "key": KAGGLE_JSON_KEY}))
    # The Kaggle source, served offline from a prefilled kagglehub cache (with credentials around, as for a real user).
    _fill_kagglehub_cache(cache, {f"{i}_2000.jpg": _jpeg(_face((64, 64), seed=i)) for i in range(16)})
    params = {"seed": 7, "data": {"source": "kaggle", "image_size": 16},
              "validate": {"min_side": 8, "max_reject_fraction": 0.5}, "prepare": {"val_fraction": 0.25, "workers": 1},
              "train": {**TINY_TRAIN, "epochs": 1, "log_every": 1, "experiment_name": "secrets"},
              "evaluate": {"num_samples": 8, "batch_size": 8, "nearest_neighbours": 2}}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}?token={URI_TOKEN}"
    env = {**os.environ, **SECRETS, "HOME": str(home), "KAGGLE_USERNAME": "planted-user", "KAGGLEHUB_CACHE": str(cache),
           "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(REPO_ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    logs = []
    for stage in ("fetch", "validate", "prepare", "train", "evaluate"):
        done = subprocess.run([sys.executable, "-m", f"pipelines.{stage}"], cwd=project, env=env, capture_output=True)
        logs.append(done.stdout + done.stderr)
        assert done.returncode == 0, (stage, (done.stdout + done.stderr)[-3000:].decode(errors="replace"))

    run = json.loads((project / "reports/train/run.json").read_text())
    assert run["tracking_uri"].endswith("mlflow.db?token=***")  # redacted where it was once written verbatim
    assert (store / "mlflow.db").stat().st_size > 0 and (project / "models/checkpoint.pt").exists()
    planted = [*SECRETS.values(), URI_TOKEN, KAGGLE_JSON_KEY]
    scanned, leaks = 0, []
    for root in (project, store):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                scanned += 1
                leaks += [(str(path), s) for s in planted if s.encode() in data]
    for log in logs:
        leaks += [("stage output", s) for s in planted if s.encode() in log]
    assert scanned > 30  # raw images, arrays, reports, MLflow artifacts and the sqlite store
    assert leaks == []
