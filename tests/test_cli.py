"""Part 6: every bad argument of `alphagan sample` is one line and a non-zero exit, never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alphagan.cli import main
from alphagan.training import train
from tests.test_training import tiny_params


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import numpy as np

    path = tmp_path_factory.mktemp("cli") / "c.pt"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    train(images, images[:4], tiny_params(max_steps=1).train, 16, 0, path)
    return path


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's exit
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.err


def _one_line(err):
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("alphagan: error: ")
    return lines[0]


def test_good_arguments_write_the_image(checkpoint, tmp_path, capsys):
    out = tmp_path / "faces.jpg"
    code, err = _run(["sample", "--checkpoint", str(checkpoint), "--count", "4", "--out", str(out)], capsys)
    assert code == 0 and out.stat().st_size > 0 and err == ""
    assert [p.name for p in tmp_path.iterdir()] == ["faces.jpg"]  # no temporary left beside it


@pytest.mark.parametrize(("args", "expected"), [
    (["--count", "0"], "--count must be between 1 and 4096, got 0"),
    (["--count", "-3"], "--count must be between 1 and 4096, got -3"),
    (["--count", "1000000"], "--count must be between 1 and 4096"),
    (["--count", "many"], "--count must be a whole number, got 'many'"),
    (["--seed", "-1"], "--seed must be between 0 and"),
    (["--seed", "x"], "--seed must be a whole number"),
    (["--out", "faces.txt"], "--out 'faces.txt' must end in an image extension"),
    (["--out", "faces"], "--out 'faces' must end in an image extension"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_line(checkpoint, tmp_path, capsys, args, expected):
    code, err = _run(["sample", "--checkpoint", str(checkpoint), *args], capsys)
    assert code == 2
    assert expected in _one_line(err)


def test_no_command_is_one_line(capsys):
    code, err = _run([], capsys)
    assert code == 2 and "required" in _one_line(err)


def test_missing_corrupt_or_directory_checkpoint(tmp_path, capsys):
    code, err = _run(["sample", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "a.png")], capsys)
    assert code == 1 and "no checkpoint at" in _one_line(err)
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    code, err = _run(["sample", "--checkpoint", str(tmp_path / "corrupt.pt"), "--out", str(tmp_path / "a.png")], capsys)
    assert code == 1 and "cannot be read" in _one_line(err)
    code, err = _run(["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "a.png")], capsys)
    assert code == 1 and "is a directory" in _one_line(err)
    assert not (tmp_path / "a.png").exists()


def test_unusable_output_places(checkpoint, tmp_path, capsys):
    (tmp_path / "dir.png").mkdir()
    code, err = _run(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "dir.png")], capsys)
    assert code == 1 and "is a directory" in _one_line(err)
    (tmp_path / "file").write_text("a file where a directory should be")
    code, err = _run(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "file/x.png")], capsys)
    assert code == 1 and str(tmp_path / "file/x.png") in _one_line(err)


def test_unwritable_out_directory(checkpoint, tmp_path, capsys):
    # /sys refuses new files even to root; a chmod-ed directory covers other users.
    code, err = _run(["sample", "--checkpoint", str(checkpoint), "--out", "/sys/faces.png"], capsys)
    assert code == 1 and "cannot write /sys/faces.png" in _one_line(err)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        code, err = _run(["sample", "--checkpoint", str(checkpoint), "--out", str(locked / "x.png")], capsys)
        assert code == 1 and "cannot write" in _one_line(err)
    finally:
        locked.chmod(0o700)


def test_console_script_fails_plainly(tmp_path):
    script = Path(sys.executable).parent / "alphagan"
    done = subprocess.run([str(script), "sample", "--count", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
