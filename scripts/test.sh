#!/usr/bin/env bash
# Install every extra the tests need, then run the whole suite (and ruff).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh local,embed,train,dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
