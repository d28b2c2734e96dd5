"""Tests of the per-model circuit breakers that cool down failing models."""

from __future__ import annotations

import numpy as np
import pytest

from banditroute.errors import ConfigError
from banditroute.health import BreakerState, HealthSettings, ModelHealth

SETTINGS = HealthSettings(
    consecutive_errors=3,
    error_rate=None,
    cooldown_seconds=10.0,
    backoff_factor=2.0,
    max_cooldown_seconds=30.0,
    probe_requests=2,
)


def call(health: ModelHealth, model: int, error: bool, now: float) -> None:
    """Route one request to ``model`` and report its outcome at the same time."""
    health.record_route(model, now)
    health.record_outcome(model, error, now, routed_at=now)


def open_model(health: ModelHealth, model: int, now: float) -> None:
    for _ in range(SETTINGS.consecutive_errors):
        call(health, model, error=True, now=now)


def test_consecutive_errors_open_breaker():
    health = ModelHealth(3, SETTINGS)
    call(health, 1, error=True, now=0.0)
    call(health, 1, error=True, now=1.0)
    assert health.allowed(1.0).tolist() == [True, True, True]

    call(health, 1, error=True, now=2.0)
    assert health.allowed(2.0).tolist() == [True, False, True]
    assert health.states(2.0)[1] == BreakerState.OPEN
    assert health.opened[1] == 1


def test_success_resets_consecutive_count():
    health = ModelHealth(2, SETTINGS)
    for now in range(10):
        call(health, 0, error=now % 3 == 2, now=float(now))
    assert health.allowed(10.0)[0]


def test_error_rate_opens_breaker():
    settings = HealthSettings(
        consecutive_errors=0, error_rate=0.5, window=10, min_window_requests=6
    )
    health = ModelHealth(2, settings)
    outcomes = [True, False, True, False, True]
    for now, error in enumerate(outcomes):
        call(health, 0, error, float(now))
    assert health.allowed(5.0)[0], "below min_window_requests the rate is ignored"

    call(health, 0, error=False, now=5.0)
    assert not health.allowed(5.0)[0], "3 errors in 6 calls reach the 50% rate"


def test_error_rate_window_forgets_old_calls():
    settings = HealthSettings(
        consecutive_errors=0, error_rate=0.5, window=4, min_window_requests=4
    )
    health = ModelHealth(1, settings)
    for now, error in enumerate([True, False, False, False, False, True]):
        call(health, 0, error, float(now))
    # The window holds the last four calls: 1 error in 4, below the rate.
    assert health.states(6.0)[0] == BreakerState.CLOSED


def test_cooldown_ends_in_half_open_state():
    health = ModelHealth(2, SETTINGS)
    open_model(health, 0, now=100.0)

    assert not health.allowed(109.9)[0]
    assert health.allowed(110.0)[0]
    assert health.states(110.0)[0] == BreakerState.HALF_OPEN


def test_half_open_bounds_probe_requests():
    health = ModelHealth(2, SETTINGS)
    open_model(health, 0, now=0.0)

    health.record_route(0, 10.0)
    assert health.allowed(10.0)[0]
    health.record_route(0, 10.5)
    assert not health.allowed(11.0)[0], "two probes are routed and unanswered"


def test_successful_probe_closes_breaker():
    health = ModelHealth(2, SETTINGS)
    open_model(health, 0, now=0.0)

    call(health, 0, error=False, now=12.0)
    assert health.states(12.0)[0] == BreakerState.CLOSED
    assert health.cooldown[0] == SETTINGS.cooldown_seconds

    # Closed again, the model needs a full run of errors to open once more.
    call(health, 0, error=True, now=13.0)
    assert health.allowed(13.0)[0]


def test_failed_probe_reopens_with_longer_cooldown():
    health = ModelHealth(2, SETTINGS)
    open_model(health, 0, now=0.0)

    call(health, 0, error=True, now=10.0)
    assert health.states(10.0)[0] == BreakerState.OPEN
    assert not health.allowed(29.9)[0]
    assert health.allowed(30.0)[0], "the second cooldown lasts 20 s"

    call(health, 0, error=True, now=30.0)
    assert not health.allowed(59.9)[0]
    assert health.allowed(60.0)[0], "the third cooldown is capped at 30 s"
    assert health.opened[0] == 3


def test_late_feedback_does_not_close_breaker():
    health = ModelHealth(2, SETTINGS)
    open_model(health, 0, now=0.0)
    health.record_route(0, 10.0)

    # Success of a call routed before the outage, reported after the cooldown.
    health.record_outcome(0, error=False, now=11.0, routed_at=-5.0)
    assert health.states(11.0)[0] == BreakerState.HALF_OPEN


def test_outcomes_while_open_are_ignored():
    health = ModelHealth(2, SETTINGS)
    open_model(health, 0, now=0.0)
    health.record_outcome(0, error=False, now=5.0)
    assert health.states(5.0)[0] == BreakerState.OPEN
    assert health.open_until[0] == 10.0


def test_unanswered_probes_get_new_budget():
    health = ModelHealth(2, SETTINGS)
    open_model(health, 0, now=0.0)
    health.record_route(0, 10.0)
    health.record_route(0, 10.0)

    assert not health.allowed(19.9)[0]
    assert health.allowed(20.0)[0], "no outcome within a cooldown of the probes"
    health.record_route(0, 20.0)
    assert health.probes_routed[0] == 1


def test_all_models_open_allows_first_to_recover():
    health = ModelHealth(2, SETTINGS)
    open_model(health, 0, now=0.0)
    open_model(health, 1, now=1.0)
    assert health.allowed(5.0).tolist() == [True, False]


def test_always_failing_model_gets_bounded_traffic():
    # A model that fails every call, offered every request for 10,000 s.
    health = ModelHealth(2, SETTINGS)
    routed = 0
    for now in range(10_000):
        if health.allowed(float(now))[0]:
            routed += 1
            call(health, 0, error=True, now=float(now))

    # 3 calls to open, then one probe per cooldown, which is at most 30 s.
    cooldowns = health.opened[0]
    assert routed == SETTINGS.consecutive_errors + cooldowns - 1
    assert routed <= SETTINGS.consecutive_errors + 10_000 / 30 + 1


def test_restore_continues_identically():
    rng = np.random.default_rng(0)
    events = [(int(rng.integers(3)), bool(rng.random() < 0.6)) for _ in range(400)]
    original = ModelHealth(3, SETTINGS)
    for now, (model, error) in enumerate(events[:200]):
        if original.allowed(float(now))[model]:
            call(original, model, error, float(now))

    restored = ModelHealth(3, SETTINGS)
    restored.restore(original.snapshot())
    for now, (model, error) in enumerate(events[200:], start=200):
        for health in (original, restored):
            if health.allowed(float(now))[model]:
                call(health, model, error, float(now))

    for name, value in original.snapshot().items():
        np.testing.assert_array_equal(restored.snapshot()[name], value, err_msg=name)
    assert original.opened.sum() > 1


def test_restore_rejects_other_catalog_size():
    state = ModelHealth(3, SETTINGS).snapshot()
    with pytest.raises(ConfigError, match="shape"):
        ModelHealth(2, SETTINGS).restore(state)


def test_unknown_model_index_raises():
    with pytest.raises(IndexError, match="out of range"):
        ModelHealth(2, SETTINGS).record_route(5, 0.0)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"consecutive_errors": 0, "error_rate": None}, "Both opening rules"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"window": 5, "min_window_requests": 6}, "min_window_requests"),
        ({"probe_requests": 0}, "probe_requests"),
        ({"cooldown_seconds": 0.0}, "cooldown_seconds"),
        ({"backoff_factor": 0.5}, "backoff_factor"),
        ({"cooldown_seconds": 60.0, "max_cooldown_seconds": 30.0}, "max_cooldown"),
    ],
)
def test_settings_reject_invalid_values(arguments, named):
    with pytest.raises(ConfigError, match=named):
        HealthSettings(**arguments)
