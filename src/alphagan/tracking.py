"""MLflow tracking: the only module that imports mlflow.

Store: ``sqlite:///<root>/mlflow.db`` with artifacts under ``<root>/artifacts`` (root is
``mlruns/`` in the repo), unless ``MLFLOW_TRACKING_URI`` points at a team server.
Browse it from the project root with ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``.

A team server (``MLFLOW_TRACKING_URI=http(s)://...``) can be down when a stage starts, or go
away in the middle of a run: :func:`check_server` and :func:`tracked_run` turn both into one
:class:`TrackingServerUnavailable` line, and a run that could not be closed (the server was
gone) is closed by the next train stage (:func:`settle_previous_run`), so no run stays
RUNNING without a note.

Portable: MLflow records every artifact location as an absolute path, so a copied or moved
project would point at the old place. :func:`use_experiment` rewrites the store's locations
relative to the working directory (``mlruns/artifacts/<run>/artifacts``), which is the
project root for every stage and for ``make ui``; MLflow resolves them there on each read.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import sqlite3
import subprocess
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no parallel DVC queue workers to guard against
    fcntl = None

from alphagan.envvars import environment_set
from alphagan.errors import AlphaGanError
from alphagan.redaction import redact, redact_mapping, redact_uri
from alphagan.training import TrainingCallbacks

# Before mlflow is imported: no usage reporting from a pipeline run.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

import mlflow  # noqa: E402
from mlflow.entities import Metric  # noqa: E402

# MLflow caps one log_params call at 100 entries and a param value at 6000 characters.
_PARAM_BATCH = 100


# mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI itself (MLflow 3): the URIs this module
# set are the project's store, not a user's choice of server.
_OWN_URIS: set[str] = set()


def _user_tracking_uri() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return None if uri in _OWN_URIS else uri


def tracking_uri(root: str | Path = "mlruns") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's sqlite store under ``root`` (see :func:`store_root`)."""
    return _user_tracking_uri() or f"sqlite:///{store_root(root).resolve() / 'mlflow.db'}"


def display_uri(root: str | Path = "mlruns") -> str:
    """The tracking URI as it may be shown or stored: credentials masked (``user:***@``, ``token=***``)."""
    return redact(redact_uri(tracking_uri(root)))


# ---------------------------------------------------------------------------------------
# A tracking server: reachable, or one line that says why not.


class TrackingServerUnavailable(AlphaGanError):
    """The MLflow tracking server named by ``MLFLOW_TRACKING_URI`` does not answer."""


def remote_server() -> str | None:
    """``MLFLOW_TRACKING_URI`` when it names an HTTP(S) tracking server, else None."""
    uri = _user_tracking_uri()
    return uri if uri and uri.split(":", 1)[0].lower() in ("http", "https") else None


@contextlib.contextmanager
def _one_try(timeout_s: int = 10):
    """MLflow's HTTP client retries a failed request 7 times with exponential backoff (about
    4 minutes: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``); a probe, or closing a run on a server
    that just failed, asks once. MLflow reads these variables on every request."""
    with environment_set(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout_s)):
        yield


def _reason(exc: BaseException) -> str:
    """The few words of a failed request that say why (MLflow's message is a 400-character
    wrapper around urllib3's)."""
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\] [^\"')]+", r"[Rr]ead timed out", r"[Cc]onnection (?:aborted|reset)[^\"')]*",
                    r"error code \d+ != 200", r"timed out"):
        if (match := re.search(pattern, text)):
            return redact(match.group(0).strip().rstrip("."))
    return _first_line(exc)[:300]


def server_problem() -> str | None:
    """Why the tracking server does not answer, in a few words; None when it does (or when
    the store is not a server). One request, no retries, 10 s at most."""
    uri = remote_server()
    if uri is None:
        return None
    with _one_try():
        try:
            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - MlflowException wrapping requests' errors, or those
            return _reason(exc)
    return None


def _unavailable(reason: str) -> TrackingServerUnavailable:
    return TrackingServerUnavailable(f"the MLflow tracking server {display_uri()} does not answer ({reason})")


def check_server() -> None:
    """Before a stage computes anything: the server named by ``MLFLOW_TRACKING_URI`` answers,
    else :class:`TrackingServerUnavailable` (start it, or unset the variable for the project's store)."""
    if (reason := server_problem()) is not None:
        raise TrackingServerUnavailable(f"{_unavailable(reason)}: start it, or unset MLFLOW_TRACKING_URI "
                                        "to log to the project's own store (mlruns/)")


def lost_server(exc: BaseException) -> TrackingServerUnavailable | None:
    """The one-line error for ``exc`` when it came from a tracking server that no longer
    answers (asked once, now); None for anything else (a bug keeps its traceback)."""
    if not isinstance(exc, Exception) or isinstance(exc, AlphaGanError) or remote_server() is None:
        return None
    reason = server_problem()
    return None if reason is None else _unavailable(reason)


@contextlib.contextmanager
def lost_server_is_one_line():
    """Inside: an error because the tracking server went away becomes :class:`TrackingServerUnavailable`."""
    try:
        yield
    except Exception as exc:
        if (lost := lost_server(exc)) is not None:
            raise lost from None
        raise


#: Tags that say how a run ended when it did not finish, and how it continued.
STOP_TAG, RESUME_TAG = "stop_note", "resume_note"


def _close_failed(run_id: str, note: str) -> None:
    """Mark the active run FAILED with ``note`` (tag and description); one try each, so a
    gone server costs seconds, not MLflow's 4 minutes of retries. Always leaves no active run."""
    with _one_try():
        try:
            client = mlflow.MlflowClient()
            client.set_tag(run_id, STOP_TAG, redact(note))
            client.set_tag(run_id, "mlflow.note.content", redact(f"**Stopped before the end:** {note}\n"))
        except Exception:  # noqa: BLE001 - the server is gone: settle_previous_run closes it later
            pass
        try:
            mlflow.end_run("FAILED")  # pops the run first, then tells the server
        except Exception:  # noqa: BLE001
            pass


@contextlib.contextmanager
def tracked_run(experiment_id: str, run_name: str | None, tags: dict[str, str], resume_run_id: str | None = None):
    """:func:`start_run` as a context manager that records how the run ended.

    An exception inside marks the run FAILED with a ``stop_note`` tag saying why; when the
    cause is a tracking server that went away (nothing can be recorded then), it becomes
    :class:`TrackingServerUnavailable` and the run, still RUNNING on the server, is closed
    or continued by the next train stage (:func:`settle_previous_run`).
    """
    active = start_run(experiment_id, run_name, tags, resume_run_id)
    try:
        yield active
    except BaseException as exc:
        lost = lost_server(exc)
        if lost is not None:
            note = f"{lost}"
        elif isinstance(exc, KeyboardInterrupt):
            note = "interrupted (Ctrl-C)"
        else:
            note = f"{type(exc).__name__}: {_first_line(exc)}"
        _close_failed(active.info.run_id, note)
        if lost is not None:
            raise lost from None
        raise
    mlflow.end_run()


def run_state(run_id: str | None) -> tuple[str, str | None] | None:
    """``(status, stop_note)`` of a run, None when there is none (no id, or a reset store).
    Read before :func:`tracked_run` reopens it: reopening sets RUNNING."""
    if not run_id:
        return None
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    return run.info.status, run.data.tags.get(STOP_TAG)


def settle_previous_run(previous_run_id: str | None, state: tuple[str, str | None] | None, current_run_id: str) -> str | None:
    """Give the run of the workspace's previous train stage (``run.json``) an honest end;
    ``state`` is its :func:`run_state` from before this run started.

    Resumed (the same run) after an interruption (it was left RUNNING, or has a ``stop_note``):
    a ``resume_note`` says so and the ``stop_note`` goes. Replaced by a new run while still
    RUNNING (its stage was killed, or lost its server and could not close it): it is marked
    FAILED with a ``stop_note`` naming the new run. DVC runs one stage at a time in a
    workspace, so a RUNNING run named there is not running. Returns what was done, or None.
    """
    if state is None:
        return None
    status, note = state
    client = mlflow.MlflowClient()
    if previous_run_id == current_run_id:
        if status != "RUNNING" and note is None:
            return None
        why = note or "left RUNNING: its train stage was stopped (killed, or its tracking server went away)"
        client.set_tag(current_run_id, RESUME_TAG, redact(f"stopped once ({why}); resumed from the last checkpoint"))
        if note is not None:
            client.delete_tag(current_run_id, STOP_TAG)
        return "resumed"
    if status != "RUNNING":
        return None
    why = note or "never finished: its train stage was stopped (killed, or its tracking server went away)"
    client.set_tag(previous_run_id, STOP_TAG, redact(f"{why}; not resumed: superseded by run {current_run_id}"))
    client.set_terminated(previous_run_id, "FAILED")
    return "closed"


def dvc_temp_workspace(cwd: str | Path = ".") -> Path | None:
    """The original project's root when ``cwd`` is a DVC temporary experiment workspace, else None.

    ``dvc exp run --temp`` and ``dvc queue start`` run the stages in a copy of the project
    under ``<project>/.dvc/tmp/exps/`` that DVC deletes afterwards; DVC sets ``DVC_ROOT`` to
    the original project for them (dvc/repo/experiments/queue/base.py). A store opened there
    would be deleted with it. Both conditions are checked, so a stray ``DVC_ROOT`` does nothing.
    """
    root = os.environ.get("DVC_ROOT")
    if not root:
        return None
    project, here = Path(root).resolve(), Path(cwd).resolve()
    return project if here.is_relative_to(project / ".dvc" / "tmp" / "exps") else None


def store_root(root: str | Path = "mlruns") -> Path:
    """Where the project's store is: ``root``, or the original project's in a DVC temporary workspace."""
    project = dvc_temp_workspace()
    return project / root if project is not None and not Path(root).is_absolute() else Path(root)


def _share_project_store(root: str | Path) -> None:
    """In a DVC temporary workspace, make ``<root>/artifacts`` a link to the original project's.

    The database is opened at its real path (:func:`store_root`; sqlite keeps its journal
    beside the path it is given, so never through a link). The artifacts go through a link:
    the store records their locations relative to the project root (see
    :func:`make_store_portable`) and MLflow resolves them against the working directory, so
    through the link every artifact and model lands in the original project's store.
    DVC's clean-up removes the link, not what it points at.
    """
    project = dvc_temp_workspace()
    if project is None or Path(root).is_absolute():
        return
    link, target = Path(root) / "artifacts", (project / root / "artifacts").resolve()
    target.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() == target:
        return
    if link.exists() or link.is_symlink():
        raise AlphaGanError(f"{link.resolve()} exists in DVC's temporary workspace; remove it so artifacts go to {target}")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


@contextlib.contextmanager
def _store_lock(root: str | Path | None):
    """An exclusive lock on the project's store while it is created or its experiment is.

    Parallel experiments (``dvc queue start -j 2``) open one sqlite file at once: MLflow
    waits on a busy database for writes (busy_timeout 20 s), but two processes that find no
    tables both run the schema migrations, and two that find no experiment both create it;
    the loser fails. ``None`` (a team server) needs no lock.
    """
    if root is None or fcntl is None:
        yield
        return
    lock_dir = Path(root).resolve()
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def use_experiment(name: str, root: str | Path = "mlruns") -> str:
    """Point MLflow at the store and return the experiment id, creating it (artifacts under root).

    The project's own store is made portable first (see :func:`make_store_portable`), so
    every run and model logged after this records a relative artifact location. In a DVC
    temporary workspace the store is the original project's (see :func:`_share_project_store`).
    """
    # Once, the check came after set_tracking_uri (which exports the variable): the project's
    # store looked like a team server's, and its experiment got MLflow's default location
    # (mlruns/<id>, absolute) instead of mlruns/artifacts.
    local = _user_tracking_uri() is None
    if local:
        _share_project_store(root)
    with _store_lock(store_root(root) if local else None):
        return _use_experiment(name, root, local)


def _use_experiment(name: str, root: str | Path, local: bool) -> str:
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if local:
        _OWN_URIS.add(uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        artifact_location = (store_root(root).resolve() / "artifacts").as_uri() if local else None
        experiment_id = mlflow.create_experiment(name, artifact_location=artifact_location)
    else:
        experiment_id = experiment.experiment_id
    if local:
        make_store_portable(store_root(root))
    return experiment_id


# Every column where MLflow's sqlite store keeps a local artifact location.
_LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("logged_models", "artifact_location"), ("model_versions", "storage_location"))


def _portable_location(value: str, root: Path, base: Path) -> str | None:
    """``value`` relative to ``base`` when it is a local path inside the store ``root``
    (also one recorded under an old place of a moved store); None to leave it as it is."""
    if value.startswith("file:"):
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(value).path))
    elif value.startswith("/"):
        path = Path(value)
    else:
        return None  # already relative, or a remote URI (s3://, mlflow-artifacts:/, models:/)
    try:
        inside = path.relative_to(root)
    except ValueError:
        # Recorded before a move (or a copy): gone from there, so the part after the store's
        # directory name is where it is now. A location that still exists is left alone.
        parts = path.parts
        if root.name not in parts or path.exists():
            return None
        tail = parts[len(parts) - parts[::-1].index(root.name):]
        if not tail:
            return None
        inside = Path(*tail)
    return os.path.relpath(root / inside, base)


def make_store_portable(root: str | Path = "mlruns", base: str | Path | None = None) -> int:
    """Rewrite the sqlite store's artifact locations relative to ``base`` (default: the cwd).

    Only when ``root`` lies inside ``base``: a location that would need ``..`` stays
    absolute. Returns how many rows changed. Safe to run on every open (a no-op once done).
    """
    root = Path(root).resolve()
    base = Path(base or Path.cwd()).resolve()
    database = root / "mlflow.db"
    if not database.exists() or not root.is_relative_to(base):
        return 0
    changed = 0
    with sqlite3.connect(database, timeout=30) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table, column in _LOCATION_COLUMNS:
            if table not in tables:
                continue
            rows = connection.execute(f"SELECT rowid, {column} FROM {table} WHERE {column} LIKE '/%' OR {column} LIKE 'file:%'").fetchall()
            for rowid, value in rows:
                new = _portable_location(value, root, base)
                if new is not None and new != value:
                    connection.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (new, rowid))
                    changed += 1
    return changed


def _git(cwd: str | Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def git_state(cwd: str | Path = ".", managed: Iterable[str | Path] = ()) -> dict[str, str]:
    """Git tags that say what they claim ('unknown' outside git).

    ``git_commit``: the commit checked out when the run started. During ``dvc exp run`` that
    is the experiment's baseline (also in ``dvc_exp_baseline_rev``): DVC commits the
    experiment only after its last stage; :func:`link_dvc_experiments` adds
    ``dvc_exp_commit`` to the run once that commit exists.
    ``git_dirty``: uncommitted changes to tracked files other than ``managed`` ones (what DVC
    itself writes during a run: dvc.lock, the params file it edits for ``-S``, the outputs),
    listed in ``git_changed_files``.
    """
    commit = _git(cwd, "rev-parse", "HEAD")
    top = _git(cwd, "rev-parse", "--show-toplevel")
    status = _git(cwd, "status", "--porcelain", "-z", "--untracked-files=no")
    tags = {"git_commit": commit.strip() if commit else "unknown", "git_dirty": "unknown"}
    if status is None or top is None:
        return tags
    top_path = Path(top.strip()).resolve()
    prefixes = []
    for path in managed:
        full = (Path(cwd) / path).resolve()
        if full.is_relative_to(top_path):
            prefixes.append(full.relative_to(top_path).as_posix())
    entries, changed = status.split("\0"), []
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        if entry[0] in "RC":
            index += 1  # a rename's origin follows it
        changed.append(entry[3:])
    own = [p for p in changed if not any(p == m or p.startswith(m.rstrip("/") + "/") for m in prefixes)]
    tags["git_dirty"] = str(bool(own)).lower()
    if own:
        tags["git_changed_files"] = ", ".join(own[:20]) + (f" (+{len(own) - 20} more)" if len(own) > 20 else "")
    return tags


def link_dvc_experiments(metrics_json: str | Path, cwd: str | Path = ".") -> dict[str, str]:
    """Tag runs with the commit of the DVC experiment that made them (``dvc_exp_commit``).

    An experiment's commit (``refs/exps/...``) holds the train stage's metrics.json, which
    names its MLflow run: that, not the experiment's name (names can be reused), is the
    link. Runs already tagged are left alone. Needs an active tracking URI; returns
    {run_id: commit} for the runs tagged now.
    """
    top = _git(cwd, "rev-parse", "--show-toplevel")
    project = dvc_temp_workspace(cwd) or cwd  # a temporary workspace's git holds no refs/exps
    refs = _git(project, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps")
    if not top or not refs:
        return {}
    relative = os.path.relpath(Path(metrics_json).resolve(), Path(top.strip()).resolve())
    client = mlflow.MlflowClient()
    linked = {}
    for line in refs.splitlines():
        commit, _, ref = line.partition(" ")
        shown = _git(project, "show", f"{commit}:{relative}")
        try:
            run_id = json.loads(shown or "")["run_id"]
            run = client.get_run(run_id)
        except (ValueError, KeyError, TypeError, mlflow.exceptions.MlflowException):
            continue
        if "dvc_exp_commit" not in run.data.tags:
            client.set_tag(run_id, "dvc_exp_commit", commit)
            client.set_tag(run_id, "dvc_exp_ref", ref)
            linked[run_id] = commit
    return linked


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


def readable_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Learning rates (``.../lr_*``) as ``.../lr_*_log10``: the UI's charts and their hover
    (two decimals) show 0.0005 as a flat 0.00; -3.30 reads, and 2e-4 (-3.70) differs from it."""
    readable = {}
    for name, value in metrics.items():
        if name.rpartition("/")[2].startswith("lr_") and value > 0:
            readable[f"{name}_log10"] = math.log10(value)
        else:
            readable[name] = value
    return readable


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
        mlflow.log_metrics(readable_metrics(metrics), step=step)

    def on_images(self, step: int, epoch: int, images: dict[str, np.ndarray]) -> None:
        if step <= self.skip_through:
            return
        log_images(images, step)


def log_images(images: dict[str, np.ndarray], step: int) -> None:
    """One image per key at ``step``: the UI shows each key as a card with a step slider.

    The card opens at step 0 (MLflow 3.17 has no "latest" default), so the train stage logs
    the untrained model's grids at step 0: every card shows a picture on opening.
    """
    for key, image in images.items():
        mlflow.log_image(image, key=key, step=step, synchronous=True)


def artifact_url(run_id: str, path: str) -> str:
    """The UI server's URL of a run artifact, relative to the UI page (works behind a path prefix too)."""
    return "get-artifact?" + urllib.parse.urlencode({"path": path, "run_uuid": run_id})


def set_description(run_id: str, markdown: str) -> None:
    """The run's description: the markdown the run page's Overview shows first."""
    mlflow.MlflowClient().set_tag(run_id, "mlflow.note.content", markdown)


def description(run_id: str, title: str, pictures: dict[str, str], lines: Iterable[str] = ()) -> str:
    """Markdown: ``title``, then each picture (caption -> artifact path) embedded, then ``lines``."""
    parts = [f"### {title}", ""]
    for caption, path in pictures.items():
        parts += [f"**{caption}** (`{path}`)", "", f"![{caption}]({artifact_url(run_id, path)})", ""]
    parts += list(lines)
    return "\n".join(parts).strip() + "\n"


def get_description(run_id: str) -> str:
    return mlflow.MlflowClient().get_run(run_id).data.tags.get("mlflow.note.content", "")


def log_torch_model(module, name: str, input_example: np.ndarray, registered_model_name: str | None) -> str:
    """Log a module in MLflow's ``pt2`` format (torch.export: no pickled code); returns the model URI.

    Load it back with :func:`load_model` (eval mode, gradients off). Give an example batch of at
    least 2: torch.export fixes a dimension of size 1, and the model would take no other.
    """
    if input_example.shape[0] < 2:
        raise ValueError("input_example needs a batch of at least 2 to keep the batch size free")
    import mlflow.pytorch
    import torch

    # Logged with gradients off: what ``mlflow.pytorch.load_model`` returns then has them off too
    # (a deep copy: the caller's module keeps its own flags). See load_model for the rest.
    frozen = copy.deepcopy(module).eval().requires_grad_(False)
    info = mlflow.pytorch.log_model(
        frozen, name=name, input_example=input_example, serialization_format="pt2",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
        registered_model_name=registered_model_name,
    )
    return info.model_uri


# ---------------------------------------------------------------------------------------
# Model registry: the champion alias, and loading a registered model for inference.


class ModelNotFound(AlphaGanError):
    """A model URI that names nothing in the store (or no store at all)."""


def connect(root: str | Path = "mlruns") -> str:
    """Point MLflow at the project's store for reading, without creating one; returns the URI.

    With the default sqlite store, a missing ``mlflow.db`` is a :class:`ModelNotFound`
    (MLflow would silently create an empty store wherever the command runs).
    """
    uri = tracking_uri(root)
    if "MLFLOW_TRACKING_URI" not in os.environ and not (Path(root).resolve() / "mlflow.db").is_file():
        raise ModelNotFound(f"no MLflow store at {Path(root).resolve() / 'mlflow.db'}: run the pipeline first "
                            "(dvc repro, from the project directory) or set MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    return uri


def _first_line(exc: BaseException) -> str:
    return redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def model_version(model_uri: str):
    """The registry version a ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or
    ``models:/NAME/latest`` URI names (a :class:`mlflow.entities.model_registry.ModelVersion`)."""
    from alphagan.champion import CHAMPION_ALIAS

    client = mlflow.MlflowClient()
    rest = model_uri.removeprefix("models:/")
    try:
        if "@" in rest:
            name, alias = rest.rsplit("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, version = rest.rpartition("/")
        if not name:
            raise ModelNotFound(f"{model_uri!r} names no registered version; use models:/NAME@ALIAS or models:/NAME/VERSION")
        if version == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ModelNotFound(f"registered model {name!r} has no versions")
            return max(versions, key=lambda v: int(v.version))
        return client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as exc:
        if "@" in rest and "alias" in str(exc) and "not found" in str(exc):
            name, alias = rest.rsplit("@", 1)
            how = (" yet: run the pipeline (dvc repro) and its evaluate stage names the best version, "
                   f"or choose one with --model models:/{name}/VERSION") if alias == CHAMPION_ALIAS else ""
            raise ModelNotFound(f"registered model {name!r} has no {alias!r} version{how}") from None
        raise ModelNotFound(f"{model_uri}: {_first_line(exc)}") from None


def run_model_versions(name: str, run_id: str) -> list:
    """The versions of registered model ``name`` logged by ``run_id``, newest first (train
    registers one per run; a resumed run registers again)."""
    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except mlflow.exceptions.MlflowException:
        return []
    return sorted((v for v in versions if v.run_id == run_id), key=lambda v: -int(v.version))


def encoder_uri_for(generator_uri: str) -> str:
    """The encoder that was trained with ``generator_uri`` (same run), so a reconstruction
    uses a matching pair: ``<name>-encoder`` version of the same run for ``models:/`` URIs,
    ``runs:/ID/encoder`` for ``runs:/ID/generator``."""
    if generator_uri.startswith("models:/"):
        generator = model_version(generator_uri)
        encoders = run_model_versions(f"{generator.name}-encoder", generator.run_id)
        if not encoders:
            raise ModelNotFound(f"no registered {generator.name}-encoder version from run {generator.run_id} "
                                f"(the run of {generator_uri}); give --encoder")
        return f"models:/{encoders[0].name}/{encoders[0].version}"
    if generator_uri.startswith("runs:/") and generator_uri.rstrip("/").endswith("/generator"):
        return generator_uri.rstrip("/").removesuffix("generator") + "encoder"
    raise ModelNotFound(f"cannot tell which encoder was trained with {generator_uri}; give --encoder")


def load_model(model_uri: str):
    """A logged alpha-gan network, ready for inference: eval mode, gradients off.

    Use this, not ``mlflow.pytorch.load_model``. The networks are logged in MLflow's
    ``pt2`` format (:func:`log_torch_model`): a ``torch.export`` graph with no pickled
    code. ``mlflow.pytorch.load_model`` returns ``ExportedProgram.module()``, a
    ``GraphModule`` whose ``.train()``/``.eval()`` are replaced by stubs that raise
    ``NotImplementedError("Calling eval() is not supported yet.")``
    (torch/export/exported_program.py) and whose ``training`` flag reads True, because an
    exported graph has its mode baked in: our batch-norm nodes were traced with
    ``training=False``, so it already computes as in eval mode, yet code that calls
    ``.eval()`` (everyone's habit) crashes, and its parameters kept ``requires_grad``.

    Why a loader and not another log format: ``serialization_format="pickle"`` would give
    a plain module whose ``.eval()`` works, but MLflow 3.17 refuses to unpickle it unless
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is set (pickles run code on load), and it
    would tie every model to this package's classes. So models stay ``pt2`` (logged with
    gradients already off, so the plain loader gets that much right too), and this
    loader fixes the rest: it checks that the graph was exported in eval mode (no
    training-mode batch norm), sets ``training`` False on every submodule, turns
    gradients off, and makes ``.eval()`` work (``.train()`` refuses: a frozen export
    cannot be fine-tuned; train from the checkpoint instead).
    """
    import mlflow.pytorch

    try:
        module = mlflow.pytorch.load_model(model_uri)
    except mlflow.exceptions.MlflowException as exc:
        if model_uri.startswith("models:/"):
            model_version(model_uri)  # raises the plainer message (no such alias, version or model)
        raise ModelNotFound(f"{model_uri}: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign artifact
        raise ModelNotFound(f"{model_uri} cannot be loaded: {type(exc).__name__}: {_first_line(exc)}") from None
    return inference_ready(module, model_uri)


def inference_ready(module, what: str = "the model"):
    """``module`` in eval mode with gradients off; a ``torch.export`` module also gets
    working ``.eval()``/``.train(False)`` (see :func:`load_model`)."""
    import types

    import torch
    from torch import nn

    if isinstance(module, torch.fx.GraphModule):  # what torch.export.load(...).module() gives
        for node in module.graph.nodes:
            if node.op == "call_function" and "batch_norm" in str(node.target) and _traced_in_training(node):
                raise ModelNotFound(f"{what} was exported in training mode (batch statistics); log it after .eval()")

        def train(self, mode: bool = True):
            if mode:
                raise NotImplementedError(f"{what} is a torch.export graph frozen in eval mode and cannot be trained; "
                                          "fine-tune from the training checkpoint (models/checkpoint.pt)")
            return nn.Module.train(self, False)

        module.train = types.MethodType(train, module)
        module.eval = types.MethodType(lambda self: self.train(False), module)
        nn.Module.train(module, False)
    else:
        module.eval()
    module.requires_grad_(False)
    return module


def _traced_in_training(node) -> bool:
    """Whether a batch-norm node of an exported graph uses batch statistics (its ``training`` argument)."""
    names = [argument.name for argument in getattr(node.target, "_schema").arguments]
    if "training" in node.kwargs:
        return bool(node.kwargs["training"])
    if "training" in names and names.index("training") < len(node.args):
        return bool(node.args[names.index("training")])
    return False  # e.g. _native_batch_norm_legit_no_training


def exported_input_shape(module) -> tuple[int, ...]:
    """The per-example input shape of a loaded ``pt2`` model (its first input without the
    batch dimension), e.g. ``(128,)`` for the generator, ``(3, 32, 32)`` for the encoder."""
    for node in module.graph.nodes:
        if node.op == "placeholder" and "val" in node.meta:
            return tuple(int(d) for d in node.meta["val"].shape[1:])
    raise ModelNotFound("the model's graph does not record its input shape")


def update_champion(run_id: str, name: str, metrics: dict[str, float], validated: tuple[str, ...]):
    """Tag the run's registered generator and encoder versions with its validated metrics
    and move the ``champion`` alias to them when :func:`alphagan.champion.decide` says so.

    Returns ``(decision, candidate version, champion version before or "")``;
    ``(None, reason, "")`` when the run registered no version.
    The encoder version of the same run follows the generator, so ``@champion`` is always
    a matching pair.
    """
    from alphagan.champion import CHAMPION_ALIAS, DATA_TAG, decide, standing_from_tags, version_tags

    client = mlflow.MlflowClient()
    generators = run_model_versions(name, run_id)
    if not generators:
        return None, f"run {run_id} registered no version of {name!r}", ""
    candidate = generators[0]
    encoders = run_model_versions(f"{name}-encoder", run_id)
    tags = version_tags(metrics, validated, client.get_run(run_id).data.tags.get(DATA_TAG, ""))
    for version in [candidate, *encoders[:1]]:
        for key, value in tags.items():
            client.set_model_version_tag(version.name, version.version, key, value)
    try:
        held = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
        champion = standing_from_tags(str(held.version), held.tags, validated)
    except mlflow.exceptions.MlflowException:  # none yet, or its version was deleted (the alias goes with it)
        champion = None
    decision = decide(standing_from_tags(str(candidate.version), tags, validated), champion, validated)
    if decision.move or (champion is not None and champion.version == str(candidate.version)):
        client.set_registered_model_alias(name, CHAMPION_ALIAS, candidate.version)
        if encoders:
            client.set_registered_model_alias(f"{name}-encoder", CHAMPION_ALIAS, encoders[0].version)
        else:  # never leave @champion naming an encoder of another run
            try:
                client.delete_registered_model_alias(f"{name}-encoder", CHAMPION_ALIAS)
            except mlflow.exceptions.MlflowException:
                pass
    return decision, str(candidate.version), champion.version if champion is not None else ""
