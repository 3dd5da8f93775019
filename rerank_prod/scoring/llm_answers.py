"""Reading LLM re-ranking answers: tolerant of the formats models really use, strict about meaning.

Accepted, and nothing else:
- pointwise: `{"relevance": N}` (also `"score"`, optionally `"reason"`), bare or inside a code fence
  or among prose when it is the only JSON object there; a bare number `7`; a fraction `7/10` or
  `7 out of 10` whose denominator is the top of the configured scale. N must lie on the scale: a
  0-1 answer on a 0-10 scale is 0.7 out of 10, never silently multiplied.
- listwise: `{"ranking": [ids]}`, a bare JSON array `[2, 0, 1]`, or RankGPT's `[2] > [1] > [3]`. Ids
  are 1-based as in the prompt, 0-based when configured, or detected ("auto"): a 0 means 0-based,
  the passage count means 1-based, both (or neither in a partial list) is ambiguous.
Anything else is a `MalformedResponse` (retried by the caller): never a score of 0, never a guess.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rerank_prod.resilience import MalformedResponse

logger = logging.getLogger("rerank_prod")

IndexBase = Literal["auto", 0, 1]
INDEX_BASES: tuple[object, ...] = ("auto", 0, 1)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_BARE_NUMBER = re.compile(rf"^\s*({_NUMBER})\s*\.?\s*$")
_FRACTION = re.compile(rf"^\s*({_NUMBER})\s*(?:/|out of)\s*({_NUMBER})\s*\.?\s*$", re.IGNORECASE)
_RANKGPT = re.compile(r"^\s*\[\s*\d+\s*\](?:\s*>\s*\[\s*\d+\s*\])*\s*\.?\s*$")
_RANKGPT_ID = re.compile(r"\[\s*(\d+)\s*\]")


@dataclass(frozen=True)
class Scale:
    """A pointwise relevance scale: answers must lie in [low, high]; scores are mapped to [0, 1]."""

    low: float = 0.0
    high: float = 10.0

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"scale must be two finite numbers (low, high), got {name}={value!r}")
        if self.high <= self.low:
            raise ValueError(f"scale must have high > low, got ({self.low:g}, {self.high:g})")

    def normalized(self, value: float) -> float:
        return (value - self.low) / (self.high - self.low)

    def __str__(self) -> str:
        return f"{self.low:g}-{self.high:g}"


@dataclass(frozen=True)
class Judgement:
    """A pointwise answer: the score on [0, 1], the raw value on the scale, and the reason if given."""

    score: float
    relevance: float
    reason: str | None = None


def _text(content: object) -> str:
    if not isinstance(content, str) or not content.strip():
        raise MalformedResponse("the model returned no content")
    text = content.strip()
    fenced = _FENCE.match(text)
    return fenced.group(1).strip() if fenced is not None else text


def _json_values(text: str) -> list[Any]:
    """The whole text as JSON, else every JSON object or array that starts at a `{`/`[` and parses."""
    try:
        return [json.loads(text)]
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    found: list[Any] = []
    position = 0
    while True:
        starts = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
        if not starts:
            return found
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            position = start + 1
            continue
        found.append(value)
        position = end


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MalformedResponse(f"unusable {what} {value!r}")
    return float(value)


def _on_scale(value: float, scale: Scale) -> float:
    if not scale.low <= value <= scale.high:
        raise MalformedResponse(f"relevance {value:g} is outside the {scale} scale")
    return value


def _from_object(answer: dict[str, Any], scale: Scale) -> Judgement:
    keys = [key for key in ("relevance", "score") if key in answer]
    if not keys:
        raise MalformedResponse("the model's answer has no relevance")
    values = {_number(answer[key], key) for key in keys}
    if len(values) > 1:
        raise MalformedResponse("the model's answer gives two different relevance values")
    relevance = _on_scale(values.pop(), scale)
    reason = answer.get("reason")
    return Judgement(scale.normalized(relevance), relevance, reason.strip() if isinstance(reason, str) else None)


def parse_judgement(content: object, scale: Scale) -> Judgement:
    """A pointwise answer on `scale` (formats: see the module docstring)."""
    text = _text(content)
    bare = _BARE_NUMBER.match(text)
    if bare is not None:
        relevance = _on_scale(float(bare.group(1)), scale)
        return Judgement(scale.normalized(relevance), relevance)
    fraction = _FRACTION.match(text)
    if fraction is not None:
        value, top = float(fraction.group(1)), float(fraction.group(2))
        if top != scale.high:
            raise MalformedResponse(f"the model answered on a scale to {top:g}, not the configured {scale}")
        relevance = _on_scale(value, scale)
        return Judgement(scale.normalized(relevance), relevance)
    objects = [value for value in _json_values(text) if isinstance(value, dict)]
    if len(objects) != 1:
        raise MalformedResponse(
            f"the model's answer holds {len(objects)} JSON objects, not one ({len(text)} chars)"
            if objects
            else f"the model's answer is not a usable relevance ({len(text)} chars)"
        )
    return _from_object(objects[0], scale)


def _ids(content: object) -> list[object]:
    text = _text(content)
    if _RANKGPT.match(text):
        return [int(found) for found in _RANKGPT_ID.findall(text)]
    values = _json_values(text)
    rankings = [value.get("ranking") for value in values if isinstance(value, dict) and "ranking" in value]
    arrays = [value for value in values if isinstance(value, list)]
    candidates = rankings if rankings else arrays
    if len(candidates) != 1 or not isinstance(candidates[0], list):
        raise MalformedResponse("the model's answer has no single ranking list")
    return list(candidates[0])


def _as_int(item: object) -> int | None:
    if isinstance(item, str) and item.strip().isdigit():
        return int(item)
    if isinstance(item, int) and not isinstance(item, bool):
        return item
    return None


def _base(ids: Sequence[int], count: int, index_base: IndexBase) -> int:
    if index_base != "auto":
        return int(index_base)
    zero, top = 0 in ids, count in ids
    if zero and top:
        raise MalformedResponse(f"the ranking names both 0 and {count}: 0- or 1-based is ambiguous")
    if zero:
        return 0
    if top or len(set(ids) & set(range(1, count))) == 0:
        return 1
    if len(set(ids)) >= count - 1:  # all of 1..count-1: a 1-based list missing one id, or 0-based missing 0
        raise MalformedResponse("the ranking's index base is ambiguous; set index_base=0 or 1")
    return 1  # a partial list without 0 and without count: the prompt's ids are 1-based


def parse_ranking(content: object, count: int, index_base: IndexBase = "auto") -> list[int]:
    """A ranking of `count` passages -> a permutation of range(count) (formats: module docstring).

    Repairs what models get wrong: unknown or out-of-range ids are dropped, repeats keep their
    first place, missing ids follow in their current order. An answer with no usable id is malformed.
    """
    raw = _ids(content)
    ids = [value for value in (_as_int(item) for item in raw) if value is not None]
    base = _base(ids, count, index_base) if ids else 1
    order: list[int] = []
    for value in ids:
        position = value - base
        if 0 <= position < count and position not in order:
            order.append(position)
    if not order:
        raise MalformedResponse("the model's ranking names none of the passages")
    if len(order) != count or len(raw) != count:
        logger.info("repaired an LLM ranking: %d ids given, %d usable, %d passages", len(raw), len(order), count)
    placed = set(order)
    return order + [position for position in range(count) if position not in placed]


# --- query writing (rerank_prod.retrieval): {"query": "..."} and {"queries": ["...", ...]} --------


def _single_object(content: object, what: str) -> dict[str, Any]:
    text = _text(content)
    objects = [value for value in _json_values(text) if isinstance(value, dict)]
    if len(objects) != 1:
        raise MalformedResponse(f"the model's {what} holds {len(objects)} JSON objects, not one ({len(text)} chars)")
    return objects[0]


def _query_text(value: object, max_chars: int, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MalformedResponse(f"the model's {what} is not a non-empty string")
    query = " ".join(value.split())
    if len(query) > max_chars:
        raise MalformedResponse(f"the model's {what} is {len(query)} chars long (at most {max_chars})")
    return query


def parse_follow_up(content: object, max_chars: int = 500) -> str:
    """A follow-up query: the one JSON object of the answer (bare, fenced or among prose) with a
    non-empty string "query" of at most `max_chars` (white space collapsed). Anything else, prose
    without the object included, is a `MalformedResponse`: never a query guessed from the text."""
    answer = _single_object(content, "follow-up answer")
    if "query" not in answer:
        raise MalformedResponse("the model's follow-up answer has no query")
    return _query_text(answer["query"], max_chars, "follow-up query")


def parse_variants(content: object, count: int, max_chars: int = 500) -> list[str]:
    """Query variants: the one JSON object of the answer with "queries", a list of non-empty strings
    (white space collapsed, at most `max_chars` each). Repeats (ignoring case) are dropped, then the
    first `count` kept; an empty list or a non-string item is a `MalformedResponse`."""
    answer = _single_object(content, "variants answer")
    queries = answer.get("queries")
    if not isinstance(queries, list) or not queries:
        raise MalformedResponse("the model's variants answer has no non-empty list of queries")
    variants: list[str] = []
    for position, value in enumerate(queries):
        query = _query_text(value, max_chars, f"variant {position}")
        if query.casefold() not in {kept.casefold() for kept in variants}:
            variants.append(query)
    return variants[:count]
