#!/usr/bin/env bash
# Install, then run a small build, its statistics and an export.
# Offline this uses the embedded SmolLM2-135M model (a smoke test, not training data); with
# OPENAI_BASE_URL / OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY set it uses that provider.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh local
N="${N:-8}"
.venv/bin/factory build --n "$N" --pipeline smoke --db outputs/quickstart.duckdb
.venv/bin/factory stats --db outputs/quickstart.duckdb
.venv/bin/factory export --db outputs/quickstart.duckdb --out outputs/quickstart-export --overwrite
