"""`make bench`'s scripts run and print their tables (at small sizes: the numbers are not the point here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SMALL_RUNS = {
    "prepare.py": ["--count", "120", "--size", "32", "--rounds", "2"],
    "train.py": ["--size", "16", "--batch", "8", "--width", "8", "--steps", "2", "--rounds", "2"],
    "evaluate.py": ["--images", "20", "--size", "32", "--dim", "64", "--rounds", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMALL_RUNS))
def test_benchmark_prints_its_table(script):
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *SMALL_RUNS[script]], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(rows) >= 3, done.stdout
    assert "Traceback" not in done.stderr
    assert "busy with other work before the run" in done.stdout  # every table says how quiet the machine was
    assert " / " in rows[2] and "%" in rows[2]  # min / median / max (spread), never a bare number


def test_make_bench_runs_exactly_these_scripts():
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nbench:"):].split("\n\n")[0]
    assert sorted(line.split("benchmarks/")[1].split()[0] for line in recipe.splitlines() if "benchmarks/" in line) == sorted(SMALL_RUNS)
