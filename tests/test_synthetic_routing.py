"""Thompson sampling against the synthetic workload's ground truth.

The prompts go through the real encoder, and choices are scored by the generator's
success probabilities instead of the 0/1 draws, which removes the draw noise.
"""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from banditroute.features import FeatureBuilder
from banditroute.policies import make_policy
from banditroute.synthetic import generate_workload

N_PROMPTS = 2000


@pytest.fixture(scope="module")
def workload_contexts(encoder):
    workload = generate_workload(N_PROMPTS, np.random.default_rng(0))
    embeddings = encoder.encode(workload.log.prompts)
    contexts = FeatureBuilder(encoder.dimension).build(embeddings.vectors)
    return workload, contexts


def stream_expected_quality(policy_name, workload, contexts, seed):
    """Replay the workload once; return the ground-truth quality of each choice."""
    log = workload.log
    rng = np.random.default_rng(seed)
    policy = make_policy(policy_name, log.catalog, contexts.shape[1], rng)
    order = rng.permutation(len(log))

    expected = np.empty(len(order))
    with threadpool_limits(limits=1):
        _stream(policy, log, contexts, order, workload.expected_quality, expected)
    return expected


def _stream(policy, log, contexts, order, expected_quality, expected):
    for step, row in enumerate(order):
        decision = policy.decide(contexts[row], log.input_tokens[row], cost_weight=0.0)
        k = decision.model_index
        policy.update(k, contexts[row], log.quality[row, k], log.output_tokens[row, k])
        expected[step] = expected_quality[row, k]


@pytest.mark.slow
def test_thompson_beats_best_single_model(workload_contexts):
    workload, contexts = workload_contexts
    best_single = workload.expected_quality.mean(axis=0).max()
    oracle = workload.expected_quality.max(axis=1).mean()

    late = [
        stream_expected_quality("thompson", workload, contexts, seed)[N_PROMPTS // 2 :]
        for seed in range(4)
    ]
    late_quality = float(np.mean(late))

    assert late_quality > best_single
    assert late_quality < oracle


@pytest.mark.slow
def test_thompson_beats_noncontextual_sampling(workload_contexts):
    workload, contexts = workload_contexts

    contextual = stream_expected_quality("thompson", workload, contexts, seed=3)
    noncontextual = stream_expected_quality(
        "thompson-noncontextual", workload, contexts, seed=3
    )

    assert contextual.mean() > noncontextual.mean()
