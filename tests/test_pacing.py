"""Tests of the budget pacer that adapts the cost weight to a spend target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditroute.errors import ConfigError
from banditroute.pacing import BudgetPacer

TARGET = 0.002
CHEAP, EXPENSIVE = 0.0005, 0.01


def simulate(pacer: BudgetPacer, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Route ``steps`` requests of a two-model market and return their costs.

    The expensive model is worth 0.2 quality points more, so a router that maximizes
    quality - weight x cost takes it while weight < 0.2 / (EXPENSIVE - CHEAP) ~ 21,
    blurred by noise on the quality gap.
    """
    costs = np.empty(steps)
    for step in range(steps):
        gap = 0.2 + 0.1 * rng.standard_normal()
        expensive = gap > pacer.weight * (EXPENSIVE - CHEAP)
        costs[step] = EXPENSIVE if expensive else CHEAP
        pacer.observe(costs[step], timestamp=float(step))
    return costs


def test_pacer_meets_target_after_warmup():
    pacer = BudgetPacer(TARGET, warmup_requests=100)
    costs = simulate(pacer, 5000, np.random.default_rng(0))

    realized = costs[100:].mean()
    assert realized == pytest.approx(pacer.mean_cost_usd)
    assert abs(realized / TARGET - 1.0) < 0.05


def test_pacer_gap_matches_weight_drift():
    pacer = BudgetPacer(TARGET, warmup_requests=0, learning_rate=0.05, deficit_gain=0.0)
    initial = math.log(pacer.weight)
    simulate(pacer, 2000, np.random.default_rng(1))

    drift = math.log(pacer.weight) - initial
    expected = 0.05 * 2000 * (pacer.mean_cost_usd - TARGET) / TARGET
    assert drift == pytest.approx(expected, rel=1e-9)


def test_pacer_deficit_pays_back_transient():
    # Starting 100 times above the equilibrium weight (about 21), the pacer first
    # underspends. With the deficit term, later requests make up for it.
    results = {}
    for gain in (0.0, 1.0):
        pacer = BudgetPacer(
            TARGET, warmup_requests=0, initial_weight=2000.0, deficit_gain=gain
        )
        costs = simulate(pacer, 800, np.random.default_rng(2))
        results[gain] = costs.mean() / TARGET - 1.0

    assert results[0.0] < -0.1
    assert abs(results[1.0]) < 0.05


def test_pacer_forgets_overspend_after_payback_horizon():
    pacer = BudgetPacer(
        TARGET, warmup_requests=0, initial_weight=10.0, payback_requests=100
    )
    for step in range(200):
        pacer.observe(EXPENSIVE, timestamp=float(step))
    assert pacer.weight > 10.0, "the overspend raised the weight"

    # Spending at the target, the deficit term fades within a few horizons.
    for step in range(200, 1000):
        pacer.observe(TARGET, timestamp=float(step))
    settled = pacer.weight
    for step in range(1000, 1100):
        pacer.observe(TARGET, timestamp=float(step))
    assert pacer.weight == pytest.approx(settled, rel=1e-3)


def test_pacer_holds_weight_during_warmup():
    pacer = BudgetPacer(TARGET, warmup_requests=10, initial_weight=5.0)
    for step in range(10):
        pacer.observe(EXPENSIVE, timestamp=float(step))

    assert pacer.weight == pytest.approx(5.0)
    assert math.isnan(pacer.mean_cost_usd)
    pacer.observe(EXPENSIVE, timestamp=10.0)
    assert pacer.weight > 5.0


def test_pacer_lowers_weight_when_underspending():
    pacer = BudgetPacer(TARGET, warmup_requests=0, initial_weight=50.0)
    for step in range(20):
        pacer.observe(CHEAP, timestamp=float(step))
    assert pacer.weight < 50.0


def test_pacer_weight_stays_within_bounds():
    pacer = BudgetPacer(
        TARGET,
        warmup_requests=0,
        initial_weight=1.0,
        min_weight=0.5,
        max_weight=2.0,
        deficit_gain=0.0,
    )
    for step in range(500):
        pacer.observe(1.0, timestamp=float(step))
    assert pacer.weight == pytest.approx(2.0)

    for step in range(500, 5000):
        pacer.observe(0.0, timestamp=float(step))
    assert pacer.weight == pytest.approx(0.5)


def test_pacer_hourly_budget_sets_target():
    # 3600 requests an hour and 3.6 USD an hour allow 0.001 USD per request.
    pacer = BudgetPacer(None, target_usd_per_hour=3.6, initial_weight=10.0)
    for step in range(3):
        pacer.observe(0.001, timestamp=float(step))
    assert pacer.current_target() == pytest.approx(0.001)


def test_pacer_takes_smaller_of_two_targets():
    pacer = BudgetPacer(0.01, target_usd_per_hour=3.6)
    pacer.observe(0.0, timestamp=0.0)
    assert pacer.current_target() == 0.01

    pacer.observe(0.0, timestamp=1.0)
    assert pacer.current_target() == pytest.approx(0.001)


def test_pacer_hourly_budget_needs_timestamp():
    pacer = BudgetPacer(None, target_usd_per_hour=1.0, initial_weight=1.0)
    with pytest.raises(ValueError, match="timestamp"):
        pacer.observe(0.001)


def test_pacer_rejects_time_going_back():
    pacer = BudgetPacer(TARGET)
    pacer.observe(0.001, timestamp=10.0)
    with pytest.raises(ValueError, match="before the previous event"):
        pacer.observe(0.001, timestamp=9.0)


@pytest.mark.parametrize("cost", [-0.1, math.nan, math.inf])
def test_pacer_rejects_invalid_cost(cost):
    pacer = BudgetPacer(TARGET)
    with pytest.raises(ValueError, match="cost_usd"):
        pacer.observe(cost)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"target_cost_usd": None}, "no target"),
        ({"target_cost_usd": 0.0}, "target_cost_usd"),
        ({"target_cost_usd": TARGET, "learning_rate": 0.0}, "learning_rate"),
        ({"target_cost_usd": TARGET, "warmup_requests": -1}, "warmup_requests"),
        ({"target_cost_usd": TARGET, "deficit_gain": -1.0}, "deficit_gain"),
        ({"target_cost_usd": TARGET, "payback_requests": 0}, "payback_requests"),
        (
            {"target_cost_usd": TARGET, "initial_weight": 1e3, "max_weight": 10.0},
            "initial_weight",
        ),
        ({"target_cost_usd": None, "target_usd_per_hour": 1.0}, "initial weight"),
    ],
)
def test_pacer_rejects_invalid_settings(arguments, named):
    with pytest.raises(ConfigError, match=named):
        BudgetPacer(**arguments)


def test_pacer_restore_continues_identically():
    rng = np.random.default_rng(3)
    costs = rng.choice([CHEAP, EXPENSIVE], size=600)
    original = BudgetPacer(TARGET, warmup_requests=50)
    for step, cost in enumerate(costs[:300]):
        original.observe(float(cost), timestamp=float(step))

    restored = BudgetPacer(TARGET, warmup_requests=50)
    restored.restore(original.snapshot())
    for step, cost in enumerate(costs[300:], start=300):
        original.observe(float(cost), timestamp=float(step))
        restored.observe(float(cost), timestamp=float(step))

    for name, value in original.snapshot().items():
        np.testing.assert_array_equal(restored.snapshot()[name], value, err_msg=name)
    assert restored.weight == original.weight


def test_pacer_restore_rejects_incomplete_state():
    pacer = BudgetPacer(TARGET)
    state = pacer.snapshot()
    del state["log_weight"]
    with pytest.raises(ConfigError, match="log_weight"):
        pacer.restore(state)
