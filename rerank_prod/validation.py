"""Checks for configuration values, shared by every component, so bad settings fail at
construction with the setting's name and the same wording everywhere."""

from __future__ import annotations

import math


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """An int (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def check_number(name: str, value: object, *, allow_zero: bool = False, at_most: float | None = None) -> float:
    """A finite real number (not a bool) above 0 (or at least 0 with `allow_zero`), and no more
    than `at_most` when given."""
    usable = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    number = float(value) if usable else math.nan  # type: ignore[arg-type]
    if not ((number >= 0 if allow_zero else number > 0) and (at_most is None or number <= at_most)):  # NaN: never
        if at_most is not None:
            kind = f"a number in {'[' if allow_zero else '('}0, {at_most:g}]"
        else:
            kind = "a non-negative number" if allow_zero else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return number


def check_text(name: str, value: object) -> str:
    """A string with something other than white space in it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value
