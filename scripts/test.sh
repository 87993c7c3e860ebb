#!/usr/bin/env bash
# Install every extra the tests need, then run the whole suite (and ruff).
# tests/annotation start the local Argilla stack once per session (scripts/argilla.sh start: it
# installs redis-server and .argilla-venv on first use) and stop it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh local,embed,train,annotation,ray,dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
