"""Compare Thompson sampling's exploration scale: learned noise against fixed settings.

Replays the multitask and AlpacaEval routing logs from scratch at two cost weights
each, on the same seeds, with these settings of the sampled standard deviation:

- learned prior: exact Thompson sampling (x1) with the learned noise variance and
  each model's weight precision learned by evidence maximization;
- learned: noise variance from each model's normal-inverse-gamma posterior, x1
  (exact Thompson sampling), with the fixed weight precision;
- learned x0.5: the same, scaled by exploration 0.5;
- fixed 0.25 and fixed 0.05: noise variance fixed, exploration 1.

Run:

    python experiments/noise.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
from replay_inputs import (
    ALPACAEVAL_LOG,
    MULTITASK_LOG,
    format_spread,
    load_log_and_contexts,
)

from banditroute.catalog import Catalog
from banditroute.policies import ContextualThompsonSampling
from banditroute.policy import Policy
from banditroute.posterior import PriorSettings
from banditroute.replay import ReplaySettings, replay

FIXED_PRIOR = PriorSettings(learn_weight_precision=False)
LEARNED_PRIOR = PriorSettings(learn_weight_precision=True)
SETTINGS = {
    "learned prior": {
        "exploration": 1.0,
        "noise_variance": None,
        "prior": LEARNED_PRIOR,
    },
    "learned x0.5": {"exploration": 0.5, "noise_variance": None, "prior": FIXED_PRIOR},
    "learned": {"exploration": 1.0, "noise_variance": None, "prior": FIXED_PRIOR},
    "fixed 0.25": {"exploration": 1.0, "noise_variance": 0.25, "prior": FIXED_PRIOR},
    "fixed 0.05": {"exploration": 1.0, "noise_variance": 0.05, "prior": FIXED_PRIOR},
}
COST_WEIGHTS = {MULTITASK_LOG: (0.0, 200.0), ALPACAEVAL_LOG: (0.0, 20.0)}


def build_thompson(
    name: str,
    catalog: Catalog,
    dimension: int,
    rng: np.random.Generator,
    *,
    exploration: float,
    noise_variance: float | None,
    prior: PriorSettings,
) -> Policy:
    return ContextualThompsonSampling(
        catalog,
        dimension,
        rng,
        prior=prior,
        exploration=exploration,
        noise_variance=noise_variance,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    arguments = parser.parse_args()

    print(f"{arguments.seeds} seeds, from scratch; gap recovered, mean ± std")
    print(
        f"{'log':<12}{'weight':>8}  {'setting':<14}"
        f"{'whole stream':>18}{'last fifth':>18}"
    )
    for path, weights in COST_WEIGHTS.items():
        log, contexts = load_log_and_contexts(path)
        for name in arguments.settings.split(","):
            result = replay(
                log,
                contexts,
                ReplaySettings(
                    policies=("thompson",), cost_weights=weights, seeds=arguments.seeds
                ),
                progress=False,
                policy_factory=functools.partial(build_thompson, **SETTINGS[name]),
            )
            for summary in result.summaries:
                whole = summary.metrics["gap_recovered"].values
                tail = summary.metrics["gap_recovered_last_fifth"].values
                print(
                    f"{path.parent.name:<12}{summary.cost_weight:>8g}  {name:<14}"
                    f"{format_spread(whole, '.3f'):>18}"
                    f"{format_spread(tail, '.3f'):>18}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
