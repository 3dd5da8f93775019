"""Long documents: ChunkedScorer over the real cross-encoder (its own tokenizer) and over a remote
scorer (word windows) against the TEI stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from loopback.standin_servers import FAST_RETRY, StandInServer, running
from rerank_prod import CrossEncoderScorer, Deadline, Reranker, TEIScorer
from rerank_prod.errors import PartialScores
from rerank_prod.scoring.chunked import ChunkedScorer, window_starts, word_spans
from rerank_prod.scoring.details import capture_score_details

QUERY = "does vitamin d supplementation reduce fracture risk in older adults"
ANSWER = (
    "In adults over 65, daily vitamin D supplementation reduced hip and non-vertebral fracture risk "
    "by about a fifth compared with placebo."
)


def test_window_starts_overlap_and_end_at_the_last_unit() -> None:
    assert window_starts(5, 10, 2) == [0]
    assert window_starts(10, 10, 2) == [0]
    assert window_starts(25, 10, 2) == [0, 8, 15]  # step 8; the last window ends at unit 25
    assert window_starts(26, 10, 0) == [0, 10, 16]
    assert word_spans("  two  words ") == [(2, 5), (7, 12)]


@pytest.fixture(scope="module")
def long_passage(scifact_dir: Path) -> str:
    """A real long SciFact abstract (well over 256 tokens) with the answer appended at its end."""
    with (scifact_dir / "corpus.jsonl").open(encoding="utf-8") as lines:
        docs = [json.loads(line) for line in lines]
    body = next(d for d in docs if 4000 < len(d["text"]) < 6000 and "vitamin" not in d["text"].lower())
    return f"{body['title']} {body['text']} {ANSWER}"


def test_an_answer_at_the_end_of_a_long_passage_is_found(cross_encoder: CrossEncoderScorer, long_passage: str) -> None:
    chunked = ChunkedScorer(cross_encoder)
    alone, truncated = cross_encoder.score(QUERY, [ANSWER, long_passage])
    with capture_score_details() as details:
        short, long = chunked.score(QUERY, [ANSWER, long_passage])
    assert short == pytest.approx(alone, abs=1e-6)  # a text that fits one window is passed through unchanged
    assert truncated < alone / 3  # the model never saw the answer
    assert long > truncated * 3  # its last window did (diluted by the rest of that window)
    info = details.get(QUERY, long_passage)
    assert info["chunks"] >= 3 and info["best_chunk"] == info["chunks"] - 1 and info["truncated"] is False
    assert details.get(QUERY, ANSWER) == {"chunks": 1, "chunks_scored": 1, "best_chunk": 0, "truncated": False}
    assert chunked.stats() == {"texts": 2, "chunked": 1, "chunks": 1 + info["chunks"], "truncated": 0}


def test_aggregates_and_the_chunk_cap(cross_encoder: CrossEncoderScorer, long_passage: str) -> None:
    first = ChunkedScorer(cross_encoder, aggregate="first").score(QUERY, [long_passage])
    mean = ChunkedScorer(cross_encoder, aggregate="mean").score(QUERY, [long_passage])
    best = ChunkedScorer(cross_encoder).score(QUERY, [long_passage])
    assert first[0] == pytest.approx(cross_encoder.score(QUERY, [long_passage])[0], abs=0.05)  # ~ truncation
    assert first[0] <= mean[0] <= best[0]
    capped = ChunkedScorer(cross_encoder, max_chunks=2)
    with capture_score_details() as details:
        capped.score(QUERY, [long_passage])
    assert details.get(QUERY, long_passage)["truncated"] is True
    assert capped.stats()["truncated"] == 1 and capped.stats()["chunks"] == 2


async def test_through_the_pipeline_sync_and_async(cross_encoder: CrossEncoderScorer, long_passage: str) -> None:
    distractors = ["Calcium intake in teenagers.", "Hip fracture surgery outcomes in a registry."]
    reranker = Reranker(ChunkedScorer(cross_encoder), timeout_s=60.0)
    with capture_score_details() as details:
        result = reranker.rerank(QUERY, [*distractors, long_passage])
    assert result[0].candidate.text == long_passage
    assert details.get(QUERY, long_passage)["chunks"] >= 3  # recorded on the pipeline's worker thread
    again = await reranker.arerank(QUERY, [*distractors, long_passage])
    assert [i.original_rank for i in again] == [i.original_rank for i in result]
    # bf16 ("auto" here) scores move by up to ~1e-3 with the padding: the two calls' windows need not
    # share forward passes the same way (the engine's first pass is a small calibration batch)
    assert [i.rerank_score for i in again] == pytest.approx([i.rerank_score for i in result], abs=5e-3)
    assert reranker.metrics.snapshot()["scorers"][cross_encoder.name]["chunked"] == 2
    assert "chunked(window=auto" in reranker.scorer.identity  # cache keys never mix chunked and truncated


@pytest.fixture
def tei() -> Iterator[StandInServer]:
    with running("tei") as server:
        yield server


def test_remote_scorer_gets_word_windows_in_one_call(tei: StandInServer) -> None:
    remote = TEIScorer(tei.url, retry=FAST_RETRY)
    filler = " ".join(f"word{i}" for i in range(300))
    texts = [f"{filler} vitamin fracture adults", "vitamin d and fracture risk", filler]
    scores = ChunkedScorer(remote, window_tokens=50, overlap_tokens=10).score(QUERY, texts)
    (request,) = tei.requests_to("/rerank")  # one request: every window of every text, batched
    sent = request.body["texts"]
    assert len(sent) == 8 + 1 + 8  # 303 and 300 words in windows of 50 stepping 40; the short text as is
    assert all(len(window.split()) <= 50 for window in sent) and sent[8] == texts[1]
    assert sent[7].endswith("vitamin fracture adults")  # the last window ends at the text's end
    assert scores == pytest.approx([3 / 10, 4 / 10, 0.0])  # TEI stand-in: share of query words; max over windows


def test_configuration_errors(tei: StandInServer) -> None:
    remote = TEIScorer(tei.url)
    with pytest.raises(ValueError, match="window_tokens is required"):
        ChunkedScorer(remote)
    with pytest.raises(ValueError, match="overlap_tokens"):
        ChunkedScorer(remote, window_tokens=32, overlap_tokens=32)
    with pytest.raises(ValueError, match="aggregate"):
        ChunkedScorer(remote, window_tokens=32, overlap_tokens=8, aggregate="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window_tokens"):
        ChunkedScorer(remote, window_tokens=4, overlap_tokens=0)
    with pytest.raises(TypeError, match="inner"):
        ChunkedScorer("not a scorer")  # type: ignore[arg-type]


def test_eval_configurations_wrap_any_scorer(tei: StandInServer) -> None:
    from rerank_prod.evaluation.configs import EvalInputError, build_scorer, describe, normalize_spec, parse_flag_spec

    spec = parse_flag_spec(f"name=c,scorer=tei,scorer.base_url={tei.url},scorer.chunk=mean,scorer.chunk_window=40")
    scorer = build_scorer(normalize_spec(spec, {}, 1)["scorer"])
    assert isinstance(scorer, ChunkedScorer) and scorer.aggregate == "mean" and scorer.window_tokens == 40
    assert describe(normalize_spec({"scorer": {"chunk": "max"}}, {}, 1)) == "cross-encoder + chunked"
    with pytest.raises(EvalInputError, match="need chunk="):
        build_scorer({"type": "tei", "base_url": tei.url, "chunk_window": 40})
    with pytest.raises(EvalInputError, match="window_tokens is required"):
        build_scorer({"type": "tei", "base_url": tei.url, "chunk": "max"})


def test_chunking_reaches_both_frameworks_metadata(cross_encoder: CrossEncoderScorer, long_passage: str) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

    from langchain_rerank_prod import RerankProdCompressor
    from llamaindex_rerank_prod import RerankProdPostprocessor
    from rerank_prod import RESULT_METADATA_KEYS, InMemoryCache, ScoreCache

    texts = ["Calcium intake in teenagers.", long_passage]
    reranker = Reranker(ChunkedScorer(cross_encoder, max_chunks=2), score_cache=ScoreCache(InMemoryCache()))
    docs = RerankProdCompressor(reranker=reranker).compress_documents([Document(page_content=t) for t in texts], QUERY)
    meta = {d.page_content: d.metadata for d in docs}
    assert (meta[long_passage]["rerank_chunks"], meta[long_passage]["rerank_truncated"]) == (2, True)  # cut at 2
    assert meta[long_passage]["rerank_best_chunk"] in (0, 1)
    assert (meta[texts[0]]["rerank_chunks"], meta[texts[0]]["rerank_best_chunk"]) == (1, 0)
    assert meta[texts[0]]["rerank_truncated"] is False
    assert set(RESULT_METADATA_KEYS) <= set(meta[long_passage])
    assert reranker.metrics.snapshot()["scorers"][cross_encoder.name] == {
        "texts": 2,
        "chunked": 1,
        "chunks": 3,
        "truncated": 1,
    }

    fresh = Reranker(ChunkedScorer(cross_encoder, max_chunks=2))
    nodes = [NodeWithScore(node=TextNode(text=t), score=1.0) for t in texts]
    out = RerankProdPostprocessor(reranker=fresh).postprocess_nodes(nodes, query_str=QUERY)
    node_meta = {n.node.get_content(): n.node.metadata for n in out}
    for key in ("rerank_chunks", "rerank_best_chunk", "rerank_truncated"):
        assert node_meta[long_passage][key] == meta[long_passage][key]
    long_node = next(n for n in out if n.node.get_content() == long_passage)
    assert "rerank_chunks" not in long_node.node.get_content(metadata_mode=MetadataMode.LLM)  # never in a prompt

    cached = RerankProdCompressor(reranker=reranker).compress_documents([Document(page_content=long_passage)], QUERY)
    assert cached[0].metadata["rerank_source"] == "cache:score" and cached[0].metadata["rerank_chunks"] is None


class _WindowsUntil:
    """Scores windows by word overlap; after `budget` windows it stops as the engine does at a
    deadline (`PartialScores` with the scores done so far). Records each window it sees."""

    independent_scores = True
    circuit_breaker = None
    name = identity = "windows-until"

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        words = set(query.split())
        scores = [float(len(words & set(text.split()))) for text in texts]
        if len(texts) > self.budget:
            raise PartialScores(scores[: self.budget], len(texts), 0.01)
        return scores

    async def ascore(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        return self.score(query, texts, deadline=deadline)


def test_a_partial_inner_answer_is_partial_in_texts_not_windows() -> None:
    filler = " ".join(f"w{i}" for i in range(60))
    texts = ["vitamin d", f"{filler} vitamin fracture", "fracture risk", "adults"]  # 1 + 3 + 1 + 1 windows
    chunked = ChunkedScorer(_WindowsUntil(budget=4), window_tokens=30, overlap_tokens=0)
    with pytest.raises(PartialScores) as raised:
        chunked.score(QUERY, texts)
    assert raised.value.scores == [2.0, 2.0] and raised.value.total == 4  # text 2's window was scored, text 3's not
    result = Reranker(chunked, timeout_s=5.0).rerank(QUERY, texts)
    assert str(result.source).startswith("partial:2/4 scored")
    assert [item.original_rank for item in result] == [0, 1, 2, 3]  # 2 scored (tie: retriever order), then the rest
    assert [item.rerank_score for item in result] == [2.0, 2.0, None, None]
    assert result[1].metadata()["rerank_chunks"] == 3 and result[2].metadata()["rerank_chunks"] is None
