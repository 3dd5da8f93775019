"""Query writers that need no LLM: salient terms of retrieved text (pseudo-relevance feedback).

Deterministic and cheap, for evaluation and as a baseline, not a substitute for a language model:

- `KeyTermsFollowUp`: the follow-up query of multi-hop is the best result's key terms (the terms
  with the highest tf * idf that the query does not already contain), so the next hop retrieves
  what the top passage is about.
- `PseudoRelevanceExpander`: one variant, the query plus the key terms of its top retrieved
  passages: RM3-style feedback with tf * idf term weights instead of RM3's relevance model, and
  without its re-weighting of the original terms.

Terms are lower-cased runs of letters and digits (at least 3 characters, not a stop word). Without
corpus statistics every term has idf 1 (salience is then term frequency alone).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from rerank_prod.retrieval.merge import as_candidates
from rerank_prod.types import Candidate, RankedCandidate
from rerank_prod.validation import check_int

_TERM = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_STOP_WORDS_TEXT = (
    "a about above after again against all also am an and any are as at be because been before being "
    "below between both but by can could did do does doing down during each few for from further had has "
    "have having he her here hers him his how however i if in into is it its itself just may me might "
    "more most must my no nor not now of off on once only or other our ours out over own same she should "
    "so some such than that the their theirs them then there these they this those through to too under "
    "until up upon very was we were what when where which while who whom why will with within without "
    "would you your yours using used use based study results shown show found among whether "
)
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


def terms(text: str) -> list[str]:
    """The text's terms, in order (see the module docstring)."""
    return [t for t in _TERM.findall(text.lower()) if len(t) >= 3 and t not in STOP_WORDS and not t.isdigit()]


class TermStatistics:
    """Document frequencies of a corpus, for idf = log(1 + N / df)."""

    def __init__(self, document_frequency: Mapping[str, int], documents: int) -> None:
        self.documents = check_int("documents", documents)
        self.document_frequency = dict(document_frequency)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> TermStatistics:
        frequency: Counter[str] = Counter()
        count = 0
        for text in texts:
            frequency.update(set(terms(text)))
            count += 1
        return cls(frequency, max(1, count))

    def idf(self, term: str) -> float:
        return math.log(1.0 + self.documents / (1 + self.document_frequency.get(term, 0)))


def key_terms(
    texts: Sequence[str], *, exclude: str = "", count: int = 8, stats: TermStatistics | None = None
) -> list[str]:
    """The `count` most salient terms of `texts` (tf * idf, ties by first appearance), without the
    terms of `exclude`."""
    excluded = set(terms(exclude))
    frequency: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for term in (t for text in texts for t in terms(text)):
        if term in excluded:
            continue
        frequency[term] += 1
        first_seen.setdefault(term, len(first_seen))
    weight = {term: tf * (stats.idf(term) if stats is not None else 1.0) for term, tf in frequency.items()}
    return sorted(weight, key=lambda term: (-weight[term], first_seen[term]))[:count]


class KeyTermsFollowUp:
    """Multi-hop follow-up without an LLM: the key terms of the best `top_results` result(s).

    Raises `ValueError` at construction for `terms` or `results` < 1. Returns "" when the results
    have no new term (the multi-hop call then stops: an empty follow-up is unusable).
    """

    def __init__(self, stats: TermStatistics | None = None, *, terms: int = 8, results: int = 1) -> None:
        self.stats = stats
        self.terms = check_int("terms", terms)
        self.results = check_int("results", results)

    def __call__(self, query: str, top_results: Sequence[RankedCandidate]) -> str:
        texts = [item.candidate.text for item in top_results[: self.results]]
        return " ".join(key_terms(texts, exclude=query, count=self.terms, stats=self.stats))


class PseudoRelevanceExpander:
    """Query expansion without an LLM: one variant, the query plus the key terms of the top
    `feedback_docs` passages `retriever(query)` returns.

    Raises `ValueError` at construction for `terms` or `feedback_docs` < 1. The retriever's
    failures propagate (the expansion pipeline then keeps the original query alone).
    """

    def __init__(
        self,
        retriever: Callable[[str], Iterable[Candidate | str]],
        stats: TermStatistics | None = None,
        *,
        terms: int = 8,
        feedback_docs: int = 1,
    ) -> None:
        if not callable(retriever):
            raise TypeError(f"retriever must be callable, got {type(retriever).__name__}")
        self.retriever = retriever
        self.stats = stats
        self.terms = check_int("terms", terms)
        self.feedback_docs = check_int("feedback_docs", feedback_docs)

    def __call__(self, query: str) -> list[str]:
        top = as_candidates(self.retriever(query), "the retriever")[: self.feedback_docs]
        extra = key_terms([c.text for c in top], exclude=query, count=self.terms, stats=self.stats)
        return [f"{query} {' '.join(extra)}"] if extra else []
