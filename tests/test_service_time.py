"""The engine's service-time fit and thread-count choice (pure logic), and the process settings
the engine makes (switch interval, frozen heap)."""

from __future__ import annotations

import gc
import sys

import pytest

from rerank_prod.engine import SWITCH_INTERVAL_S, shorten_switch_interval
from rerank_prod.heap import freeze_heap
from rerank_prod.service_time import ServiceTime, SettingChoice


def test_nothing_is_predicted_before_a_pass_is_measured() -> None:
    service = ServiceTime()
    assert not service.measured and service.seconds(100) is None
    service.observe(0, 1.0)  # no units: ignored
    service.observe(10, -1.0)  # negative time: ignored
    assert not service.measured


def test_a_line_is_recovered_from_passes_of_different_sizes() -> None:
    service = ServiceTime()
    for units in (100, 400, 250, 1000, 100, 700) * 3:
        service.observe(units, 0.02 + 0.0001 * units)
    assert service.per_pass_s == pytest.approx(0.02, rel=1e-6)
    assert service.per_unit_s == pytest.approx(0.0001, rel=1e-6)
    assert service.seconds(2000, passes=2) == pytest.approx(0.04 + 0.2, rel=1e-6)


def test_passes_of_one_size_follow_the_level_and_keep_a_fixed_cost() -> None:
    service = ServiceTime()
    for units in (100, 400) * 5:
        service.observe(units, 0.02 + 0.0001 * units)
    fixed = service.per_pass_s
    for _ in range(3):  # only 400-unit passes come: the two terms cannot be told apart
        service.observe(400, 0.02 + 0.0001 * 400)
    assert service.per_pass_s == pytest.approx(fixed, rel=0.05)
    for _ in range(30):  # the machine got twice as slow
        service.observe(400, 2 * (0.02 + 0.0001 * 400))
    assert service.seconds(400) == pytest.approx(0.12, rel=1e-3)
    assert 0 <= service.per_pass_s <= 0.8 * 0.12


def test_the_fixed_cost_never_takes_the_whole_pass() -> None:
    service = ServiceTime()
    for units in (100, 400) * 5:  # bigger passes measured faster: noise, not a negative cost per unit
        service.observe(units, 0.05 - 0.00001 * units)
    assert service.per_unit_s is not None and service.per_unit_s > 0
    assert service.per_pass_s <= 0.8 * 0.05


def test_a_pass_far_off_the_prediction_moves_the_fit_within_a_few_passes() -> None:
    service = ServiceTime(weight=0.2)
    for units in (100, 400) * 5:
        service.observe(units, 10 * (0.02 + 0.0001 * units))  # as measured under a storm
    for units in (100, 400, 100, 400):  # the storm ended: 10x faster
        service.observe(units, 0.02 + 0.0001 * units)
    estimate = service.seconds(400)
    assert estimate is not None and estimate < 2 * 0.06


def test_weight_is_validated() -> None:
    with pytest.raises(ValueError, match="weight"):
        ServiceTime(weight=1.5)
    with pytest.raises(ValueError, match="weight"):
        ServiceTime(weight=0)


def test_the_setting_measured_fastest_is_used_and_the_others_are_retried() -> None:
    choice = SettingChoice((2, 1), explore_every=4)
    seconds = {2: 0.1, 1: 0.05}
    used = []
    for _ in range(40):
        setting = choice.next_setting()
        used.append(setting)
        choice.observe(setting, 100, seconds[setting])
    assert used[0] == 2 and choice.current == 1 and choice.service is choice.services[1]
    assert 2 in used[10:], "the slower setting is never re-tried: a change of load would go unseen"
    seconds = {2: 0.01, 1: 0.05}  # the load changed: 2 threads are faster now
    for _ in range(8):
        setting = choice.next_setting()
        choice.observe(setting, 100, seconds[setting])
    assert choice.current == 2


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="distinct"):
        SettingChoice(())
    with pytest.raises(ValueError, match="distinct"):
        SettingChoice((1, 1))
    assert SettingChoice((0,)).next_setting() == 0


def test_the_switch_interval_is_shortened_only_from_pythons_default() -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        shorten_switch_interval()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        sys.setswitchinterval(0.002)  # the user's choice
        shorten_switch_interval()
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)


def test_freezing_the_heap_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANK_PROD_GC_FREEZE", "0")
    frozen = gc.get_freeze_count()
    assert freeze_heap() is False and gc.get_freeze_count() == frozen
    monkeypatch.delenv("RERANK_PROD_GC_FREEZE")
    kept = [object() for _ in range(10)]
    assert freeze_heap() is True and gc.get_freeze_count() >= frozen + len(kept)
