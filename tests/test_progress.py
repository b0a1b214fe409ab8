"""Progress: a bar on a terminal, a few whole lines everywhere else (no carriage returns in logs)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from tqdm import tqdm

from alphagan.progress import LineProgress, progress
from tests.conftest import REPO_ROOT


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_every_ten_percent_and_a_closing_line(monkeypatch):
    monkeypatch.delenv("ALPHAGAN_PROGRESS", raising=False)
    monkeypatch.delenv("ALPHAGAN_PROGRESS_EVERY", raising=False)
    stream = io.StringIO()
    bar = progress(total=200, desc="train", unit="step", stream=stream)
    assert isinstance(bar, LineProgress)
    for step in range(200):
        bar.update(1)
        bar.set_postfix(d=f"{step / 100:.2f}")
    bar.close()
    bar.close()  # closing twice prints nothing more
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 10  # 10%, 20%, ..., 90%, then the closing line at 100%
    assert lines[0].startswith("train:  10% (20/200 step)") and "left" in lines[0] and lines[0].endswith("d=0.18")  # the postfix set before the 20th update
    assert lines[-1].startswith("train: 100% (200/200 step)") and "done in" in lines[-1] and lines[-1].endswith("d=1.99")


def test_resumed_count_reports_from_where_it_starts(monkeypatch):
    monkeypatch.setenv("ALPHAGAN_PROGRESS_EVERY", "25")
    stream = io.StringIO()
    bar = progress(total=100, initial=60, desc="train", unit="step", stream=stream)
    for _ in range(40):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["75%", "100%"]


def test_iterables_without_a_length_print_only_the_total():
    stream = io.StringIO()
    seen = list(progress((i for i in range(7)), desc="scan", unit="file", stream=stream))
    assert seen == list(range(7))
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[0]]
    assert stream.getvalue().startswith("scan: 7 file ")


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.delenv("ALPHAGAN_PROGRESS", raising=False)
    bar = progress(total=5, desc="train", stream=_Terminal())
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()


@pytest.mark.parametrize("style, kind", [("lines", LineProgress), ("bar", tqdm), ("off", tqdm)])
def test_the_style_can_be_forced(monkeypatch, style, kind):
    monkeypatch.setenv("ALPHAGAN_PROGRESS", style)
    stream = _Terminal() if style == "lines" else io.StringIO()
    bar = progress(total=3, stream=stream)
    assert isinstance(bar, kind)
    assert (style == "off") == bool(getattr(bar, "disable", False))
    bar.close()


def test_a_stage_writes_whole_lines_into_a_log(write_params):
    """The fetch stage with stderr captured (not a terminal): a few lines, never a carriage return."""
    params = write_params({"data": {"dicebear": {"count": 40}}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAGAN_PROGRESS")}
    done = subprocess.run([sys.executable, "-m", "pipelines.fetch", "--params", str(params)], cwd=REPO_ROOT,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    render_lines = [line for line in done.stderr.splitlines() if line.startswith("render dicebear:")]
    assert 1 <= len(render_lines) <= 10
    assert render_lines[-1].startswith("render dicebear: 100% (40/40 img)")
