#!/usr/bin/env bash
# Main job: set up, then re-rank real retrieved passages and print before/after with timings.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/demo.py "$@"
