"""Measure how fast Thompson sampling moves its traffic after the quality drifts.

Replays the multitask routing log from scratch, stationary and with two changes at
the stream midpoint: the best model's quality drops to the worst model's
(drift-drop), and the best model swaps qualities with a weak one (drift-swap). Each
is run without forgetting and with several half-lives, on the same seeds. Run:

    python experiments/drift.py [--seeds 5] [--half-lives none,500,1000,2000,4000]
        [--scenarios stationary,drift-drop,drift-swap]

Shift steps: decisions after the change until the changed best model's share in the
next WINDOW decisions falls below half its share in the WINDOW decisions before the
change. Regret to shift: summed oracle reward minus reward over those decisions.
Rise steps (swap only): decisions after the change until the share of the model that
became best exceeds half the earlier share of the old best.
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

from banditroute.policies import make_policy
from banditroute.replay import ReplaySettings, replay
from banditroute.scenario import (
    DEFAULT_SHARE_WINDOW,
    Scenario,
    adaptation,
    parse_scenario,
    stream_outcomes,
)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=MULTITASK_LOG)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--half-lives", default="none,500,1000,2000,4000")
    parser.add_argument("--window", type=int, default=DEFAULT_SHARE_WINDOW)
    parser.add_argument("--swap-with", default="mistral-7b-instruct-v0.3")
    parser.add_argument("--scenarios", default="stationary,drift-drop,drift-swap")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--plot", type=Path, default=Path("reports/drift.png"))
    return parser.parse_args()


def parse_half_lives(text: str) -> list[float | None]:
    return [None if item == "none" else float(item) for item in text.split(",")]


def best_model(log) -> str:
    quality = np.asarray(log.quality, dtype=float)
    complete = np.isfinite(quality).all(axis=1)
    return log.catalog.names[int(np.argmax(quality[complete].mean(axis=0)))]


def mean_share(log, result, scenario: Scenario, window: int) -> np.ndarray:
    """Return the seed-mean rolling share of the scenario's first model."""
    model = log.catalog.index(scenario.models[0])
    curves = [rolling_share(trace.model_index, model, window) for trace in result.runs]
    return np.mean(curves, axis=0)


def run_metrics(log, result, scenario: Scenario, window: int) -> dict[str, list]:
    """Return per-seed gap recovered and, with a change, the adaptation figures."""
    summary = result.summaries[0]
    figures = {
        "gap": list(summary.metrics["gap_recovered"].values),
        "gap_last_fifth": list(summary.metrics["gap_recovered_last_fifth"].values),
        "shift": [],
        "regret_to_shift": [],
        "regret_after": [],
        "rise": [],
    }
    if not scenario.changes:
        return figures

    model = log.catalog.index(scenario.models[0])
    for trace in result.runs:
        outcomes = stream_outcomes(
            scenario,
            log.catalog,
            np.asarray(log.quality, dtype=float)[trace.rows],
            np.asarray(log.cost_usd, dtype=float)[trace.rows],
            np.asarray(log.output_tokens, dtype=float)[trace.rows],
            np.asarray(log.input_tokens, dtype=float)[trace.rows],
        )
        oracle = (outcomes.quality - trace.cost_weight * outcomes.cost_usd).max(axis=1)
        measured = adaptation(
            trace.model_index,
            trace.reward,
            oracle,
            outcomes.change_step,
            model,
            arrived=False,
            window=window,
        )
        never = len(trace.rows) - outcomes.change_step
        figures["shift"].append(
            never if measured.shift_steps is None else measured.shift_steps
        )
        figures["regret_to_shift"].append(measured.regret_until_shift)
        figures["regret_after"].append(measured.regret_after_change)
        if len(scenario.models) == 2:
            rise = adaptation(
                trace.model_index,
                trace.reward,
                oracle,
                outcomes.change_step,
                log.catalog.index(scenario.models[1]),
                arrived=True,
                window=window,
                threshold=measured.threshold,
            )
            figures["rise"].append(
                never if rise.shift_steps is None else rise.shift_steps
            )
    return figures


def main() -> None:
    arguments = parse_arguments()
    log, contexts = load_log_and_contexts(arguments.log)
    best = best_model(log)
    texts = {
        "stationary": "stationary",
        "drift-drop": f"drift-drop:{best}",
        "drift-swap": f"drift-swap:{best},{arguments.swap_with}",
    }
    scenarios = [parse_scenario(texts[kind]) for kind in arguments.scenarios.split(",")]
    print(f"log: {arguments.log}, {arguments.seeds} seeds, thompson, cost weight 0")
    print(f"shift window: {arguments.window} decisions; change at the midpoint")
    header = (
        f"{'scenario':<60}{'half-life':>10}{'gap':>16}{'gap last 1/5':>16}"
        f"{'shift steps':>16}{'regret to shift':>18}{'regret/step after':>20}"
        f"{'rise steps':>16}"
    )
    print(header)
    panels: dict[str, dict[str, np.ndarray]] = {}
    change_step = 0
    for scenario in scenarios:
        for half_life in parse_half_lives(arguments.half_lives):
            settings = ReplaySettings(
                policies=("thompson",), seeds=arguments.seeds, scenario=scenario
            )
            result = replay(
                log,
                contexts,
                settings,
                progress=False,
                jobs=arguments.jobs,
                policy_factory=functools.partial(make_policy, half_life=half_life),
            )
            figures = run_metrics(log, result, scenario, arguments.window)
            name = scenario.kind + (
                ":" + ",".join(scenario.models) if scenario.models else ""
            )
            if scenario.changes:
                label = f"half-life {half_life:g}" if half_life else "no forgetting"
                curves = panels.setdefault(name, {})
                curves[label] = mean_share(log, result, scenario, arguments.window)
                change_step = scenario.change_step(len(result.runs[0].rows)) or 0
            row = f"{name:<60}{str(half_life or 'none'):>10}"
            row += f"{format_spread(figures['gap'], '.3f'):>16}"
            row += f"{format_spread(figures['gap_last_fifth'], '.3f'):>16}"
            if scenario.changes:
                row += f"{format_spread(figures['shift'], '.0f'):>16}"
                row += f"{format_spread(figures['regret_to_shift'], '.1f'):>18}"
                row += f"{format_spread(figures['regret_after'], '.3f'):>20}"
            if figures["rise"]:
                row += f"{format_spread(figures['rise'], '.0f'):>16}"
            print(row, flush=True)

    if panels:
        plot_shares(
            panels,
            change_step,
            arguments.plot,
            f"share of the changed model, last {arguments.window} decisions",
        )


if __name__ == "__main__":
    main()
