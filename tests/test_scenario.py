"""Replay scenarios: outcome rewrites, adaptation metrics, and replays through them."""

import dataclasses

import numpy as np
import pytest
from test_replay import make_contexts, make_log, make_test_policy, random_log

from banditroute.catalog import Catalog, ModelSpec
from banditroute.errors import ConfigError
from banditroute.policies import make_policy
from banditroute.replay import ReplaySettings, replay
from banditroute.scenario import (
    Scenario,
    adaptation,
    arrival_model,
    parse_scenario,
    stream_outcomes,
    window_shares,
)

CATALOG = Catalog(
    [
        ModelSpec("a", 1.0, 2.0),
        ModelSpec("b", 0.5, 0.5),
        ModelSpec("c", 3.0, 6.0),
    ]
)
QUALITY = np.array([[0.9, 0.5, 0.1]] * 10) + np.arange(10)[:, None] * 0.001
COST = np.tile([0.01, 0.02, 0.03], (10, 1))
TOKENS = np.full((10, 3), 100.0)
INPUT_TOKENS = np.full(10, 50.0)


def apply(text):
    return stream_outcomes(
        parse_scenario(text), CATALOG, QUALITY, COST, TOKENS, INPUT_TOKENS
    )


def test_parse_scenario_kinds():
    assert parse_scenario("stationary") == Scenario()
    assert parse_scenario("drift-swap: a , b").models == ("a", "b")


@pytest.mark.parametrize(
    "text", ["drift", "drift-drop", "drift-swap:a", "arrival:a,b", "drift-swap:a,a"]
)
def test_parse_scenario_rejects_invalid(text):
    with pytest.raises(ConfigError):
        parse_scenario(text)


def test_scenario_validate_unknown_model():
    with pytest.raises(ConfigError, match="not in the log"):
        parse_scenario("drift-drop:z").validate(CATALOG)


def test_stationary_keeps_outcomes():
    outcomes = apply("stationary")
    np.testing.assert_array_equal(outcomes.quality, QUALITY)
    assert outcomes.change_step is None


def test_drift_drop_replaces_quality_after_change():
    outcomes = apply("drift-drop:a")
    assert outcomes.change_step == 5
    np.testing.assert_array_equal(outcomes.quality[:5], QUALITY[:5])
    np.testing.assert_array_equal(outcomes.quality[5:, 0], QUALITY[5:, 2])
    np.testing.assert_array_equal(outcomes.quality[:, 1:], QUALITY[:, 1:])
    np.testing.assert_array_equal(outcomes.cost_usd, COST)


def test_drift_swap_exchanges_qualities_after_change():
    outcomes = apply("drift-swap:a,b")
    np.testing.assert_array_equal(outcomes.quality[:5], QUALITY[:5])
    np.testing.assert_array_equal(outcomes.quality[5:, 0], QUALITY[5:, 1])
    np.testing.assert_array_equal(outcomes.quality[5:, 1], QUALITY[5:, 0])


def test_arrival_adds_cheap_copy():
    outcomes = apply("arrival:c")
    spec = arrival_model(parse_scenario("arrival:c"), CATALOG)

    assert spec == ModelSpec("c-cheap", 0.5, 0.5)
    assert outcomes.added_model == spec
    assert outcomes.quality.shape == (10, 4)
    np.testing.assert_array_equal(outcomes.quality[:, 3], QUALITY[:, 2])
    np.testing.assert_allclose(outcomes.cost_usd[:, 3], (50 * 0.5 + 100 * 0.5) / 1e6)


def test_window_shares_counts_model():
    chosen = np.array([0, 1, 1, 0, 1])
    np.testing.assert_allclose(window_shares(chosen, 1, 2), [0.5, 1.0, 0.5, 0.5])


def test_adaptation_counts_steps_to_shift():
    # Model 0 has every step before the change, then 30 more, then none.
    chosen = np.array([0] * 100 + [0] * 30 + [1] * 70)
    reward = np.where(chosen == 0, 0.2, 0.9)
    oracle = np.full(200, 0.9)
    measured = adaptation(chosen, reward, oracle, 100, 0, arrived=False, window=20)

    # The window of 20 starting at step 100 + t contains 30 - t zeros while t <= 30, so
    # its share first drops below 0.5 (half of 1.0) at t = 21.
    assert measured.threshold == 0.5
    assert measured.shift_steps == 21
    assert measured.regret_until_shift == pytest.approx(21 * 0.7)
    assert measured.regret_after_change == pytest.approx(30 * 0.7 / 100)


def test_adaptation_reports_never_shifted():
    chosen = np.zeros(200, dtype=int)
    reward = np.zeros(200)
    measured = adaptation(chosen, reward, reward, 100, 0, arrived=False, window=20)
    assert measured.shift_steps is None


def test_adaptation_of_arrived_model():
    chosen = np.array([0] * 100 + [0] * 10 + [3] * 90)
    reward = np.zeros(200)
    measured = adaptation(chosen, reward, reward, 100, 3, arrived=True, window=20)
    assert measured.shift_steps == 1


def test_replay_drift_changes_rewards_after_midpoint():
    log = random_log(40)
    result = replay(
        log,
        make_contexts(len(log)),
        ReplaySettings(
            policies=("fixed:c",), seeds=1, scenario=parse_scenario("drift-drop:c")
        ),
        progress=False,
        policy_factory=make_test_policy,
    )
    trace = result.runs[0]
    quality = log.quality[trace.rows]
    worst = int(np.argmin(quality.mean(axis=0)))
    np.testing.assert_array_equal(trace.quality[:20], quality[:20, 2])
    np.testing.assert_array_equal(trace.quality[20:], quality[20:, worst])


def test_replay_arrival_adds_model_at_midpoint():
    rng = np.random.default_rng(3)
    quality = np.column_stack(
        [rng.random(400) < 0.8, rng.random(400) < 0.3, rng.random(400) < 0.5]
    ).astype(float)
    # One input and ten output tokens per prompt, so the costs match the prices.
    priced = Catalog(
        [
            ModelSpec("a", 1000.0, 1000.0),
            ModelSpec("b", 100.0, 100.0),
            ModelSpec("c", 100.0, 100.0),
        ]
    )
    cost = np.tile([0.011, 0.0011, 0.0011], (400, 1))
    log = dataclasses.replace(make_log(quality, cost), catalog=priced)
    result = replay(
        log,
        make_contexts(len(log)),
        ReplaySettings(
            policies=("thompson",),
            seeds=2,
            cost_weights=(10.0,),
            scenario=parse_scenario("arrival:a"),
        ),
        progress=False,
    )
    assert result.model_names == ("a", "b", "c", "a-cheap")
    for trace in result.runs:
        assert not np.any(trace.model_index[:200] == 3)
        assert np.mean(trace.model_index[300:] == 3) > 0.8
    assert result.summaries[0].shares.shape[2] == 4


def test_replay_arrival_rejects_policy_without_add_model():
    log = random_log(20)
    with pytest.raises(ConfigError, match="cannot add models"):
        replay(
            log,
            make_contexts(len(log)),
            ReplaySettings(policies=("linucb",), scenario=parse_scenario("arrival:a")),
            progress=False,
            policy_factory=make_policy,
        )
