"""Benchmark: the data path at full size, 63,565 JPEGs laid out like the Kaggle set.

Writes ``--count`` synthetic JPEGs of 90-130 px into one ``images/`` folder (the layout of
``splcher/animefacedataset``), plus a few bad files (truncated, empty, not an image, too
small, a byte-for-byte duplicate). Then, round by round, interleaved:

  plain loop   open / convert("RGB") / resize(size, LANCZOS) over the same files, one
               process: the baseline a user would write
  fetch        ``python -m pipelines.fetch`` with ``data.source: folder``
  validate     ``python -m pipelines.validate`` (scan in worker processes + the GX suite)
  prepare      ``python -m pipelines.prepare`` (decode, crop, resize into the memmaps)

Each stage runs as its own process, exactly as ``dvc repro`` runs it, so its wall time
includes interpreter start-up and imports ("other" in the phase lines). Memory is the
peak over the stage's whole process tree (workers included), sampled from
``/proc/<pid>/smaps_rollup``: PSS (shared pages split between the processes that map
them, so the sum is what the tree costs) and RSS (each process counted whole; an upper
bound). Prints a table (not a test); targets: validate + prepare under 60 s and under
1 GB, prepare >= 2.0x and validate >= 1.0x the plain loop of the same run.

    python benchmarks/data_path.py [--count 63565] [--size 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from alphagan.benchmarking import Rounds, interleaved, machine_line, ratio, verdict
from prepare import make_jpegs  # benchmarks/prepare.py: the same synthetic JPEGs
from alphagan.phases import ENV_VAR as PHASES_ENV, line as phases_line, sequential_total

REPO = Path(__file__).resolve().parents[1]
KAGGLE_COUNT = 63_565
STAGES = ("fetch", "validate", "prepare")
#: The bad files every real scrape has, by name: each must be rejected with its reason.
BAD_FILES = {
    "truncated.jpg": "truncated", "empty.jpg": "empty", "notes.jpg": "not an image",
    "tiny.jpg": "too small", "duplicate.jpg": "duplicate",
}


def _write_range(args: tuple[str, int, int, int]) -> None:
    folder, start, stop, seed = args
    make_jpegs(Path(folder), stop - start, seed, start)


def make_kaggle_like(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` good JPEGs (all cores) plus :data:`BAD_FILES`; returns the good files."""
    folder.mkdir(parents=True)
    step = 2000
    with Pool() as pool:
        pool.map(_write_range, [(str(folder), s, min(s + step, count), seed) for s in range(0, count, step)])
    good = sorted(folder.iterdir())
    first = good[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(first[: len(first) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture\n")
    Image.fromarray(np.arange(12 * 12 * 3, dtype=np.uint8).reshape(12, 12, 3)).save(folder / "tiny.jpg")  # under validate.min_side
    (folder / "duplicate.jpg").write_bytes(first)
    return good


class TreeMemory:
    """Peak PSS and RSS summed over a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid, self.interval = pid, interval
        self.peak_pss = self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        pids, frontier = [pid], [pid]
        while frontier:
            parent = frontier.pop()
            try:
                children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            except OSError:
                continue
            pids += [int(c) for c in children]
            frontier += [int(c) for c in children]
        return pids

    @staticmethod
    def _rollup(pid: int) -> tuple[int, int]:
        pss = rss = 0
        try:
            for text in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if text.startswith("Pss:"):
                    pss = int(text.split()[1]) * 1024
                elif text.startswith("Rss:"):
                    rss = int(text.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return pss, rss

    def _run(self) -> None:
        while not self._stop.is_set():
            sums = [sum(v) for v in zip(*(self._rollup(p) for p in self._tree(self.pid)), strict=True)] or [0, 0]
            self.peak_pss, self.peak_rss = max(self.peak_pss, sums[0]), max(self.peak_rss, sums[1])
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_stage(stage: str, project: Path, record: dict) -> float:
    """Run one stage as its own process in ``project``; its wall seconds. Phases and memory go to ``record``."""
    phases_file = project / f".phases-{stage}.json"
    env = {**os.environ, PHASES_ENV: str(phases_file), "ALPHAGAN_PROGRESS": "off",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", f"pipelines.{stage}", "--params", "params.yaml"], cwd=project,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    memory = TreeMemory(process.pid)
    output, _ = process.communicate()
    seconds = time.perf_counter() - start
    memory.stop()
    if process.returncode != 0:
        raise SystemExit(f"data_path: the {stage} stage failed (exit {process.returncode}):\n{output[-3000:]}")
    phases = json.loads(phases_file.read_text())
    phases["other (start-up, imports, writes)"] = max(0.0, seconds - sequential_total(phases))
    record.setdefault(stage, []).append({"seconds": seconds, "phases": phases, "pss": memory.peak_pss,
                                         "rss": memory.peak_rss, "output": output})
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=KAGGLE_COUNT, help="good JPEGs (default: the Kaggle set's 63,565)")
    parser.add_argument("--size", type=int, default=64, help="data.image_size for prepare and the plain loop")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (>= 2 for a ratio)")
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="alphagan-data-path-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        good = make_kaggle_like(tmp / "kaggle" / "images", args.count)
        print(f"wrote {len(good)} JPEGs of 90-130 px + {len(BAD_FILES)} bad files in {time.perf_counter() - start:.0f} s")
        project = tmp / "project"
        project.mkdir()
        params = {"data": {"source": "folder", "image_size": args.size, "folder": {"path": str(tmp / "kaggle")}}}
        (project / "params.yaml").write_text(yaml.safe_dump(params))

        def plain_loop() -> float:
            begin = time.perf_counter()
            for path in good:
                with Image.open(path) as image:
                    image.convert("RGB").resize((args.size, args.size), Image.Resampling.LANCZOS)
            return len(good) / (time.perf_counter() - begin)

        record: dict[str, list[dict]] = {}
        programs = {"plain loop (1 process)": plain_loop}
        programs.update({stage: (lambda stage=stage: len(good) / run_stage(stage, project, record)) for stage in STAGES})
        runs = interleaved(programs, args.rounds)
        summary = json.loads((project / "reports/validate/summary.json").read_text())
    plain = runs["plain loop (1 process)"]
    print(f"\n{len(good)} good JPEGs + {len(BAD_FILES)} bad -> {args.size} px on {os.cpu_count()} cores; "
          f"{args.rounds} interleaved rounds; each stage is its own process, as under dvc repro\n")
    print(f"| {'step':<24} | {'wall s (median)':>15} | {'images/s min / median / max (spread)':>38} | {'vs plain loop':>13} "
          f"| {'peak PSS':>9} | {'peak RSS':>9} |")
    print(f"|{'-' * 26}|{'-' * 17}|{'-' * 40}|{'-' * 15}|{'-' * 11}|{'-' * 11}|")
    for name, rounds in runs.items():
        relative = ratio(rounds, plain)
        entries = record.get(name, [])
        pss = f"{max(e['pss'] for e in entries) / 2**20:.0f} MiB" if entries else "-"
        rss = f"{max(e['rss'] for e in entries) / 2**20:.0f} MiB" if entries else "-"
        print(f"| {name:<24} | {len(good) / rounds.median:>15.1f} | {rounds.summary():>38} | "
              f"{'unstable' if relative is None else f'{relative:.2f}x':>13} | {pss:>9} | {rss:>9} |")
    print("\nwhere the time goes (median round of each stage):")
    for stage in STAGES:
        entries = sorted(record[stage], key=lambda e: e["seconds"])
        print(f"  {stage}: {phases_line(entries[len(entries) // 2]['phases'])}")
    print(f"\nvalidate accepted {summary['accepted']} of {summary['files_seen']} files; rejected by reason: "
          f"{summary['rejected_by_reason']}")
    both = [v["seconds"] + p["seconds"] for v, p in zip(record["validate"], record["prepare"], strict=True)]
    both_rounds = Rounds("validate + prepare", tuple(both))
    peak_pss = max(e["pss"] for stage in ("validate", "prepare") for e in record[stage])
    print(f"validate + prepare: {both_rounds.summary(1)} s (min / median / max): "
          f"{'UNSTABLE, not reported' if not both_rounds.stable else ('MET' if both_rounds.median < 60 else 'NOT MET')} "
          "(target < 60 s)")
    print(f"peak memory of validate or prepare (PSS, whole process tree): {peak_pss / 2**20:.0f} MiB: "
          f"{'MET' if peak_pss < 2**30 else 'NOT MET'} (target < 1 GiB)")
    print(verdict(ratio(runs["prepare"], plain), 2.0, "prepare vs plain loop"))
    print(verdict(ratio(runs["validate"], plain), 1.0, "validate vs plain loop"))


if __name__ == "__main__":
    main()
