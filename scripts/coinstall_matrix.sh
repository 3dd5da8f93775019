#!/usr/bin/env bash
# Co-install matrix: rerank-prod's extras next to the frameworks' own Cohere packages must resolve
# (`pip check`) and score (scripts/cohere_smoke.py against the loopback Cohere stand-in); the oldest and
# newest supported cohere SDKs, the lowest supported LangChain and the lowest supported LlamaIndex
# (llama-index-core 0.14.0; the dev venv has the newest 0.14.x) run too. Each case gets a fresh venv.
# Run by scripts/test.sh when RERANK_PROD_COINSTALL=1 (CI sets it); needs a package index. A few minutes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/rerank-prod-coinstall.XXXXXX")
trap 'rm -rf "$work"' EXIT
python_bin=${PYTHON:-python3}
failed=0

case_run() {  # name, then pip requirements
  local name=$1; shift
  local venv="$work/$name"
  "$python_bin" -m venv "$venv"
  if ! "$venv/bin/pip" install -q "$@" >"$venv.log" 2>&1; then
    echo "[$name] does NOT resolve: $*"; tail -5 "$venv.log"; failed=1; return
  fi
  if ! "$venv/bin/pip" check >"$venv.check" 2>&1; then
    echo "[$name] pip check fails:"; cat "$venv.check"; failed=1; return
  fi
  local versions
  versions=$("$venv/bin/pip" list 2>/dev/null | grep -iE '^(cohere|langchain-core|langchain-classic|langchain-cohere|llama-index-core|llama-index-postprocessor-cohere-rerank) ' | tr -s ' ' | tr '\n' ';')
  if [ "$name" = llamaindex-lowest ]; then  # the postprocessor, the retrievers and shared batches, real model
    (cd "$root" && HF_HUB_OFFLINE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider -k "not langchain" \
        tests/test_llamaindex_adapter.py tests/test_retrieval_adapters.py tests/test_adapter_batching.py) \
      >"$venv.run" 2>&1 && echo "[$name] resolves ($versions) and the LlamaIndex adapter tests pass" \
      || { echo "[$name] tests FAIL ($versions)"; tail -20 "$venv.run"; failed=1; }
    return
  fi
  if [ "$name" = langchain-lowest ]; then
    (cd "$root" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_langchain_tracing.py) \
      >"$venv.run" 2>&1 && echo "[$name] resolves ($versions) and the tracing tests pass" \
      || { echo "[$name] tests FAIL ($versions)"; tail -20 "$venv.run"; failed=1; }
    return
  fi
  if "$venv/bin/python" "$root/scripts/cohere_smoke.py" >"$venv.run" 2>&1; then
    echo "[$name] resolves ($versions): $(tail -1 "$venv.run")"
  else
    echo "[$name] resolves ($versions) but does NOT score:"; tail -20 "$venv.run"; failed=1
  fi
}

case_run cohere-oldest "$root[cohere]" "cohere==5.13.0"
case_run cohere-newest "$root[cohere]" "cohere<8"
case_run with-langchain-cohere "$root[cohere,langchain]" langchain-cohere
case_run with-llamaindex-cohere "$root[cohere,llamaindex]" llama-index-postprocessor-cohere-rerank
case_run llamaindex-lowest "torch==2.13.0" "$root[langchain,llamaindex,cross-encoder]" "llama-index-core==0.14.0" \
  pytest pytest-asyncio
case_run langchain-lowest "$root[langchain]" "langchain-core==1.0.0" "langchain-classic==1.0.0" pytest pytest-asyncio
exit $failed
