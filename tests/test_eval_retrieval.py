"""`rerank-prod eval` runs multi-hop and query-expansion configurations over its BM25 index: the
built-in writers (no LLM), the LLM writer against the chat-completions stand-in, and bad tables."""

from __future__ import annotations

import json

import pytest

from loopback.standin_servers import running
from rerank_prod.cli import main
from rerank_prod.evaluation.configs import SCORERS, parse_flag_spec
from tests.eval_helpers import make_beir
from tests.support import ConstantTimeScorer

pytest.importorskip("pytrec_eval")
pytest.importorskip("bm25s")


@pytest.fixture
def beir(tmp_path, monkeypatch):
    monkeypatch.setitem(SCORERS, "overlap", lambda: ConstantTimeScorer(name="overlap"))
    return make_beir(tmp_path / "beir")


def _eval(beir, out, *configs: str) -> dict:
    args = ["eval", str(beir), "--out", str(out), "--top-k", "2", "--no-progress", "--no-plot"]
    assert main([*args, *(f"--reranker={c}" for c in configs)]) == 0
    return {s["name"]: s for s in json.loads((out / "results.json").read_text())["systems"]}


def test_flag_shorthand_sets_the_generator() -> None:
    assert parse_flag_spec("multihop=key-terms,multihop.hops=3") == {"multihop": {"generator": "key-terms", "hops": 3}}


def test_multihop_and_expansion_configurations_with_the_built_in_writers(beir, tmp_path) -> None:
    systems = _eval(
        beir,
        tmp_path / "out",
        "name=plain,scorer=overlap",
        "name=mh,scorer=overlap,multihop=key-terms,multihop.terms=3",
        "name=ex,scorer=overlap,expansion=prf,expansion.terms=3",
    )
    sources = systems["mh"]["per_query"]["q1"]["source"]
    assert sources.startswith("model [") and "hops" in sources
    assert systems["ex"]["per_query"]["q1"]["source"] == "model [1 variant]"
    assert systems["mh"]["config"]["multihop"] == {"generator": "key-terms", "terms": 3}
    # later hops / variants can only add candidates beyond the first stage's top-2
    runs = {name: (tmp_path / "out" / systems[name]["run_file"]).read_text().splitlines() for name in ("plain", "ex")}
    assert len(runs["ex"]) >= len(runs["plain"])


def test_multihop_with_the_llm_writer(beir, tmp_path) -> None:
    with running("openai") as llm:
        systems = _eval(
            beir,
            tmp_path / "out",
            f"name=mh llm,scorer=overlap,multihop=llm,multihop.model=stand-in,multihop.base_url={llm.url}/v1",
        )
        assert len(llm.requests) == 3  # one follow-up per query
    assert all("2/2 hops" in q["source"] for q in systems["mh llm"]["per_query"].values())


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("multihop=oracle", "generator"),
        ("multihop=llm", "needs model"),
        ("multihop.hops=0", "hops"),
        ("multihop.weights=2", "weights"),
        ("multihop=key-terms,expansion=prf", "cannot be combined"),
    ],
)
def test_bad_tables_exit_2_with_the_reason(beir, tmp_path, capsys, config: str, message: str) -> None:
    args = ["eval", str(beir), "--out", str(tmp_path / "o"), "--no-progress", "--no-plot"]
    assert main([*args, f"--reranker=scorer=overlap,{config}"]) == 2
    assert message in capsys.readouterr().err
