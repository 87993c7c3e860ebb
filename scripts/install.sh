#!/usr/bin/env bash
# Create .venv and install the project with the given extras (default: local).
# torch is installed first as the CPU build 2.13.0 (a bare `torch` would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-local}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
case ",$EXTRAS," in
  *,train,*) .venv/bin/pip install -q "torch==2.13.0" ;;
esac
# llama-cpp-python builds from source; the multimodal part is not needed.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
.venv/bin/pip install -q -e ".[${EXTRAS}]"
