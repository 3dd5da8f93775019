"""Multi-hop and query-expansion re-ranking: the pure rules, configuration errors, and faults of the
user's retriever and query writers (hangs, errors, garbage) under one budget.

The re-ranker here scores by word overlap (a deterministic local scorer built for these tests), so
orders are known; the real cross-encoder and both frameworks are in test_retrieval_adapters.py, the
LLM query writer against the chat-completions stand-in in test_retrieval_llm.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from loopback.standin_servers import overlap
from rerank_prod import Candidate, Deadline, RankedCandidate, Reranker, RerankSource, SourceKind
from rerank_prod.retrieval import (
    KeyTermsFollowUp,
    MultiHopReranker,
    PseudoRelevanceExpander,
    QueryExpansionReranker,
    TermStatistics,
    candidate_key,
    combine_hops,
    hop_weights,
    merge_ranked_lists,
)
from rerank_prod.retrieval.merge import normalized
from rerank_prod.scoring import LocalScorer

SLACK_S = 0.35
CORPUS = {
    "aspirin": "Aspirin lowers the risk of heart attacks in older men.",
    "mi": "A heart attack, or myocardial infarction, follows a blocked coronary artery.",
    "statin": "Statins lower cholesterol and the risk of myocardial infarction.",
    "coronary": "Coronary artery plaques narrow the vessel over decades.",
    "eiffel": "The Eiffel Tower was completed in 1889.",
}
QUERY = "does aspirin prevent heart attacks"


class OverlapScorer(LocalScorer):
    """Word overlap with the query; records every query it scored for."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    @property
    def name(self) -> str:
        return "overlap"

    @property
    def identity(self) -> str:
        return "overlap"

    def score(self, query: str, texts: Sequence[str], *, deadline: Deadline | None = None) -> list[float]:
        self.queries.append(query)
        return [overlap(query, text) for text in texts]


def retrieve(query: str) -> list[Candidate]:
    """Keyword retrieval over CORPUS: documents sharing a word with the query, most shared first."""
    hits = [(overlap(query, text), doc_id) for doc_id, text in CORPUS.items() if overlap(query, text) > 0]
    return [Candidate(CORPUS[d], id=d, retrieval_score=s) for s, d in sorted(hits, key=lambda h: (-h[0], h[1]))]


def first_words(query: str, top: Sequence[RankedCandidate]) -> str:
    return "myocardial infarction coronary artery"


def ranked(ids_scores: Sequence[tuple[str, float]]) -> list[RankedCandidate]:
    source = RerankSource(SourceKind.MODEL)
    return [RankedCandidate(Candidate(f"text {i}", id=i), n, s, s, source) for n, (i, s) in enumerate(ids_scores)]


# --- the pure rules -------------------------------------------------------------------------------


def test_identity_is_the_id_else_the_text_hash() -> None:
    assert candidate_key(Candidate("a", id="x")) == candidate_key(Candidate("b", id="x"))
    assert candidate_key(Candidate("same text")) == candidate_key(Candidate("same text", retrieval_score=3.0))
    assert candidate_key(Candidate("same text")) != candidate_key(Candidate("other text"))
    assert candidate_key(Candidate("x", id="x")) != candidate_key(Candidate("x"))


def test_merge_interleaves_by_rank_and_keeps_first_occurrences() -> None:
    a = [Candidate("1", id="a1"), Candidate("2", id="shared"), Candidate("3", id="a3")]
    b = [Candidate("other text, same id", id="shared"), Candidate("b2", id="b2")]
    c = [Candidate("no id"), Candidate("no id", retrieval_score=1.0)]
    merged = merge_ranked_lists([a, b, c])
    assert [m.candidate.id or m.candidate.text for m in merged] == ["a1", "shared", "no id", "b2", "a3"]
    assert merged[1].candidate.text == "other text, same id"  # first occurrence (rank 0 of list 1) wins
    assert [m.retrieved_by for m in merged] == [(0,), (0, 1), (2,), (1,), (0,)]
    assert merge_ranked_lists([]) == [] and merge_ranked_lists([[], []]) == []


def test_hop_weights_decay_by_default_and_are_checked() -> None:
    assert hop_weights(2) == (1.0, 0.5)
    assert hop_weights(3, decay=0.25) == (1.0, 0.25, 0.0625)
    assert hop_weights(2, [1.0, 0.8]) == (1.0, 0.8)
    for hops, weights, match in [
        (0, None, "hops"),
        (2, [1.0], "one weight per hop"),
        (2, [1.0, 0.5, 0.25], "one weight per hop"),
        (2, [1.0, -0.5], r"weights\[1\]"),
        (2, [1.0, 0.0], r"weights\[1\]"),
        (2, [1.0, float("nan")], r"weights\[1\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            hop_weights(hops, weights)
    with pytest.raises(ValueError, match="decay"):
        hop_weights(2, decay=-1.0)
    with pytest.raises(TypeError, match="sequence"):
        hop_weights(2, "1,1")  # type: ignore[arg-type]


def test_normalized_is_min_max_with_equal_scores_at_one() -> None:
    assert normalized([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]
    assert normalized([0.2, 0.2]) == [1.0, 1.0] and normalized([5.0]) == [1.0] and normalized([]) == []


def test_combination_keeps_the_max_weighted_score_per_candidate() -> None:
    hop1 = ranked([("a", 0.9), ("b", 0.5), ("c", 0.1)])  # normalized 1.0, 0.5, 0.0
    hop2 = ranked([("c", 10.0), ("d", 6.0), ("a", 0.0)])  # normalized 1.0, 0.6, 0.0; weight 0.5
    combined = combine_hops([hop1, hop2], (1.0, 0.5))
    assert [(e.item.candidate.id, e.score, e.hop) for e in combined] == [
        ("a", 1.0, 0),
        ("b", 0.5, 0),  # ties with c's 0.5 * 1.0: the earlier hop first
        ("c", 0.5, 1),  # its hop-2 score beat its hop-1 score (0.0)
        ("d", pytest.approx(0.3), 1),
    ]
    assert combined[0].seen_in == (0, 1) and combined[3].seen_in == (1,)
    with pytest.raises(ValueError, match="weights"):
        combine_hops([hop1, hop2], (1.0,))


# --- configuration errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"hops": 0}, "hops"),
        ({"hops": 3, "weights": [1.0, 0.5]}, "one weight per hop"),
        ({"weights": [1.0, -0.5]}, "weights"),
        ({"context_k": 0}, "context_k"),
        ({"timeout_s": -1.0}, "timeout_s"),
        ({"top_n": 0}, "top_n"),
    ],
)
def test_multihop_rejects_bad_settings_at_construction(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MultiHopReranker(Reranker(OverlapScorer()), retrieve, first_words, **options)  # type: ignore[arg-type]


def test_bad_parts_are_type_errors() -> None:
    with pytest.raises(TypeError, match="reranker"):
        MultiHopReranker(OverlapScorer(), retrieve, first_words)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retriever"):
        MultiHopReranker(Reranker(OverlapScorer()), "not callable", first_words)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expander"):
        QueryExpansionReranker(Reranker(OverlapScorer()), retrieve, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variants"):
        QueryExpansionReranker(Reranker(OverlapScorer()), retrieve, lambda q: [q], variants=0)
    multihop = MultiHopReranker(Reranker(OverlapScorer()), retrieve, first_words)
    with pytest.raises(ValueError, match="query"):
        multihop.rerank("  ")
    with pytest.raises(TypeError, match="candidates"):
        multihop.rerank(QUERY, [1, 2])  # type: ignore[list-item]


# --- multi-hop --------------------------------------------------------------------------------------


def test_two_hops_retrieve_with_the_follow_up_and_combine() -> None:
    scorer = OverlapScorer()
    seen: list[tuple[str, list[str]]] = []

    def follow_up(query: str, top: Sequence[RankedCandidate]) -> str:
        seen.append((query, [item.candidate.id or "" for item in top]))
        return "myocardial infarction coronary artery"

    multihop = MultiHopReranker(Reranker(scorer), retrieve, follow_up, context_k=2)
    result = multihop.rerank(QUERY, retrieve(QUERY))
    assert result.stopped is None and result.summary == "2/2 hops"
    assert [hop.query for hop in result.hops] == [QUERY, "myocardial infarction coronary artery"]
    assert scorer.queries == [QUERY, "myocardial infarction coronary artery"]  # each hop against its own query
    assert seen == [(QUERY, [item.candidate.id or "" for item in result.hops[0].result.items[:2]])]
    ids = [item.candidate.id for item in result]
    assert len(ids) == len(set(ids))  # "mi" came back in both hops, listed once
    assert ids[0] == "aspirin" and "coronary" in ids and "statin" in ids  # hop 2 found what hop 1 could not
    by_id = {item.candidate.id: item for item in result}
    assert by_id["coronary"].hop == 2 and by_id["coronary"].relevance_score <= 0.5
    assert by_id["mi"].seen_in_hops == (1, 2)
    assert [item.relevance_score for item in result] == sorted((i.relevance_score for i in result), reverse=True)
    meta = by_id["coronary"].metadata()
    assert meta["hop"] == 2 and meta["multihop"] == "2/2 hops" and meta["rerank_source"] == "model"
    assert type(meta["relevance_score"]) is float


def test_without_candidates_the_first_hop_retrieves_and_top_n_selects() -> None:
    result = MultiHopReranker(Reranker(OverlapScorer(), top_n=2), retrieve, first_words).rerank(QUERY)
    assert len(result) == 2 and result.hops[0].result.items[0].candidate.id == "aspirin"
    assert len(MultiHopReranker(Reranker(OverlapScorer()), retrieve, first_words, top_n=1).rerank(QUERY)) == 1


def test_more_hops_chain_and_stop_when_the_follow_up_repeats() -> None:
    queries = iter(["coronary artery", "plaques vessel", "coronary artery"])
    multihop = MultiHopReranker(Reranker(OverlapScorer()), retrieve, lambda q, top: next(queries), hops=4)
    result = multihop.rerank(QUERY)
    assert [hop.query for hop in result.hops] == [QUERY, "coronary artery", "plaques vessel"]
    assert result.stopped == "follow-up repeats an earlier query"
    assert result.summary == "3/4 hops; stopped: follow-up repeats an earlier query"


def _hang(*args: object) -> str:
    time.sleep(5.0)
    return "never used"


async def _ahang(*args: object) -> str:
    await asyncio.sleep(5.0)
    return "never used"


@pytest.mark.parametrize("follow_up", [_hang, _ahang], ids=["sync", "coroutine"])
def test_a_hung_follow_up_degrades_to_the_first_hop_within_the_budget(follow_up: object) -> None:
    multihop = MultiHopReranker(Reranker(OverlapScorer()), retrieve, follow_up, timeout_s=0.5)  # type: ignore[arg-type]
    started = time.monotonic()
    result = multihop.rerank(QUERY)
    assert time.monotonic() - started < 0.5 + SLACK_S
    assert len(result.hops) == 1 and result.stopped is not None and result.stopped.startswith("follow-up: timeout")
    assert result[0].candidate.id == "aspirin" and result[0].metadata()["multihop"].startswith("1/2 hops; stopped")


@pytest.mark.parametrize("follow_up", [_hang, _ahang], ids=["sync", "coroutine"])
async def test_async_a_hung_follow_up_degrades_within_the_budget(follow_up: object) -> None:
    multihop = MultiHopReranker(Reranker(OverlapScorer()), retrieve, follow_up, timeout_s=0.5)  # type: ignore[arg-type]
    started = time.monotonic()
    result = await multihop.arerank(QUERY)
    assert time.monotonic() - started < 0.5 + SLACK_S
    assert len(result.hops) == 1 and result.stopped is not None and "timeout" in result.stopped


def test_a_failing_second_retrieval_keeps_the_first_hop() -> None:
    def flaky(query: str) -> list[Candidate]:
        if query != QUERY:
            raise ConnectionError("search cluster down at 10.0.0.7")
        return retrieve(query)

    result = MultiHopReranker(Reranker(OverlapScorer()), flaky, first_words).rerank(QUERY)
    assert len(result.hops) == 1 and result.stopped == "retriever (hop 2): error ConnectionError"
    assert [item.candidate.id for item in result] == [item.candidate.id for item in result.hops[0].result.items]


def test_a_failing_first_retrieval_gives_an_empty_labelled_result() -> None:
    def down(query: str) -> list[Candidate]:
        raise ConnectionError("down")

    result = MultiHopReranker(Reranker(OverlapScorer()), down, first_words).rerank(QUERY)
    assert len(result) == 0 and result.hops == () and result.stopped == "retriever (hop 1): error ConnectionError"
    assert result.source.kind is SourceKind.SKIPPED


@pytest.mark.parametrize(
    ("answer", "stopped"),
    [(42, "retriever (hop 2): error TypeError"), ([], "no candidates for hop 2")],
    ids=["garbage", "nothing"],
)
def test_a_retriever_answering_garbage_or_nothing_stops_the_hops(answer: object, stopped: str) -> None:
    result = MultiHopReranker(
        Reranker(OverlapScorer()), lambda q: retrieve(q) if q == QUERY else answer, first_words
    ).rerank(QUERY)
    assert len(result.hops) == 1 and result.stopped == stopped


def test_an_empty_follow_up_stops_the_hops() -> None:
    result = MultiHopReranker(Reranker(OverlapScorer()), retrieve, lambda q, top: "  ").rerank(QUERY)
    assert len(result.hops) == 1 and result.stopped == "follow-up: error ValueError"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_slow_retriever_cannot_push_the_call_past_its_budget(asynchronous: bool) -> None:
    def slow(query: str) -> list[Candidate]:
        if query != QUERY:
            time.sleep(3.0)
        return retrieve(query)

    multihop = MultiHopReranker(Reranker(OverlapScorer()), slow, first_words, timeout_s=0.6)
    started = time.monotonic()
    result = await multihop.arerank(QUERY) if asynchronous else multihop.rerank(QUERY)
    assert time.monotonic() - started < 0.6 + SLACK_S
    assert (
        len(result.hops) == 1 and result.stopped is not None and result.stopped.startswith("retriever (hop 2): timeout")
    )


async def test_async_uses_the_native_async_retriever() -> None:
    calls: list[str] = []

    async def aretrieve(query: str) -> list[Candidate]:
        calls.append(query)
        return retrieve(query)

    multihop = MultiHopReranker(Reranker(OverlapScorer()), retrieve, first_words, aretriever=aretrieve)
    result = await multihop.arerank(QUERY)
    assert calls == [QUERY, "myocardial infarction coronary artery"] and result.stopped is None


# --- query expansion ----------------------------------------------------------------------------


def test_expansion_merges_variants_and_reranks_once_with_the_original_query() -> None:
    scorer = OverlapScorer()
    expansion = QueryExpansionReranker(
        Reranker(scorer), retrieve, lambda q: [q, "myocardial infarction", "coronary plaques", "MYOCARDIAL  infarction"]
    )
    result = expansion.rerank(QUERY)
    assert result.variants == ("myocardial infarction", "coronary plaques")  # the query and repeats dropped
    assert scorer.queries == [QUERY]  # one re-rank, against the original query
    ids = [item.candidate.id for item in result]
    assert len(ids) == len(set(ids)) and set(ids) == {"aspirin", "mi", "statin", "coronary"}
    by_id = {item.candidate.id: item for item in result}
    assert by_id["coronary"].retrieved_by == (2,) and by_id["statin"].retrieved_by == (1,)
    assert by_id["aspirin"].retrieved_by == (0,)
    assert result.notes == () and result.summary == "2 variants"
    assert by_id["mi"].metadata()["expansion"] == "2 variants" and by_id["mi"].metadata()["retrieved_by"] == [0, 1, 2]


def test_expansion_of_given_candidates_and_the_variant_cap() -> None:
    expansion = QueryExpansionReranker(
        Reranker(OverlapScorer()), retrieve, lambda q: ["coronary", "statins", "x"], variants=1
    )
    result = expansion.rerank(QUERY, [Candidate("given passage about aspirin", id="given")])
    assert result.variants == ("coronary",)
    assert {item.candidate.id: item.retrieved_by for item in result} == {"given": (0,), "mi": (1,), "coronary": (1,)}


@pytest.mark.parametrize(
    ("expander", "note"),
    [
        (lambda q: (_ for _ in ()).throw(ConnectionError("llm down")), "expander: error ConnectionError"),
        (lambda q: "one string, not a list", "expander: error TypeError"),
        (lambda q: [1, 2], "expander: error TypeError"),
    ],
    ids=["raises", "string", "not-strings"],
)
def test_a_failing_expander_degrades_to_the_original_query(expander: object, note: str) -> None:
    result = QueryExpansionReranker(Reranker(OverlapScorer()), retrieve, expander).rerank(QUERY)  # type: ignore[arg-type]
    assert result.variants == () and result.notes == (note,)
    assert [item.candidate.id for item in result] == [c.id for c in retrieve(QUERY)]
    assert result[0].metadata()["expansion"] == f"0 variants; {note}"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_hung_expander_costs_the_budget_not_more(asynchronous: bool) -> None:
    expansion = QueryExpansionReranker(Reranker(OverlapScorer()), retrieve, _hang, timeout_s=0.5)
    started = time.monotonic()
    result = (
        await expansion.arerank(QUERY, retrieve(QUERY)) if asynchronous else expansion.rerank(QUERY, retrieve(QUERY))
    )
    assert time.monotonic() - started < 0.5 + SLACK_S
    assert result.notes[0].startswith("expander: timeout") and result.variants == ()
    # the budget is spent: the re-rank falls back to the given order instead of running late
    assert [item.candidate.id for item in result] == [c.id for c in retrieve(QUERY)]
    assert result.source.kind is SourceKind.FALLBACK


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_variant_whose_retrieval_fails_or_hangs_only_loses_its_own_candidates(asynchronous: bool) -> None:
    def partly(query: str) -> list[Candidate]:
        if query == "hangs":
            time.sleep(3.0)
        if query == "fails":
            raise ConnectionError("shard down")
        return retrieve(query)

    expansion = QueryExpansionReranker(
        Reranker(OverlapScorer()), partly, lambda q: ["hangs", "coronary plaques", "fails"], timeout_s=0.6
    )
    started = time.monotonic()
    result = await expansion.arerank(QUERY) if asynchronous else expansion.rerank(QUERY)
    assert time.monotonic() - started < 0.6 + SLACK_S
    assert result.notes[0].startswith("retriever (variant 1): timeout")
    assert result.notes[1] == "retriever (variant 3): error ConnectionError"
    assert "coronary" in {item.candidate.id for item in result}  # variant 2's candidates made it


# --- the LLM-free query writers ------------------------------------------------------------------


def test_key_terms_follow_up_and_pseudo_relevance_expander() -> None:
    stats = TermStatistics.from_texts(CORPUS.values())
    top = MultiHopReranker(Reranker(OverlapScorer()), retrieve, first_words).rerank(QUERY).hops[0].result.items
    follow_up = KeyTermsFollowUp(stats, terms=3)(QUERY, top)
    assert follow_up == KeyTermsFollowUp(stats, terms=3)(QUERY, top)  # deterministic
    assert len(follow_up.split()) == 3 and not {"aspirin", "heart", "attacks"} & set(follow_up.split())
    assert set(follow_up.split()) <= {"lowers", "risk", "older", "men"}
    expanded = PseudoRelevanceExpander(retrieve, stats, terms=2)(QUERY)
    assert (
        len(expanded) == 1
        and expanded[0].startswith(QUERY + " ")
        and len(expanded[0].split()) == len(QUERY.split()) + 2
    )
    assert PseudoRelevanceExpander(lambda q: [], stats)(QUERY) == []
    with pytest.raises(ValueError, match="terms"):
        KeyTermsFollowUp(terms=0)


def test_a_storm_against_a_hung_follow_up_keeps_the_threads_bounded() -> None:
    """120 calls, each 0.05 s, against a follow-up writer that never answers: every call degrades
    to its first hop on time, and the hung writers hold at most MAX_STEP_THREADS threads."""
    import threading

    from rerank_prod.retrieval import steps

    release = threading.Event()

    def hung(query: str, top: Sequence[RankedCandidate]) -> str:
        release.wait(30)
        return "never used"

    multihop = MultiHopReranker(Reranker(OverlapScorer()), retrieve, hung, timeout_s=0.05)
    before = threading.active_count()
    try:
        for _ in range(120):
            started = time.monotonic()
            result = multihop.rerank(QUERY)
            assert time.monotonic() - started < 0.05 + SLACK_S
            assert len(result.hops) == 1 and result[0].candidate.id == "aspirin"
        assert threading.active_count() <= before + steps.MAX_STEP_THREADS
        assert result.stopped is not None and "still running" in result.stopped
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before
