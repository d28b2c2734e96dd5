"""Write a replay's results as JSON, CSV, Markdown and PNG plots.

The plots are drawn on matplotlib ``Figure`` objects with the Agg canvas, without
pyplot, so writing a report neither needs a display nor changes the global backend.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from banditroute.controls import run_control_summary
from banditroute.replay import POLICY_METRICS, PolicySummary, ReplayResult, SeedSpread
from banditroute.rollout import OUTCOMES

logger = logging.getLogger(__name__)

LOG_SCALE_MIN_RATIO = 10.0
"""The cost axis is logarithmic when the max mean cost exceeds this times the min."""

MAX_WEIGHTS_PER_SHARE_PLOT = 3
"""Up to this many cost weights, model shares get one panel per policy and weight."""

PLOT_DPI = 120

MARKDOWN_COLUMNS = (
    ("quality", "quality", "{:.3f}"),
    ("cost (USD)", "cost_usd", "{:.3g}"),
    ("reward", "reward", "{:.4f}"),
    ("regret", "regret", "{:.4f}"),
    ("gap recovered", "gap_recovered", "{:.2f}"),
    ("gap recovered, last fifth", "gap_recovered_last_fifth", "{:.2f}"),
)
"""Header, metric name and number format of each column of the Markdown tables."""


def write_report(result: ReplayResult, out_dir: Path, title: str) -> list[Path]:
    """Write the report files of ``result`` into ``out_dir`` and return their paths.

    The folder is created if needed, and existing report files in it are replaced.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    paths = [
        _write_json(result, out_dir / "results.json", title),
        _write_csv(result, out_dir / "summary.csv"),
        _write_markdown(result, out_dir / "summary.md", title),
        _plot_learning_curves(result, out_dir / "learning_curves.png", title),
        _plot_cost_quality(result, out_dir / "cost_quality.png", title),
        _plot_model_shares(result, out_dir / "model_shares.png", title),
    ]
    logger.info("Wrote the replay report to %s", out_dir)
    return paths


def format_spread(
    spread: SeedSpread, number_format: str, separator: str = " ± "
) -> str:
    """Format a metric as ``mean ± std``, or as the mean alone with a single seed."""
    if math.isnan(spread.mean):
        return "n/a"

    text = _format_number(spread.mean, number_format)
    if math.isnan(spread.std):
        return text
    return f"{text}{separator}{_format_number(spread.std, number_format)}"


def _format_number(value: float, number_format: str) -> str:
    """Format ``value``, writing a value that rounds to zero without a minus sign."""
    text = number_format.format(value)
    if float(text) == 0.0:
        return number_format.format(0.0)
    return text


# JSON


def _json_number(value: float) -> float | None:
    """Return ``value`` as a float, or None for NaN and infinity, which JSON lacks."""
    value = float(value)
    return value if math.isfinite(value) else None


def _json_spread(spread: SeedSpread) -> dict[str, Any]:
    return {
        "mean": _json_number(spread.mean),
        "std": _json_number(spread.std),
        "per_seed": [_json_number(value) for value in spread.values],
    }


def _json_metrics(metrics: dict[str, SeedSpread]) -> dict[str, Any]:
    return {name: _json_spread(spread) for name, spread in metrics.items()}


def _json_cost_weight(result: ReplayResult, weight: float) -> dict[str, Any]:
    reference = result.reference(weight)
    summaries = [s for s in result.summaries if s.cost_weight == weight]
    return {
        "cost_weight": weight,
        "policies": {s.policy: _json_metrics(s.metrics) for s in summaries},
        "best_single_model": reference.best_model,
        "single_models": {
            name: _json_metrics(metrics) for name, metrics in reference.models.items()
        },
        "oracle": _json_metrics(reference.oracle),
        "learning_curves": {
            s.policy: {
                "mean": [_json_number(v) for v in s.curve.mean(axis=0)],
                "per_seed": [[_json_number(v) for v in row] for row in s.curve],
            }
            for s in summaries
        },
        "model_shares": {
            s.policy: {
                name: [_json_number(v) for v in s.shares.mean(axis=0)[:, k]]
                for k, name in enumerate(result.model_names)
            }
            for s in summaries
        },
    }


def _json_seed_baselines(result: ReplayResult) -> list[dict[str, Any]]:
    rows = []
    for baseline in result.baselines:
        whole = baseline.whole
        tail = baseline.last_fifth
        rows.append(
            {
                "seed": baseline.seed,
                "cost_weight": baseline.cost_weight,
                "best_single_model": result.model_names[whole.best_model_index],
                "best_single_reward": _json_number(whole.best_model_reward),
                "oracle_reward": _json_number(whole.oracle_reward),
                "best_single_model_last_fifth": result.model_names[
                    tail.best_model_index
                ],
                "best_single_reward_last_fifth": _json_number(tail.best_model_reward),
                "oracle_reward_last_fifth": _json_number(tail.oracle_reward),
            }
        )
    return rows


def _write_json(result: ReplayResult, path: Path, title: str) -> Path:
    document = {
        "title": title,
        "settings": dataclasses.asdict(result.settings),
        "inputs": result.inputs,
        "load_report": dataclasses.asdict(result.load_report),
        "prompts": {
            "in_log": result.prompts,
            "excluded": result.excluded_prompts,
            "warm_start_per_seed": result.warm_start_prompts,
            "stream_per_seed": result.stream_prompts,
        },
        "models": list(result.model_names),
        "window_edges": [int(edge) for edge in result.window_edges],
        "cost_weights": [
            _json_cost_weight(result, weight) for weight in result.settings.cost_weights
        ],
        "seed_baselines": _json_seed_baselines(result),
    }
    controls = control_summaries(result)
    if controls:
        document["controls"] = [
            {
                "policy": policy,
                "cost_weight": weight,
                **{
                    control: _json_metrics(metrics)
                    for control, metrics in per_control.items()
                },
            }
            for (policy, weight), per_control in controls.items()
        ]
    text = json.dumps(document, indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


# CSV


def _write_csv(result: ReplayResult, path: Path) -> Path:
    header = ["policy", "cost_weight"]
    for name in POLICY_METRICS:
        header += [f"{name}_mean", f"{name}_std"]

    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for summary in result.summaries:
            row: list[object] = [summary.policy, summary.cost_weight]
            for name in POLICY_METRICS:
                spread = summary.metrics[name]
                row += [_csv_number(spread.mean), _csv_number(spread.std)]
            writer.writerow(row)
    return path


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


# Markdown


def _markdown_row(label: str, metrics: dict[str, SeedSpread]) -> str:
    cells = [label]
    for _, name, number_format in MARKDOWN_COLUMNS:
        cells.append(format_spread(metrics[name], number_format))
    return "| " + " | ".join(cells) + " |"


def _markdown_table(result: ReplayResult, weight: float) -> list[str]:
    reference = result.reference(weight)
    header = ["policy", *(column for column, _, _ in MARKDOWN_COLUMNS)]
    lines = [
        f"## Cost weight {weight:g} (quality points per USD)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * len(MARKDOWN_COLUMNS)) + "|",
    ]
    for summary in result.summaries:
        if summary.cost_weight == weight:
            lines.append(_markdown_row(summary.policy, summary.metrics))

    best = reference.best_model
    lines.append(_markdown_row(f"best single model ({best})", reference.models[best]))
    lines.append(_markdown_row("oracle", reference.oracle))
    lines.append("")
    return lines


def _markdown_settings(result: ReplayResult) -> list[str]:
    settings = dataclasses.asdict(result.settings)
    lines = ["## Settings", ""]
    lines += [f"- {name}: `{value}`" for name, value in settings.items()]
    lines += [f"- {name}: `{value}`" for name, value in result.inputs.items()]
    lines.append("")
    return lines


def _markdown_prompts(result: ReplayResult) -> list[str]:
    lines = ["## Routing log", ""]
    lines += [f"- {line}" for line in result.load_report.lines()]
    lines += [
        f"- {result.excluded_prompts:,} of {result.prompts:,} prompts excluded from "
        "the replay because some model lacks a quality or cost",
        f"- per seed: {result.warm_start_prompts:,} warm-start prompts, "
        f"{result.stream_prompts:,} streamed prompts",
        "",
    ]
    return lines


def _spread_sentence(seeds: int) -> str:
    if seeds == 1:
        return "Values come from a single seed."
    return f"Values are mean ± sample standard deviation over {seeds} seeds."


def _write_markdown(result: ReplayResult, path: Path, title: str) -> Path:
    seeds = result.settings.seeds
    lines = [
        f"# {title}",
        "",
        "Reward = quality - cost weight x cost in USD, averaged over the streamed "
        f"prompts. {_spread_sentence(seeds)} Regret is the "
        "oracle's reward (best model per prompt, in hindsight) minus the policy's. "
        "Gap recovered is (policy - best single model) / (oracle - best single "
        "model): 0 matches the best single model and 1 the oracle. The last-fifth "
        "column recomputes it on the last fifth of the stream.",
        "",
    ]
    for weight in result.settings.cost_weights:
        lines += _markdown_table(result, weight)
    lines += control_markdown(result)
    lines += _markdown_prompts(result)
    lines += _markdown_settings(result)

    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# Controls


def control_summaries(
    result: ReplayResult,
) -> dict[tuple[str, float], dict[str, dict[str, SeedSpread]]]:
    """Return each run's control summaries over seeds, keyed by (policy, weight).

    Empty when the replay ran without controls.
    """
    controls = result.settings.controls
    if not controls.active:
        return {}

    per_run: dict[tuple[str, float], list[dict[str, dict[str, float]]]] = {}
    for trace in sorted(result.runs, key=lambda t: t.seed):
        summary = run_control_summary(trace, controls, result.model_names)
        per_run.setdefault((trace.policy, trace.cost_weight), []).append(summary)

    spreads = {}
    for key, seeds in per_run.items():
        spreads[key] = {
            control: {
                name: SeedSpread(np.array([seed[control][name] for seed in seeds]))
                for name in seeds[0][control]
            }
            for control in seeds[0]
        }
    return spreads


def control_markdown(result: ReplayResult) -> list[str]:
    """Return the Markdown sections of the active controls (none without controls)."""
    summaries = control_summaries(result)
    if not summaries:
        return []

    lines: list[str] = []
    first = next(iter(summaries.values()))
    if "pacing" in first:
        lines += _pacing_markdown(result, summaries)
    if "failure" in first:
        lines += _failure_markdown(result, summaries)
    if "rollout" in first:
        lines += _rollout_markdown(result, summaries)
    return lines


def _pacing_markdown(result: ReplayResult, summaries: dict) -> list[str]:
    controls = result.settings.controls
    target = controls.cost_target
    lines = [
        "## Budget pacing",
        "",
        f"Target mean cost {target:.4g} USD per request. The pacer sets every "
        f"decision's cost weight and holds it for the first "
        f"{controls.pacing_warmup_requests} requests (warm-up).",
        "",
        "| policy | mean cost after warm-up (USD) | vs target | quality | "
        "median weight after warm-up | final weight |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (policy, weight), per_control in summaries.items():
        pacing = per_control["pacing"]
        relative = SeedSpread(pacing["mean_cost_after_warmup"].values / target - 1.0)
        quality = result.summary(policy, weight).metrics["quality"]
        lines.append(
            "| "
            + " | ".join(
                [
                    policy,
                    format_spread(pacing["mean_cost_after_warmup"], "{:.4g}"),
                    _signed_percent(relative),
                    format_spread(quality, "{:.3f}"),
                    format_spread(pacing["median_cost_weight_after_warmup"], "{:.4g}"),
                    format_spread(pacing["final_cost_weight"], "{:.4g}"),
                ]
            )
            + " |"
        )
    lines.append("")
    return lines


def _signed_percent(relative: SeedSpread) -> str:
    """Format a relative gap as a signed percentage with its spread over seeds."""
    text = f"{relative.mean * 100:+.1f}%"
    if math.isnan(relative.std):
        return text
    return f"{text} ± {relative.std * 100:.1f}%"


def _failure_markdown(result: ReplayResult, summaries: dict) -> list[str]:
    controls = result.settings.controls
    breakers = "with" if controls.health is not None else "without"
    lines = [
        "## Failing model",
        "",
        f"Every call of {controls.failing_model} fails from step "
        f"{controls.failing_from_step} on ({controls.seconds_per_request:g} s per "
        f"request), replayed {breakers} circuit breakers. A failed call is not "
        "billed and counts as quality 0.",
        "",
        "| policy | cost weight | requests before first cooldown | "
        "requests after failure start | first cooldown step |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for (policy, weight), per_control in summaries.items():
        failure = per_control["failure"]
        cells = [
            policy,
            f"{weight:g}",
            format_spread(failure["requests_before_cooldown"], "{:.1f}"),
            format_spread(failure["requests_total"], "{:.1f}"),
            format_spread(failure["first_cooldown_step"], "{:.0f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _rollout_markdown(result: ReplayResult, summaries: dict) -> list[str]:
    controls = result.settings.controls
    seeds = result.settings.seeds
    lines = [
        "## Rollout",
        "",
        f"Share {controls.rollout_share:g} of requests routed by the policy (bandit "
        f"group), the rest to {controls.default_model} (default group). Each cell "
        "is the estimate with its 95% interval (t interval for a group, Welch's for "
        "the difference bandit minus default), averaged over seeds. The last column "
        f"counts the seeds, of {seeds}, whose difference interval lies above 0 and "
        "below 0.",
        "",
    ]
    for (policy, weight), per_control in summaries.items():
        rollout = per_control["rollout"]
        bandit = rollout["bandit_requests"].mean
        default = rollout["default_requests"].mean
        lines += [
            f"### {policy}, cost weight {weight:g} ({bandit:.0f} bandit and "
            f"{default:.0f} default requests per seed on average)",
            "",
            "| outcome | bandit group | default group | difference | "
            "seeds above / below 0 |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for outcome in OUTCOMES:
            number_format = "{:.4g}" if outcome == "cost_usd" else "{:.4f}"
            cells = [outcome]
            for part in ("bandit", "default", "difference"):
                cells.append(
                    _interval_cell(rollout, f"{part}_{outcome}", number_format)
                )
            low = rollout[f"difference_{outcome}_low"].values
            high = rollout[f"difference_{outcome}_high"].values
            cells.append(f"{int((low > 0).sum())} / {int((high < 0).sum())}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _interval_cell(
    rollout: dict[str, SeedSpread], prefix: str, number_format: str
) -> str:
    estimate = _format_number(rollout[prefix].mean, number_format)
    low = _format_number(rollout[f"{prefix}_low"].mean, number_format)
    high = _format_number(rollout[f"{prefix}_high"].mean, number_format)
    return f"{estimate} [{low}, {high}]"


# Plots


def _new_figure(
    n_panels: int, columns: int, panel_size: tuple[float, float]
) -> tuple[Figure, np.ndarray]:
    """Return a figure and its grid of axes, flattened, with unused axes hidden."""
    columns = min(columns, n_panels)
    rows = math.ceil(n_panels / columns)
    figure = Figure(
        figsize=(panel_size[0] * columns, panel_size[1] * rows),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, axes[:n_panels]


def _save(figure: Figure, path: Path) -> Path:
    # A tight bounding box keeps a title or legend wider than the panels in the image.
    figure.savefig(path, dpi=PLOT_DPI, bbox_inches="tight")
    return path


def _window_centers(result: ReplayResult) -> np.ndarray:
    edges = result.window_edges
    return (edges[:-1] + edges[1:]) / 2.0


def _plot_curve(axes: Axes, steps: np.ndarray, summary: PolicySummary) -> None:
    mean = summary.curve.mean(axis=0)
    line = axes.plot(steps, mean, label=summary.policy)[0]
    if len(summary.curve) > 1:
        std = summary.curve.std(axis=0, ddof=1)
        axes.fill_between(
            steps, mean - std, mean + std, color=line.get_color(), alpha=0.2
        )


def _plot_learning_curves(result: ReplayResult, path: Path, title: str) -> Path:
    weights = result.settings.cost_weights
    figure, panels = _new_figure(len(weights), columns=3, panel_size=(5.5, 4.0))
    steps = _window_centers(result)

    for axes, weight in zip(panels, weights, strict=True):
        for summary in result.summaries:
            if summary.cost_weight == weight:
                _plot_curve(axes, steps, summary)

        reference = result.reference(weight)
        best = reference.best_model
        axes.axhline(
            reference.models[best]["reward"].mean,
            color="0.4",
            linestyle="--",
            label=f"best single model ({best})",
        )
        axes.axhline(
            reference.oracle["reward"].mean,
            color="black",
            linestyle=":",
            label="oracle",
        )
        axes.set_title(f"cost weight {weight:g} quality/USD")
        axes.set_xlabel("stream step (prompts routed)")
        axes.set_ylabel("reward per window (quality - weight x USD)")
        axes.grid(alpha=0.3)

    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=min(len(labels), 3),
        fontsize="small",
    )
    spread = "band: ± 1 std over seeds" if result.settings.seeds > 1 else "one seed"
    figure.suptitle(f"{title}: learning curves\n(mean over seeds, {spread})")
    return _save(figure, path)


def _plot_cost_quality(result: ReplayResult, path: Path, title: str) -> Path:
    figure, (axes,) = _new_figure(1, columns=1, panel_size=(8.0, 6.0))
    weights = result.settings.cost_weights
    costs: list[float] = []

    # Single models do not depend on the cost weight, because the streams do not.
    singles = result.reference(weights[0]).models
    for name, metrics in singles.items():
        cost, quality = metrics["cost_usd"].mean, metrics["quality"].mean
        costs.append(cost)
        axes.scatter(cost, quality, color="0.5", marker="o", zorder=3)
        axes.annotate(
            name, (cost, quality), textcoords="offset points", xytext=(4, 4), fontsize=8
        )

    oracles = [result.reference(weight).oracle for weight in weights]
    for point, label in _cost_quality_points(oracles, weights).items():
        costs.append(point[0])
        axes.scatter(*point, color="black", marker="*", s=90, zorder=3)
        _annotate(axes, point, f"oracle ({label})", color="black")

    for policy in result.settings.policies:
        per_weight = [result.summary(policy, weight).metrics for weight in weights]
        policy_costs = [m["cost_usd"].mean for m in per_weight]
        qualities = [m["quality"].mean for m in per_weight]
        costs += policy_costs
        (line,) = axes.plot(policy_costs, qualities, marker="o", label=policy, zorder=4)
        for point, label in _cost_quality_points(per_weight, weights).items():
            _annotate(axes, point, label, color=line.get_color())

    if _needs_log_scale(costs):
        axes.set_xscale("log")
    axes.set_xlabel("mean cost per request (USD)")
    axes.set_ylabel("mean quality (0 to 1)")
    axes.grid(alpha=0.3)
    axes.legend(title="policy (one point per cost weight w)", fontsize="small")
    weight_list = ", ".join(f"{w:g}" for w in weights)
    axes.set_title(f"{title}: cost and quality (w = {weight_list} quality/USD)")
    return _save(figure, path)


def _cost_quality_points(
    metrics: list[dict[str, SeedSpread]], weights: tuple[float, ...]
) -> dict[tuple[float, float], str]:
    """Return each distinct (cost, quality) point, labelled with the weights at it.

    Points that coincide, such as a fixed model's at every weight, get one label.
    """
    points: dict[tuple[float, float], list[float]] = {}
    for entry, weight in zip(metrics, weights, strict=True):
        point = (entry["cost_usd"].mean, entry["quality"].mean)
        points.setdefault(point, []).append(weight)
    return {
        point: "w=" + ", ".join(f"{w:g}" for w in point_weights)
        for point, point_weights in points.items()
    }


def _annotate(axes: Axes, point: tuple[float, float], label: str, color: str) -> None:
    axes.annotate(
        label,
        point,
        textcoords="offset points",
        xytext=(4, -10),
        fontsize=7,
        color=color,
    )


def _needs_log_scale(costs: list[float]) -> bool:
    """Return whether positive costs span more than ``LOG_SCALE_MIN_RATIO``."""
    values = np.array([c for c in costs if math.isfinite(c)])
    if len(values) == 0 or values.min() <= 0:
        return False
    return values.max() > LOG_SCALE_MIN_RATIO * values.min()


SHARE_PLOT_COLUMNS = 3
"""Panels per row of the model-share plot when it shows a single cost weight."""


def _plot_model_shares(result: ReplayResult, path: Path, title: str) -> Path:
    weights = result.settings.cost_weights
    if len(weights) > MAX_WEIGHTS_PER_SHARE_PLOT:
        weights = weights[:1]

    policies = result.settings.policies
    # One row per policy with a column per weight, or with a single weight a grid
    # of policies three wide.
    columns = len(weights) if len(weights) > 1 else SHARE_PLOT_COLUMNS
    figure, panels = _new_figure(
        len(policies) * len(weights), columns=columns, panel_size=(5.0, 3.2)
    )
    edges = result.window_edges
    colors = _model_colors(len(result.model_names))

    panel_iter = iter(panels)
    for policy in policies:
        for weight in weights:
            axes = next(panel_iter)
            shares = result.summary(policy, weight).shares.mean(axis=0)
            # Each window's shares hold from its first step to the next window's.
            shares = np.vstack([shares, shares[-1:]])
            axes.stackplot(
                edges,
                shares.T,
                labels=result.model_names,
                colors=colors,
                step="post",
            )
            axes.set_title(f"{policy}, w = {weight:g}")
            axes.set_xlim(edges[0], edges[-1])
            axes.set_ylim(0.0, 1.0)
            axes.set_xlabel("stream step (prompts routed)")
            axes.set_ylabel("share of requests")

    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right center", fontsize="small")
    figure.suptitle(
        f"{title}: model shares over the stream (mean over seeds, "
        "w = cost weight in quality/USD)"
    )
    return _save(figure, path)


def _model_colors(n_models: int) -> list[tuple[float, float, float, float]]:
    palette = colormaps["tab10" if n_models <= 10 else "tab20"]
    return [palette(k % palette.N) for k in range(n_models)]
