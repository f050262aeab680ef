#!/usr/bin/env bash
# Create .venv (if missing) and install seqgrade with its test and dask extras into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
# A CPU build of torch: 2.13.0 is what this project is developed and tested with.
{ python -m pip install -q "torch==2.13.0" ||
  python -m pip install -q "torch>=2.2,<2.15" --index-url https://download.pytorch.org/whl/cpu; } 2> >(quiet)
python -m pip install -q -e ".[test,dask]" 2> >(quiet)
