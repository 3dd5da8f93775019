#!/usr/bin/env bash
# Tests: set up, make sure what the tests start is installed (redis-server; openssl for the TLS
# test's certificate; prometheus for the scrape test), run pytest. The tests start their own servers on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The co-install matrix (fresh venvs, a package index, a few minutes): CI sets RERANK_PROD_COINSTALL=1.
if [ "${RERANK_PROD_COINSTALL:-0}" = 1 ]; then
  bash scripts/coinstall_matrix.sh
fi
exec .venv/bin/python -m pytest "$@"
