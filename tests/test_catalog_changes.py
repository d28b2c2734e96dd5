"""Models added and disabled at run time: catalog, cost model, posteriors, policy."""

import numpy as np
import pytest

from banditroute.catalog import Catalog, ModelSpec, catalog_changes
from banditroute.cost import CostModel
from banditroute.errors import ConfigError
from banditroute.policies import ContextualThompsonSampling
from banditroute.posterior import LinearPosteriors
from banditroute.replica import decode_state, encode_state, state_digest

DIMENSION = 4


def make_catalog():
    return Catalog(
        [
            ModelSpec("large", input_usd_per_mtok=3.0, output_usd_per_mtok=15.0),
            ModelSpec("small", input_usd_per_mtok=0.1, output_usd_per_mtok=0.1),
            ModelSpec("medium", input_usd_per_mtok=0.5, output_usd_per_mtok=1.5),
        ]
    )


CHEAP_LARGE = ModelSpec("cheap-large", input_usd_per_mtok=0.1, output_usd_per_mtok=0.1)


def context_for(group):
    context = np.zeros(DIMENSION, dtype=np.float32)
    context[0] = 1.0
    context[1 + group] = 1.0
    return context


QUALITY = {"large": (0.9, 0.4), "small": (0.3, 0.3), "medium": (0.4, 0.9)}
QUALITY["cheap-large"] = QUALITY["large"]
QUALITY["weak"] = (0.0, 0.0)


def run(policy, steps, rng, cost_weight=0.0):
    """Stream Bernoulli feedback; return the chosen model names."""
    chosen = []
    for _ in range(steps):
        group = int(rng.integers(2))
        context = context_for(group)
        decision = policy.decide(context, input_tokens=100, cost_weight=cost_weight)
        name = policy.catalog.names[decision.model_index]
        quality = float(rng.random() < QUALITY[name][group])
        policy.update(decision.model_index, context, quality, output_tokens=200)
        chosen.append(name)
    return chosen


def test_catalog_add_appends_without_shifting():
    catalog = make_catalog()
    index = catalog.add(CHEAP_LARGE)

    assert index == 3
    assert catalog.names == ("large", "small", "medium", "cheap-large")
    assert catalog.index("medium") == 2
    assert catalog.input_usd_per_token[3] == pytest.approx(0.1e-6)
    assert catalog.enabled.tolist() == [True, True, True, True]


def test_catalog_add_rejects_duplicate_name():
    catalog = make_catalog()
    with pytest.raises(ConfigError, match="already in the catalog"):
        catalog.add(ModelSpec("small", 1.0, 1.0))


def test_catalog_disable_last_enabled_raises():
    catalog = make_catalog()
    catalog.disable("large")
    catalog.disable("small")
    with pytest.raises(ConfigError, match="last enabled model"):
        catalog.disable("medium")


def test_cost_model_add_model_uses_prior():
    catalog = make_catalog()
    cost = CostModel(catalog, prior_output_tokens=300.0)
    cost.update(0, 100.0)
    catalog.add(CHEAP_LARGE)
    assert cost.add_model() == 3
    assert cost.expected_output_tokens[3] == pytest.approx(300.0)
    assert cost.expected_cost(0.0).shape == (4,)


def test_posteriors_add_model_starts_at_prior_mean():
    posteriors = LinearPosteriors(2, DIMENSION)
    posteriors.update(0, context_for(0), 0.9)
    prior_mean = np.array([0.6, 0.1, -0.1, 0.0])
    posteriors.set_prior_mean(prior_mean)

    index = posteriors.add_model()
    assert index == 2
    np.testing.assert_allclose(posteriors.posterior_mean(2), prior_mean, rtol=1e-6)
    means, spread, _ = posteriors.project(context_for(1))
    assert means.shape == (3,)
    assert spread[2] > spread[0]


def test_added_model_prior_mean_is_pooled_estimate():
    policy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(1)
    )
    run(policy, 300, np.random.default_rng(2))
    index = policy.add_model(CHEAP_LARGE)

    np.testing.assert_allclose(
        policy.posteriors.posterior_mean(index),
        policy.pooled.posterior_mean(0),
        rtol=1e-5,
    )


def test_added_cheap_model_takes_traffic():
    policy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(3)
    )
    rng = np.random.default_rng(4)
    run(policy, 600, rng, cost_weight=1000.0)
    policy.add_model(CHEAP_LARGE)
    after = run(policy, 600, rng, cost_weight=1000.0)

    # On group 0 the new model is as good as "large" and cheaper, so it should win
    # those prompts: about half of all traffic at the end.
    assert after[:100].count("cheap-large") >= 5
    assert after[-200:].count("cheap-large") > 60
    assert after[-200:].count("large") < 20


def test_disabled_model_is_never_chosen():
    policy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(5)
    )
    rng = np.random.default_rng(6)
    run(policy, 300, rng)
    policy.disable_model("large")
    chosen = run(policy, 500, rng)

    assert "large" not in chosen
    assert policy.catalog.index("medium") == 2


def test_disabled_model_still_learns_from_feedback():
    policy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(7)
    )
    policy.disable_model("large")
    policy.update(0, context_for(0), 1.0, output_tokens=50)

    assert policy.posteriors.n_observations[0] == 1
    assert policy.cost_model.count[0] == 2.0


def test_allowed_only_disabled_models_raises():
    policy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(8)
    )
    policy.disable_model("small")
    allowed = policy.catalog.mask(["small"])
    with pytest.raises(ConfigError, match="disabled"):
        policy.decide(context_for(0), 100, 0.0, allowed)


def test_snapshot_after_add_model_restores_bit_identically():
    policy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(9), half_life=200.0
    )
    rng = np.random.default_rng(10)
    run(policy, 200, rng)
    policy.add_model(CHEAP_LARGE)
    policy.disable_model("small")
    run(policy, 150, rng)

    copy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(0), half_life=200.0
    )
    state = policy.snapshot()
    copy.restore(state)
    restored = copy.snapshot()
    assert restored.keys() == state.keys()
    for key in state:
        np.testing.assert_array_equal(restored[key], state[key], err_msg=key)
    assert copy.catalog.names == policy.catalog.names
    assert copy.catalog.enabled.tolist() == [True, False, True, True]

    policy.rng = np.random.default_rng(11)
    copy.rng = np.random.default_rng(11)
    first = run(policy, 100, np.random.default_rng(12))
    second = run(copy, 100, np.random.default_rng(12))
    assert first == second
    final, final_copy = policy.snapshot(), copy.snapshot()
    for key in final:
        np.testing.assert_array_equal(final[key], final_copy[key], err_msg=key)


def test_restore_rejects_other_catalog():
    policy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(13)
    )
    other = Catalog([ModelSpec("x", 1.0, 1.0), ModelSpec("y", 1.0, 1.0)])
    copy = ContextualThompsonSampling(other, DIMENSION, np.random.default_rng(14))
    with pytest.raises(ValueError, match="does not start with"):
        copy.restore(policy.snapshot())


def test_added_model_is_probed_until_enough_feedback():
    policy = ContextualThompsonSampling(
        make_catalog(),
        DIMENSION,
        np.random.default_rng(15),
        probe_share=1.0,
        probe_observations=5,
    )
    rng = np.random.default_rng(16)
    run(policy, 200, rng)
    index = policy.add_model(ModelSpec("weak", 0.1, 0.1))

    probes = [policy.decide(context_for(0), 100, 0.0) for _ in range(3)]
    assert [decision.model_index for decision in probes] == [index] * 3
    assert [decision.propensity for decision in probes] == [1.0] * 3

    chosen = run(policy, 100, rng)
    assert chosen[:5] == ["weak"] * 5
    assert chosen[5:].count("weak") < 20
    assert policy.posteriors.n_observations[index] >= 5


def test_initial_models_are_not_probed():
    policy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(17), probe_share=1.0
    )
    chosen = run(policy, 300, np.random.default_rng(18))
    assert policy.probe_until.tolist() == [0, 0, 0]
    assert chosen[-100:].count("large") + chosen[-100:].count("medium") > 80


def test_probe_propensity_mixes_probe_and_sampling():
    policy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(19), probe_share=0.5
    )
    run(policy, 300, np.random.default_rng(20))
    index = policy.add_model(CHEAP_LARGE)

    decisions = [policy.decide(context_for(0), 100, 0.0) for _ in range(400)]
    new = [d for d in decisions if d.model_index == index]
    old = [d for d in decisions if d.model_index != index]
    assert 0.4 < len(new) / len(decisions) < 0.9
    assert min(d.propensity for d in new) >= 0.5
    assert max(d.propensity for d in old) <= 0.5


def test_encoded_snapshot_after_add_model_round_trips():
    policy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(21), half_life=100.0
    )
    rng = np.random.default_rng(22)
    run(policy, 150, rng)
    policy.add_model(CHEAP_LARGE)
    run(policy, 50, rng)

    state, _ = decode_state(encode_state(policy.snapshot()))
    copy = ContextualThompsonSampling(
        make_catalog(), DIMENSION, np.random.default_rng(0), half_life=100.0
    )
    copy.restore(state)

    assert state_digest(copy.snapshot()) == state_digest(policy.snapshot())
    assert copy.catalog.names[-1] == "cheap-large"


def test_catalog_changes_to_a_wanted_catalog():
    current = Catalog(
        [ModelSpec("a", 1.0, 2.0), ModelSpec("b", 1.0, 2.0), ModelSpec("c", 1.0, 2.0)]
    )
    current.disable("b")
    wanted = Catalog(
        [ModelSpec("b", 1.0, 2.0), ModelSpec("a", 5.0, 2.0), ModelSpec("d", 0.1, 0.2)]
    )

    changes = catalog_changes(current, wanted)

    assert changes.to_add == (ModelSpec("d", 0.1, 0.2),)
    assert changes.to_enable == ("b",)
    assert changes.to_reprice == (ModelSpec("a", 5.0, 2.0),)
    assert changes.to_disable == ("c",)


def test_model_spec_arguments_round_trip():
    model = ModelSpec("vendor/model", 0.5, 1.5)

    assert ModelSpec.from_arguments(model.to_arguments()) == model
