"""Co-install check: in whatever environment runs it, `CohereScorer` scores against the loopback Cohere
stand-in, sync and async, and says which cohere SDK did it. Run by scripts/coinstall_matrix.sh."""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import SecretStr  # noqa: E402  (cohere brings pydantic)

from loopback.standin_servers import FAST_RETRY, best_first, running  # noqa: E402
from rerank_prod import CohereScorer, Reranker, SourceKind  # noqa: E402

QUERY = "what is the capital of the united states"
DOCUMENTS = ["Carson City is the capital of Nevada.", "Washington, D.C. is the capital of the United States."]
KEY = "co-matrix-key"


def main() -> int:
    with running("cohere", api_key=KEY) as server:
        scorer = CohereScorer(api_key=SecretStr(KEY), base_url=server.url, retry=FAST_RETRY, request_timeout_s=5.0)
        reranker = Reranker(scorer, timeout_s=10.0)
        results = [reranker.rerank(QUERY, DOCUMENTS), asyncio.run(reranker.arerank(QUERY, DOCUMENTS))]
    for result in results:
        if result.source.kind is not SourceKind.MODEL or [i.original_rank for i in result] != best_first(
            QUERY, DOCUMENTS
        ):
            print(f"cohere {importlib.metadata.version('cohere')}: FAILED ({result.source})")
            return 1
    print(f"cohere {importlib.metadata.version('cohere')}: scored sync and async against the stand-in")
    return 0


if __name__ == "__main__":
    sys.exit(main())
