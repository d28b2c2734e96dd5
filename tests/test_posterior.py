"""Per-model Bayesian linear regression: exactness of the kept covariance and mean."""

import numpy as np
import pytest

from banditroute.posterior import LinearPosteriors, PriorSettings

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
