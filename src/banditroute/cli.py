"""The ``banditroute`` command line.

``banditroute replay`` evaluates routing policies offline on a full-information routing
log and writes a report. Each command is a subcommand of ``app``, so later commands
(such as a server) are added beside ``replay``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from banditroute.controls import ControlSettings
from banditroute.embedding_cache import EmbeddingCache, default_cache_path
from banditroute.encoder import DEFAULT_ENCODER_MODEL, Encoder
from banditroute.errors import BanditRouteError, ConfigError
from banditroute.features import FeatureBuilder
from banditroute.health import HealthSettings
from banditroute.pacing import DEFAULT_WARMUP_REQUESTS
from banditroute.policies import DEFAULT_POLICIES, available_policies, make_policy
from banditroute.replay import ReplayResult, ReplaySettings, SeedSpread, replay
from banditroute.report import control_markdown, format_spread, write_report
from banditroute.routing_log import RoutingLog, read_routing_log
from banditroute.scenario import SCENARIO_KINDS, Scenario, parse_scenario
from banditroute.synthetic import generate_workload

logger = logging.getLogger(__name__)

USAGE_ERROR_EXIT_CODE = 2
"""Exit status of an invalid option value or a banditroute error, as click uses."""

IO_ERROR_EXIT_CODE = 1

DEFAULT_SYNTHETIC_PROMPTS = 4000
SYNTHETIC_WORKLOAD_SEED = 0
"""Seed of the synthetic workload's generator, so every replay gets the same prompts."""

CACHE_FILE_NAME = "embeddings.sqlite"
DEFAULT_REPORTS_DIR = Path("reports")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

SUMMARY_COLUMNS = {
    "quality": ("quality", "{:.3f}"),
    "cost USD": ("cost_usd", "{:.3g}"),
    "reward": ("reward", "{:.4f}"),
    "regret": ("regret", "{:.4f}"),
    "gap": ("gap_recovered", "{:.2f}"),
    "gap,\nlast 1/5": ("gap_recovered_last_fifth", "{:.2f}"),
}
"""Header of each summary table column, with its metric and number format."""

app = typer.Typer(
    name="banditroute",
    help="Route LLM requests with a contextual bandit, and evaluate routing policies.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """Route each LLM request to the model with the best quality for its cost."""


REPLAY_HELP = (
    "Replay routing policies on a full-information log and write a report.\n\n"
    "Every model's quality and cost is logged for every prompt, so each policy "
    "receives the logged outcome of the model it chooses. The report compares the "
    "policies with the best single model and the per-prompt oracle at each cost weight."
)


@app.command("replay", help=REPLAY_HELP)
def replay_command(
    log_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="LOG",
            help="Full-information routing log: JSON Lines (.jsonl, optionally .gz) "
            "or a RouterBench .pkl/.csv table. Without it, the built-in synthetic "
            "workload is replayed.",
            show_default=False,
        ),
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option(
            "--prices",
            help="Price file (models.json) that gives each model's input_usd_per_mtok "
            "and output_usd_per_mtok in USD per million tokens. Default: models.json "
            "beside the log, if present.",
            show_default=False,
        ),
    ] = None,
    policies: Annotated[
        str,
        typer.Option(
            "--policies",
            help="Comma-separated names of the policies to compare: any of "
            f"{', '.join(DEFAULT_POLICIES)}, cheapest, and fixed:MODEL (always MODEL). "
            "Default: all except cheapest and fixed:MODEL.",
            show_default=False,
        ),
    ] = ",".join(DEFAULT_POLICIES),
    cost_weights: Annotated[
        str,
        typer.Option(
            "--cost-weights",
            help="Comma-separated cost weights, in quality points given up per USD of "
            "expected cost. Each weight w is replayed with reward = quality - w x cost "
            "in USD, e.g. 0,100,1000.",
        ),
    ] = "0",
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            help="Number of seeds (0 to N-1). Each seed shuffles the prompts into its "
            "own stream and seeds the policies.",
        ),
    ] = 5,
    warm_start: Annotated[
        float,
        typer.Option(
            "--warm-start",
            help="Share of each seed's shuffled prompts, from 0 up to but excluding 1, "
            "that the policies learn from with every model's outcome before the "
            "stream starts.",
        ),
    ] = 0.0,
    max_prompts: Annotated[
        int | None,
        typer.Option(
            "--max-prompts",
            help="Replay a random subset of N prompts per seed, warm start included. "
            "Default: all prompts.",
            show_default=False,
        ),
    ] = None,
    cost_target: Annotated[
        float | None,
        typer.Option(
            "--cost-target",
            help="Target mean cost per request in USD. The cost weight of every "
            "decision then comes from a budget pacer that adapts it to the realized "
            "costs, and --cost-weights only set the reward the report measures.",
            show_default=False,
        ),
    ] = None,
    pacing_warmup: Annotated[
        int,
        typer.Option(
            "--pacing-warmup",
            help="Requests at the start of each stream during which the pacer holds "
            "its initial weight (0.1 / target quality points per USD).",
        ),
    ] = DEFAULT_WARMUP_REQUESTS,
    health: Annotated[
        bool,
        typer.Option(
            "--health/--no-health",
            help="Cool down a model after 5 failed calls in a row or an error rate "
            "of 50% over its last 20 calls, for 30 s. Then up to 3 probe requests "
            "go to it: a success ends the cooldown, and a failure starts a cooldown "
            "twice as long, up to 600 s.",
        ),
    ] = False,
    failing_model: Annotated[
        str | None,
        typer.Option(
            "--failing-model",
            help="Model whose every call fails (quality 0, not billed) from "
            "--failing-from on, to test the health checks.",
            show_default=False,
        ),
    ] = None,
    failing_from: Annotated[
        int,
        typer.Option(
            "--failing-from",
            help="Stream step at which --failing-model starts to fail.",
        ),
    ] = 0,
    seconds_per_request: Annotated[
        float,
        typer.Option(
            "--seconds-per-request",
            help="Seconds between two requests of the replayed stream; the "
            "cooldowns of --health run on this clock.",
        ),
    ] = 1.0,
    rollout_share: Annotated[
        float | None,
        typer.Option(
            "--rollout-share",
            help="Share of requests, from 0 to 1, that each policy routes; the rest "
            "go to --default-model. The report compares the two groups.",
            show_default=False,
        ),
    ] = None,
    default_model: Annotated[
        str | None,
        typer.Option(
            "--default-model",
            help="Model that receives the requests outside the --rollout-share.",
            show_default=False,
        ),
    ] = None,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="What changes halfway through each stream: stationary (nothing), "
            "drift-drop:MODEL (MODEL's quality becomes the worst model's), "
            "drift-swap:A,B (A and B exchange qualities) or arrival:MODEL (a copy of "
            "MODEL priced like the cheapest model joins; thompson only).",
        ),
    ] = "stationary",
    half_life: Annotated[
        float | None,
        typer.Option(
            "--half-life",
            help="Make thompson forget old feedback: a feedback's weight halves every "
            "N feedback events (of all models). Default: keep all feedback.",
            show_default=False,
        ),
    ] = None,
    synthetic_prompts: Annotated[
        int,
        typer.Option(
            "--synthetic-prompts",
            help="Number of prompts of the synthetic workload replayed when no LOG "
            "is given.",
        ),
    ] = DEFAULT_SYNTHETIC_PROMPTS,
    encoder_model: Annotated[
        str,
        typer.Option(
            "--encoder",
            help="Sentence-transformers model name or local model folder that embeds "
            "the prompts. Models load from local files only.",
        ),
    ] = DEFAULT_ENCODER_MODEL,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help=f"Folder of the embedding cache file ({CACHE_FILE_NAME}). Default: "
            "$BANDITROUTE_CACHE_DIR, else the user cache folder.",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            help="Number of worker processes that run replays in parallel. The results "
            "do not depend on it.",
        ),
    ] = 1,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder the report is written to. Default: "
            "reports/LOGNAME-TIMESTAMP in the current folder.",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            help=f"Logging level: {', '.join(LOG_LEVELS)}.",
        ),
    ] = "WARNING",
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            help="Show progress bars (on stderr) while embedding and replaying. "
            "Default: on when stderr is a terminal.",
        ),
    ] = sys.stderr.isatty(),
) -> None:
    """Run ``banditroute replay``, whose help text is ``REPLAY_HELP``."""
    logging.basicConfig(
        level=_parse_log_level(log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    controls = _control_settings(
        cost_target,
        pacing_warmup,
        health,
        failing_model,
        failing_from,
        seconds_per_request,
        rollout_share,
        default_model,
    )
    settings = _replay_settings(
        policies, cost_weights, seeds, warm_start, max_prompts, synthetic_prompts
    )
    settings = dataclasses.replace(
        settings, controls=controls, scenario=_parse_scenario(scenario)
    )
    _check_positive("--jobs", jobs)
    if half_life is not None and not (math.isfinite(half_life) and half_life > 0):
        raise typer.BadParameter(
            f"{half_life} is invalid; give a positive number of feedback events.",
            param_hint="--half-life",
        )
    policy_factory = functools.partial(make_policy, half_life=half_life)

    try:
        log, log_name, inputs = _load_log(log_path, prices, synthetic_prompts)
        out_dir = out if out is not None else _default_out_dir(log_name)
        _check_writable(out_dir)
        _check_policy_names(settings.policies, log)
        settings.controls.check_models(log.catalog)
        settings.scenario.validate(log.catalog)
        contexts, encoder_inputs = _build_contexts(
            log, encoder_model, cache_dir, progress
        )
        result = replay(
            log,
            contexts,
            settings,
            progress=progress,
            jobs=jobs,
            policy_factory=policy_factory,
        )
    except BanditRouteError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(USAGE_ERROR_EXIT_CODE) from error

    if half_life is not None:
        inputs["thompson half-life"] = f"{half_life:g} feedback events"
    result = dataclasses.replace(result, inputs={**inputs, **encoder_inputs})
    try:
        write_report(result, out_dir, title=f"Replay of {log_name}")
    except OSError as error:
        typer.echo(f"Error: cannot write the report to {out_dir}: {error}", err=True)
        raise typer.Exit(IO_ERROR_EXIT_CODE) from error

    console = Console()
    for table in _summary_tables(result):
        console.print(table)
    for line in control_markdown(result):
        typer.echo(line)
    typer.echo(f"Report written to {out_dir}")


def _check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and write a probe file, so a bad --out fails early."""
    probe = out_dir / ".write-check"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise typer.BadParameter(
            f"cannot write the report to {out_dir}: {error.strerror or error}; "
            "give a folder you can write to.",
            param_hint="--out",
        ) from error


# Option values


def _parse_log_level(text: str) -> int:
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise typer.BadParameter(
            f"{text!r} is not a logging level; use one of {', '.join(LOG_LEVELS)}.",
            param_hint="--log-level",
        )
    return logging.getLevelNamesMapping()[level]


def _check_positive(option: str, value: int) -> None:
    if value < 1:
        raise typer.BadParameter(
            f"{value} is invalid; give a positive integer.", param_hint=option
        )


def _parse_policies(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise typer.BadParameter(
            f"{text!r} names no policy; give comma-separated names such as "
            f"{','.join(DEFAULT_POLICIES)}.",
            param_hint="--policies",
        )
    return names


def _parse_scenario(text: str) -> Scenario:
    try:
        return parse_scenario(text)
    except ConfigError as error:
        raise typer.BadParameter(
            f"{error} Scenarios: {', '.join(SCENARIO_KINDS)}.", param_hint="--scenario"
        ) from error


def _parse_cost_weights(text: str) -> tuple[float, ...]:
    weights = []
    for item in text.split(","):
        try:
            weight = float(item)
        except ValueError:
            raise typer.BadParameter(
                f"{item.strip()!r} is not a number; give comma-separated quality "
                "points per USD, such as 0,100,1000.",
                param_hint="--cost-weights",
            ) from None

        if not math.isfinite(weight) or weight < 0:
            raise typer.BadParameter(
                f"{item.strip()!r} is invalid; a cost weight must be a finite number "
                "of quality points per USD, 0 or more.",
                param_hint="--cost-weights",
            )
        weights.append(weight)
    return tuple(weights)


def _replay_settings(
    policies: str,
    cost_weights: str,
    seeds: int,
    warm_start: float,
    max_prompts: int | None,
    synthetic_prompts: int,
) -> ReplaySettings:
    """Check the option values and return the replay settings they give."""
    _check_positive("--seeds", seeds)
    _check_positive("--synthetic-prompts", synthetic_prompts)
    if max_prompts is not None:
        _check_positive("--max-prompts", max_prompts)

    if not (math.isfinite(warm_start) and 0.0 <= warm_start < 1.0):
        raise typer.BadParameter(
            f"{warm_start} is invalid; give a share from 0 up to but excluding 1.",
            param_hint="--warm-start",
        )

    try:
        return ReplaySettings(
            policies=_parse_policies(policies),
            cost_weights=_parse_cost_weights(cost_weights),
            seeds=seeds,
            warm_start_fraction=warm_start,
            max_prompts=max_prompts,
        )
    except ConfigError as error:
        raise typer.BadParameter(str(error)) from error


def _control_settings(
    cost_target: float | None,
    pacing_warmup: int,
    health: bool,
    failing_model: str | None,
    failing_from: int,
    seconds_per_request: float,
    rollout_share: float | None,
    default_model: str | None,
) -> ControlSettings:
    """Check the control option values and return the settings they give."""
    if (rollout_share is None) != (default_model is None):
        raise typer.BadParameter(
            "--rollout-share and --default-model go together; give both or neither.",
            param_hint="--rollout-share",
        )

    try:
        return ControlSettings(
            cost_target=cost_target,
            pacing_warmup_requests=pacing_warmup,
            health=HealthSettings() if health else None,
            failing_model=failing_model,
            failing_from_step=failing_from,
            seconds_per_request=seconds_per_request,
            rollout_share=rollout_share,
            default_model=default_model,
        )
    except ConfigError as error:
        raise typer.BadParameter(str(error)) from error


# Inputs


def _load_log(
    log_path: Path | None, prices: Path | None, synthetic_prompts: int
) -> tuple[RoutingLog, str, dict[str, str]]:
    """Return the routing log, a short name for it and a description for the report."""
    if log_path is None:
        typer.echo(
            f"No LOG given: replaying the built-in synthetic workload of "
            f"{synthetic_prompts} prompts (generator seed {SYNTHETIC_WORKLOAD_SEED})."
        )
        rng = np.random.default_rng(SYNTHETIC_WORKLOAD_SEED)
        log = generate_workload(synthetic_prompts, rng).log
        description = (
            f"built-in synthetic workload, {synthetic_prompts} prompts, "
            f"generator seed {SYNTHETIC_WORKLOAD_SEED}"
        )
        return log, "synthetic", {"log": description}

    log = read_routing_log(log_path, prices)
    inputs = {"log": str(log_path)}
    if prices is not None:
        inputs["prices"] = str(prices)
    return log, _log_name(log_path), inputs


def _log_name(path: Path) -> str:
    """Return the file name without suffixes, prefixed by its folder's name."""
    stem = path.name.split(".")[0] or path.name
    folder = path.resolve().parent.name
    return f"{folder}-{stem}" if folder else stem


def _check_policy_names(policies: tuple[str, ...], log: RoutingLog) -> None:
    """Reject unknown policy names before the prompts are embedded."""
    known = available_policies(log.catalog)
    unknown = [name for name in policies if name not in known]
    if unknown:
        raise ConfigError(
            f"Unknown policies {unknown}; choose from {', '.join(known)}."
        )


def _build_contexts(
    log: RoutingLog, encoder_model: str, cache_dir: Path | None, progress: bool
) -> tuple[np.ndarray, dict[str, str]]:
    """Embed the log's prompts through the cache and return their context vectors."""
    cache_path = cache_dir / CACHE_FILE_NAME if cache_dir else default_cache_path()
    encoder = Encoder(encoder_model)
    with EmbeddingCache(cache_path) as cache:
        embeddings = cache.get_or_encode(encoder, log.prompts, progress=progress)

    truncated = int(embeddings.truncated.sum())
    if truncated:
        logger.warning(
            "%d of %d prompts exceed the encoder's max sequence length of %d tokens; "
            "their contexts embed only the start of the prompt.",
            truncated,
            len(log),
            encoder.max_seq_length,
        )

    builder = FeatureBuilder(encoder.dimension)
    contexts = builder.build(embeddings.vectors)
    inputs = {
        "encoder": encoder.model_id,
        "embedding cache": str(cache_path),
        "context dimension": f"{builder.dimension} (bias and embedding)",
        "truncated prompts": str(truncated),
    }
    return contexts, inputs


def _default_out_dir(log_name: str) -> Path:
    timestamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return DEFAULT_REPORTS_DIR / f"{log_name}-{timestamp}"


# Output


def _summary_tables(result: ReplayResult) -> list[Table]:
    """Return one table per cost weight: every policy, best single model and oracle."""
    seeds = result.settings.seeds
    spread = "mean and ±std over seeds" if seeds > 1 else "one seed"
    tables = []
    for weight in result.settings.cost_weights:
        table = Table(
            title=f"Cost weight {weight:g} quality/USD ({spread})",
            caption="gap: share of the gap from the best single model (0) to the "
            "oracle (1) that a policy recovers",
        )
        table.add_column("policy", overflow="fold")
        for header in SUMMARY_COLUMNS:
            table.add_column(header, justify="right", no_wrap=True)

        for summary in result.summaries:
            if summary.cost_weight == weight:
                table.add_row(summary.policy, *_table_cells(summary.metrics))

        reference = result.reference(weight)
        best = reference.best_model
        table.add_row(f"best single: {best}", *_table_cells(reference.models[best]))
        table.add_row("oracle", *_table_cells(reference.oracle))
        tables.append(table)
    return tables


def _table_cells(metrics: dict[str, SeedSpread]) -> list[str]:
    """Format each summary column as the mean above its ±std."""
    return [
        format_spread(metrics[name], number_format, separator="\n±")
        for name, number_format in SUMMARY_COLUMNS.values()
    ]


# banditroute serve

SERVE_HELP = (
    "Serve the routing API over HTTP with uvicorn.\n\n"
    "Settings come from a YAML file (--config, else $BANDITROUTE_CONFIG, else "
    "config/service.yaml) with BANDITROUTE_* environment overrides. Without a "
    "redis_url, one process keeps everything in memory. With one, every worker and "
    "every server sharing that Redis learns from the same feedback."
)

SERVE_APP_FACTORY = "banditroute.api:create_app_from_environment"


@app.command("serve", help=SERVE_HELP)
def serve_command(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML settings file. Default: $BANDITROUTE_CONFIG, else "
            "config/service.yaml in the current folder.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Number of server processes sharing the port. More than 1 needs a "
            "redis_url. Default: the workers setting.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="Address to listen on. Default: the host setting (127.0.0.1).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help="TCP port to listen on. Default: the port setting (8000).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option("--log-level", help=f"Logging level: {', '.join(LOG_LEVELS)}."),
    ] = "INFO",
) -> None:
    """Run ``banditroute serve``, whose help text is ``SERVE_HELP``."""
    import logging.config

    import uvicorn

    from banditroute.settings import CONFIG_ENV_VARIABLE, load_settings, redact_url

    log_config = _serve_log_config(_parse_log_level(log_level))
    logging.config.dictConfig(log_config)

    overrides = {
        name: value
        for name, value in (("workers", workers), ("host", host), ("port", port))
        if value is not None
    }
    try:
        settings = load_settings(config, **overrides)
    except BanditRouteError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(USAGE_ERROR_EXIT_CODE) from error

    if settings.workers > 1 and settings.redis_url is None:
        typer.echo(
            f"Error: --workers {settings.workers} needs a shared store, because each "
            "worker would otherwise learn only from its own feedback. Set redis_url "
            "in the settings file or BANDITROUTE_REDIS_URL, or use --workers 1.",
            err=True,
        )
        raise typer.Exit(USAGE_ERROR_EXIT_CODE)

    # Worker processes build the app from the environment, so the settings file and
    # the command-line values reach them as environment variables.
    if config is not None:
        os.environ[CONFIG_ENV_VARIABLE] = str(config.resolve())
    for name, value in overrides.items():
        os.environ[f"BANDITROUTE_{name.upper()}"] = str(value)

    metrics_folder = _share_metrics_between_workers(settings.workers)

    store = redact_url(settings.redis_url) if settings.redis_url else "memory"
    logger.info(
        "Starting banditroute serve on http://%s:%d: workers %d, store %s, "
        "%d models in the catalog, encoder %s",
        settings.host,
        settings.port,
        settings.workers,
        store,
        len(settings.catalog),
        settings.encoder_model,
    )
    try:
        uvicorn.run(
            SERVE_APP_FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=log_config,
            access_log=False,
        )
    finally:
        if metrics_folder is not None:
            shutil.rmtree(metrics_folder, ignore_errors=True)


def _share_metrics_between_workers(workers: int) -> Path | None:
    """Turn on prometheus-client's multiprocess mode for several workers.

    Returns the new metrics folder, which the caller deletes at exit, or None when
    there is one worker or the environment already names a folder.
    """
    from banditroute.metrics import MULTIPROCESS_DIR_VARIABLE

    if workers < 2 or MULTIPROCESS_DIR_VARIABLE in os.environ:
        return None

    folder = Path(tempfile.mkdtemp(prefix="banditroute-metrics-"))
    os.environ[MULTIPROCESS_DIR_VARIABLE] = str(folder)
    return folder


def _serve_log_config(level: int) -> dict[str, object]:
    """Return the logging configuration of the server and of each worker process."""
    level_name = logging.getLevelName(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {
                "format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: "
                "%(message)s"
            }
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": level_name},
        "loggers": {
            # The encoder logs every batch at INFO; one line per request is enough.
            "banditroute.encoder": {"level": "WARNING"},
            "uvicorn.access": {"level": "WARNING"},
        },
    }
