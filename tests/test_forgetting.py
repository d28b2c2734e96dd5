"""Forgetting old feedback: exact discounting, bounded variance, faster adaptation."""

import numpy as np
import pytest

from banditroute.catalog import Catalog, ModelSpec
from banditroute.policies import ContextualThompsonSampling
from banditroute.posterior import (
    LinearPosteriors,
    PriorSettings,
    discount_factor,
    forgetting_refresh_interval,
)
from banditroute.settings import load_settings

PRIOR = PriorSettings(mean_quality=0.4, bias_precision=0.5, weight_precision=3.0)
DIMENSION = 4


def random_contexts(rng, n, dimension=DIMENSION):
    contexts = rng.standard_normal((n, dimension))
    contexts[:, 1:] /= np.linalg.norm(contexts[:, 1:], axis=1, keepdims=True)
    contexts[:, 0] = 1.0
    return contexts


def prior_arrays(dimension=DIMENSION):
    prior_precision = np.full(dimension, PRIOR.weight_precision)
    prior_precision[0] = PRIOR.bias_precision
    prior_mean = np.zeros(dimension)
    prior_mean[0] = PRIOR.mean_quality
    return prior_precision, prior_mean


def test_discount_factor_halves_at_half_life():
    assert discount_factor(10.0) ** 10 == pytest.approx(0.5)


@pytest.mark.parametrize("half_life", [0.0, -1.0, float("nan"), float("inf")])
def test_discount_factor_rejects_invalid(half_life):
    with pytest.raises(ValueError, match="half_life"):
        discount_factor(half_life)


def test_refresh_interval_at_least_dimension():
    assert forgetting_refresh_interval(100.0, 385) == 385
    assert forgetting_refresh_interval(2000.0, 385) == 500
    assert forgetting_refresh_interval(1e6, 385) == 1000


def test_discount_matches_weighted_closed_form():
    rng = np.random.default_rng(3)
    half_life = 12.0
    posteriors = LinearPosteriors(
        2, DIMENSION, PRIOR, half_life=half_life, refresh_interval=5, dtype=np.float64
    )
    n = 60
    contexts = random_contexts(rng, n)
    qualities = rng.random(n)
    models = rng.integers(2, size=n)
    for context, quality, model in zip(contexts, qualities, models, strict=True):
        posteriors.update(int(model), context, float(quality))

    # Both models are discounted to clock 60, because 60 is a multiple of 5 and the
    # stalest model is refreshed then. Refresh model 0 explicitly to be sure.
    posteriors.refresh(0)
    posteriors.refresh(1)
    gamma = discount_factor(half_life)
    prior_precision, prior_mean = prior_arrays()
    for model in range(2):
        rows = np.flatnonzero(models == model)
        weights = gamma ** (n - (rows + 1))
        x, y = contexts[rows], qualities[rows]
        precision = np.diag(prior_precision) + x.T @ (weights[:, None] * x)
        moment = prior_precision * prior_mean + x.T @ (weights * y)
        mean = np.linalg.solve(precision, moment)
        scale = PRIOR.noise_shape * PRIOR.noise_variance + 0.5 * (
            weights @ (y * y)
            + prior_mean @ (prior_precision * prior_mean)
            - mean @ moment
        )

        np.testing.assert_allclose(posteriors.precision[model], precision, rtol=1e-12)
        np.testing.assert_allclose(posteriors.posterior_mean(model), mean, rtol=1e-10)
        assert posteriors.shape[model] == pytest.approx(
            PRIOR.noise_shape + 0.5 * weights.sum(), rel=1e-12
        )
        assert posteriors.scale[model] == pytest.approx(scale, rel=1e-10)


def test_without_half_life_nothing_is_forgotten():
    rng = np.random.default_rng(4)
    posteriors = LinearPosteriors(1, DIMENSION, PRIOR, refresh_interval=5)
    contexts = random_contexts(rng, 50)
    for context in contexts:
        posteriors.update(0, context, 0.5)

    prior_precision, _ = prior_arrays()
    expected = np.diag(prior_precision) + contexts.T @ contexts
    np.testing.assert_allclose(posteriors.precision[0], expected, rtol=1e-12)
    assert posteriors.effective_observations[0] == 50


def test_variance_bounded_by_prior_under_forgetting():
    rng = np.random.default_rng(5)
    posteriors = LinearPosteriors(
        2, DIMENSION, PRIOR, half_life=20.0, refresh_interval=5, dtype=np.float64
    )
    prior_covariance = np.diag(1.0 / prior_arrays()[0])
    # Model 0 gets feedback along the bias only, then only model 1 gets feedback,
    # so model 0 forgets everything over 2,000 events.
    along_bias = np.zeros(DIMENSION)
    along_bias[0] = 1.0
    for _ in range(200):
        posteriors.update(0, along_bias, float(rng.random()))
    for context in random_contexts(rng, 2000):
        posteriors.update(1, context, float(rng.random()))
        for model in range(2):
            excess = posteriors.covariance[model] - prior_covariance
            assert np.linalg.eigvalsh(excess).max() <= 1e-12

    np.testing.assert_allclose(posteriors.covariance[0], prior_covariance, atol=1e-12)
    assert posteriors.effective_observations[0] == pytest.approx(0.0, abs=1e-12)
    assert posteriors.scale[0] == pytest.approx(
        PRIOR.noise_shape * PRIOR.noise_variance, rel=1e-9
    )


def intercept_after_change(half_life):
    posteriors = LinearPosteriors(1, DIMENSION, PRIOR, half_life=half_life)
    rng = np.random.default_rng(6)
    for quality_mean, steps in ((0.8, 2000), (0.2, 300)):
        for context in random_contexts(rng, steps):
            posteriors.update(0, context, quality_mean + 0.05 * rng.standard_normal())
    return posteriors.posterior_mean(0)[0]


def test_forgetting_recovers_new_mean_faster():
    forgetting = intercept_after_change(100.0)
    remembering = intercept_after_change(None)

    assert forgetting < 0.35
    assert remembering > 0.65


def test_snapshot_restore_continues_bit_identically_with_forgetting():
    rng = np.random.default_rng(7)
    contexts = random_contexts(rng, 300)
    qualities = rng.random(300)
    models = rng.integers(3, size=300)

    original = LinearPosteriors(3, DIMENSION, PRIOR, half_life=30.0, refresh_interval=7)
    for i in range(150):
        original.update(int(models[i]), contexts[i], float(qualities[i]))
    copy = LinearPosteriors(3, DIMENSION, PRIOR, half_life=30.0, refresh_interval=7)
    copy.restore(original.snapshot())
    for i in range(150, 300):
        original.update(int(models[i]), contexts[i], float(qualities[i]))
        copy.update(int(models[i]), contexts[i], float(qualities[i]))

    first, second = original.snapshot(), copy.snapshot()
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def share_of_old_best(half_life):
    catalog = Catalog(
        [ModelSpec("a", 1.0, 1.0), ModelSpec("b", 1.0, 1.0), ModelSpec("c", 1.0, 1.0)]
    )
    policy = ContextualThompsonSampling(
        catalog, DIMENSION, np.random.default_rng(8), half_life=half_life
    )
    rng = np.random.default_rng(9)
    context = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    chosen = []
    for step in range(3000):
        # Model a is best until step 2000, then model b.
        means = (0.8, 0.5, 0.3) if step < 2000 else (0.3, 0.8, 0.3)
        decision = policy.decide(context, input_tokens=100, cost_weight=0.0)
        quality = float(rng.random() < means[decision.model_index])
        policy.update(decision.model_index, context, quality, output_tokens=100)
        chosen.append(decision.model_index)
    return float(np.mean(np.array(chosen[2000:2500]) == 0))


def test_thompson_with_forgetting_leaves_dropped_model_sooner():
    assert share_of_old_best(200.0) < share_of_old_best(None) - 0.1


def test_service_half_life_changes_store_namespace(tmp_path):
    config = tmp_path / "service.yaml"
    config.write_text(
        "catalog:\n"
        "  - {name: a, input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0}\n"
        "  - {name: b, input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.2}\n"
    )
    plain = load_settings(config)
    forgetting = load_settings(config, half_life=500.0)

    assert plain.half_life is None
    assert forgetting.store_namespace(8) != plain.store_namespace(8)
    assert load_settings(config).store_namespace(8) == plain.store_namespace(8)


def test_service_namespace_leaves_out_the_catalog(tmp_path):
    first = tmp_path / "first.yaml"
    first.write_text(
        "catalog:\n"
        "  - {name: a, input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0}\n"
        "  - {name: b, input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.2}\n"
    )
    second = tmp_path / "second.yaml"
    second.write_text(
        "catalog:\n"
        "  - {name: c, input_usd_per_mtok: 5.0, output_usd_per_mtok: 9.0}\n"
        "  - {name: a, input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0}\n"
    )

    assert load_settings(first).store_namespace(8) == load_settings(
        second
    ).store_namespace(8)
