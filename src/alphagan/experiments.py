"""Experiments side by side: the params that differ and the validated metrics with their floors.

``dvc exp show`` lists every param, metric and dependency hash (about 70 columns here);
``--drop`` cannot thin it well because DVC anchors its patterns at the start of a name.
This reads ``dvc exp show --json`` and keeps only what a comparison needs:

* the params whose values differ between the rows shown (everything else is shared), and
* each validated metric (``validated_metrics`` in ``reports/evaluate/metrics.json``) as
  ``mean ±spread`` with its real-data floor, a ``!`` where the run was flagged as
  ``small_sample`` and a ``T`` where it was scored against its training set
  (``evaluate.reference``), which compares only with other ``T`` rows.

    python -m alphagan.experiments          # or: make exps
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alphagan.config import flatten
from alphagan.errors import AlphaGanError

EVALUATE_METRICS = "reports/evaluate/metrics.json"
#: Terminal width the table is fitted to; wider cells are cut with "…", extra columns noted.
DEFAULT_WIDTH = 160
MAX_CELL = 22


@dataclass
class Experiment:
    """One row: a name, its flattened params and its evaluate metrics."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def _row(entry: dict[str, Any], name: str) -> Experiment | None:
    data = entry.get("data") or {}
    if not data:
        return None
    params: dict[str, Any] = {}
    for file_params in (data.get("params") or {}).values():
        params.update(flatten((file_params or {}).get("data") or {}))
    metrics = (((data.get("metrics") or {}).get(EVALUATE_METRICS)) or {}).get("data") or {}
    return Experiment(name=name, params=params, metrics=metrics)


def experiments_from_dvc_json(shown: list[dict[str, Any]]) -> list[Experiment]:
    """Rows from ``dvc exp show --json`` (DVC 3): the workspace, each baseline commit, its experiments."""
    rows: list[Experiment] = []
    for baseline in shown:
        rev = str(baseline.get("rev", ""))
        label = "workspace" if rev == "workspace" else (baseline.get("name") or rev[:7])
        if (row := _row(baseline, label)) is not None:
            rows.append(row)
        for experiment in baseline.get("experiments") or []:
            revs = experiment.get("revs") or []
            if not revs:
                continue
            name = experiment.get("name") or revs[0].get("name") or str(revs[0].get("rev", ""))[:7]
            if (row := _row(revs[0], name)) is not None:
                rows.append(row)
    return rows


def differing_params(rows: list[Experiment]) -> list[str]:
    """Param names whose values are not the same in every row (a missing key counts as a value)."""
    names = sorted({name for row in rows for name in row.params})
    return [name for name in names if len({json.dumps(row.params.get(name), sort_keys=True) for row in rows}) > 1]


def _short_names(names: list[str]) -> dict[str, str]:
    """The last part of a dotted name where that is unambiguous, else the whole name."""
    last = [name.rsplit(".", 1)[-1] for name in names]
    return {name: (short if last.count(short) == 1 else name) for name, short in zip(names, last)}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, list):
        text = ",".join(map(str, value))
    else:
        text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _metric_cells(row: Experiment, metric: str) -> tuple[str, str]:
    value, spread, floor = (row.metrics.get(f"{metric}{suffix}") for suffix in ("", "_std", "_floor"))
    if value is None:
        return "-", "-"
    mark = ("!" if row.metrics.get("small_sample") else "") + ("T" if row.metrics.get("reference") == "train" else "")
    shown = f"{value:.3f}" + (f" ±{spread:.3f}" if isinstance(spread, (int, float)) else "") + mark
    return shown, (f"{floor:.3f}" if isinstance(floor, (int, float)) else "-")


def table(rows: list[Experiment], width: int = DEFAULT_WIDTH) -> str:
    """A markdown table of the rows, at most ``width`` characters wide."""
    if not rows:
        return "No experiments yet: run `dvc repro` or `dvc exp run`."
    validated = next((list(row.metrics["validated_metrics"]) for row in rows if row.metrics.get("validated_metrics")), ["swd_ratio"])
    params = differing_params(rows)
    short = _short_names(params)
    header = ["experiment"]
    cells: list[list[str]] = [[_cell(row.name)] for row in rows]
    for metric in validated:
        header += [metric, f"{metric} floor"]
        for row, line in zip(rows, cells):
            line.extend(_metric_cells(row, metric))
    fixed = len(header)
    header += [short[name] for name in params]
    for row, line in zip(rows, cells):
        line.extend(_cell(row.params.get(name)) for name in params)

    def render(columns: int) -> list[str]:
        widths = [max(len(line[c]) for line in [header, *cells]) for c in range(columns)]
        def join(line: list[str]) -> str:
            return "| " + " | ".join(text.ljust(w) for text, w in zip(line[:columns], widths)) + " |"
        return [join(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(join(line) for line in cells)]

    columns = len(header)
    lines = render(columns)
    while columns > fixed and max(map(len, lines)) > width:
        columns -= 1
        lines = render(columns)
    notes = []
    if columns < len(header):
        notes.append(f"{len(header) - columns} more params differ, not shown at {width} columns: "
                     + ", ".join(params[columns - fixed:]))
    if any(row.metrics.get("small_sample") for row in rows):
        notes.append("! = fewer than 100 images a side: the numbers are noise (see the run's warnings)")
    if any(row.metrics.get("reference") == "train" for row in rows):
        notes.append("T = scored against its own training set (evaluate.reference): compare only with other T rows")
    if params:
        notes.append("params not shown are the same in every row")
    return "\n".join(lines + [""] * bool(notes) + notes)


def dvc_exp_show(project: Path) -> list[dict[str, Any]]:
    """``dvc exp show --json`` of the project (the dvc beside this Python first, then PATH)."""
    beside = Path(sys.executable).with_name("dvc")
    dvc = str(beside) if beside.exists() else shutil.which("dvc")
    if dvc is None:
        raise AlphaGanError("dvc is not installed in this environment; run `make setup` first")
    done = subprocess.run([dvc, "exp", "show", "--json"], cwd=project, capture_output=True, text=True)
    if done.returncode != 0:
        message = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise AlphaGanError(f"`dvc exp show` failed in {project}: {message}")
    return json.loads(done.stdout)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alphagan.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="the DVC project (default: here)")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH, help=f"fit the table to this many columns (default {DEFAULT_WIDTH})")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        print(table(experiments_from_dvc_json(dvc_exp_show(args.project)), args.width))
    except AlphaGanError as exc:
        print(f"alphagan exps: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
