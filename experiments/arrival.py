"""Measure how fast Thompson sampling moves traffic to a cheaper model added mid-stream.

Replays the multitask routing log from scratch with the arrival scenario: at the
stream midpoint, a copy of the best model priced like the cheapest model joins the
catalog through ``add_model``. Run:

    python experiments/arrival.py [--seeds 5] [--cost-weight 200]

Takeover steps: decisions after the arrival until the new model's share in the next
WINDOW decisions exceeds one half. The other models keep the prompts they win, so the
script also reports the steps until the new model's share exceeds half the copied
model's share in the WINDOW decisions before the arrival. The share table gives the
new model's share of each tenth of the decisions after the arrival.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
from replay_inputs import (
    MULTITASK_LOG,
    format_spread,
    load_log_and_contexts,
    plot_shares,
    rolling_share,
)

from banditroute.catalog import Catalog
from banditroute.policies import ContextualThompsonSampling
from banditroute.policies.thompson import (
    DEFAULT_PROBE_OBSERVATIONS,
    DEFAULT_PROBE_SHARE,
)
from banditroute.policy import Policy
from banditroute.replay import ReplaySettings, replay
from banditroute.scenario import (
    DEFAULT_SHARE_WINDOW,
    adaptation,
    parse_scenario,
    stream_outcomes,
)

SHARE_PERIODS = 10


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=MULTITASK_LOG)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cost-weights", default="0,200")
    parser.add_argument("--half-life", type=float, default=None)
    parser.add_argument("--window", type=int, default=DEFAULT_SHARE_WINDOW)
    parser.add_argument("--probe-share", type=float, default=DEFAULT_PROBE_SHARE)
    parser.add_argument(
        "--probe-observations", type=int, default=DEFAULT_PROBE_OBSERVATIONS
    )
    parser.add_argument("--plot", type=Path, default=Path("reports/arrival.png"))
    return parser.parse_args()


def build_thompson(
    name: str,
    catalog: Catalog,
    dimension: int,
    rng: np.random.Generator,
    **options: float | int | None,
) -> Policy:
    return ContextualThompsonSampling(catalog, dimension, rng, **options)


def main() -> None:
    arguments = parse_arguments()
    log, contexts = load_log_and_contexts(arguments.log)
    quality = np.asarray(log.quality, dtype=float)
    complete = np.isfinite(quality).all(axis=1)
    best = log.catalog.names[int(np.argmax(quality[complete].mean(axis=0)))]
    scenario = parse_scenario(f"arrival:{best}")
    weights = tuple(float(weight) for weight in arguments.cost_weights.split(","))

    settings = ReplaySettings(
        policies=("thompson",),
        seeds=arguments.seeds,
        cost_weights=weights,
        scenario=scenario,
    )
    result = replay(
        log,
        contexts,
        settings,
        progress=False,
        policy_factory=functools.partial(
            build_thompson,
            half_life=arguments.half_life,
            probe_share=arguments.probe_share,
            probe_observations=arguments.probe_observations,
        ),
    )
    added = len(log.catalog)
    print(
        f"log: {arguments.log}, {arguments.seeds} seeds, thompson, half-life "
        f"{arguments.half_life}, probe share {arguments.probe_share} for "
        f"{arguments.probe_observations} feedback events; "
        f"{result.model_names[added]} (copy of {best}, priced "
        f"like the cheapest model) added at the midpoint; window {arguments.window}"
    )
    panels: dict[str, dict[str, np.ndarray]] = {}
    change_step = 0
    for weight in weights:
        takeover, takeover_of_copied, shares, copied_shares = [], [], [], []
        new_curves, copied_curves = [], []
        copied = log.catalog.index(best)
        for trace in (run for run in result.runs if run.cost_weight == weight):
            outcomes = stream_outcomes(
                scenario,
                log.catalog,
                quality[trace.rows],
                np.asarray(log.cost_usd, dtype=float)[trace.rows],
                np.asarray(log.output_tokens, dtype=float)[trace.rows],
                np.asarray(log.input_tokens, dtype=float)[trace.rows],
            )
            oracle = (outcomes.quality - weight * outcomes.cost_usd).max(axis=1)
            change = outcomes.change_step
            measured = adaptation(
                trace.model_index,
                trace.reward,
                oracle,
                change,
                added,
                arrived=True,
                window=arguments.window,
            )
            after = trace.model_index[change:]
            never = len(after)
            takeover.append(
                never if measured.shift_steps is None else measured.shift_steps
            )
            window = trace.model_index[change - arguments.window : change]
            copied_before = float(np.mean(window == copied))
            of_copied = adaptation(
                trace.model_index,
                trace.reward,
                oracle,
                change,
                added,
                arrived=True,
                window=arguments.window,
                threshold=copied_before / 2,
            )
            takeover_of_copied.append(
                never if of_copied.shift_steps is None else of_copied.shift_steps
            )
            periods = np.array_split(after, SHARE_PERIODS)
            shares.append([float(np.mean(part == added)) for part in periods])
            copied_shares.append([float(np.mean(part == copied)) for part in periods])
            new_curves.append(rolling_share(trace.model_index, added, arguments.window))
            copied_curves.append(
                rolling_share(trace.model_index, copied, arguments.window)
            )
            change_step = change
            assert not np.any(trace.model_index[:change] == added)

        print(f"\ncost weight {weight:g}")
        print(f"takeover steps: {format_spread(takeover, '.0f')} (per seed {takeover})")
        print(
            "steps until above half the copied model's earlier share: "
            f"{format_spread(takeover_of_copied, '.0f')} (per seed "
            f"{takeover_of_copied})"
        )
        print("share of the new model per tenth of the decisions after the arrival:")
        print("  " + "  ".join(f"{value:.2f}" for value in np.mean(shares, axis=0)))
        print(f"share of {best} over the same tenths:")
        print(
            "  " + "  ".join(f"{value:.2f}" for value in np.mean(copied_shares, axis=0))
        )
        panels[f"cost weight {weight:g}"] = {
            f"new model ({result.model_names[added]})": np.mean(new_curves, axis=0),
            f"copied model ({best})": np.mean(copied_curves, axis=0),
        }

    plot_shares(
        panels,
        change_step,
        arguments.plot,
        f"share of the last {arguments.window} decisions",
    )


if __name__ == "__main__":
    main()
