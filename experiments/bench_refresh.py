"""Measure the time of one covariance refresh, with and without a learned prior.

A refresh folds ``refresh_interval`` pending contexts into a model's float64
precision and re-derives the covariance by a Cholesky factorization. With
``learn_weight_precision`` it also re-estimates the weight precision, which adds one
symmetric eigendecomposition of size d - 1 and a fixed-point iteration that costs
O(d) per step. Contexts are random unit vectors with a bias column, qualities are
random, and BLAS is limited to one thread. The best of ``--repeats`` CPU times is
reported, so that load from other processes matters less. Run:

    python experiments/bench_refresh.py [--dimension 385] [--repeats 20]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from threadpoolctl import threadpool_limits

from banditroute.posterior import LinearPosteriors, PriorSettings

REFRESH_INTERVAL = 1000


def time_refreshes(
    prior: PriorSettings, contexts: np.ndarray, qualities: np.ndarray, repeats: int
) -> float:
    """Return the smallest CPU time in seconds of one refresh over ``repeats``."""
    dimension = contexts.shape[1]
    posteriors = LinearPosteriors(
        1, dimension, prior, refresh_interval=REFRESH_INTERVAL
    )
    best = float("inf")
    for repeat in range(repeats + 1):
        rows = slice(repeat * REFRESH_INTERVAL, (repeat + 1) * REFRESH_INTERVAL)
        # Empty the pending buffer and fill it to one short of full, then time the
        # update that triggers the refresh (the update itself costs O(d^2)). The first
        # pass only warms up: below refresh_interval observations a learned prior
        # also refreshes at every power of two.
        posteriors.refresh(0)
        batch = zip(contexts[rows][:-1], qualities[rows][:-1], strict=True)
        for context, quality in batch:
            posteriors.update(0, context, float(quality))
        if repeat == 0:
            continue
        start = time.process_time()
        posteriors.update(0, contexts[rows][-1], float(qualities[rows][-1]))
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dimension", type=int, default=385)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    rng = np.random.default_rng(arguments.seed)
    rows = (arguments.repeats + 1) * REFRESH_INTERVAL
    contexts = rng.standard_normal((rows, arguments.dimension))
    contexts[:, 1:] /= np.linalg.norm(contexts[:, 1:], axis=1, keepdims=True)
    contexts[:, 0] = 1.0
    qualities = rng.random(rows)

    print(f"{platform.processor() or platform.machine()}, d={arguments.dimension}")
    with threadpool_limits(limits=1):
        for learned in (False, True):
            prior = PriorSettings(learn_weight_precision=learned)
            seconds = time_refreshes(prior, contexts, qualities, arguments.repeats)
            label = "learned weight precision" if learned else "fixed weight precision"
            print(f"{label:<26}{1000 * seconds:8.1f} ms per refresh", flush=True)


if __name__ == "__main__":
    main()
