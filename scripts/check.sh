#!/usr/bin/env bash
# Format, lint and types: the same gate locally and in CI (.ci/run runs it before the tests).
# Uses the project's .venv (scripts/setup.sh creates it); pass --fix to apply format and lint fixes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
if [ "${1:-}" = "--fix" ]; then
  "$bin/ruff" format .
  "$bin/ruff" check --fix .
fi
"$bin/ruff" format --check .
"$bin/ruff" check .
# Strict on the shipped packages, checked (not strict) on benchmarks and examples: see [tool.mypy].
"$bin/mypy" rerank_prod langchain_rerank_prod llamaindex_rerank_prod benchmarks examples
