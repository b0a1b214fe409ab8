"""The train and evaluate stages against a real ``mlflow server`` (a team's set-up in small).

Each test starts its own ``mlflow server`` on 127.0.0.1 (a free port) with a sqlite backend
and ``--artifacts-destination`` on local disk, so artifacts travel over HTTP as they do to a
team server with S3 behind it, runs the stages as ``dvc repro`` would (``python -m
pipelines.<stage>`` in a project directory, ``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>``),
reads everything back through the server's REST API, and stops the server by its PID.
Also: the server down when train starts (one line, no traceback, nothing trained), and the
server killed in the middle of training (one line, a checkpoint that resumes into the same
run once the server is back, and no run left RUNNING without a note).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, TINY, deep_update
from tests.test_training import TINY_TRAIN

BIN = Path(sys.executable).parent
EXPERIMENT, MODEL = "remote", "remote-gen"
SERVER_START_S = 300  # `mlflow server` answers /health after 10-20 s on an idle 2-core machine; minutes on a busy one


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """``mlflow server`` in its own process group: sqlite under ``root`` (or the database at
    ``backend_store_uri``), artifacts served from ``root/artifacts`` (``--artifacts-destination``);
    stop() and start() again keep the data."""

    def __init__(self, root: Path, port: int | None = None, backend_store_uri: str | None = None):
        self.root, self.port = root, port or free_port()
        self.backend_store_uri = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    def start(self) -> MlflowServer:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "mlflow"), "server", "--backend-store-uri", self.backend_store_uri,
                 "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"], cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not answer: {(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server and its workers (its process group, by the PID we started)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def postgres_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # a link on PATH leads to the whole bin folder
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


class PostgresCluster:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (a free port, trust authentication), in a
    fresh directory that is deleted on exit. PostgreSQL refuses to run as root, so as root
    the cluster belongs to Debian's ``postgres`` system user."""

    def __init__(self):
        self.bin = postgres_bin_dir()
        if self.bin is None:
            pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does this)")
        self.as_user: list[str] = []
        self.owner = None
        if os.geteuid() == 0:
            import pwd

            try:
                self.owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.dir: Path | None = None

    def run(self, *command: str) -> None:
        done = subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stdout}{done.stderr}"

    def uri(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> PostgresCluster:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="alphagan-postgres-"))  # not under pytest's 0700 tmp: postgres must reach it
        if self.owner is not None:
            os.chown(self.dir, self.owner.pw_uid, self.owner.pw_gid)
        data = self.dir / "data"
        self.run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        self.run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "server.log"), "-w", "-t", "120",
                 "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def prepared_project(tmp_path_factory):
    """A project directory after fetch, validate and prepare (tiny DiceBear faces, 16 px)."""
    from pipelines import fetch, prepare, validate

    root = tmp_path_factory.mktemp("prepared")
    params = deep_update({**TINY, "paths": {"raw": "data/raw", "validated": "data/validated", "prepared": "data/prepared",
                                            "models": "models", "reports": "reports"}},
                         {"train": {**TINY_TRAIN, "epochs": 2, "log_every": 2, "checkpoint_every": 100,
                                    "experiment_name": EXPERIMENT, "registered_model_name": MODEL},
                          # No Inception download in a test: FID is skipped with a note; swd_ratio is scored.
                          "evaluate": {"num_samples": 64, "inception_weights": "no-such-weights.pth"}})
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    saved = os.getcwd()
    os.chdir(root)
    try:
        for stage in (fetch, validate, prepare):
            assert stage.main(["--params", "params.yaml"]) == 0
    finally:
        os.chdir(saved)
    return root


@pytest.fixture
def project(prepared_project, tmp_path):
    return Path(shutil.copytree(prepared_project, tmp_path / "project"))


def set_train(project: Path, **values) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def stage_env(tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_EXP", "MLFLOW_HTTP"))}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_DISABLE_TELEMETRY="true", ALPHAGAN_PROGRESS="off",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "src")]))
    return env


def start_stage(stage: str, project: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"pipelines.{stage}", "--params", "params.yaml"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def run_stage(stage: str, project: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    process = start_stage(stage, project, env)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def one_error_line(done: subprocess.CompletedProcess, stage: str) -> str:
    """The stage failed with one error line, ``<stage>: error: ...``, last on stderr, and no
    traceback (the stage's own notes, such as train's length line, may come before it)."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in lines if "error" in line.lower()]
    assert "Traceback" not in done.stderr and errors == lines[-1:], done.stderr
    assert lines[-1].startswith(f"{stage}: error: the MLflow tracking server http://127.0.0.1:"), lines[-1]
    return lines[-1]


def run_id_of(project: Path) -> str:
    return json.loads((project / "reports/train/run.json").read_text())["run_id"]


@pytest.mark.slow
def test_train_and_evaluate_log_everything_to_a_tracking_server(project, tmp_path):
    """Params, stepped metrics, images, artifacts, both registered models and the evaluate
    metrics all reach the server, readable back through its REST API; artifacts are stored
    where the server keeps them (its --artifacts-destination) and nothing in the project."""
    import mlflow
    from PIL import Image

    with MlflowServer(tmp_path / "server") as server:
        env = stage_env(server.url)
        trained = run_stage("train", project, env)
        assert trained.returncode == 0, trained.stderr[-3000:]
        run_id = run_id_of(project)
        assert f"MLflow run {run_id} at {server.url}" in trained.stdout
        scored = run_stage("evaluate", project, env)
        assert scored.returncode == 0, scored.stderr[-3000:]
        assert "champion moved to remote-gen version 1" in scored.stdout, scored.stdout
        assert json.loads((project / "reports/train/run.json").read_text())["tracking_uri"] == server.url
        client = mlflow.MlflowClient(tracking_uri=server.url)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert run.data.params["train.batch_size"] == "4" and run.data.params["train.registered_model_name"] == MODEL
        total = json.loads((project / "reports/train/metrics.json").read_text())["steps"]
        per_epoch = total // 2
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss_d")]
        assert steps == [s for s in range(1, total + 1) if s % 2 == 0 or s == total]  # log_every 2, and the last step
        images = [a.path for a in client.list_artifacts(run_id, "images")]  # each epoch's grids, and the untrained model's
        assert {int(p.split("+step+")[1].split("+")[0]) for p in images if p.startswith("images/samples_ema+")} == {0, per_epoch, total}
        grid = Image.open(client.download_artifacts(run_id, "train/samples_ema.png", str(tmp_path / "download")))
        assert grid.size == (38, 38)  # 2x2 faces of 16 px, padding 2
        for name in (MODEL, f"{MODEL}-encoder"):
            versions = client.search_model_versions(f"name='{name}'")
            assert [(v.version, v.run_id) for v in versions] == [("1", run_id)]
        assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
        # evaluate's numbers, in the same run, equal to its metrics.json
        evaluated = json.loads((project / "reports/evaluate/metrics.json").read_text())
        run = client.get_run(run_id)
        assert run.data.metrics["eval/swd_ratio"] == pytest.approx(evaluated["swd_ratio"])
        assert run.data.tags["eval_reference"] == "train"
        assert {a.path for a in client.list_artifacts(run_id, "evaluate")} >= {"evaluate/metrics.json", "evaluate/reconstructions.png"}
        # The same things through plain HTTP, as any client of the REST API sees them.
        query = urllib.request.urlopen(f"{server.url}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=eval%2Fswd_ratio")
        assert [m["value"] for m in json.loads(query.read())["metrics"]] == [pytest.approx(evaluated["swd_ratio"])]
    stored = tmp_path / "server" / "artifacts"
    assert list(stored.rglob("samples_ema.png")) and list(stored.rglob("MLmodel"))
    assert not (project / "mlruns").exists()  # nothing went to the project's own store


def test_train_with_the_server_down_says_so_in_one_line(project):
    """Nothing listens at the URI: train stops at once with one line that names the server and
    what to do, before it trains or writes anything."""
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = run_stage("train", project, stage_env(url), timeout=120)
    line = one_error_line(done, "train")
    assert url in line and "Connection refused" in line and "unset MLFLOW_TRACKING_URI" in line, line
    assert time.monotonic() - started < 60  # one try, not MLflow's 4 minutes of retries
    assert not (project / "models").exists() and not (project / "reports/train").exists() and not (project / "mlruns").exists()
    done = run_stage("evaluate", project, stage_env(url), timeout=120)  # evaluate too, before scoring anything
    one_error_line(done, "evaluate")
    assert not (project / "reports/evaluate").exists()


@pytest.mark.slow
def test_server_lost_mid_run_then_resumed_into_the_same_run(project, tmp_path):
    """The server is killed (SIGKILL) while train runs: train stops with one line naming the
    checkpoint to resume. Once the server is back (same store), ``train.resume: true``
    continues the same MLflow run to FINISHED, with a note that it was stopped and no step
    logged twice. A run that is replaced instead of resumed is closed FAILED with a note."""
    import mlflow
    import torch

    server = MlflowServer(tmp_path / "server").start()
    try:
        # Many steps, checkpoints often: the kill lands mid-run. MLflow retries once, at once.
        set_train(project, epochs=100_000, max_steps=100_000, log_every=1, checkpoint_every=5)
        env = {**stage_env(server.url), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
        train = start_stage("train", project, env)
        checkpoint = project / "models/checkpoint.pt"
        deadline = time.monotonic() + 180
        while not checkpoint.exists() or torch.load(checkpoint, weights_only=True)["step"] < 10:
            assert train.poll() is None and time.monotonic() < deadline, train.communicate()[1][-3000:] if train.poll() is not None else "slow"
            time.sleep(0.2)
        server.stop(signal.SIGKILL)
        stdout, stderr = train.communicate(timeout=120)
        line = one_error_line(subprocess.CompletedProcess(train.args, train.returncode, stdout, stderr), "train")
        step = torch.load(checkpoint, weights_only=True)["step"]
        assert f"models/checkpoint.pt holds step {step}" in line and "train.resume: true" in line, line
        killed_run = run_id_of(project)

        server.start()  # back, on the same port and store
        client = mlflow.MlflowClient(tracking_uri=server.url)
        assert client.get_run(killed_run).info.status == "RUNNING"  # it could not be told otherwise
        logged = max(m.step for m in client.get_metric_history(killed_run, "train/loss_d"))
        assert logged >= step
        set_train(project, resume=True, max_steps=logged + 3)
        done = run_stage("train", project, env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert run_id_of(project) == killed_run
        run = client.get_run(killed_run)
        assert run.info.status == "FINISHED"
        assert run.data.tags["resume_note"].startswith("stopped once (left RUNNING") and "stop_note" not in run.data.tags
        steps = [m.step for m in client.get_metric_history(killed_run, "train/loss_d")]
        assert steps == list(range(1, logged + 4))  # every step once, across the kill

        # A stage killed outright (no chance to close its run), then a fresh run instead of a resume.
        set_train(project, resume=False, max_steps=100_000)
        train = start_stage("train", project, env)
        deadline = time.monotonic() + 180
        while run_id_of(project) == killed_run or not client.get_metric_history(run_id_of(project), "train/loss_d"):
            assert train.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        abandoned = run_id_of(project)
        os.killpg(train.pid, signal.SIGKILL)
        train.communicate()
        assert client.get_run(abandoned).info.status == "RUNNING"
        set_train(project, max_steps=3)
        done = run_stage("train", project, env)
        assert done.returncode == 0, done.stderr[-3000:]
        replaced = client.get_run(abandoned)
        assert replaced.info.status == "FAILED" and f"superseded by run {run_id_of(project)}" in replaced.data.tags["stop_note"]
        assert client.get_run(run_id_of(project)).info.status == "FINISHED"
    finally:
        server.stop()


@pytest.mark.slow
def test_a_postgres_backend_holds_runs_metrics_and_models(project, tmp_path):
    """The team set-up's database: ``mlflow server`` on PostgreSQL (Debian's package, a
    throwaway cluster). train and evaluate log through it as through sqlite, and the run, its
    stepped metrics and the registered model are rows in Postgres, read back with SQL."""
    import mlflow

    # SQLAlchemy 2.1 reads postgresql:// with psycopg 3; the dev extras install it.
    psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL driver is in the dev extras (psycopg[binary])")
    with PostgresCluster() as database:
        database.run(str(database.bin / "createdb"), "-h", "127.0.0.1", "-p", str(database.port), "-U", "postgres", "mlflow")
        with MlflowServer(tmp_path / "server", backend_store_uri=database.uri("mlflow")) as server:
            env = stage_env(server.url)
            trained = run_stage("train", project, env)
            assert trained.returncode == 0, trained.stderr[-3000:]
            scored = run_stage("evaluate", project, env)
            assert scored.returncode == 0, scored.stderr[-3000:]
            run_id = run_id_of(project)
            client = mlflow.MlflowClient(tracking_uri=server.url)
            total = json.loads((project / "reports/train/metrics.json").read_text())["steps"]
            logged_steps = [s for s in range(1, total + 1) if s % 2 == 0 or s == total]  # log_every 2, and the last
            assert [m.step for m in client.get_metric_history(run_id, "train/loss_d")] == logged_steps
            assert client.get_model_version_by_alias(MODEL, "champion").run_id == run_id
            evaluated = json.loads((project / "reports/evaluate/metrics.json").read_text())

            with psycopg.connect(database.uri("mlflow")) as connection, connection.cursor() as cursor:
                cursor.execute("SELECT status, experiment_id FROM runs WHERE run_uuid = %s", (run_id,))
                [(status, experiment_id)] = cursor.fetchall()
                assert status == "FINISHED"
                cursor.execute("SELECT name FROM experiments WHERE experiment_id = %s", (experiment_id,))
                assert cursor.fetchall() == [(EXPERIMENT,)]
                cursor.execute("SELECT step FROM metrics WHERE run_uuid = %s AND key = 'train/loss_d' ORDER BY step", (run_id,))
                assert [step for (step,) in cursor.fetchall()] == logged_steps
                cursor.execute("SELECT value FROM metrics WHERE run_uuid = %s AND key = 'eval/swd_ratio'", (run_id,))
                assert [value for (value,) in cursor.fetchall()] == [pytest.approx(evaluated["swd_ratio"])]
                cursor.execute("SELECT name, version FROM model_versions WHERE run_id = %s ORDER BY name", (run_id,))
                assert cursor.fetchall() == [(MODEL, 1), (f"{MODEL}-encoder", 1)]
    assert not (tmp_path / "server" / "mlflow.db").exists() and not (project / "mlruns").exists()
