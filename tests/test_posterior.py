"""Per-model Bayesian linear regression: exactness of the kept covariance and mean."""

import numpy as np
import pytest

from banditroute.posterior import LinearPosteriors, PriorSettings, evidence_terms

PRIOR = PriorSettings(mean_quality=0.4, bias_precision=0.5, weight_precision=3.0)


def random_contexts(rng, n, dimension):
    contexts = rng.standard_normal((n, dimension))
    contexts[:, 1:] /= np.linalg.norm(contexts[:, 1:], axis=1, keepdims=True)
    contexts[:, 0] = 1.0
    return contexts


def direct_solution(contexts, qualities, prior):
    dimension = contexts.shape[1]
    prior_precision = np.full(dimension, prior.weight_precision)
    prior_precision[0] = prior.bias_precision
    prior_mean = np.zeros(dimension)
    prior_mean[0] = prior.mean_quality

    precision = np.diag(prior_precision) + contexts.T @ contexts
    moment = prior_precision * prior_mean + contexts.T @ qualities
    mean = np.linalg.solve(precision, moment)
    scale = prior.noise_shape * prior.noise_variance + 0.5 * (
        qualities @ qualities
        + prior_mean @ (prior_precision * prior_mean)
        - mean @ moment
    )
    return precision, mean, scale


def test_covariance_after_20000_updates_matches_inverse():
    rng = np.random.default_rng(7)
    dimension = 384
    posteriors = LinearPosteriors(1, dimension, PRIOR, dtype=np.float64)
    contexts = random_contexts(rng, 20_000, dimension)
    qualities = rng.random(20_000)

    for context, quality in zip(contexts, qualities, strict=True):
        posteriors.update(0, context, quality)

    precision = posteriors.precision_matrix(0)
    expected_precision, _, _ = direct_solution(contexts, qualities, PRIOR)
    np.testing.assert_allclose(precision, expected_precision, rtol=1e-10, atol=1e-9)

    direct_inverse = np.linalg.inv(precision)
    kept = posteriors.covariance[0]
    relative_error = np.abs(kept - direct_inverse).max() / np.abs(direct_inverse).max()
    assert relative_error < 1e-9


def test_float32_covariance_stays_close_to_inverse():
    rng = np.random.default_rng(8)
    dimension = 384
    posteriors = LinearPosteriors(1, dimension, PRIOR, refresh_interval=1000)
    contexts = random_contexts(rng, 20_000, dimension)

    for context in contexts:
        posteriors.update(0, context, 0.5)

    direct_inverse = np.linalg.inv(posteriors.precision_matrix(0))
    kept = posteriors.covariance[0].astype(np.float64)
    relative_error = np.abs(kept - direct_inverse).max() / np.abs(direct_inverse).max()
    assert posteriors.covariance.dtype == np.float32
    assert relative_error < 1e-4


def test_mean_and_noise_scale_match_closed_form():
    rng = np.random.default_rng(9)
    dimension = 12
    posteriors = LinearPosteriors(
        2, dimension, PRIOR, refresh_interval=7, dtype=np.float64
    )
    contexts = random_contexts(rng, 300, dimension)
    qualities = np.clip(
        contexts[:, 1] * 0.3 + 0.5 + 0.1 * rng.standard_normal(300), 0, 1
    )

    for context, quality in zip(contexts, qualities, strict=True):
        posteriors.update(1, context, quality)
    posteriors.refresh(1)

    _, expected_mean, expected_scale = direct_solution(contexts, qualities, PRIOR)
    np.testing.assert_allclose(posteriors.posterior_mean(1), expected_mean, rtol=1e-8)
    assert posteriors.scale[1] == pytest.approx(expected_scale, rel=1e-8)
    assert posteriors.shape[1] == pytest.approx(PRIOR.noise_shape + 150)


def test_untouched_model_keeps_prior():
    posteriors = LinearPosteriors(2, 4, PRIOR, dtype=np.float64)
    posteriors.update(0, np.array([1.0, 0.5, 0.5, 0.0]), 1.0)

    means, spread, _ = posteriors.project(np.array([1.0, 0.0, 0.0, 0.0]))

    assert means[1] == pytest.approx(PRIOR.mean_quality)
    assert spread[1] == pytest.approx(1.0 / PRIOR.bias_precision)


def test_fit_equals_sequential_updates():
    rng = np.random.default_rng(10)
    dimension = 6
    contexts = random_contexts(rng, 50, dimension)
    qualities = rng.random(50)
    batch = LinearPosteriors(1, dimension, PRIOR, dtype=np.float64)
    sequential = LinearPosteriors(1, dimension, PRIOR, dtype=np.float64)

    batch.fit(0, contexts, qualities)
    for context, quality in zip(contexts, qualities, strict=True):
        sequential.update(0, context, quality)
    sequential.refresh(0)

    np.testing.assert_allclose(batch.covariance, sequential.covariance, rtol=1e-10)
    np.testing.assert_allclose(batch.posterior_mean(0), sequential.posterior_mean(0))
    assert batch.scale[0] == pytest.approx(sequential.scale[0], rel=1e-10)


def test_snapshot_restore_round_trip():
    rng = np.random.default_rng(11)
    dimension = 5
    original = LinearPosteriors(3, dimension, PRIOR, refresh_interval=4)
    for context in random_contexts(rng, 10, dimension):
        original.update(int(rng.integers(3)), context, float(rng.random()))

    restored = LinearPosteriors(3, dimension, PRIOR, refresh_interval=4)
    restored.restore(original.snapshot())

    probe = random_contexts(rng, 1, dimension)[0]
    for model_index in range(3):
        np.testing.assert_array_equal(
            restored.precision_matrix(model_index),
            original.precision_matrix(model_index),
        )
    np.testing.assert_array_equal(
        restored.project(probe)[0], original.project(probe)[0]
    )

    # Both continue identically, pending contexts included.
    for context in random_contexts(rng, 6, dimension):
        original.update(1, context, 0.25)
        restored.update(1, context, 0.25)
    np.testing.assert_array_equal(restored.covariance, original.covariance)


def test_restore_rejects_other_shape():
    small = LinearPosteriors(2, 4, PRIOR)
    large = LinearPosteriors(2, 5, PRIOR)

    with pytest.raises(ValueError, match="same catalog and features"):
        large.restore(small.snapshot())


LEARNED = PriorSettings(learn_weight_precision=True)


def learned_weight_precision(true_weight_scale: float, seed: int) -> float:
    """Fit one model on 2,000 observations whose non-bias weights have this scale."""
    rng = np.random.default_rng(seed)
    dimension = 30
    noise = 0.3
    weights = true_weight_scale * rng.standard_normal(dimension)
    weights[0] = LEARNED.mean_quality
    contexts = rng.standard_normal((2000, dimension))
    contexts[:, 0] = 1.0
    qualities = contexts @ weights + noise * rng.standard_normal(2000)
    posteriors = LinearPosteriors(
        1, dimension, LEARNED, refresh_interval=500, dtype=np.float64
    )
    for context, quality in zip(contexts, qualities, strict=True):
        posteriors.update(0, context, quality)
    return float(posteriors.weight_precision[0])


def test_learned_precision_grows_without_signal():
    alpha = learned_weight_precision(0.0, seed=20)

    assert alpha > 100 * LEARNED.weight_precision


def test_learned_precision_recovers_weight_scale():
    # In units of 1/sigma^2, weights of standard deviation tau under noise sigma have
    # precision sigma^2 / tau^2: 2.25 for tau = 0.2 and 0.09 for tau = 1.
    moderate = learned_weight_precision(0.2, seed=21)
    large = learned_weight_precision(1.0, seed=22)

    assert moderate == pytest.approx(2.25, rel=0.5)
    assert large == pytest.approx(0.09, rel=0.5)
    assert large < moderate < LEARNED.weight_precision


def test_learned_precision_is_evidence_maximum():
    rng = np.random.default_rng(23)
    dimension = 8
    contexts = random_contexts(rng, 200, dimension)
    weights = 0.2 * rng.standard_normal(dimension)
    qualities = contexts @ weights + 0.5 + 0.2 * rng.standard_normal(200)
    posteriors = LinearPosteriors(1, dimension, LEARNED, dtype=np.float64)

    posteriors.fit(0, contexts, qualities)

    alpha = float(posteriors.weight_precision[0])
    data_precision = contexts.T @ contexts
    terms = evidence_terms(
        data_precision,
        contexts.T @ qualities,
        float(qualities @ qualities),
        posteriors.prior_mean,
        LEARNED,
        float(posteriors.shape[0]),
    )
    best = terms.log_evidence(alpha)
    for factor in (0.8, 0.95, 1.05, 1.25):
        assert terms.log_evidence(alpha * factor) < best


def test_learned_precision_enters_posterior():
    rng = np.random.default_rng(24)
    dimension = 6
    contexts = random_contexts(rng, 100, dimension)
    qualities = rng.random(100)
    posteriors = LinearPosteriors(1, dimension, LEARNED, dtype=np.float64)

    posteriors.fit(0, contexts, qualities)

    alpha = float(posteriors.weight_precision[0])
    prior = PriorSettings(weight_precision=alpha)
    expected_precision, expected_mean, expected_scale = direct_solution(
        contexts, qualities, prior
    )
    assert alpha != LEARNED.weight_precision
    np.testing.assert_allclose(posteriors.precision[0], expected_precision, rtol=1e-10)
    np.testing.assert_allclose(posteriors.posterior_mean(0), expected_mean, rtol=1e-8)
    assert posteriors.scale[0] == pytest.approx(expected_scale, rel=1e-8)


def test_learned_precision_snapshot_round_trip():
    rng = np.random.default_rng(25)
    dimension = 5
    original = LinearPosteriors(3, dimension, LEARNED, refresh_interval=16)
    for context in random_contexts(rng, 40, dimension):
        original.update(int(rng.integers(3)), context, float(rng.random()))
    assert not np.all(original.weight_precision == LEARNED.weight_precision)

    restored = LinearPosteriors(3, dimension, LEARNED, refresh_interval=16)
    restored.restore(original.snapshot())

    np.testing.assert_array_equal(restored.weight_precision, original.weight_precision)
    for context in random_contexts(rng, 30, dimension):
        model_index = int(rng.integers(3))
        original.update(model_index, context, 0.75)
        restored.update(model_index, context, 0.75)
    first, second = original.snapshot(), restored.snapshot()
    assert first.keys() == second.keys()
    for name, value in first.items():
        np.testing.assert_array_equal(second[name], value, err_msg=name)


def test_fixed_prior_keeps_weight_precision():
    rng = np.random.default_rng(26)
    dimension = 5
    posteriors = LinearPosteriors(2, dimension, PRIOR, refresh_interval=4)
    for context in random_contexts(rng, 40, dimension):
        posteriors.update(int(rng.integers(2)), context, float(rng.random()))

    np.testing.assert_array_equal(
        posteriors.weight_precision, [PRIOR.weight_precision] * 2
    )


def test_learned_precision_with_forgetting():
    rng = np.random.default_rng(27)
    dimension = 10
    contexts = random_contexts(rng, 3000, dimension)
    qualities = 0.5 + 0.3 * rng.standard_normal(3000)
    posteriors = LinearPosteriors(
        1, dimension, LEARNED, half_life=500.0, dtype=np.float64
    )

    for context, quality in zip(contexts, qualities, strict=True):
        posteriors.update(0, context, quality)
    posteriors.refresh(0)

    data_precision = posteriors.precision[0] - np.diag(posteriors.prior_precision[0])
    assert posteriors.weight_precision[0] > 100 * LEARNED.weight_precision
    assert posteriors.effective_observations[0] < 1000
    np.testing.assert_allclose(
        posteriors.covariance[0], np.linalg.inv(posteriors.precision[0]), rtol=1e-8
    )
    assert np.linalg.eigvalsh(data_precision).min() > -1e-9
