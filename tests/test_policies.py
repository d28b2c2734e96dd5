"""Routing policies: choice rules, propensities, learning and the policy registry."""

import numpy as np
import pytest

from banditroute.catalog import Catalog, ModelSpec
from banditroute.errors import ConfigError
from banditroute.policies import (
    BetaThompsonSampling,
    Cheapest,
    ContextualThompsonSampling,
    EpsilonGreedy,
    FixedModel,
    KNNRouter,
    LinUCB,
    UniformRandom,
    available_policies,
    make_policy,
)
from banditroute.policy import WarmStartData, argmax_random_tie
from banditroute.posterior import PriorSettings

CATALOG = Catalog(
    [
        ModelSpec("large", input_usd_per_mtok=3.0, output_usd_per_mtok=15.0),
        ModelSpec("small", input_usd_per_mtok=0.1, output_usd_per_mtok=0.1),
        ModelSpec("medium", input_usd_per_mtok=0.5, output_usd_per_mtok=1.5),
    ]
)
DIMENSION = 4


def context_for(group: int) -> np.ndarray:
    """Return a unit context of one of two prompt groups behind the bias."""
    context = np.zeros(DIMENSION, dtype=np.float32)
    context[0] = 1.0
    context[1 + group] = 1.0
    return context


def true_quality(group: int) -> np.ndarray:
    """Large is best on group 0, medium on group 1; small is poor everywhere."""
    return np.array([[0.9, 0.3, 0.4], [0.4, 0.3, 0.9]][group])


def train_online(policy, steps: int, rng: np.random.Generator) -> float:
    """Stream Bernoulli feedback; return the expected quality of the last 200 steps."""
    qualities = []
    for _ in range(steps):
        group = int(rng.integers(2))
        context = context_for(group)
        decision = policy.decide(context, input_tokens=100, cost_weight=0.0)
        quality = float(rng.random() < true_quality(group)[decision.model_index])
        policy.update(decision.model_index, context, quality, output_tokens=200)
        qualities.append(true_quality(group)[decision.model_index])
    return float(np.mean(qualities[-200:]))


def test_argmax_breaks_ties_at_random():
    rng = np.random.default_rng(0)
    scores = np.array([1.0, 2.0, 2.0, 0.5])
    allowed = np.ones(4, dtype=bool)

    chosen = {argmax_random_tie(scores, allowed, rng) for _ in range(200)}

    assert chosen == {1, 2}


def test_argmax_skips_disallowed_model():
    scores = np.array([5.0, 1.0, 2.0])
    allowed = np.array([False, True, True])

    assert argmax_random_tie(scores, allowed, np.random.default_rng(0)) == 2


def test_thompson_same_seed_same_decisions():
    runs = []
    for _ in range(2):
        policy = ContextualThompsonSampling(
            CATALOG, DIMENSION, np.random.default_rng(3)
        )
        train_online(policy, 300, np.random.default_rng(4))
        decision = policy.decide(context_for(0), 100, 0.0)
        runs.append(
            (decision.model_index, decision.propensity, decision.scores.tolist())
        )

    assert runs[0] == runs[1]


def test_thompson_learns_best_model_per_group():
    policy = ContextualThompsonSampling(CATALOG, DIMENSION, np.random.default_rng(5))

    late_quality = train_online(policy, 1500, np.random.default_rng(6))

    assert late_quality > 0.8


def test_thompson_propensity_matches_choice_frequency():
    policy = ContextualThompsonSampling(CATALOG, DIMENSION, np.random.default_rng(7))
    train_online(policy, 40, np.random.default_rng(8))
    context = context_for(1)

    decisions = [policy.decide(context, 100, 0.0) for _ in range(3000)]
    choices = np.array([d.model_index for d in decisions])

    for model_index in range(3):
        frequency = float(np.mean(choices == model_index))
        estimates = [d.propensity for d in decisions if d.model_index == model_index]
        if frequency > 0.05:
            assert np.mean(estimates) == pytest.approx(frequency, abs=0.05)


def test_thompson_respects_allowed_models():
    policy = ContextualThompsonSampling(CATALOG, DIMENSION, np.random.default_rng(9))
    allowed = np.array([False, True, False])

    decision = policy.decide(context_for(0), 100, 0.0, allowed)

    assert decision.model_index == 1
    assert decision.propensity == 1.0
    assert np.isneginf(decision.scores[[0, 2]]).all()


def test_no_allowed_model_raises():
    policy = ContextualThompsonSampling(CATALOG, DIMENSION, np.random.default_rng(9))

    with pytest.raises(ValueError, match="No model is allowed"):
        policy.decide(context_for(0), 100, 0.0, np.zeros(3, dtype=bool))


def test_cost_weight_moves_traffic_to_cheap_model():
    policy = ContextualThompsonSampling(CATALOG, DIMENSION, np.random.default_rng(10))
    rng = np.random.default_rng(11)
    for _ in range(600):
        model_index = int(rng.integers(3))
        policy.update(model_index, context_for(0), 0.8, output_tokens=500)

    free = [policy.decide(context_for(0), 1000, 0.0).model_index for _ in range(200)]
    priced = [
        policy.decide(context_for(0), 1000, 100.0).model_index for _ in range(200)
    ]

    assert np.mean(np.array(priced) == 1) > 0.95
    assert np.mean(np.array(free) == 1) < 0.6


def test_expected_cost_uses_learned_output_tokens():
    policy = ContextualThompsonSampling(CATALOG, DIMENSION, np.random.default_rng(12))
    for _ in range(999):
        policy.update(0, context_for(0), 0.5, output_tokens=1000)

    decision = policy.decide(context_for(0), 2000, 0.0)

    expected_tokens = (999 * 1000 + 256) / 1000
    expected = 2000 * 3.0e-6 + expected_tokens * 15.0e-6
    assert decision.expected_cost_usd[0] == pytest.approx(expected)


def test_thompson_warm_start_learns_groups():
    rng = np.random.default_rng(13)
    groups = rng.integers(2, size=400)
    contexts = np.stack([context_for(g) for g in groups])
    quality = np.stack([true_quality(g) for g in groups])
    history = WarmStartData(
        contexts, np.full(400, 100.0), quality, np.full((400, 3), 50.0)
    )
    policy = ContextualThompsonSampling(CATALOG, DIMENSION, np.random.default_rng(14))

    policy.warm_start(history)

    assert policy.decide(context_for(0), 100, 0.0).model_index == 0
    assert policy.decide(context_for(1), 100, 0.0).model_index == 2
    assert policy.cost_model.expected_output_tokens[1] == pytest.approx(
        (400 * 50 + 256) / 401
    )


def test_thompson_snapshot_restores_decisions():
    policy = ContextualThompsonSampling(CATALOG, DIMENSION, np.random.default_rng(15))
    train_online(policy, 100, np.random.default_rng(16))
    copy = ContextualThompsonSampling(CATALOG, DIMENSION, np.random.default_rng(0))

    copy.restore(policy.snapshot())
    policy.rng = np.random.default_rng(17)
    copy.rng = np.random.default_rng(17)

    first = policy.decide(context_for(1), 100, 0.0)
    second = copy.decide(context_for(1), 100, 0.0)
    np.testing.assert_array_equal(first.scores, second.scores)


def test_thompson_learned_prior_snapshot_restores_state():
    prior = PriorSettings(learn_weight_precision=True)
    policy = ContextualThompsonSampling(
        CATALOG, DIMENSION, np.random.default_rng(15), prior=prior
    )
    train_online(policy, 300, np.random.default_rng(16))
    copy = ContextualThompsonSampling(
        CATALOG, DIMENSION, np.random.default_rng(0), prior=prior
    )

    copy.restore(policy.snapshot())
    policy.rng = np.random.default_rng(17)
    copy.rng = np.random.default_rng(17)
    train_online(policy, 100, np.random.default_rng(18))
    train_online(copy, 100, np.random.default_rng(18))

    first, second = policy.snapshot(), copy.snapshot()
    assert "models.weight_precision" in first
    assert "pooled.weight_precision" in first
    assert not np.all(first["models.weight_precision"] == prior.weight_precision)
    for name, value in first.items():
        np.testing.assert_array_equal(second[name], value, err_msg=name)


@pytest.mark.parametrize(
    "policy",
    [
        LinUCB(CATALOG, DIMENSION, np.random.default_rng(1)),
        EpsilonGreedy(CATALOG, DIMENSION, np.random.default_rng(1)),
        KNNRouter(CATALOG, DIMENSION, np.random.default_rng(1), k=20),
    ],
    ids=lambda policy: policy.name,
)
def test_contextual_baseline_learns_groups(policy):
    late_quality = train_online(policy, 1500, np.random.default_rng(2))

    assert late_quality > 0.75


def test_noncontextual_thompson_finds_best_average_model():
    policy = BetaThompsonSampling(CATALOG, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    means = np.array([0.7, 0.2, 0.5])
    for _ in range(1500):
        decision = policy.decide(context_for(0), 100, 0.0)
        policy.update(
            decision.model_index,
            context_for(0),
            float(rng.random() < means[decision.model_index]),
        )

    choices = [policy.decide(context_for(0), 100, 0.0).model_index for _ in range(200)]
    assert np.mean(np.array(choices) == 0) > 0.9


def test_fixed_model_always_chooses_it():
    policy = FixedModel(CATALOG, np.random.default_rng(0), "medium")

    decisions = [policy.decide(context_for(g % 2), 100, 5.0) for g in range(20)]

    assert {d.model_index for d in decisions} == {2}
    assert {d.propensity for d in decisions} == {1.0}


def test_fixed_model_falls_back_when_not_allowed():
    policy = FixedModel(CATALOG, np.random.default_rng(0), "large")

    decision = policy.decide(context_for(0), 100, 0.0, np.array([False, True, True]))

    assert decision.model_index == 1


def test_cheapest_chooses_lowest_expected_cost():
    policy = Cheapest(CATALOG, np.random.default_rng(0))

    assert policy.decide(context_for(0), 100, 0.0).model_index == 1


def test_uniform_random_propensity():
    policy = UniformRandom(CATALOG, np.random.default_rng(0))
    allowed = np.array([True, False, True])

    decisions = [policy.decide(context_for(0), 100, 0.0, allowed) for _ in range(300)]

    assert {d.model_index for d in decisions} == {0, 2}
    assert {d.propensity for d in decisions} == {0.5}


def test_epsilon_greedy_propensity_sums_to_one():
    policy = EpsilonGreedy(CATALOG, DIMENSION, np.random.default_rng(0), epsilon=0.3)
    policy.update(2, context_for(1), 1.0)
    greedy = int(np.argmax(policy.posteriors.project(context_for(1))[0]))

    propensities = {}
    for _ in range(400):
        decision = policy.decide(context_for(1), 100, 0.0)
        propensities[decision.model_index] = decision.propensity

    assert propensities[greedy] == pytest.approx(0.7 + 0.1)
    assert sum(propensities.values()) == pytest.approx(1.0)


def test_knn_predicts_neighbour_mean():
    policy = KNNRouter(
        CATALOG, DIMENSION, np.random.default_rng(0), k=2, prior_weight=0.0
    )
    contexts = np.stack([context_for(0), context_for(0), context_for(1)])
    quality = np.array([[1.0, 0.0, 0.2], [0.8, 0.0, 0.4], [0.0, 1.0, 0.0]])
    policy.warm_start(
        WarmStartData(contexts, np.zeros(3), quality, np.full((3, 3), 10.0))
    )

    predicted = policy._predict(context_for(0))

    np.testing.assert_allclose(predicted, [0.9, 0.0, 0.3])


def test_make_policy_builds_every_available_name():
    for name in available_policies(CATALOG):
        policy = make_policy(name, CATALOG, DIMENSION, np.random.default_rng(0))
        decision = policy.decide(context_for(0), 100, 0.0)
        assert 0 <= decision.model_index < len(CATALOG)
        assert 0.0 < decision.propensity <= 1.0


def test_make_policy_unknown_name_lists_choices():
    with pytest.raises(ConfigError, match="Unknown policy 'ucb'.*thompson"):
        make_policy("ucb", CATALOG, DIMENSION, np.random.default_rng(0))


def test_make_policy_fixed_unknown_model():
    with pytest.raises(ConfigError, match="'gpt-9'"):
        make_policy("fixed:gpt-9", CATALOG, DIMENSION, np.random.default_rng(0))


def test_argmax_never_returns_a_disallowed_model():
    rng = np.random.default_rng(0)
    scores = np.array([1.0, -np.inf, np.nan, -np.inf])
    allowed = np.array([False, True, True, True])

    chosen = {argmax_random_tie(scores, allowed, rng) for _ in range(200)}

    assert chosen == {1, 2, 3}
