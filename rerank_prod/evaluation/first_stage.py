"""First stages: BM25 over the corpus, or a TREC run file the user brings; and TREC run writing.

A first stage yields, for each query, its candidates best first as (doc id, score): the same
candidate sets are then handed to every re-ranker configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from rerank_prod.evaluation.dataset import BeirDataset, EvalInputError
from rerank_prod.types import Candidate

Ranking = list[tuple[str, float]]
"""(doc id, score), best first."""


def bm25_rankings(
    dataset: BeirDataset, query_ids: Sequence[str], top_k: int, *, k1: float = 0.9, b: float = 0.4
) -> dict[str, Ranking]:
    """bm25s BM25 over title + text, English stop words and Snowball stemmer.

    k1=0.9, b=0.4 are Anserini's defaults, the setting the shared reference numbers used.
    """
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    doc_ids = list(dataset.corpus)
    index = bm25s.BM25(k1=k1, b=b)
    index.index(
        bm25s.tokenize(
            [dataset.corpus[d].passage for d in doc_ids], stopwords="en", stemmer=stemmer, show_progress=False
        ),
        show_progress=False,
    )
    query_tokens = bm25s.tokenize(
        [dataset.queries[q] for q in query_ids],
        stopwords="en",
        stemmer=stemmer,
        return_ids=False,
        show_progress=False,
    )
    positions, scores = index.retrieve(query_tokens, k=min(top_k, len(doc_ids)), show_progress=False, n_threads=1)
    return {
        qid: [(doc_ids[int(p)], float(s)) for p, s in zip(positions[row], scores[row], strict=True)]
        for row, qid in enumerate(query_ids)
    }


class BM25Retriever:
    """BM25 over the dataset's corpus as a retriever callable (query -> candidates, best first), the
    same index settings as `bm25_rankings`: the retriever of multi-hop and expansion configurations."""

    def __init__(self, dataset: BeirDataset, top_k: int, *, k1: float = 0.9, b: float = 0.4) -> None:
        import bm25s
        import Stemmer

        self.dataset = dataset
        self.top_k = top_k
        self._stemmer = Stemmer.Stemmer("english")
        self._doc_ids = list(dataset.corpus)
        self._index = bm25s.BM25(k1=k1, b=b)
        passages = [dataset.corpus[d].passage for d in self._doc_ids]
        tokens = bm25s.tokenize(passages, stopwords="en", stemmer=self._stemmer, show_progress=False)
        self._index.index(tokens, show_progress=False)

    def __call__(self, query: str) -> list[Candidate]:
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False)
        if not tokens or not tokens[0]:
            return []
        k = min(self.top_k, len(self._doc_ids))
        positions, scores = self._index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        hits = [(self._doc_ids[int(p)], float(s)) for p, s in zip(positions[0], scores[0], strict=True) if s > 0]
        return [Candidate(text=self.dataset.corpus[d].passage, id=d, retrieval_score=s) for d, s in hits]


def read_run(path: str | Path) -> dict[str, Ranking]:
    """A TREC run file (`qid Q0 docid rank score tag`), each query sorted by score, highest first.

    Like trec_eval, the score decides the order; the rank column only breaks ties.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"run file {path} not found")
    entries: dict[str, list[tuple[float, int, str]]] = {}
    seen: set[tuple[str, str]] = set()
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise EvalInputError(
                    f"{path}:{number}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}"
                )
            qid, _, docid, rank, score = fields[:5]
            try:
                entry = (float(score), int(rank), docid)
            except ValueError:
                raise EvalInputError(f"{path}:{number}: rank must be an integer and score a number") from None
            if (qid, docid) in seen:
                raise EvalInputError(f"{path}:{number}: document {docid!r} listed twice for query {qid!r}")
            seen.add((qid, docid))
            entries.setdefault(qid, []).append(entry)
    if not entries:
        raise EvalInputError(f"run file {path} is empty")
    return {
        qid: [(docid, score) for score, _, docid in sorted(rows, key=lambda e: (-e[0], e[1]))]
        for qid, rows in entries.items()
    }


def run_file_rankings(
    path: str | Path, dataset: BeirDataset, query_ids: Sequence[str], top_k: int
) -> dict[str, Ranking]:
    """The run file's top-K for the evaluated queries; unknown documents are an error (no text to
    re-rank), queries the run lacks get no candidates (and score zero, as with `trec_eval -c`)."""
    run = read_run(path)
    unknown = [docid for ranking in run.values() for docid, _ in ranking if docid not in dataset.corpus]
    if unknown:
        raise EvalInputError(
            f"run file {path} names {len(unknown)} documents missing from the corpus (e.g. {unknown[0]!r})"
        )
    if not any(qid in run for qid in query_ids):
        raise EvalInputError(
            f"run file {path} has none of the {len(query_ids)} judged queries of split {dataset.split!r}"
        )
    return {qid: run.get(qid, [])[:top_k] for qid in query_ids}


def write_run(path: Path, rankings: Mapping[str, Iterable[tuple[str, float]]], tag: str) -> None:
    """TREC run file; the tag has no whitespace (trec_eval splits on it)."""
    safe_tag = "_".join(tag.split()) or "run"
    with path.open("w", encoding="utf-8") as out:
        for qid, ranking in rankings.items():
            for rank, (docid, score) in enumerate(ranking, 1):
                out.write(f"{qid} Q0 {docid} {rank} {score:.6f} {safe_tag}\n")


def first_stage_rankings(
    dataset: BeirDataset,
    query_ids: Sequence[str],
    top_k: int,
    *,
    run_file: str | Path | None = None,
    k1: float = 0.9,
    b: float = 0.4,
) -> tuple[str, dict[str, Ranking]]:
    """(a name for reports, each query's top-K) from the run file when given, else from BM25."""
    if top_k < 1:
        raise EvalInputError(f"top-k must be >= 1, got {top_k}")
    if run_file is not None:
        return f"run file {Path(run_file).name}", run_file_rankings(run_file, dataset, query_ids, top_k)
    return f"BM25 (bm25s k1={k1} b={b})", bm25_rankings(dataset, query_ids, top_k, k1=k1, b=b)


def candidate_sets(dataset: BeirDataset, first_stage: Mapping[str, Ranking]) -> dict[str, list[Candidate]]:
    """What every re-ranker is handed: passages in first-stage order, first-stage score attached."""
    return {
        qid: [
            Candidate(text=dataset.corpus[docid].passage, id=docid, retrieval_score=score) for docid, score in ranking
        ]
        for qid, ranking in first_stage.items()
    }
