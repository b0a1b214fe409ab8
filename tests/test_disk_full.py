"""Part 7: a full disk stops a stage with one line naming the path; previous outputs stay; a rerun succeeds.

The failure is injected where the operating system reports it: ``fsync`` (delayed
allocation reports ENOSPC there), ``posix_fallocate`` (the memmaps' space is reserved up
front) and ``torch.save``'s write.
"""

import errno
import os

import numpy as np
import pytest
import torch

from alphagan import atomic
from alphagan.atomic import OutputError, TEMP_PATTERN
from alphagan.training import load_checkpoint, train
from pipelines import fetch, prepare, validate
from tests.test_training import tiny_params


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _temporaries(root):
    return [p for p in root.rglob("*") if TEMP_PATTERN.match(p.name)]


def _error_line(err, stage):
    (line,) = [line for line in err.splitlines() if "error" in line]  # other lines are progress bars
    assert line.startswith(f"{stage}: error: no space left on the device while writing ") and "Traceback" not in err
    return line


@pytest.fixture
def chain(write_params, tmp_path):
    params = str(write_params())
    for stage in (fetch, validate, prepare):
        assert stage.main(["--params", params]) == 0
    return params


@pytest.mark.parametrize(("stage", "output"), [(fetch, "data/raw"), (validate, "reports/validate/data_docs"), (prepare, "data/prepared")])
def test_stage_on_a_full_disk_keeps_previous_outputs_and_reruns(chain, tmp_path, monkeypatch, capsys, stage, output):
    before = _snapshot(tmp_path)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(atomic.os, "fsync", _no_space)
        patch.setattr(os, "posix_fallocate", _no_space)
        assert stage.main(["--params", chain]) == 1
    line = _error_line(capsys.readouterr().err, stage.__name__.split(".")[-1])
    assert str(tmp_path / output) in line and "free some space" in line
    assert _snapshot(tmp_path) == before  # every earlier output byte-identical
    assert _temporaries(tmp_path) == []
    # Space freed: the same stage runs through and gives the same outputs.
    assert stage.main(["--params", chain]) == 0
    after = _snapshot(tmp_path)
    deterministic = [k for k in before if k.startswith("data/")]
    assert {k: after[k] for k in deterministic} == {k: before[k] for k in deterministic}


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8), rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    path = tmp_path / "models/checkpoint.pt"
    train(*images, tiny_params(max_steps=2).train, 16, 0, path)
    before = path.read_bytes()
    real_save = torch.save

    def save_until_full(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)  # part of the file is written, then the disk is full
        with open(target, "r+b") as stream:
            stream.truncate(100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", save_until_full)
        with pytest.raises(OutputError, match=f"no space left on the device while writing {path}"):
            train(*images, tiny_params(max_steps=4, resume=True).train, 16, 0, path)
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 2
    assert _temporaries(tmp_path) == []
    assert train(*images, tiny_params(max_steps=4, resume=True).train, 16, 0, path).step == 4
