"""Tests of the gradual rollout: group assignment and the group comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from banditroute.errors import ConfigError
from banditroute.rollout import (
    OUTCOMES,
    Rollout,
    RolloutGroup,
    RolloutStats,
    mean_interval,
    welch_interval,
)


def test_rollout_assigns_share_to_bandit():
    rollout = Rollout(0.3, default_model=2)
    rng = np.random.default_rng(0)
    groups = np.array([rollout.assign(rng) for _ in range(20_000)])

    share = (groups == RolloutGroup.BANDIT).mean()
    assert share == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize(("share", "expected"), [(0.0, 0), (1.0, 1)])
def test_rollout_share_bounds_are_exact(share, expected):
    rollout = Rollout(share, default_model=0)
    rng = np.random.default_rng(1)
    assert {int(rollout.assign(rng)) for _ in range(500)} == {expected}


def test_rollout_share_changes_at_run_time():
    rollout = Rollout(0.0, default_model=0)
    rng = np.random.default_rng(2)
    assert rollout.assign(rng) == RolloutGroup.DEFAULT

    rollout.set_share(1.0)
    assert rollout.assign(rng) == RolloutGroup.BANDIT


@pytest.mark.parametrize("share", [-0.1, 1.1, math.nan])
def test_rollout_rejects_invalid_share(share):
    with pytest.raises(ConfigError, match="share"):
        Rollout(share, default_model=0)


def test_stats_match_numpy_means_and_variances():
    rng = np.random.default_rng(3)
    groups = rng.integers(2, size=500)
    quality = rng.random(500)
    cost = rng.choice([1e-5, 3e-4], size=500)
    weight = 100.0
    rollout_stats = RolloutStats()
    for group, q, c in zip(groups, quality, cost, strict=True):
        rollout_stats.record(int(group), float(q), float(c), weight)

    values = np.column_stack([quality, cost, quality - weight * cost])
    for group in RolloutGroup:
        rows = values[groups == group]
        assert rollout_stats.count[group] == len(rows)
        np.testing.assert_allclose(rollout_stats.mean[group], rows.mean(axis=0))
        np.testing.assert_allclose(
            rollout_stats.variance(group), rows.var(axis=0, ddof=1)
        )


def test_welch_interval_matches_scipy():
    rng = np.random.default_rng(4)
    first = rng.normal(0.6, 0.3, size=80)
    second = rng.normal(0.5, 0.1, size=200)

    interval = welch_interval(
        (first.mean(), first.var(ddof=1), len(first)),
        (second.mean(), second.var(ddof=1), len(second)),
    )
    expected = stats.ttest_ind(first, second, equal_var=False).confidence_interval(0.95)
    assert interval.estimate == pytest.approx(first.mean() - second.mean())
    assert interval.low == pytest.approx(expected.low)
    assert interval.high == pytest.approx(expected.high)


def test_mean_interval_matches_scipy():
    rng = np.random.default_rng(5)
    sample = rng.normal(1.0, 2.0, size=30)
    interval = mean_interval(sample.mean(), sample.var(ddof=1), len(sample))
    expected = stats.ttest_1samp(sample, 0.0).confidence_interval(0.95)
    assert interval.low == pytest.approx(expected.low)
    assert interval.high == pytest.approx(expected.high)


def test_intervals_undefined_below_two_requests():
    assert math.isnan(mean_interval(0.5, math.nan, 1).low)
    assert math.isnan(welch_interval((0.5, math.nan, 1), (0.4, 0.1, 10)).estimate)


def test_compare_detects_better_bandit_group():
    rng = np.random.default_rng(6)
    rollout_stats = RolloutStats()
    for _ in range(2000):
        group = int(rng.integers(2))
        quality = float(rng.random() < (0.7 if group else 0.5))
        rollout_stats.record(group, quality, 0.001, cost_weight=10.0)

    comparison = {c.outcome: c for c in rollout_stats.compare()}
    assert list(comparison) == list(OUTCOMES)
    quality = comparison["quality"].difference
    assert quality.low > 0
    assert quality.low < 0.2 < quality.high
    assert comparison["reward"].difference.excludes_zero()
    assert comparison["cost_usd"].difference.estimate == 0.0


def test_compare_includes_zero_for_equal_groups():
    rng = np.random.default_rng(7)
    rollout_stats = RolloutStats()
    for _ in range(2000):
        rollout_stats.record(int(rng.integers(2)), float(rng.random()), 0.0, 0.0)
    assert not rollout_stats.compare()[0].difference.excludes_zero()


def test_stats_restore_continues_identically():
    rng = np.random.default_rng(8)
    events = [(int(rng.integers(2)), float(rng.random())) for _ in range(100)]
    original = RolloutStats()
    for group, quality in events[:50]:
        original.record(group, quality, 0.001, 5.0)

    restored = RolloutStats()
    restored.restore(original.snapshot())
    for group, quality in events[50:]:
        original.record(group, quality, 0.001, 5.0)
        restored.record(group, quality, 0.001, 5.0)

    for name, value in original.snapshot().items():
        np.testing.assert_array_equal(restored.snapshot()[name], value, err_msg=name)


def test_stats_reject_non_finite_outcome():
    with pytest.raises(ValueError, match="finite"):
        RolloutStats().record(RolloutGroup.BANDIT, math.nan, 0.0, 0.0)
