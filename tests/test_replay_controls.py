"""Tests of budget pacing, model health and rollout inside the offline replay."""

from __future__ import annotations

import json

import numpy as np
import pytest

from banditroute.catalog import Catalog, ModelSpec
from banditroute.controls import ControlSettings
from banditroute.errors import ConfigError
from banditroute.health import HealthSettings
from banditroute.replay import ReplaySettings, replay
from banditroute.report import control_summaries, write_report
from banditroute.rollout import RolloutGroup
from banditroute.routing_log import LoadReport, RoutingLog

MODEL_NAMES = ("small", "medium", "large")
SUCCESS_RATE = np.array([0.3, 0.55, 0.8])
COST_USD = np.array([0.001, 0.01, 0.05])
"""Cost of one call of each model, for one input and 100 output tokens."""
PRICES_PER_MTOK = COST_USD / 101 * 1e6


def make_log(n_prompts: int, seed: int = 0) -> RoutingLog:
    """Build a log where quality rises with price and prompts share one context."""
    rng = np.random.default_rng(seed)
    quality = (rng.random((n_prompts, 3)) < SUCCESS_RATE).astype(float)
    catalog = Catalog(
        ModelSpec(name, price, price)
        for name, price in zip(MODEL_NAMES, PRICES_PER_MTOK, strict=True)
    )
    report = LoadReport(
        source="memory",
        rows=quality.size,
        prompts=n_prompts,
        models=3,
        duplicate_rows=0,
        missing_model_rows=0,
        null_quality=0,
        incomplete_prompts=0,
    )
    return RoutingLog(
        prompt_ids=[f"p{i}" for i in range(n_prompts)],
        prompts=[f"prompt {i}" for i in range(n_prompts)],
        categories=["test"] * n_prompts,
        catalog=catalog,
        quality=quality,
        cost_usd=np.tile(COST_USD, (n_prompts, 1)),
        input_tokens=np.ones(n_prompts),
        output_tokens=np.full(quality.shape, 100.0),
        report=report,
    )


def run(log: RoutingLog, controls: ControlSettings, **settings):
    settings.setdefault("policies", ("thompson",))
    settings.setdefault("seeds", 2)
    return replay(
        log,
        np.ones((len(log), 2)),
        ReplaySettings(controls=controls, **settings),
        progress=False,
    )


# Budget pacing


def test_paced_replay_meets_cost_target():
    target = 0.01
    controls = ControlSettings(cost_target=target, pacing_warmup_requests=100)
    result = run(make_log(3000), controls)

    for trace in result.runs:
        weights = trace.controls["cost_weight"]
        assert np.all(weights[:100] == weights[0]), "weight held in the warm-up"
        assert weights[-1] != weights[0]
        realized = trace.cost_usd[100:].mean()
        assert abs(realized / target - 1.0) < 0.05, (trace.seed, realized)


def test_paced_replay_reports_pacing(tmp_path):
    controls = ControlSettings(cost_target=0.01, pacing_warmup_requests=50)
    result = run(make_log(400), controls)
    write_report(result, tmp_path, title="paced")

    document = json.loads((tmp_path / "results.json").read_text())
    pacing = document["controls"][0]["pacing"]
    assert len(pacing["mean_cost_after_warmup"]["per_seed"]) == 2
    assert document["settings"]["controls"]["cost_target"] == 0.01
    assert "## Budget pacing" in (tmp_path / "summary.md").read_text()


def test_unpaced_replay_records_no_controls():
    result = run(make_log(50), ControlSettings())
    assert all(trace.controls == {} for trace in result.runs)
    assert control_summaries(result) == {}


# Failing models


def failing_controls(health: HealthSettings | None) -> ControlSettings:
    return ControlSettings(
        failing_model="large",
        failing_from_step=300,
        seconds_per_request=1.0,
        health=health,
    )


def test_failing_model_calls_fail_unbilled():
    result = run(make_log(600), failing_controls(None), seeds=1)
    trace = result.runs[0]

    failed = trace.controls["error"]
    large = trace.model_index == MODEL_NAMES.index("large")
    np.testing.assert_array_equal(failed, large & (np.arange(600) >= 300))
    assert np.all(trace.quality[failed] == 0.0)
    assert np.all(trace.cost_usd[failed] == 0.0)


def test_breakers_bound_failing_model_traffic():
    health = HealthSettings(consecutive_errors=3, cooldown_seconds=20.0)
    log = make_log(1500)
    without = run(log, failing_controls(None))
    with_breakers = run(log, failing_controls(health))

    summaries = control_summaries(with_breakers)[("thompson", 0.0)]["failure"]
    before = summaries["requests_before_cooldown"].values
    total = summaries["requests_total"].values
    assert np.all(before <= 3)
    # After the first cooldown: one probe per cooldown, at most 1200 / 20 of them.
    assert np.all(total <= 3 + 1200 / 20)

    baseline = control_summaries(without)[("thompson", 0.0)]["failure"]
    assert np.all(np.isnan(baseline["requests_before_cooldown"].values))
    assert np.all(baseline["requests_total"].values > total)


def test_blocked_model_gets_no_requests():
    controls = failing_controls(HealthSettings(consecutive_errors=2))
    result = run(make_log(800), controls, seeds=1)
    trace = result.runs[0]
    blocked = ~trace.controls["failing_allowed"]
    assert blocked.any()
    assert not np.any(trace.model_index[blocked] == MODEL_NAMES.index("large"))


# Rollout


def test_rollout_routes_default_group_to_default_model():
    controls = ControlSettings(rollout_share=0.3, default_model="small")
    result = run(make_log(1000), controls, policies=("thompson", "random"))

    for trace in result.runs:
        group = trace.controls["group"]
        default = group == RolloutGroup.DEFAULT
        assert np.all(trace.model_index[default] == 0)
        assert np.all(trace.propensity[default] == 1.0)
        assert (group == RolloutGroup.BANDIT).mean() == pytest.approx(0.3, abs=0.05)

    by_seed = {}
    for trace in result.runs:
        by_seed.setdefault(trace.seed, []).append(trace.controls["group"])
    for seed, groups in by_seed.items():
        np.testing.assert_array_equal(groups[0], groups[1], err_msg=f"seed {seed}")


def test_rollout_report_compares_groups(tmp_path):
    controls = ControlSettings(rollout_share=0.5, default_model="small")
    result = run(make_log(1500), controls, seeds=1)
    write_report(result, tmp_path, title="rollout")

    document = json.loads((tmp_path / "results.json").read_text())
    rollout = document["controls"][0]["rollout"]
    difference = rollout["difference_quality"]["mean"]
    assert difference > 0, "Thompson sampling beats the weakest model"
    assert rollout["difference_quality_low"]["mean"] > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "## Rollout" in summary
    assert "| quality |" in summary


def test_controlled_replay_is_deterministic_across_jobs():
    controls = ControlSettings(
        cost_target=0.01,
        pacing_warmup_requests=20,
        rollout_share=0.5,
        default_model="medium",
        failing_model="large",
        failing_from_step=50,
        health=HealthSettings(),
    )
    log = make_log(200)
    first = run(log, controls)
    second = replay(
        log,
        np.ones((len(log), 2)),
        ReplaySettings(policies=("thompson",), seeds=2, controls=controls),
        progress=False,
        jobs=2,
    )
    for trace_a, trace_b in zip(first.runs, second.runs, strict=True):
        np.testing.assert_array_equal(trace_a.model_index, trace_b.model_index)
        for name, values in trace_a.controls.items():
            np.testing.assert_array_equal(values, trace_b.controls[name], name)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"rollout_share": 0.5}, "both"),
        ({"rollout_share": 1.5, "default_model": "small"}, "share"),
        ({"cost_target": -1.0}, "target_cost_usd"),
        ({"seconds_per_request": 0.0}, "seconds_per_request"),
        ({"failing_from_step": -1}, "failing_from_step"),
    ],
)
def test_control_settings_reject_invalid_values(arguments, named):
    with pytest.raises(ConfigError, match=named):
        ControlSettings(**arguments)


def test_replay_rejects_unknown_control_model():
    with pytest.raises(ConfigError, match="not in the catalog"):
        run(make_log(20), ControlSettings(failing_model="missing"))
