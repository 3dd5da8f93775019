"""The LLM query writer through the real `openai` SDK against the loopback chat-completions stand-in:
follow-up queries, variants, structured output, and faults (hangs, garbled answers) that degrade."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from loopback.standin_servers import FAST_RETRY, VARIANT_SUFFIXES, StandInServer, hang, llm_says, running, status
from rerank_prod import Reranker
from rerank_prod.resilience import MalformedResponse
from rerank_prod.retrieval import LLMQueryWriter, MultiHopReranker, QueryExpansionReranker
from rerank_prod.scoring.llm_answers import parse_follow_up, parse_variants
from tests.test_retrieval import QUERY, SLACK_S, OverlapScorer, retrieve

CHAT = "/v1/chat/completions"
KEY = "sk-test-never-print-me"


@pytest.fixture
def llm() -> Iterator[StandInServer]:
    with running("openai", api_key=KEY) as server:
        yield server


def writer(server: StandInServer, **options: object) -> LLMQueryWriter:
    settings: dict[str, object] = {"api_key": KEY, "base_url": f"{server.url}/v1", "retry": FAST_RETRY}
    return LLMQueryWriter("gpt-4o-mini", **{"request_timeout_s": 2.0, **settings, **options})  # type: ignore[arg-type]


def test_parsers_are_strict() -> None:
    assert parse_follow_up('```json\n{"query": "  coronary   artery "}\n```') == "coronary artery"
    assert parse_follow_up('Here it is: {"query": "statins"}') == "statins"
    for bad in ["coronary artery", '{"q": "x"}', '{"query": ""}', '{"query": 3}', '{"query": "a"} {"query": "b"}', ""]:
        with pytest.raises(MalformedResponse):
            parse_follow_up(bad)
    with pytest.raises(MalformedResponse):
        parse_follow_up(json.dumps({"query": "x" * 501}))
    assert parse_variants('{"queries": ["a b", "A  B", "c", "d"]}', 2) == ["a b", "c"]
    for bad in ['{"queries": []}', '{"queries": ["a", 2]}', '{"queries": "a"}', '["a", "b"]', "a, b"]:
        with pytest.raises(MalformedResponse):
            parse_variants(bad, 3)


def test_multihop_with_the_llm_writer(llm: StandInServer) -> None:
    result = MultiHopReranker(Reranker(OverlapScorer()), retrieve, writer(llm), timeout_s=5.0).rerank(QUERY)
    assert result.stopped is None and len(result.hops) == 2
    requests = llm.requests_to(CHAT)
    assert len(requests) == 1
    body = requests[0].body
    assert body["response_format"]["json_schema"]["name"] == "follow_up" and body["temperature"] == 0
    payload = json.loads(body["messages"][1]["content"])
    assert payload["question"] == QUERY and payload["passages"][0] == result.hops[0].result.items[0].candidate.text
    assert result.hops[1].query == "lowers the risk of in older"  # the stand-in: the best passage's new words
    assert KEY not in repr(writer(llm))


async def test_expansion_with_the_llm_writer_async(llm: StandInServer) -> None:
    result = await QueryExpansionReranker(Reranker(OverlapScorer()), retrieve, writer(llm), variants=2).arerank(QUERY)
    assert result.variants == tuple(f"{QUERY} {suffix}" for suffix in VARIANT_SUFFIXES[:2]) and result.notes == ()
    body = llm.requests_to(CHAT)[0].body
    assert json.loads(body["messages"][1]["content"]) == {"query": QUERY, "count": 2}
    assert body["response_format"]["json_schema"]["schema"]["properties"]["queries"]["type"] == "array"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_garbled_follow_up_is_retried_then_degrades(llm: StandInServer, asynchronous: bool) -> None:
    llm.fail_next(CHAT, *[llm_says("Sure! Try searching for coronary arteries.")] * 3)
    multihop = MultiHopReranker(Reranker(OverlapScorer()), retrieve, writer(llm), timeout_s=5.0)
    result = await multihop.arerank(QUERY) if asynchronous else multihop.rerank(QUERY)
    assert len(llm.requests_to(CHAT)) == 3  # retried, never guessed from the prose
    assert len(result.hops) == 1 and result.stopped == "follow-up: error MalformedResponse"


def test_a_garbled_answer_once_is_retried_and_used(llm: StandInServer) -> None:
    llm.fail_next(CHAT, llm_says('{"queries": "not a list"}'))
    result = QueryExpansionReranker(Reranker(OverlapScorer()), retrieve, writer(llm)).rerank(QUERY)
    assert len(result.variants) == 3 and result.notes == ()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_a_hung_llm_costs_the_budget_and_the_expansion_keeps_the_original_query(
    llm: StandInServer, asynchronous: bool
) -> None:
    llm.fail_next(CHAT, hang())
    expansion = QueryExpansionReranker(
        Reranker(OverlapScorer()), retrieve, writer(llm, request_timeout_s=30.0), timeout_s=0.8
    )
    started = time.monotonic()
    given = retrieve(QUERY)
    result = await expansion.arerank(QUERY, given) if asynchronous else expansion.rerank(QUERY, given)
    assert time.monotonic() - started < 0.8 + SLACK_S
    assert result.variants == () and len(result.notes) == 1 and result.notes[0].startswith("expander: ")
    assert sorted(item.candidate.id or "" for item in result) == sorted(c.id or "" for c in given)


def test_server_errors_open_nothing_silently(llm: StandInServer) -> None:
    llm.fail_next(CHAT, *[status(500)] * 3)
    result = MultiHopReranker(Reranker(OverlapScorer()), retrieve, writer(llm), timeout_s=5.0).rerank(QUERY)
    assert len(result.hops) == 1 and result.stopped is not None and result.stopped.startswith("follow-up: error")
