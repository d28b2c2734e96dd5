"""Replay budget pacing, model health checks and gradual rollout on the routing logs.

Each subcommand replays contextual Thompson sampling with one control on the
multitask and AlpacaEval logs (``DATA_DIR``, beside the project), prints its
figures and writes a plot into --out:

    python experiments/bench_controls.py pacing  [--seeds 5]
    python experiments/bench_controls.py health  [--seeds 5]
    python experiments/bench_controls.py rollout [--seeds 5]

Prompt embeddings come from the embedding cache ($BANDITROUTE_CACHE_DIR), so the
first run encodes the prompts and later runs do not.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from replay_inputs import DATA_DIR, load_log_and_contexts
from scipy import stats

from banditroute.controls import ControlSettings
from banditroute.health import HealthSettings
from banditroute.replay import ReplayResult, ReplaySettings, replay
from banditroute.report import control_markdown, control_summaries
from banditroute.routing_log import RoutingLog

LOG_NAMES = ("multitask", "alpacaeval")
POLICY = "thompson"

SWEEP_POINTS = 10
"""Fixed cost weights in the sweep that traces each log's cost-quality frontier."""

REFINE_POINTS = 4
"""Extra fixed weights swept between the two sweep points around each target."""

TARGET_POSITIONS = (0.5, 0.8)
"""Cost targets, as positions between the sweep's lowest and highest mean spend on
a log scale (0 is the lowest, 1 the highest)."""

PACING_TOLERANCE = 0.05
"""Largest accepted relative gap between spend after the warm-up and the target."""

WARMUP_REQUESTS = {"multitask": 200, "alpacaeval": 100}
"""Pacer warm-up per log: AlpacaEval has only 805 prompts."""

FAILING_FROM_STEP = {"multitask": 1000, "alpacaeval": 200}

ROLLOUT_SHARES = (0.2, 0.5)
ROLLOUT_COST_WEIGHT = {"multitask": 0.0, "alpacaeval": 20.0}


@dataclass(frozen=True)
class LoadedLog:
    name: str
    log: RoutingLog
    contexts: np.ndarray
    jobs: int = 1
    """Worker processes for each replay of this log."""


def load(name: str, jobs: int = 1) -> LoadedLog:
    """Read one routing log and build its contexts through the embedding cache."""
    log, contexts = load_log_and_contexts(DATA_DIR / name / "routing-log.jsonl.gz")
    return LoadedLog(name, log, contexts, jobs)


def run(loaded: LoadedLog, settings: ReplaySettings) -> ReplayResult:
    return replay(
        loaded.log, loaded.contexts, settings, progress=False, jobs=loaded.jobs
    )


def model_costs(loaded: LoadedLog) -> dict[str, float]:
    """Return each model's mean cost per request over the complete prompts."""
    cost = np.asarray(loaded.log.cost_usd, dtype=float)
    quality = np.asarray(loaded.log.quality, dtype=float)
    complete = np.isfinite(cost).all(axis=1) & np.isfinite(quality).all(axis=1)
    means = cost[complete].mean(axis=0)
    return dict(zip(loaded.log.catalog.names, means.tolist(), strict=True))


def best_model(loaded: LoadedLog) -> str:
    quality = np.asarray(loaded.log.quality, dtype=float)
    complete = np.isfinite(quality).all(axis=1)
    return loaded.log.catalog.names[int(quality[complete].mean(axis=0).argmax())]


# Budget pacing


def sweep_weights(costs: dict[str, float], best: str) -> tuple[float, ...]:
    """Return 0 and fixed weights on a log grid that spans the log's cost range."""
    cheapest = min(costs.values())
    grid = np.geomspace(0.03 / costs[best], 3.0 / cheapest, SWEEP_POINTS - 1)
    return (0.0, *(float(f"{w:.4g}") for w in grid))


def refine_weights(
    sweep: dict[float, tuple[np.ndarray, np.ndarray]], target: float
) -> tuple[float, ...]:
    """Return REFINE_POINTS weights between the two sweep points around ``target``.

    Spend falls as the weight rises, so the bracket is the last weight that spends
    more than the target and the next one.
    """
    weights = sorted(sweep)
    spends = [sweep[w][0].mean() for w in weights]
    for low, high, spend in zip(weights, weights[1:], spends, strict=False):
        next_spend = sweep[high][0].mean()
        if spend >= target >= next_spend:
            start = low if low > 0 else high / 10
            grid = np.geomspace(start, high, REFINE_POINTS + 2)[1:-1]
            return tuple(float(f"{w:.4g}") for w in grid)
    return ()


def sweep_outcomes(
    result: ReplayResult, weights: tuple[float, ...]
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Return the per-seed (cost, quality) arrays of each fixed weight."""
    return {
        w: (per_seed(result, w, "cost_usd"), per_seed(result, w, "quality"))
        for w in weights
    }


def per_seed(result: ReplayResult, weight: float, metric: str) -> np.ndarray:
    return result.summary(POLICY, weight).metrics[metric].values


def envelope_quality(
    points: list[tuple[float, float]], spend: np.ndarray | float
) -> np.ndarray:
    """Return the upper envelope of (cost, quality) points at ``spend``.

    Read by linear interpolation, which a mix of two fixed weights reaches, and NaN
    outside the points' spends. Spending more never needs to buy less, so the
    envelope keeps the running maximum of quality.
    """
    points = sorted(points)
    costs = np.array([c for c, _ in points])
    qualities = np.maximum.accumulate(np.array([q for _, q in points]))
    spend = np.asarray(spend, dtype=float)
    inside = (costs[0] <= spend) & (spend <= costs[-1])
    return np.where(inside, np.interp(spend, costs, qualities), np.nan)


def frontier_quality(
    sweep: dict[float, tuple[np.ndarray, np.ndarray]], seed: int, spend: float
) -> float:
    """Return the envelope of one seed's fixed-weight points at ``spend``.

    It takes the best of several noisy qualities at nearly the same spend, so it
    reads high by about the seed noise.
    """
    points = [(cost[seed], quality[seed]) for cost, quality in sweep.values()]
    return float(envelope_quality(points, spend))


def mean_frontier_quality(
    sweep: dict[float, tuple[np.ndarray, np.ndarray]], spend: np.ndarray
) -> np.ndarray:
    """Return the envelope of the fixed weights' seed means at ``spend``.

    Each fixed weight is one point, its mean cost and mean quality over the seeds,
    so seed noise does not raise the envelope.
    """
    points = [
        (float(cost.mean()), float(quality.mean())) for cost, quality in sweep.values()
    ]
    return envelope_quality(points, spend)


def pacing(args: argparse.Namespace) -> dict:
    figures = {}
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(args.logs), squeeze=False)[0]

    for axes, name in zip(panels, args.logs, strict=True):
        loaded = load(name, args.jobs)
        costs = model_costs(loaded)
        best = best_model(loaded)
        weights = sweep_weights(costs, best)
        base = ReplaySettings(policies=(POLICY,), seeds=args.seeds, cost_weights=(0.0,))

        coarse = run(loaded, replace(base, cost_weights=weights))
        sweep = sweep_outcomes(coarse, weights)
        spends = np.array([sweep[w][0].mean() for w in weights])
        low, high = spends.min(), spends.max()
        targets = [float(f"{low * (high / low) ** p:.3g}") for p in TARGET_POSITIONS]
        refined = tuple(
            w for t in targets for w in refine_weights(sweep, t) if w not in sweep
        )
        if refined:
            fine = run(loaded, replace(base, cost_weights=refined))
            sweep.update(sweep_outcomes(fine, refined))

        print(
            f"\n## {name}: cheapest model {min(costs.values()):.4g} USD, best model "
            f"{best} {costs[best]:.4g} USD; fixed-weight sweep spends "
            f"{low:.4g} to {high:.4g} USD"
        )
        print("| fixed weight | cost USD | quality |")
        print("| ---: | ---: | ---: |")
        for weight in sorted(sweep):
            cost, quality = sweep[weight]
            print(
                f"| {weight:g} | {cost.mean():.4g} | {quality.mean():.3f} ± "
                f"{quality.std(ddof=1):.3f} |"
            )

        rows = []
        for target in targets:
            controls = ControlSettings(
                cost_target=target, pacing_warmup_requests=WARMUP_REQUESTS[name]
            )
            paced = run(loaded, replace(base, controls=controls))
            rows.append(pacing_row(paced, sweep, target))
            print("\n".join(control_markdown(paced)))
            plot_paced(axes, paced, target)

        points = {
            w: (float(cost.mean()), float(quality.mean()))
            for w, (cost, quality) in sorted(sweep.items())
        }
        figures[name] = {
            "targets": rows,
            "sweep": {str(w): p for w, p in points.items()},
        }
        print_pacing_rows(name, rows)
        for w, (c, q) in points.items():
            axes.scatter(c, q, color="0.5", s=12)
            axes.annotate(f"w={w:g}", (c, q), fontsize=6, color="0.4")
        axes.set_xscale("log")
        axes.set_xlabel("mean cost per request (USD)")
        axes.set_ylabel("mean quality")
        axes.set_title(f"{name}: fixed weights (grey) and paced runs")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")

    figure.savefig(args.out / "pacing.png", dpi=120)
    return figures


def pacing_row(
    paced: ReplayResult,
    sweep: dict[float, tuple[np.ndarray, np.ndarray]],
    target: float,
) -> dict:
    summary = control_summaries(paced)[(POLICY, 0.0)]["pacing"]
    after = summary["mean_cost_after_warmup"].values
    spend = per_seed(paced, 0.0, "cost_usd")
    quality = per_seed(paced, 0.0, "quality")
    frontier = np.array(
        [frontier_quality(sweep, seed, spend[seed]) for seed in range(len(spend))]
    )
    return {
        "mean_frontier_quality": mean_frontier_quality(sweep, spend).tolist(),
        "target": target,
        "relative_gap_after_warmup": (after / target - 1.0).tolist(),
        "spend": spend.tolist(),
        "quality": quality.tolist(),
        "frontier_quality": frontier.tolist(),
        "median_weight": summary["median_cost_weight_after_warmup"].values.tolist(),
    }


def print_pacing_rows(name: str, rows: list[dict]) -> None:
    print(f"\n### {name}: paced Thompson sampling (mean ± std over seeds)")
    print(
        "| target USD | spend after warm-up vs target | seeds within 5% | "
        "spend, whole stream | quality | frontier at that spend | "
        "quality - frontier |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        gap = np.array(row["relative_gap_after_warmup"]) * 100
        within = int((np.abs(gap) <= PACING_TOLERANCE * 100).sum())
        quality = np.array(row["quality"])
        frontier = np.array(row["frontier_quality"])
        difference = quality - frontier
        spend = np.array(row["spend"])
        print(
            f"| {row['target']:.4g} | {gap.mean():+.1f}% ± {gap.std(ddof=1):.1f}% | "
            f"{within}/{len(gap)} | {spend.mean():.4g} | "
            f"{quality.mean():.3f} ± {quality.std(ddof=1):.3f} | "
            f"{np.nanmean(frontier):.3f} ± {np.nanstd(frontier, ddof=1):.3f} | "
            f"{np.nanmean(difference):+.3f} ± {np.nanstd(difference, ddof=1):.3f} |"
        )

    print(
        f"\n### {name}: paced quality minus the frontier of the fixed weights' seed "
        "means at each seed's spend (95% interval of the mean)"
    )
    print("| target USD | frontier of seed means | paced - frontier |")
    print("| ---: | ---: | ---: |")
    for row in rows:
        frontier = np.array(row["mean_frontier_quality"])
        difference = np.array(row["quality"]) - frontier
        low, high = mean_interval(difference[np.isfinite(difference)])
        print(
            f"| {row['target']:.4g} | {np.nanmean(frontier):.3f} | "
            f"{np.nanmean(difference):+.4f} [{low:+.4f}, {high:+.4f}] |"
        )


def mean_interval(values: np.ndarray) -> tuple[float, float]:
    """Return the 95% Student-t interval of the mean of ``values``."""
    half = stats.t.ppf(0.975, len(values) - 1) * stats.sem(values)
    return float(values.mean() - half), float(values.mean() + half)


def plot_paced(axes, paced: ReplayResult, target: float) -> None:
    spend = per_seed(paced, 0.0, "cost_usd")
    quality = per_seed(paced, 0.0, "quality")
    axes.scatter(spend, quality, marker="*", s=60, label=f"paced, target {target:.3g}")
    axes.axvline(target, color="0.7", linestyle=":", linewidth=1)


# Failing models


def health(args: argparse.Namespace) -> dict:
    figures = {}
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(args.logs), squeeze=False)[0]

    for axes, name in zip(panels, args.logs, strict=True):
        loaded = load(name, args.jobs)
        failing = best_model(loaded)
        from_step = FAILING_FROM_STEP[name]
        base = ReplaySettings(policies=(POLICY,), seeds=args.seeds)
        scenario = ControlSettings(failing_model=failing, failing_from_step=from_step)
        results = {
            "no failure": run(loaded, base),
            "failing, no breakers": run(loaded, replace(base, controls=scenario)),
            "failing, breakers": run(
                loaded,
                replace(base, controls=replace(scenario, health=HealthSettings())),
            ),
        }

        print(
            f"\n## {name}: {failing} fails on every call from step {from_step} "
            f"(1 s per request, {args.seeds} seeds)"
        )
        print(
            "| scenario | requests to it before first cooldown | requests to it "
            "after failure start | quality after failure start |"
        )
        print("| --- | ---: | ---: | ---: |")
        figures[name] = {}
        for label, result in results.items():
            row = failure_row(result, loaded, failing, from_step)
            figures[name][label] = row
            print(
                f"| {label} | {fmt(row['before_cooldown'])} | {fmt(row['total'])} | "
                f"{fmt(row['quality_after'], '{:.3f}')} |"
            )
            plot_share(axes, result, loaded, failing, label)

        axes.axvline(from_step, color="black", linestyle=":", linewidth=1)
        axes.set_xlabel("stream step")
        axes.set_ylabel("share of the last 50 requests")
        axes.set_title(f"{name}: {failing} fails from step {from_step}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")

    figure.savefig(args.out / "health.png", dpi=120)
    return figures


def failure_row(
    result: ReplayResult, loaded: LoadedLog, failing: str, from_step: int
) -> dict:
    model = loaded.log.catalog.index(failing)
    runs = sorted(result.runs, key=lambda t: t.seed)
    total = [int((t.model_index[from_step:] == model).sum()) for t in runs]
    quality_after = [float(t.quality[from_step:].mean()) for t in runs]
    before = [float("nan")] * len(runs)
    summaries = control_summaries(result)
    if summaries:
        failure = summaries[(POLICY, 0.0)]["failure"]
        before = failure["requests_before_cooldown"].values.tolist()
    return {"before_cooldown": before, "total": total, "quality_after": quality_after}


def plot_share(axes, result, loaded, failing, label) -> None:
    model = loaded.log.catalog.index(failing)
    window = 50
    shares = []
    for trace in result.runs:
        routed = (trace.model_index == model).astype(float)
        shares.append(np.convolve(routed, np.ones(window) / window, mode="valid"))
    # Each mean covers the window that ends at its step.
    steps = np.arange(window - 1, window - 1 + len(shares[0]))
    axes.plot(steps, np.mean(shares, axis=0), label=label, linewidth=1)


def fmt(values, number_format: str = "{:.1f}") -> str:
    values = np.asarray(values, dtype=float)
    if np.isnan(values).all():
        return "n/a"
    mean = number_format.format(values.mean())
    return f"{mean} ± {number_format.format(values.std(ddof=1))}"


# Gradual rollout


def rollout(args: argparse.Namespace) -> dict:
    figures = {}
    for name in args.logs:
        loaded = load(name, args.jobs)
        default = best_model(loaded)
        weight = ROLLOUT_COST_WEIGHT[name]
        figures[name] = {}
        for share in ROLLOUT_SHARES:
            settings = ReplaySettings(
                policies=(POLICY,),
                seeds=args.seeds,
                cost_weights=(weight,),
                controls=ControlSettings(rollout_share=share, default_model=default),
            )
            result = run(loaded, settings)
            print(f"\n# {name}, share {share:g}, default {default}, weight {weight:g}")
            print("\n".join(control_markdown(result)))
            summary = control_summaries(result)[(POLICY, weight)]["rollout"]
            figures[name][str(share)] = {
                key: spread.values.tolist() for key, spread in summary.items()
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("control", choices=("pacing", "health", "rollout"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("reports/controls"))
    parser.add_argument("--logs", nargs="+", choices=LOG_NAMES, default=LOG_NAMES)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = parser.parse_args()

    if not DATA_DIR.is_dir():
        sys.exit(
            f"The routing logs are not in {DATA_DIR}; put them beside the project."
        )
    logging.basicConfig(level=logging.WARNING)
    # Every cooldown of the failing model is logged; the tables report them.
    logging.getLogger("banditroute.health").setLevel(logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)

    experiments = {"pacing": pacing, "health": health, "rollout": rollout}
    figures = experiments[args.control](args)
    path = args.out / f"{args.control}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"\nFigures written to {path}")


if __name__ == "__main__":
    main()
