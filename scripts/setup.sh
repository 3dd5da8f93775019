#!/usr/bin/env bash
# Creates .venv and installs rerank-prod with everything the demo and tests need.
# Idempotent: reinstalls only when pyproject.toml changed. torch==2.13.0 goes first so that no
# dependency pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
stamp=.venv/.rerank-prod-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$wanted" > "$stamp"
fi
