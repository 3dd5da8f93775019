"""Exceptions users catch or see in `rerank_source`, below every module that raises them."""

from __future__ import annotations


class ScorerError(RuntimeError):
    """A backend could not produce scores; the pipeline turns this into a fallback."""


class ScoringTimeout(ScorerError):
    """The scorer did not answer within the call's time budget."""
