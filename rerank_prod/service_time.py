"""How long a forward pass takes: a fixed cost per pass plus a cost per unit of text, fitted online.

Why two terms: a pass has a cost that does not depend on its size (launching the model's kernels,
tokenizing, and under load waiting for the interpreter's lock after each native call), and a cost
that grows with the text in it. One per-unit rate folds the fixed cost into every unit: measured on
the one- and two-pair passes a storm leaves, it says a 20-pair call costs ten times what it does,
so the engine sheds or cuts every call to a pair or two, and the passes stay small: the estimate
never recovers while the storm lasts. The line `seconds = per_pass + per_unit * units` is fitted by
exponentially weighted least squares over recent passes (newest weighs `weight`), so it follows a
machine whose load changes. A pass more than `_JUMP` times faster or slower than predicted means
the machine changed (a storm began or ended): it weighs `_JUMP_WEIGHT`, so the old level is
forgotten within a few passes instead of tens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from rerank_prod.validation import check_number

_MOST_FIXED = 0.8
"""At most this share of a mean-sized pass is put down to the fixed cost: the per-unit term never
vanishes, so a noisy fit cannot make big passes look free."""
_JUMP = 3.0
_JUMP_WEIGHT = 0.6
_SPREAD = 0.1
"""Pass sizes whose coefficient of variation is below this cannot separate the two terms: the
line then keeps the last fixed cost it could fit and goes through the mean pass."""


@dataclass
class ServiceTime:
    """An estimate of `seconds(units) = per_pass_s + per_unit_s * units` for one pass.

    `observe(units, seconds)` after each pass; `seconds(units)` before one (None until measured).
    Not thread-safe: the engine calls it under its lock."""

    weight: float = 0.2
    per_pass_s: float = field(default=0.0, init=False)
    per_unit_s: float | None = field(default=None, init=False)
    # exponentially weighted means of units, seconds, units^2 and units*seconds over recent passes
    _mean_units: float = field(default=0.0, init=False, repr=False)
    _mean_seconds: float = field(default=0.0, init=False, repr=False)
    _mean_units_sq: float = field(default=0.0, init=False, repr=False)
    _mean_cross: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        check_number("weight", self.weight)
        if self.weight > 1:
            raise ValueError(f"weight must be at most 1, got {self.weight!r}")

    @property
    def measured(self) -> bool:
        return self.per_unit_s is not None

    def observe(self, units: float, seconds: float) -> None:
        """One pass of `units` took `seconds`; passes of no units or negative time are ignored."""
        if units <= 0 or seconds < 0:
            return
        predicted = self.seconds(units)
        if predicted is None:
            self._mean_units, self._mean_seconds = units, seconds
            self._mean_units_sq, self._mean_cross = units * units, units * seconds
        else:
            jumped = not predicted / _JUMP <= seconds <= predicted * _JUMP
            weight = max(self.weight, _JUMP_WEIGHT) if jumped else self.weight
            keep = 1 - weight
            self._mean_units = keep * self._mean_units + weight * units
            self._mean_seconds = keep * self._mean_seconds + weight * seconds
            self._mean_units_sq = keep * self._mean_units_sq + weight * units * units
            self._mean_cross = keep * self._mean_cross + weight * units * seconds
        self._fit()

    def _fit(self) -> None:
        mean_u, mean_t = self._mean_units, self._mean_seconds
        variance = max(0.0, self._mean_units_sq - mean_u * mean_u)
        per_pass = self.per_pass_s
        if variance > (_SPREAD * mean_u) ** 2:
            slope = (self._mean_cross - mean_u * mean_t) / variance
            per_pass = mean_t - slope * mean_u
        per_pass = min(max(per_pass, 0.0), _MOST_FIXED * mean_t)
        self.per_pass_s = per_pass
        self.per_unit_s = (mean_t - per_pass) / mean_u

    def seconds(self, units: float, passes: float = 1) -> float | None:
        """Estimated seconds of `passes` passes (a fraction: passes shared with other requests)
        holding `units` in all (None: nothing measured yet)."""
        if self.per_unit_s is None:
            return None
        return passes * self.per_pass_s + units * self.per_unit_s


class SettingChoice:
    """Service times of one model under each of a few run settings (intra-op thread counts), and the
    setting to run the next pass with: the one measured fastest, with another tried every
    `explore_every` passes so a change of load is noticed.

    Why: 2 intra-op threads are ~1.25x faster than 1 on a quiet 2-core machine, but while a busy
    Python thread (an event loop answering a storm of shed calls) holds one core, every parallel
    region of a 2-thread pass waits for the thread that lost its core, and 1 thread does more work.
    Which is faster depends on the load, so it is measured, not assumed. `settings[0]` is used
    until others have been measured. Not thread-safe: the engine calls it under its lock."""

    def __init__(self, settings: tuple[int, ...], *, explore_every: int = 50, weight: float = 0.2) -> None:
        if not settings or len(set(settings)) != len(settings):
            raise ValueError(f"settings must be distinct and not empty, got {settings!r}")
        self.settings = settings
        self.explore_every = explore_every
        self.services = {setting: ServiceTime(weight=weight) for setting in settings}
        self.current = settings[0]
        self._passes = 0

    @property
    def service(self) -> ServiceTime:
        """The estimate of the setting in use: what admission decisions are based on."""
        return self.services[self.current]

    def next_setting(self) -> int:
        """The setting for the next pass (counts it)."""
        self._passes += 1
        if len(self.settings) == 1 or not self.service.measured or self._passes % self.explore_every:
            return self.current
        others = [setting for setting in self.settings if setting != self.current]
        return others[(self._passes // self.explore_every) % len(others)]

    def observe(self, setting: int, units: float, seconds: float) -> None:
        """A pass run with `setting` took `seconds`; the fastest measured setting becomes current."""
        self.services[setting].observe(units, seconds)
        measured = [candidate for candidate in self.settings if self.services[candidate].measured]
        self.current = min(measured, key=lambda candidate: cast(float, self.services[candidate].seconds(units)))
