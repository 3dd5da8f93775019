"""The time budget every stage of a call is handed: the vocabulary below scoring, caches and resilience."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Deadline:
    """One time budget for a whole call, so retries, batches and cache I/O cannot outlive it."""

    expires_at: float
    budget_s: float | None = field(default=None, compare=False)
    """The budget it was made with (`after`), for messages such as "timeout after 0.3s"."""

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0
