"""Tests of the synthetic workload generator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditroute.errors import ConfigError
from banditroute.synthetic import (
    FAMILIES,
    MODELS,
    SyntheticWorkload,
    generate_workload,
)

N_PROMPTS = 4000


@pytest.fixture(scope="module")
def workload() -> SyntheticWorkload:
    return generate_workload(N_PROMPTS, np.random.default_rng(20240501))


def family_means(workload: SyntheticWorkload) -> dict[str, np.ndarray]:
    """Mean expected quality per model, for each family."""
    families = np.array(workload.families)
    return {
        family: workload.expected_quality[families == family].mean(axis=0)
        for family in FAMILIES
    }


def test_same_seed_gives_same_workload() -> None:
    first = generate_workload(300, np.random.default_rng(5))
    second = generate_workload(300, np.random.default_rng(5))

    assert first.log.prompts == second.log.prompts
    assert first.families == second.families
    np.testing.assert_array_equal(first.expected_quality, second.expected_quality)
    np.testing.assert_array_equal(first.log.quality, second.log.quality)
    np.testing.assert_array_equal(first.log.output_tokens, second.log.output_tokens)
    np.testing.assert_array_equal(first.log.cost_usd, second.log.cost_usd)


def test_different_seeds_give_different_workloads() -> None:
    first = generate_workload(300, np.random.default_rng(5))
    second = generate_workload(300, np.random.default_rng(6))

    assert first.log.prompts != second.log.prompts
    assert not np.array_equal(first.log.quality, second.log.quality)
    assert not np.array_equal(first.expected_quality, second.expected_quality)


def test_workload_shapes(workload: SyntheticWorkload) -> None:
    shape = (N_PROMPTS, len(MODELS))
    log = workload.log

    assert len(log) == N_PROMPTS
    assert log.catalog.names == tuple(model.name for model in MODELS)
    assert workload.expected_quality.shape == shape
    assert log.quality.shape == shape
    assert log.cost_usd.shape == shape
    assert log.output_tokens.shape == shape
    assert log.input_tokens.shape == (N_PROMPTS,)
    assert len(log.prompt_ids) == len(set(log.prompt_ids)) == N_PROMPTS
    assert len(workload.families) == N_PROMPTS


def test_categories_are_families(workload: SyntheticWorkload) -> None:
    assert workload.log.categories == workload.families
    assert set(workload.families) == set(FAMILIES)


def test_report_counts_a_complete_log(workload: SyntheticWorkload) -> None:
    report = workload.log.report

    assert report.prompts == N_PROMPTS
    assert report.models == len(MODELS)
    assert report.rows == N_PROMPTS * len(MODELS)
    assert report.incomplete_prompts == 0
    assert workload.log.complete().all()


def test_qualities_are_zero_or_one(workload: SyntheticWorkload) -> None:
    assert set(np.unique(workload.log.quality)) == {0.0, 1.0}


def test_expected_quality_is_a_probability(workload: SyntheticWorkload) -> None:
    assert (workload.expected_quality > 0.0).all()
    assert (workload.expected_quality < 1.0).all()


def test_qualities_follow_expected_quality(workload: SyntheticWorkload) -> None:
    realized = workload.log.quality.mean(axis=0)
    expected = workload.expected_quality.mean(axis=0)

    # Binomial standard error at 4,000 draws is at most 0.008.
    np.testing.assert_allclose(realized, expected, atol=0.03)


def test_oracle_beats_best_single_model(workload: SyntheticWorkload) -> None:
    expected = workload.expected_quality
    best_single = expected.mean(axis=0).max()
    oracle = expected.max(axis=1).mean()

    assert oracle - best_single >= 0.12


def test_frontier_is_best_single_model(workload: SyntheticWorkload) -> None:
    best = int(np.argmax(workload.expected_quality.mean(axis=0)))

    assert workload.log.catalog.names[best] == "frontier"


def test_best_model_differs_between_families(workload: SyntheticWorkload) -> None:
    names = workload.log.catalog.names
    best = {
        family: names[int(np.argmax(m))] for family, m in family_means(workload).items()
    }

    assert len(set(best.values())) >= 3, best
    assert best["arithmetic"] == "math-specialist"
    assert best["python-coding"] == "code-specialist"
    assert best["trivia"] == "frontier"


def test_cheaper_model_matches_frontier_on_three_families(
    workload: SyntheticWorkload,
) -> None:
    catalog = workload.log.catalog
    frontier = catalog.index("frontier")
    cheaper = (catalog.input_usd_per_token < catalog.input_usd_per_token[frontier]) & (
        catalog.output_usd_per_token < catalog.output_usd_per_token[frontier]
    )
    matched = [
        family
        for family, means in family_means(workload).items()
        if means[cheaper].max() >= means[frontier]
    ]

    assert len(matched) >= 3, matched


def test_costs_equal_prices_times_tokens(workload: SyntheticWorkload) -> None:
    log = workload.log
    for model_index, model in enumerate(MODELS):
        expected = (
            log.input_tokens * model.input_usd_per_mtok
            + log.output_tokens[:, model_index] * model.output_usd_per_mtok
        ) / 1e6
        np.testing.assert_allclose(log.cost_usd[:, model_index], expected, rtol=1e-12)


def test_output_tokens_are_positive_whole_numbers(workload: SyntheticWorkload) -> None:
    tokens = workload.log.output_tokens

    assert (tokens >= 1).all()
    np.testing.assert_array_equal(tokens, np.rint(tokens))


def test_verbose_chat_model_writes_longest_answers(workload: SyntheticWorkload) -> None:
    mean_tokens = workload.log.output_tokens.mean(axis=0)

    assert workload.log.catalog.names[int(np.argmax(mean_tokens))] == "verbose-chat"


def test_input_tokens_estimate_characters(workload: SyntheticWorkload) -> None:
    expected = [math.ceil(len(prompt) / 4) for prompt in workload.log.prompts]

    np.testing.assert_array_equal(workload.log.input_tokens, expected)


def test_prompts_have_10_to_80_words(workload: SyntheticWorkload) -> None:
    word_counts = np.array([len(prompt.split()) for prompt in workload.log.prompts])

    assert word_counts.min() >= 10
    assert word_counts.max() <= 80


def test_prompts_of_one_family_vary(workload: SyntheticWorkload) -> None:
    prompts = np.array(workload.log.prompts)
    families = np.array(workload.families)
    for family in FAMILIES:
        texts = prompts[families == family]
        distinct_share = len(set(texts)) / len(texts)
        assert distinct_share > 0.5, family


def test_quality_varies_within_family(workload: SyntheticWorkload) -> None:
    families = np.array(workload.families)
    for family in FAMILIES:
        spread = workload.expected_quality[families == family].std(axis=0)
        assert (spread > 0.01).all(), family


def test_zero_prompts_are_rejected() -> None:
    with pytest.raises(ConfigError, match="n_prompts is 0"):
        generate_workload(0, np.random.default_rng(0))


@pytest.mark.slow
def test_encoder_separates_families(encoder) -> None:
    workload = generate_workload(640, np.random.default_rng(11))
    vectors = encoder.encode(workload.log.prompts).vectors
    families = np.array(workload.families)
    train = np.arange(len(families)) % 2 == 0

    centroids = np.stack(
        [vectors[train & (families == f)].mean(axis=0) for f in FAMILIES]
    )
    predicted = np.array(FAMILIES)[np.argmax(vectors[~train] @ centroids.T, axis=1)]
    accuracy = (predicted == families[~train]).mean()

    assert accuracy >= 0.95
