#!/usr/bin/env bash
# Install, then run the whole test suite (what CI runs through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
ruff check .
python -m pytest -q "$@"
