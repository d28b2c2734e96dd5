"""Tests of the offline replay on small full-information logs built in memory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditroute.catalog import Catalog, ModelSpec
from banditroute.errors import ConfigError, LogFormatError
from banditroute.policy import Decision, Policy, argmax_random_tie
from banditroute.replay import (
    ReplaySettings,
    gap_recovered,
    hindsight,
    last_fifth_size,
    replay,
    window_edges,
)
from banditroute.routing_log import LoadReport, RoutingLog

MODEL_NAMES = ("a", "b", "c")

# Five prompts where each model wins some prompts. Each model costs the same on every
# prompt, so the expected values below can be checked by hand.
QUALITY = np.array(
    [
        [1.0, 0.0, 1.0],
        [0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
    ]
)
COST_PER_CALL = np.array([0.001, 0.01, 0.05])


# Small policies with known behaviour, so that the replay is tested on its own.


class FixedModelPolicy(Policy):
    """Chooses one model for every request."""

    def __init__(self, catalog: Catalog, rng: np.random.Generator, model: int) -> None:
        super().__init__(catalog, rng)
        self.model = model

    def decide(self, context, input_tokens, cost_weight, allowed=None) -> Decision:
        scores = np.full(self.n_models, -np.inf)
        scores[self.model] = 0.0
        return Decision(
            model_index=self.model,
            propensity=1.0,
            expected_cost_usd=self.cost_model.expected_cost(input_tokens),
            scores=scores,
        )

    def update_quality(self, model_index, context, quality) -> None:
        pass


class EpsilonGreedyPolicy(Policy):
    """Chooses the best mean quality minus weighted cost, exploring with ``epsilon``."""

    def __init__(
        self, catalog: Catalog, rng: np.random.Generator, epsilon: float
    ) -> None:
        super().__init__(catalog, rng)
        self.epsilon = epsilon
        self.quality_sum = np.full(self.n_models, 0.5)
        self.count = np.ones(self.n_models)

    def decide(self, context, input_tokens, cost_weight, allowed=None) -> Decision:
        cost = self.cost_model.expected_cost(input_tokens)
        scores = self.quality_sum / self.count - cost_weight * cost
        allowed = np.ones(self.n_models, dtype=bool)
        greedy = argmax_random_tie(scores, allowed, self.rng)

        model = greedy
        if self.rng.random() < self.epsilon:
            model = int(self.rng.integers(self.n_models))

        propensity = self.epsilon / self.n_models + (1 - self.epsilon) * (
            model == greedy
        )
        return Decision(model, propensity, cost, scores)

    def update_quality(self, model_index, context, quality) -> None:
        self.quality_sum[model_index] += quality
        self.count[model_index] += 1.0


def make_test_policy(
    name: str, catalog: Catalog, dimension: int, rng: np.random.Generator
) -> Policy:
    """Build ``fixed:<model>``, ``greedy`` or ``epsilon-greedy``."""
    if name.startswith("fixed:"):
        return FixedModelPolicy(
            catalog, rng, catalog.index(name.removeprefix("fixed:"))
        )
    if name == "greedy":
        return EpsilonGreedyPolicy(catalog, rng, epsilon=0.0)
    if name == "epsilon-greedy":
        return EpsilonGreedyPolicy(catalog, rng, epsilon=0.3)
    raise ConfigError(f"Unknown test policy {name!r}.")


# Log construction


def make_log(quality: np.ndarray, cost_usd: np.ndarray) -> RoutingLog:
    """Build a routing log of the given (prompts, 3) outcomes, one input token each."""
    n_prompts = len(quality)
    catalog = Catalog(ModelSpec(name, 0.0, 0.0) for name in MODEL_NAMES)
    report = LoadReport(
        source="memory",
        rows=quality.size,
        prompts=n_prompts,
        models=len(MODEL_NAMES),
        duplicate_rows=0,
        missing_model_rows=0,
        null_quality=int(np.isnan(quality).sum()),
        incomplete_prompts=0,
    )
    return RoutingLog(
        prompt_ids=[f"p{i}" for i in range(n_prompts)],
        prompts=[f"prompt {i}" for i in range(n_prompts)],
        categories=["test"] * n_prompts,
        catalog=catalog,
        quality=quality,
        cost_usd=cost_usd,
        input_tokens=np.ones(n_prompts),
        output_tokens=np.full(quality.shape, 10.0),
        report=report,
    )


def make_contexts(n_prompts: int) -> np.ndarray:
    return np.column_stack([np.ones(n_prompts), np.linspace(-1.0, 1.0, n_prompts)])


def hand_log() -> RoutingLog:
    return make_log(QUALITY.copy(), np.tile(COST_PER_CALL, (len(QUALITY), 1)))


def random_log(n_prompts: int, seed: int = 7) -> RoutingLog:
    rng = np.random.default_rng(seed)
    quality = (rng.random((n_prompts, 3)) < [0.3, 0.5, 0.7]).astype(float)
    cost = np.tile(COST_PER_CALL, (n_prompts, 1)) * rng.uniform(
        0.5, 1.5, (n_prompts, 1)
    )
    return make_log(quality, cost)


def run_replay(log: RoutingLog, **settings) -> object:
    jobs = settings.pop("jobs", 1)
    return replay(
        log,
        make_contexts(len(log)),
        ReplaySettings(**settings),
        progress=False,
        jobs=jobs,
        policy_factory=make_test_policy,
    )


def assert_same_traces(first, second) -> None:
    assert len(first.runs) == len(second.runs)
    for run_a, run_b in zip(first.runs, second.runs, strict=True):
        assert (run_a.policy, run_a.cost_weight, run_a.seed) == (
            run_b.policy,
            run_b.cost_weight,
            run_b.seed,
        )
        for field in (
            "rows",
            "model_index",
            "quality",
            "cost_usd",
            "reward",
            "propensity",
        ):
            np.testing.assert_array_equal(getattr(run_a, field), getattr(run_b, field))


# Metrics


def test_fixed_model_metrics_at_zero_cost_weight():
    result = run_replay(hand_log(), policies=("fixed:b",), cost_weights=(0.0,), seeds=2)
    metrics = result.summary("fixed:b", 0.0).metrics

    assert metrics["quality"].mean == pytest.approx(0.6)
    assert metrics["cost_usd"].mean == pytest.approx(0.01)
    assert metrics["reward"].mean == pytest.approx(0.6)
    # Every prompt has a model of quality 1, so the oracle reward is 1.
    assert metrics["regret"].mean == pytest.approx(0.4)
    # b ties c for the best single model at reward 0.6 and is listed first.
    assert metrics["gap_recovered"].mean == pytest.approx(0.0)
    assert metrics["propensity_mean"].mean == 1.0
    assert metrics["propensity_min"].mean == 1.0


def test_fixed_model_metrics_at_positive_cost_weight():
    result = run_replay(
        hand_log(), policies=("fixed:a",), cost_weights=(10.0,), seeds=2
    )
    metrics = result.summary("fixed:a", 10.0).metrics

    # Rewards at w = 10: a 0.4 - 0.01 = 0.39, b 0.6 - 0.1 = 0.5, c 0.6 - 0.5 = 0.1.
    # Oracle per prompt: 0.99, 0.9, 0.5, 0.99, 0.9, so its mean is 0.856.
    assert metrics["reward"].mean == pytest.approx(0.39)
    assert metrics["regret"].mean == pytest.approx(0.856 - 0.39)
    assert metrics["gap_recovered"].mean == pytest.approx((0.39 - 0.5) / (0.856 - 0.5))


def test_whole_stream_metrics_have_no_spread_over_seeds():
    result = run_replay(hand_log(), policies=("fixed:a",), seeds=3)
    reward = result.summary("fixed:a", 0.0).metrics["reward"]

    assert len(reward.values) == 3
    assert reward.std == pytest.approx(0.0)


def test_single_seed_spread_is_nan():
    result = run_replay(hand_log(), policies=("fixed:a",), seeds=1)

    assert math.isnan(result.summary("fixed:a", 0.0).metrics["reward"].std)


def test_last_fifth_metrics_use_last_steps():
    log = random_log(12)
    result = run_replay(log, policies=("fixed:c",), cost_weights=(5.0,), seeds=2)
    summary = result.summary("fixed:c", 5.0)

    for seed, run in enumerate(r for r in result.runs if r.policy == "fixed:c"):
        tail = run.rows[-last_fifth_size(len(run.rows)) :]
        reward = log.quality[tail] - 5.0 * log.cost_usd[tail]
        best_single = reward.mean(axis=0).max()
        oracle = reward.max(axis=1).mean()
        expected_gap = (reward[:, 2].mean() - best_single) / (oracle - best_single)

        metrics = summary.metrics
        assert metrics["reward_last_fifth"].values[seed] == pytest.approx(
            reward[:, 2].mean()
        )
        assert metrics["regret_last_fifth"].values[seed] == pytest.approx(
            oracle - reward[:, 2].mean()
        )
        assert metrics["gap_recovered_last_fifth"].values[seed] == pytest.approx(
            expected_gap
        )


def test_last_fifth_size_rounds_up():
    assert last_fifth_size(15) == 3
    assert last_fifth_size(16) == 4
    assert last_fifth_size(1) == 1


def test_oracle_breaks_ties_toward_cheapest_model():
    quality = np.array([[1.0, 1.0], [0.0, 1.0]])
    cost = np.array([[0.02, 0.01], [0.02, 0.01]])

    result = hindsight(quality, cost, cost_weight=0.0)

    assert result.oracle_reward == pytest.approx(1.0)
    assert result.oracle_cost_usd == pytest.approx(0.01)


def test_hindsight_best_single_model():
    quality = np.array([[1.0, 0.0], [1.0, 1.0]])
    cost = np.array([[1.0, 0.0], [1.0, 0.0]])

    result = hindsight(quality, cost, cost_weight=0.6)

    # Rewards: model 0 1 - 0.6 = 0.4, model 1 0.5.
    assert result.best_model_index == 1
    assert result.best_model_reward == pytest.approx(0.5)
    assert result.oracle_reward == pytest.approx(0.7)


def test_gap_recovered_is_nan_without_gap():
    assert math.isnan(gap_recovered(0.5, best_single=0.6, oracle=0.6))


def test_gap_recovered_of_oracle_is_one():
    assert gap_recovered(0.9, best_single=0.5, oracle=0.9) == pytest.approx(1.0)


def test_references_place_single_models_and_oracle():
    result = run_replay(hand_log(), policies=("fixed:a",), cost_weights=(0.0, 10.0))
    reference = result.reference(10.0)

    assert reference.best_model == "b"
    assert reference.models["c"]["reward"].mean == pytest.approx(0.1)
    assert reference.oracle["reward"].mean == pytest.approx(0.856)
    assert reference.oracle["regret"].mean == pytest.approx(0.0)
    assert reference.models["b"]["gap_recovered"].mean == pytest.approx(0.0)


def test_reference_matches_fixed_policy_metrics():
    result = run_replay(random_log(20), policies=("fixed:b",), cost_weights=(3.0,))
    policy = result.summary("fixed:b", 3.0).metrics
    single = result.reference(3.0).models["b"]

    for name in ("quality", "cost_usd", "reward", "regret", "gap_recovered_last_fifth"):
        np.testing.assert_allclose(policy[name].values, single[name].values)


# Curves and shares


def test_fixed_policy_share_is_one_in_every_window():
    result = run_replay(random_log(20), policies=("fixed:c",), curve_points=4)
    shares = result.summary("fixed:c", 0.0).shares

    assert shares.shape == (5, 4, 3)
    np.testing.assert_array_equal(shares[:, :, 2], 1.0)
    np.testing.assert_array_equal(shares[:, :, :2], 0.0)


def test_curve_windows_average_rewards():
    result = run_replay(random_log(20), policies=("epsilon-greedy",), curve_points=4)
    summary = result.summary("epsilon-greedy", 0.0)
    run = result.runs[0]

    np.testing.assert_array_equal(result.window_edges, [0, 5, 10, 15, 20])
    assert summary.curve[0, 1] == pytest.approx(run.reward[5:10].mean())


def test_curve_has_at_most_one_window_per_step():
    edges = window_edges(steps=3, points=50)

    np.testing.assert_array_equal(edges, [0, 1, 2, 3])


# Prompt selection


def test_incomplete_prompts_are_excluded_and_counted():
    log = random_log(10)
    log.quality[2, 1] = np.nan
    log.cost_usd[4, 0] = np.nan

    result = run_replay(log, policies=("epsilon-greedy",), seeds=2)

    assert result.excluded_prompts == 2
    assert result.stream_prompts == 8
    for run in result.runs:
        assert not set(run.rows) & {2, 4}


def test_load_report_is_carried_into_result():
    log = hand_log()

    result = run_replay(log, policies=("fixed:a",))

    assert result.load_report is log.report


def test_log_without_complete_prompt_is_rejected():
    log = random_log(3)
    log.quality[:, 0] = np.nan

    with pytest.raises(LogFormatError, match="None of the 3 prompts"):
        run_replay(log, policies=("fixed:a",))


def test_warm_start_split_sizes():
    result = run_replay(random_log(10), policies=("fixed:a",), warm_start_fraction=0.3)

    assert result.warm_start_prompts == 3
    assert result.stream_prompts == 7
    assert all(len(run.rows) == 7 for run in result.runs)


def test_max_prompts_limits_warm_start_and_stream():
    result = run_replay(
        random_log(30), policies=("fixed:a",), max_prompts=10, warm_start_fraction=0.5
    )

    assert result.warm_start_prompts == 5
    assert result.stream_prompts == 5


def test_stream_shared_within_seed():
    result = run_replay(
        random_log(20),
        policies=("fixed:a", "epsilon-greedy"),
        cost_weights=(0.0, 2.0),
        seeds=2,
        warm_start_fraction=0.25,
    )

    for seed in range(2):
        streams = [run.rows for run in result.runs if run.seed == seed]
        assert len(streams) == 4
        for stream in streams[1:]:
            np.testing.assert_array_equal(stream, streams[0])


def test_seeds_shuffle_the_stream_differently():
    result = run_replay(random_log(20), policies=("fixed:a",), seeds=2)

    assert not np.array_equal(result.runs[0].rows, result.runs[1].rows)


def test_warm_start_gives_full_information():
    # Model c is the only one with quality 1, so a greedy policy that learned every
    # model's quality on the warm-start prompts chooses c from the first step on.
    quality = np.tile([0.0, 0.0, 1.0], (20, 1))
    log = make_log(quality, np.zeros((20, 3)))

    result = run_replay(log, policies=("greedy",), warm_start_fraction=0.5, seeds=2)

    for run in result.runs:
        np.testing.assert_array_equal(run.model_index, 2)


# Determinism


def test_same_seed_gives_identical_steps():
    log = random_log(30)
    settings = dict(policies=("epsilon-greedy",), cost_weights=(0.0, 5.0), seeds=2)

    first = run_replay(log, **settings)
    second = run_replay(log, **settings)

    assert_same_traces(first, second)


def test_adding_a_policy_keeps_earlier_results():
    log = random_log(30)

    alone = run_replay(log, policies=("epsilon-greedy",), seeds=2)
    with_other = run_replay(log, policies=("epsilon-greedy", "greedy"), seeds=2)

    runs = [run for run in with_other.runs if run.policy == "epsilon-greedy"]
    for run_a, run_b in zip(alone.runs, runs, strict=True):
        np.testing.assert_array_equal(run_a.model_index, run_b.model_index)


def test_worker_processes_give_identical_results():
    log = random_log(30)
    settings = dict(
        policies=("epsilon-greedy", "fixed:b"),
        cost_weights=(0.0, 5.0),
        seeds=2,
        warm_start_fraction=0.2,
    )

    serial = run_replay(log, **settings, jobs=1)
    parallel = run_replay(log, **settings, jobs=2)

    assert_same_traces(serial, parallel)
    reward_serial = serial.summary("epsilon-greedy", 5.0).metrics["reward"].values
    reward_parallel = parallel.summary("epsilon-greedy", 5.0).metrics["reward"].values
    np.testing.assert_array_equal(reward_serial, reward_parallel)


# Invalid input


@pytest.mark.parametrize(
    ("settings", "value"),
    [
        (dict(seeds=0), "seeds=0"),
        (dict(warm_start_fraction=1.0), "1.0"),
        (dict(warm_start_fraction=-0.1), "-0.1"),
        (dict(cost_weights=(float("nan"),)), "nan"),
        (dict(cost_weights=(-1.0,)), "-1.0"),
        (dict(max_prompts=0), "max_prompts=0"),
        (dict(curve_points=0), "curve_points=0"),
    ],
)
def test_invalid_settings_name_the_value(settings, value):
    with pytest.raises(ConfigError, match=value):
        ReplaySettings(policies=("fixed:a",), **settings)


def test_repeated_policy_is_rejected():
    with pytest.raises(ConfigError, match="fixed:a"):
        ReplaySettings(policies=("fixed:a", "fixed:a"))


def test_unknown_policy_fails_before_replay():
    with pytest.raises(ConfigError, match="no-such-policy"):
        run_replay(hand_log(), policies=("fixed:a", "no-such-policy"))


def test_contexts_of_wrong_length_are_rejected():
    with pytest.raises(ConfigError, match=r"\(4, 2\)"):
        replay(
            hand_log(),
            make_contexts(4),
            ReplaySettings(policies=("fixed:a",)),
            progress=False,
            policy_factory=make_test_policy,
        )


def test_zero_jobs_are_rejected():
    with pytest.raises(ConfigError, match="jobs=0"):
        run_replay(hand_log(), policies=("fixed:a",), jobs=0)
