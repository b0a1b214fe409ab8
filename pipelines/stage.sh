#!/bin/sh
# Runs one pipeline stage (dvc.yaml's `cmd`) with the project's Python, whether or not any
# environment is activated, so `.venv/bin/dvc repro` and `.venv/bin/dvc exp run` just work.
# Which interpreter, first match wins:
#   1. $ALPHAGAN_PYTHON                (your own choice: conda, a system install, ...)
#   2. <project>/.venv/bin/python      (what `make setup` creates)
#   3. `python` on PATH, else `python3`
# Usage: sh pipelines/stage.sh <stage> [args...]   e.g. sh pipelines/stage.sh train
set -eu
if [ "$#" -lt 1 ]; then
    echo "usage: sh pipelines/stage.sh <fetch|validate|prepare|train|evaluate> [args...]" >&2
    exit 2
fi
stage=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${ALPHAGAN_PYTHON:-}" ]; then
    python=$ALPHAGAN_PYTHON
elif [ -x "$root/.venv/bin/python" ]; then
    python=$root/.venv/bin/python
elif command -v python >/dev/null 2>&1; then
    python=python
else
    python=python3
fi
cd "$root"
exec "$python" -m "pipelines.$stage" "$@"
