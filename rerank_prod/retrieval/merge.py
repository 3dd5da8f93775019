"""The pure logic of multi-hop and expanded retrieval: identity, merging, decay weights, combination.

No I/O here, so every rule is unit-tested on its own:

- identity: a candidate is its `id` when it has one, else the SHA-256 of its text.
- merge (query expansion): ranked lists are interleaved rank by rank (list 0 first at each rank),
  each candidate kept at its first occurrence, with the lists that retrieved it.
- combination (multi-hop): each hop's relevance scores are min-max normalized within the hop (best
  1.0, worst 0.0; a hop whose scores are all equal gives 1.0), times the hop's weight; a candidate
  seen in several hops keeps the max of its weighted scores (ties: the earlier hop, then the better
  position).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rerank_prod.types import Candidate, RankedCandidate
from rerank_prod.validation import check_int, check_number


def candidate_key(candidate: Candidate) -> str:
    """What makes two retrieved candidates the same one: the id, else the text's hash."""
    if candidate.id is not None:
        return f"id:{candidate.id}"
    return "sha256:" + hashlib.sha256(candidate.text.encode("utf-8", "surrogatepass")).hexdigest()


def as_candidates(items: object, who: str) -> list[Candidate]:
    """A retriever's answer as candidates (str items become `Candidate(text)`); anything else is a
    `TypeError` naming `who`."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(f"{who} must return an iterable of Candidate or str, got {type(items).__name__}")
    candidates = []
    for position, item in enumerate(items):
        if isinstance(item, str):
            item = Candidate(item)
        elif not isinstance(item, Candidate):
            raise TypeError(f"{who} returned item {position} of type {type(item).__name__}, not Candidate or str")
        candidates.append(item)
    return candidates


@dataclass(frozen=True, slots=True)
class Merged:
    """A candidate of the merged list and the positions of the lists that retrieved it."""

    candidate: Candidate
    retrieved_by: tuple[int, ...]


def merge_ranked_lists(lists: Sequence[Sequence[Candidate]]) -> list[Merged]:
    """Interleave `lists` rank by rank, de-duplicated by `candidate_key` (first occurrence kept)."""
    order: list[str] = []
    first: dict[str, Candidate] = {}
    sources: dict[str, list[int]] = {}
    for rank in range(max((len(ranked) for ranked in lists), default=0)):
        for position, ranked in enumerate(lists):
            if rank >= len(ranked):
                continue
            key = candidate_key(ranked[rank])
            if key not in first:
                first[key] = ranked[rank]
                order.append(key)
                sources[key] = []
            if position not in sources[key]:
                sources[key].append(position)
    return [Merged(first[key], tuple(sorted(sources[key]))) for key in order]


def hop_weights(hops: int, weights: Sequence[float] | None = None, decay: float = 0.5) -> tuple[float, ...]:
    """The weight of each hop: `weights` as given, else `decay ** hop` (1.0, 0.5, 0.25, ... by default).

    Raises `ValueError` for hops < 1, a weights list of another length than `hops`, or a weight or
    decay that is not a finite number > 0; `TypeError` when `weights` is not a sequence.
    """
    check_int("hops", hops)
    if weights is None:
        factor = check_number("decay", decay)
        return tuple(factor**hop for hop in range(hops))
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a sequence of numbers, got {type(weights).__name__}")
    if len(weights) != hops:
        raise ValueError(f"weights must give one weight per hop: {hops} hops, {len(weights)} weights")
    return tuple(check_number(f"weights[{position}]", weight) for position, weight in enumerate(weights))


def normalized(scores: Sequence[float]) -> list[float]:
    """Min-max within one hop: best 1.0, worst 0.0; all equal (or one) gives 1.0."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high == low:
        return [1.0] * len(scores)
    return [(score - low) / (high - low) for score in scores]


@dataclass(frozen=True, slots=True)
class Combined:
    """A candidate's winning entry over the hops: its weighted score, the hop (0-based) and the
    ranked entry that gave it, and every hop it appeared in."""

    score: float
    hop: int
    item: RankedCandidate
    seen_in: tuple[int, ...]


def combine_hops(hops: Sequence[Sequence[RankedCandidate]], weights: Sequence[float]) -> list[Combined]:
    """One list over all hops, best first, by the rule in the module docstring."""
    if len(weights) < len(hops):
        raise ValueError(f"{len(hops)} hops but only {len(weights)} weights")
    best: dict[str, tuple[float, int, int, RankedCandidate]] = {}
    seen: dict[str, list[int]] = {}
    for hop, items in enumerate(hops):
        for position, (item, share) in enumerate(
            zip(items, normalized([i.relevance_score for i in items]), strict=True)
        ):
            key = candidate_key(item.candidate)
            weighted = weights[hop] * share
            seen.setdefault(key, [])
            if hop not in seen[key]:
                seen[key].append(hop)
            if key not in best or weighted > best[key][0]:
                best[key] = (weighted, hop, position, item)
    ranked = sorted(best.items(), key=lambda entry: (-entry[1][0], entry[1][1], entry[1][2]))
    return [Combined(score, hop, item, tuple(seen[key])) for key, (score, hop, _, item) in ranked]
