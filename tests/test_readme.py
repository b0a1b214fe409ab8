"""Every command in README.md runs here, verbatim and in README order, as a new user would.

The project is a fresh git copy of this checkout (tracked files only) with tiny params, in
a temporary directory; its ``.venv`` is this test's environment (as after ``make setup``),
and that venv is **not** on PATH: the README's commands must work without activating it.
Each command's output is kept under ``$ALPHAGAN_TEST_ARTIFACTS/readme`` (or pytest's
temporary directory) for inspection.

Commands are the lines of ```` ```bash ```` blocks (a trailing ``  # comment`` is not part of
the command) and whole ```` ```python ```` blocks. A few are not run here, or are expected to
fail here, each for a reason stated below; the test checks that those lists name commands
the README still has.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT
from tests.test_pipeline import git_copy_of_repo, write_tiny_repo_params

README = REPO_ROOT / "README.md"

#: Commands not run here, and why.
NOT_RUN = {
    "make test": "this test runs inside `make test`",
    "make bench": "fixed-size benchmarks (minutes of CPU); tests/test_benchmarks.py runs each script at small sizes",
    ".venv/bin/python benchmarks/few_shot.py": "two 100-kimg runs (~15 CPU minutes); tests/test_benchmarks.py runs it at 0.2 kimg",
    "-S train.nproc=4": "one process per GPU, four of them; tests/test_ddp.py runs the train stage with train.nproc=2 on the CPU",
}
#: Commands that must fail on this machine, with a phrase their one-line error must hold.
EXPECTED_FAILURES = {
    "-S data.source=kaggle": "Kaggle",  # no credentials and no network here
    **({} if torch.cuda.is_available() else {"-S train.device=cuda": "no CUDA device is available"}),
}
#: Long-running commands: started, probed, then stopped.
SERVERS = {"make ui": "http://127.0.0.1:5000/health"}

#: A small but real dataset for every command: 60 faces at 16 px, 2 epochs.
README_PARAMS = {
    "data": {"source": "dicebear", "image_size": 16, "dicebear": {"count": 60, "styles": ["adventurer", "lorelei"]}},
    # max_steps caps the few-shot walkthrough's train.kimg=100 (6,250 steps here); no other run takes more than 300.
    "train": {"epochs": 2, "batch_size": 16, "log_every": 1, "feature_layer": 1, "max_steps": 300},
    "evaluate": {"num_samples": 64},
}


@dataclass(frozen=True)
class Command:
    section: str
    language: str  # "bash" or "python"
    text: str


def readme_commands(markdown: str) -> list[Command]:
    """The README's commands in order, each with the heading it sits under."""
    commands, section, in_block, language, block = [], "", False, "", []
    for line in markdown.splitlines():
        if not in_block and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif not in_block and line.startswith("```"):
            in_block, language, block = True, line[3:].strip(), []
        elif in_block and line.startswith("```"):
            in_block = False
            if language == "python":
                commands.append(Command(section, "python", "\n".join(block)))
            elif language == "bash":
                joined = "\n".join(block).replace("\\\n", " ")
                for command in joined.splitlines():
                    command = re.sub(r"\s+#\s.*$", "", command).strip()
                    if command and not command.startswith("#"):
                        commands.append(Command(section, "bash", command))
        elif in_block:
            block.append(line)
    return commands


def _matching(table: dict[str, str], command: Command) -> str | None:
    return next((key for key in table if key == command.text or (key.startswith("-") and key in command.text)), None)


def test_readme_parser_reads_commands_and_drops_comments():
    markdown = "# A\n```bash\nmake repro   # the pipeline\n# a comment\n.venv/bin/dvc exp run \\\n  -S x=1\n```\n" \
               "text\n```console\n$ not run\n```\n## B\n```python\nprint(1)\n```\n"
    assert readme_commands(markdown) == [Command("A", "bash", "make repro"), Command("A", "bash", ".venv/bin/dvc exp run    -S x=1"),
                                         Command("B", "python", "print(1)")]


def test_every_exception_names_a_readme_command():
    texts = [command.text for command in readme_commands(README.read_text(encoding="utf-8"))]
    for key in [*NOT_RUN, *EXPECTED_FAILURES, *SERVERS]:
        assert any(key == text or (key.startswith("-") and key in text) for text in texts), f"README no longer has {key!r}"


def _my_faces(home: Path, project: Path) -> None:
    """The user's own folder for the walkthrough: real faces plus files that must be rejected, not lost."""
    folder = home / "my-faces"
    if folder.exists():
        return
    folder.mkdir(parents=True)
    faces = sorted((project / "data/raw").rglob("*.png"))[:40]
    assert len(faces) == 40, "the sample must have been fetched before the own-folder walkthrough"
    for index, face in enumerate(faces):
        (folder / f"face-{index:02d}.png").write_bytes(face.read_bytes())
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")


def _wait_for(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(1)
    return False


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a dozen pipeline runs on tiny data: about 10 minutes on 2 cores
def test_every_readme_command_runs_as_written(tmp_path):
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 15
    project, home = tmp_path / "alpha-gan", tmp_path / "home"
    project.mkdir()
    home.mkdir()
    env = git_copy_of_repo(project)
    write_tiny_repo_params(project, README_PARAMS)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "alpha-gan"], cwd=project, check=True, env=env)
    (project / ".venv").symlink_to(Path(sys.prefix))  # what `make setup` made; its stamp is newer than pyproject.toml
    venv_bin = str(Path(sys.executable).parent)
    env = {**env, "HOME": str(home), "PATH": os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin),
           "KAGGLEHUB_CACHE": str(home / "kagglehub"), "ALPHAGAN_PROGRESS": "lines"}
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "KAGGLE_USERNAME", "KAGGLE_KEY", "MLFLOW_TRACKING_URI", "ALPHAGAN_PYTHON"):
        env.pop(name, None)
    logs = Path(os.environ.get("ALPHAGAN_TEST_ARTIFACTS", tmp_path / "artifacts")) / "readme"
    logs.mkdir(parents=True, exist_ok=True)

    for number, command in enumerate(commands, 1):
        label = f"#{number} [{command.section}] {command.text.splitlines()[0]}"
        if _matching(NOT_RUN, command):
            continue
        if "my-faces" in command.text:
            _my_faces(home, project)
        if (url := SERVERS.get(command.text)) is not None:
            server = subprocess.Popen(["bash", "-c", command.text], cwd=project, env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                assert _wait_for(url, 120), f"{label}: nothing answered at {url}"
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(30)
            continue
        if command.language == "python":
            script = tmp_path / f"readme-{number}.py"
            script.write_text(command.text, encoding="utf-8")
            argv = [str(project / ".venv/bin/python"), str(script)]
        else:
            argv = ["bash", "-c", command.text]
        started = time.monotonic()
        done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=900)
        output = done.stdout + done.stderr
        (logs / f"{number:02d}.txt").write_text(f"$ {command.text}\n# exit {done.returncode}, "
                                                f"{time.monotonic() - started:.0f} s\n{done.stdout}\n--- stderr ---\n{done.stderr}")
        assert "Traceback" not in output, f"{label} printed a traceback:\n{output[-3000:]}"
        if (key := _matching(EXPECTED_FAILURES, command)) is not None:
            assert done.returncode != 0 and EXPECTED_FAILURES[key] in output, f"{label} should fail plainly here:\n{output[-3000:]}"
        else:
            assert done.returncode == 0, f"{label} failed:\n{output[-3000:]}"
