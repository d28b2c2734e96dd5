"""Measure routing decisions per second (decide then update) of each policy on one core.

Contexts are precomputed unit vectors, like the cached embeddings a replay reads, so
the figures cover the policy alone. BLAS is limited to one thread. Run:

    python experiments/bench_policy.py [--dimension 384] [--models 9] [--steps 20000]
        [--half-lives 1000,4000]

Each ``--half-lives`` entry adds runs of Thompson sampling with forgetting at that
half-life (in feedback events), to measure the amortized cost of the discounting.
Those runs alternate with runs without forgetting ``--repeats`` times and count CPU
time, and the best rate of each is reported, so that load from other processes
affects both alike.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from banditroute.catalog import Catalog, ModelSpec
from banditroute.policies import make_policy

TARGET_THOMPSON_DECISIONS_PER_SECOND = 5_000
POLICIES = ("thompson", "linucb", "epsilon-greedy", "thompson-noncontextual")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dimension", type=int, default=384, help="embedding size")
    parser.add_argument("--models", type=int, default=9, help="catalog size")
    parser.add_argument(
        "--steps", type=int, default=20_000, help="decisions per policy"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--half-lives",
        default="",
        help="comma-separated half-lives of extra thompson runs with forgetting",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs per half-life"
    )
    return parser.parse_args()


def make_catalog(n_models: int) -> Catalog:
    return Catalog(
        ModelSpec(f"model-{i}", 0.1 * (i + 1), 0.2 * (i + 1)) for i in range(n_models)
    )


def make_contexts(rng: np.random.Generator, steps: int, dimension: int) -> np.ndarray:
    embeddings = rng.standard_normal((steps, dimension)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    bias = np.ones((steps, 1), dtype=np.float32)
    return np.hstack([bias, embeddings])


def measure(
    name: str,
    catalog: Catalog,
    contexts: np.ndarray,
    seed: int,
    half_life: float | None = None,
    timer=time.perf_counter,
) -> float:
    """Return decisions per second of ``name``, each context decided then updated.

    ``timer`` is wall time by default; ``time.process_time`` counts only this
    process's CPU time, which other jobs on the machine disturb less.
    """
    rng = np.random.default_rng(seed)
    policy = make_policy(name, catalog, contexts.shape[1], rng, half_life=half_life)
    qualities = rng.random(len(contexts))

    start = timer()
    for context, quality in zip(contexts, qualities, strict=True):
        decision = policy.decide(context, input_tokens=200, cost_weight=0.0)
        policy.update(decision.model_index, context, quality, output_tokens=256)
    elapsed = timer() - start
    return len(contexts) / elapsed


def compare_forgetting(
    catalog: Catalog,
    contexts: np.ndarray,
    seed: int,
    half_lives: list[float | None],
    repeats: int,
) -> None:
    """Print the best rate of thompson at each half-life over alternating runs."""
    best = dict.fromkeys(half_lives, 0.0)
    for _ in range(repeats):
        for half_life in half_lives:
            rate = measure(
                "thompson", catalog, contexts, seed, half_life, time.process_time
            )
            best[half_life] = max(best[half_life], rate)

    print(f"thompson with forgetting, CPU time, best of {repeats} alternating runs:")
    for half_life, rate in best.items():
        label = "no forgetting" if half_life is None else f"half-life {half_life:g}"
        ratio = rate / best[None]
        print(f"  {label:<22}{rate:>14,.0f}{1e6 / rate:>14.1f}{ratio:>8.2f}")


def main() -> None:
    arguments = parse_arguments()
    rng = np.random.default_rng(arguments.seed)
    catalog = make_catalog(arguments.models)
    contexts = make_contexts(rng, arguments.steps, arguments.dimension)

    with threadpool_limits(limits=1):
        blas = ", ".join(
            f"{pool['internal_api']} {pool.get('version', '?')}"
            for pool in threadpool_info()
        )
        print(f"machine: {platform.processor() or platform.machine()}, BLAS: {blas}")
        print(
            f"d = {arguments.dimension} (+1 bias), K = {arguments.models}, "
            f"{arguments.steps} decide+update steps per policy"
        )
        print(f"{'policy':<24}{'decisions/s':>14}{'us/decision':>14}")
        results = {}
        for name in POLICIES:
            rate = measure(name, catalog, contexts, arguments.seed)
            results[name] = rate
            print(f"{name:<24}{rate:>14,.0f}{1e6 / rate:>14.1f}")

        half_lives = [None, *map(float, filter(None, arguments.half_lives.split(",")))]
        if len(half_lives) > 1:
            compare_forgetting(
                catalog, contexts, arguments.seed, half_lives, arguments.repeats
            )

    thompson = results["thompson"]
    verdict = "met" if thompson >= TARGET_THOMPSON_DECISIONS_PER_SECOND else "MISSED"
    print(
        f"target: thompson >= {TARGET_THOMPSON_DECISIONS_PER_SECOND:,}/s -> "
        f"{thompson:,.0f}/s ({verdict}); "
        f"thompson / linucb = {thompson / results['linucb']:.2f}"
    )


if __name__ == "__main__":
    main()
