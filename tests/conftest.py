"""Shared fixtures: tiny params written to a temporary project directory."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "seed": 7,
    "data": {"source": "dicebear", "image_size": 16, "dicebear": {"count": 24, "styles": ["adventurer", "lorelei"]}},
    "validate": {"min_side": 8, "max_reject_fraction": 0.5},
    "prepare": {"val_fraction": 0.25, "workers": 1},
    "train": {"feature_layer": 1},  # 16 px: the discriminator has 2 blocks
}


_SESSION_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def _restore_tracking_uri() -> None:
    if _SESSION_TRACKING_URI is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = _SESSION_TRACKING_URI


@pytest.fixture(autouse=True)
def _no_tracking_uri_leaks():
    """MLflow 3's ``set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in os.environ; left
    there (by a test or a module fixture), every later subprocess (a stage, `dvc repro`)
    would log into that test's store. Each test starts and ends with the session's value."""
    _restore_tracking_uri()
    yield
    _restore_tracking_uri()


def deep_update(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = deep_update(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


@pytest.fixture
def write_params(tmp_path):
    """Write params (tiny defaults + overrides) with all paths under tmp_path; returns the file."""

    def write(overrides: dict | None = None, name: str = "params.yaml") -> Path:
        paths = {k: str(tmp_path / v) for k, v in
                 {"raw": "data/raw", "validated": "data/validated", "prepared": "data/prepared",
                  "models": "models", "reports": "reports"}.items()}
        params = deep_update({**TINY, "paths": paths}, overrides or {})
        path = tmp_path / name
        path.write_text(yaml.safe_dump(params), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def real_faces(tmp_path_factory):
    """600 real prepared faces at 32 px: DiceBear renders (all six default styles), decoded
    and resized as the prepare stage does, in a seeded random order."""
    return _rendered_faces(tmp_path_factory, 600)


@pytest.fixture(scope="session")
def many_real_faces(tmp_path_factory):
    """2,000 real prepared faces made as :func:`real_faces` is: enough for the classifier
    two-sample test at the evaluate stage's 1,000 a side (about 8 s to render)."""
    return _rendered_faces(tmp_path_factory, 2000)


def _rendered_faces(tmp_path_factory, count: int):
    import numpy as np

    from alphagan.config import DicebearParams
    from alphagan.imaging import prepare_image
    from alphagan.sources.dicebear import render_avatars

    styles = ("adventurer", "lorelei", "notionists", "micah", "big-smile", "open-peeps")
    raw = tmp_path_factory.mktemp("faces")
    render_avatars(DicebearParams(count=count, styles=styles), 32, 11, raw)
    paths = sorted(raw.rglob("*.png"))
    faces = np.stack([prepare_image(p, 32) for p in paths])
    return faces[np.random.default_rng(0).permutation(len(faces))]
