"""Offline replay of routing policies on full-information routing logs.

A full-information log contains every model's quality and cost for every prompt, so a
replay is exact: whichever model a policy chooses, it receives the logged outcome of
that model, as it would have online. Each run streams the prompts of one seed through
one policy at one cost weight, and the metrics compare the runs with two hindsight
references on the same stream: the best single model and the per-prompt oracle.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from banditroute.catalog import Catalog
from banditroute.controls import ControlSettings, StreamControls
from banditroute.errors import ConfigError, LogFormatError
from banditroute.policies import make_policy
from banditroute.policy import Policy, WarmStartData
from banditroute.scenario import (
    ARRIVAL,
    Scenario,
    StreamOutcomes,
    scenario_catalog,
    stream_outcomes,
)

if TYPE_CHECKING:
    from banditroute.routing_log import LoadReport, RoutingLog

logger = logging.getLogger(__name__)

PolicyFactory = Callable[[str, Catalog, int, np.random.Generator], Policy]
"""Builds a policy from its name, the catalog, the context dimension and a generator."""

LAST_FIFTH_DIVISOR = 5
"""The late-stream metrics cover the last ceil(steps / 5) steps of the stream."""

ROUNDING_SPREAD = 1e-12
"""A spread over seeds below this share of the mean is reported as 0."""

POLICY_METRICS = (
    "quality",
    "cost_usd",
    "reward",
    "regret",
    "gap_recovered",
    "reward_last_fifth",
    "regret_last_fifth",
    "gap_recovered_last_fifth",
    "propensity_mean",
    "propensity_min",
)
"""Metric names of a policy summary, in report order."""

REFERENCE_METRICS = POLICY_METRICS[:-2]
"""Metric names of a single model or the oracle, which have no propensity."""


# Settings


@dataclass(frozen=True)
class ReplaySettings:
    """The policies, cost weights and seeds to replay, and the split of each seed."""

    policies: tuple[str, ...]
    cost_weights: tuple[float, ...] = (0.0,)
    """Quality given up per USD of cost: reward = quality - cost_weight * cost_usd."""
    seeds: int = 5
    """Number of seeds. The runs use seeds 0 to seeds - 1."""
    warm_start_fraction: float = 0.0
    """Share of each seed's shuffled prompts given to the policies before the stream."""
    max_prompts: int | None = None
    """Size of the random subset of prompts replayed per seed, or None for all."""
    curve_points: int = 50
    """Number of windows the learning curves and model shares split the stream into."""
    controls: ControlSettings = field(default_factory=ControlSettings)
    """Budget pacing, model health and rollout; by default all off. With a cost
    target, the pacer sets the weight of each decision, and ``cost_weights`` only
    define the reward the report measures."""
    scenario: Scenario = Scenario()
    """The change partway through each stream (none by default)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", tuple(self.policies))
        object.__setattr__(self, "cost_weights", tuple(self.cost_weights))

        self._validate_policies()
        self._validate_cost_weights()
        self._validate_counts()
        self._validate_scenario_controls()

        fraction = self.warm_start_fraction
        if not (math.isfinite(fraction) and 0.0 <= fraction < 1.0):
            raise ConfigError(
                f"warm_start_fraction={fraction!r} is invalid; give a share in [0, 1)."
            )

    def _validate_scenario_controls(self) -> None:
        # Health checks and rollout keep one entry per model of the log's catalog,
        # so they cannot follow a model that joins partway through.
        controls = self.controls
        uses_models = controls.health is not None or controls.rollout_share is not None
        if self.scenario.kind == ARRIVAL and uses_models:
            raise ConfigError(
                "The arrival scenario cannot be combined with health checks or a "
                "rollout; replay them separately."
            )

    def _validate_policies(self) -> None:
        if not self.policies:
            raise ConfigError("No policy to replay; name at least one policy.")

        duplicates = sorted({p for p in self.policies if self.policies.count(p) > 1})
        if duplicates:
            raise ConfigError(f"The policies {duplicates} are listed more than once.")

    def _validate_cost_weights(self) -> None:
        if not self.cost_weights:
            raise ConfigError("No cost weight to replay; give at least one (e.g. 0).")

        for weight in self.cost_weights:
            if not math.isfinite(weight) or weight < 0:
                raise ConfigError(
                    f"Cost weight {weight!r} is invalid; give a finite, non-negative "
                    "number of quality points per USD."
                )

        if len(set(self.cost_weights)) != len(self.cost_weights):
            raise ConfigError(
                f"The cost weights {list(self.cost_weights)} contain a repeated value."
            )

    def _validate_counts(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"seeds={self.seeds!r} is invalid; give at least 1.")

        if self.max_prompts is not None and self.max_prompts < 1:
            raise ConfigError(
                f"max_prompts={self.max_prompts!r} is invalid; give at least 1 or None."
            )

        if self.curve_points < 1:
            raise ConfigError(
                f"curve_points={self.curve_points!r} is invalid; give at least 1."
            )


# Results


@dataclass(frozen=True)
class RunTrace:
    """Per-step record of one policy at one cost weight on one seed's stream."""

    policy: str
    cost_weight: float
    seed: int
    rows: np.ndarray
    """Log row of the prompt routed at each step."""
    model_index: np.ndarray
    quality: np.ndarray
    cost_usd: np.ndarray
    reward: np.ndarray
    """quality - cost_weight * cost_usd of the chosen model."""
    propensity: np.ndarray
    controls: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-step records of the active controls (see ``StreamControls``)."""


@dataclass(frozen=True)
class Hindsight:
    """Mean outcomes of every single model and of the oracle over a set of prompts.

    The oracle chooses, per prompt, the model with the highest reward and, among tied
    models, the cheapest one.
    """

    model_quality: np.ndarray
    model_cost_usd: np.ndarray
    model_reward: np.ndarray
    oracle_quality: float
    oracle_cost_usd: float
    oracle_reward: float

    @property
    def best_model_index(self) -> int:
        """Index of the single model with the highest mean reward (first when tied)."""
        return int(np.argmax(self.model_reward))

    @property
    def best_model_reward(self) -> float:
        return float(self.model_reward[self.best_model_index])


@dataclass(frozen=True)
class StreamBaselines:
    """Hindsight references of one seed's stream at one cost weight."""

    cost_weight: float
    seed: int
    whole: Hindsight
    last_fifth: Hindsight


@dataclass(frozen=True)
class SeedSpread:
    """One metric over seeds: the value of every seed, their mean and spread."""

    values: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds, or NaN with a single seed."""
        if len(self.values) < 2:
            return math.nan

        std = float(np.std(self.values, ddof=1))
        # Means of one set of numbers summed in different orders differ in the last
        # bits, so a spread this small relative to the mean is rounding, not variation.
        if std <= ROUNDING_SPREAD * abs(self.mean):
            return 0.0
        return std


@dataclass(frozen=True)
class PolicySummary:
    """Metrics of one policy at one cost weight, over seeds."""

    policy: str
    cost_weight: float
    metrics: dict[str, SeedSpread]
    """Keyed by the names in ``POLICY_METRICS``."""
    curve: np.ndarray
    """Mean reward per stream window, shape (seeds, windows)."""
    shares: np.ndarray
    """Share of the steps routed to each model per window, shape (seeds, windows, K)."""


@dataclass(frozen=True)
class ReferenceSummary:
    """Every single model and the oracle at one cost weight, over seeds.

    Each entry has the metrics of ``REFERENCE_METRICS``, computed with the same
    formulas as for policies. So the best single model has a gap recovered of 0 when
    it is the best in every seed, and the oracle has a regret of 0 and a gap of 1.
    """

    cost_weight: float
    models: dict[str, dict[str, SeedSpread]]
    oracle: dict[str, SeedSpread]
    best_model: str
    """The single model with the highest reward averaged over seeds."""


@dataclass(frozen=True)
class ReplayResult:
    """Everything a replay produced: settings, per-step records and metrics."""

    settings: ReplaySettings
    model_names: tuple[str, ...]
    load_report: LoadReport
    """The counts of the log reader (rows, duplicates, null qualities, ...)."""
    prompts: int
    """Prompts in the log."""
    excluded_prompts: int
    """Prompts left out because some model lacks a quality or cost for them."""
    warm_start_prompts: int
    """Prompts per seed given to ``Policy.warm_start``."""
    stream_prompts: int
    """Prompts per seed streamed through each run."""
    window_edges: np.ndarray
    """Step boundaries of the curve windows, shape (windows + 1,)."""
    runs: tuple[RunTrace, ...]
    baselines: tuple[StreamBaselines, ...]
    summaries: tuple[PolicySummary, ...]
    references: tuple[ReferenceSummary, ...]
    """One per cost weight, in settings order."""
    inputs: dict[str, str] = field(default_factory=dict)
    """Descriptions of the log and contexts (log path, encoder, ...) for the report."""

    def summary(self, policy: str, cost_weight: float) -> PolicySummary:
        """Return the summary of ``policy`` at ``cost_weight``."""
        for summary in self.summaries:
            if summary.policy == policy and summary.cost_weight == cost_weight:
                return summary
        raise KeyError(f"No run of policy {policy!r} at cost weight {cost_weight!r}.")

    def reference(self, cost_weight: float) -> ReferenceSummary:
        """Return the single-model and oracle references at ``cost_weight``."""
        for reference in self.references:
            if reference.cost_weight == cost_weight:
                return reference
        raise KeyError(f"No reference at cost weight {cost_weight!r}.")


# Replay


@dataclass(frozen=True)
class _ReplayData:
    """The arrays every run reads, sent once to each worker process."""

    catalog: Catalog
    contexts: np.ndarray
    input_tokens: np.ndarray
    quality: np.ndarray
    cost_usd: np.ndarray
    output_tokens: np.ndarray
    policy_factory: PolicyFactory
    scenario: Scenario = Scenario()


@dataclass(frozen=True)
class _SeedSplit:
    seed: int
    warm_rows: np.ndarray
    stream_rows: np.ndarray


@dataclass(frozen=True)
class _RunTask:
    policy_index: int
    policy: str
    weight_index: int
    cost_weight: float
    split: _SeedSplit
    controls: ControlSettings = field(default_factory=ControlSettings)


def replay(
    log: RoutingLog,
    contexts: np.ndarray,
    settings: ReplaySettings,
    *,
    progress: bool = True,
    jobs: int = 1,
    policy_factory: PolicyFactory = make_policy,
) -> ReplayResult:
    """Replay every policy at every cost weight on every seed's shuffled stream.

    ``contexts`` has one row per log row. Prompts for which some model lacks a quality
    or cost are excluded and counted. With ``jobs`` > 1 the runs are spread over that
    many worker processes. Each run limits BLAS to one thread in either case, so the
    results do not depend on ``jobs``. ``policy_factory`` must be a module-level
    function when ``jobs`` > 1, because the workers receive it by pickling.
    """
    if jobs < 1:
        raise ConfigError(f"jobs={jobs!r} is invalid; give at least 1 worker.")

    contexts = _validated_contexts(contexts, len(log))
    evaluable = _evaluable_rows(log)
    excluded = len(log) - len(evaluable)
    if excluded:
        logger.warning(
            "Excluded %d of %d prompts because some model lacks a quality or cost.",
            excluded,
            len(log),
        )

    settings.scenario.validate(log.catalog)
    _check_policy_names(
        settings.policies, log.catalog, contexts.shape[1], policy_factory
    )
    settings.controls.check_models(log.catalog)
    if settings.scenario.kind == ARRIVAL:
        _check_can_add_models(
            settings.policies, log.catalog, contexts.shape[1], policy_factory
        )

    splits = [_split_seed(evaluable, seed, settings) for seed in range(settings.seeds)]
    tasks = _run_tasks(settings, splits)
    data = _ReplayData(
        catalog=log.catalog,
        contexts=contexts,
        input_tokens=np.asarray(log.input_tokens, dtype=float),
        quality=np.asarray(log.quality, dtype=float),
        cost_usd=np.asarray(log.cost_usd, dtype=float),
        output_tokens=np.asarray(log.output_tokens, dtype=float),
        policy_factory=policy_factory,
        scenario=settings.scenario,
    )

    logger.info(
        "Replaying %d runs (%d policies, %d cost weights, %d seeds) on %d prompts: "
        "%d warm start and %d streamed per seed.",
        len(tasks),
        len(settings.policies),
        len(settings.cost_weights),
        settings.seeds,
        len(evaluable),
        len(splits[0].warm_rows),
        len(splits[0].stream_rows),
    )
    traces = _execute(data, tasks, jobs=jobs, progress=progress)

    return _assemble_result(log, settings, data, splits, traces, excluded)


def _validated_contexts(contexts: np.ndarray, n_rows: int) -> np.ndarray:
    contexts = np.asarray(contexts, dtype=float)
    if contexts.ndim != 2 or contexts.shape[0] != n_rows:
        raise ConfigError(
            f"Contexts have shape {contexts.shape}; expected one row per log prompt, "
            f"({n_rows}, dimension)."
        )

    if not np.isfinite(contexts).all():
        raise ConfigError("Contexts contain NaN or infinite values; rebuild them.")
    return contexts


def _evaluable_rows(log: RoutingLog) -> np.ndarray:
    """Return the rows whose every model has a finite quality and cost."""
    quality = np.asarray(log.quality, dtype=float)
    cost = np.asarray(log.cost_usd, dtype=float)
    complete = np.isfinite(quality).all(axis=1) & np.isfinite(cost).all(axis=1)

    rows = np.flatnonzero(complete)
    if len(rows) == 0:
        raise LogFormatError(
            f"None of the {len(log)} prompts has a quality and cost for every model, "
            "so nothing can be replayed; drop the models that lack most outcomes."
        )
    return rows


def _check_policy_names(
    policies: Iterable[str],
    catalog: Catalog,
    dimension: int,
    policy_factory: PolicyFactory,
) -> None:
    """Build each policy once so that an unknown name fails before any run starts."""
    for name in policies:
        policy_factory(name, catalog, dimension, np.random.default_rng(0))


def _check_can_add_models(
    policies: Iterable[str],
    catalog: Catalog,
    dimension: int,
    policy_factory: PolicyFactory,
) -> None:
    for name in policies:
        policy = policy_factory(
            name, catalog.copy(), dimension, np.random.default_rng(0)
        )
        if not hasattr(policy, "add_model"):
            raise ConfigError(
                f"Policy {name!r} cannot add models at run time, which the arrival "
                "scenario needs; replay it with thompson only."
            )


def _split_seed(
    evaluable: np.ndarray, seed: int, settings: ReplaySettings
) -> _SeedSplit:
    """Shuffle the evaluable rows with ``seed`` and split off the warm-start rows."""
    shuffled = np.random.default_rng(seed).permutation(evaluable)
    if settings.max_prompts is not None:
        shuffled = shuffled[: settings.max_prompts]

    # floor(fraction * n) < n because fraction < 1, so the stream is never empty.
    n_warm = int(math.floor(settings.warm_start_fraction * len(shuffled)))
    return _SeedSplit(
        seed=seed, warm_rows=shuffled[:n_warm], stream_rows=shuffled[n_warm:]
    )


def _run_tasks(settings: ReplaySettings, splits: list[_SeedSplit]) -> list[_RunTask]:
    return [
        _RunTask(
            policy_index=policy_index,
            policy=policy,
            weight_index=weight_index,
            cost_weight=cost_weight,
            split=split,
            controls=settings.controls,
        )
        for split in splits
        for policy_index, policy in enumerate(settings.policies)
        for weight_index, cost_weight in enumerate(settings.cost_weights)
    ]


def _execute(
    data: _ReplayData, tasks: list[_RunTask], *, jobs: int, progress: bool
) -> list[RunTrace]:
    """Run every task and return the traces in task order."""
    with tqdm(
        total=len(tasks), desc="replay runs", unit="run", disable=not progress
    ) as bar:
        if jobs == 1:
            traces = []
            for task in tasks:
                traces.append(_run(data, task, show_steps=progress))
                bar.update()
            return traces

        return _execute_in_workers(data, tasks, jobs, bar)


def _execute_in_workers(
    data: _ReplayData, tasks: list[_RunTask], jobs: int, bar: tqdm
) -> list[RunTrace]:
    # spawn starts clean interpreters: forking a process that has loaded torch (the
    # encoder) or started BLAS threads can deadlock the children.
    context = multiprocessing.get_context("spawn")
    traces: list[RunTrace | None] = [None] * len(tasks)

    with ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=context,
        initializer=_initialize_worker,
        initargs=(data,),
    ) as pool:
        futures = {pool.submit(_run_in_worker, task): i for i, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                traces[futures[future]] = future.result()
                bar.update()
        except BaseException:
            # Drop the queued runs instead of finishing them after a failure.
            pool.shutdown(wait=True, cancel_futures=True)
            raise

    return [trace for trace in traces if trace is not None]


_worker_data: _ReplayData | None = None


def _initialize_worker(data: _ReplayData) -> None:
    global _worker_data
    _worker_data = data


def _run_in_worker(task: _RunTask) -> RunTrace:
    assert _worker_data is not None, "worker started without its replay data"
    return _run(_worker_data, task, show_steps=False)


def _run(data: _ReplayData, task: _RunTask, *, show_steps: bool) -> RunTrace:
    """Warm-start one policy, then route its seed's stream and record every step."""
    seed_sequence = np.random.SeedSequence(
        [task.split.seed, task.policy_index, task.weight_index]
    )
    rng = np.random.default_rng(seed_sequence)
    dimension = data.contexts.shape[1]

    with threadpool_limits(limits=1):
        # A copy, because policies that add models at run time extend their catalog.
        catalog = data.catalog.copy()
        policy = data.policy_factory(task.policy, catalog, dimension, rng)
        _warm_start(policy, data, task.split.warm_rows)
        outcomes = _stream_outcomes(data, task.split.stream_rows)
        return _stream(policy, data, task, outcomes, show_steps=show_steps)


def _stream_outcomes(data: _ReplayData, rows: np.ndarray) -> StreamOutcomes:
    return stream_outcomes(
        data.scenario,
        data.catalog,
        data.quality[rows],
        data.cost_usd[rows],
        data.output_tokens[rows],
        data.input_tokens[rows],
    )


def _warm_start(policy: Policy, data: _ReplayData, rows: np.ndarray) -> None:
    if len(rows) == 0:
        return

    policy.warm_start(
        WarmStartData(
            contexts=data.contexts[rows],
            input_tokens=data.input_tokens[rows],
            quality=data.quality[rows],
            output_tokens=data.output_tokens[rows],
        )
    )


def _stream(
    policy: Policy,
    data: _ReplayData,
    task: _RunTask,
    outcomes: StreamOutcomes,
    *,
    show_steps: bool,
) -> RunTrace:
    rows = task.split.stream_rows
    chosen = np.empty(len(rows), dtype=np.int64)
    propensity = np.empty(len(rows))

    steps = tqdm(
        rows,
        desc=f"{task.policy} w={task.cost_weight:g} seed={task.split.seed}",
        unit="step",
        leave=False,
        disable=not show_steps,
    )
    controls = StreamControls(task.controls, data.catalog, len(rows), task.split.seed)
    failed = np.zeros(len(rows), dtype=bool)
    for step, row in enumerate(steps):
        if outcomes.added_model is not None and step == outcomes.change_step:
            policy.add_model(outcomes.added_model)  # type: ignore[attr-defined]
        n_models = len(policy.catalog)
        context = data.contexts[row]
        allowed = controls.allowed(step)
        model = controls.default_choice(step, allowed)
        if model is None:
            weight = controls.cost_weight(step, task.cost_weight)
            decision = policy.decide(
                context, float(data.input_tokens[row]), weight, allowed
            )
            model = int(decision.model_index)
            step_propensity = decision.propensity
        else:
            controls.cost_weight(step, task.cost_weight)
            step_propensity = 1.0  # The default group's choice is deterministic.
        if not 0 <= model < n_models:
            raise ConfigError(
                f"Policy {task.policy!r} chose model index {model}; the catalog has "
                f"{n_models} models."
            )

        failed[step] = controls.outcome(step, model)
        if failed[step]:
            # A failed call is not billed and, without a rating, counts as quality 0.
            policy.update(model, context, 0.0, None)
            controls.record(step, model, 0.0, error=True)
        else:
            output_tokens = outcomes.output_tokens[step, model]
            policy.update(
                model,
                context,
                float(outcomes.quality[step, model]),
                float(output_tokens) if np.isfinite(output_tokens) else None,
            )
            step_cost = float(outcomes.cost_usd[step, model])
            controls.record(step, model, step_cost, error=False)
        chosen[step] = model
        propensity[step] = step_propensity

    steps_index = np.arange(len(rows))
    quality = np.where(failed, 0.0, outcomes.quality[steps_index, chosen])
    cost = np.where(failed, 0.0, outcomes.cost_usd[steps_index, chosen])
    return RunTrace(
        policy=task.policy,
        cost_weight=task.cost_weight,
        seed=task.split.seed,
        rows=rows,
        model_index=chosen,
        quality=quality,
        cost_usd=cost,
        reward=quality - task.cost_weight * cost,
        propensity=propensity,
        controls=controls.records,
    )


# Metrics


def last_fifth_size(steps: int) -> int:
    """Return ceil(steps / 5): the number of steps the late-stream metrics cover."""
    return -(-steps // LAST_FIFTH_DIVISOR)


def window_edges(steps: int, points: int) -> np.ndarray:
    """Return the boundaries of ``min(points, steps)`` near-equal, non-empty windows."""
    windows = min(points, steps)
    return np.linspace(0, steps, windows + 1).astype(np.int64)


def hindsight(
    quality: np.ndarray, cost_usd: np.ndarray, cost_weight: float
) -> Hindsight:
    """Compute single-model and oracle means over (prompts, K) outcome arrays."""
    reward = quality - cost_weight * cost_usd
    best_reward = reward.max(axis=1, keepdims=True)

    # Among models tied on reward, the oracle takes the cheapest one.
    tied_cost = np.where(reward == best_reward, cost_usd, np.inf)
    oracle_choice = tied_cost.argmin(axis=1)
    prompts = np.arange(len(reward))

    return Hindsight(
        model_quality=quality.mean(axis=0),
        model_cost_usd=cost_usd.mean(axis=0),
        model_reward=reward.mean(axis=0),
        oracle_quality=float(quality[prompts, oracle_choice].mean()),
        oracle_cost_usd=float(cost_usd[prompts, oracle_choice].mean()),
        oracle_reward=float(reward[prompts, oracle_choice].mean()),
    )


def gap_recovered(reward: float, best_single: float, oracle: float) -> float:
    """Return the share of the best-single-to-oracle gap that ``reward`` closes.

    0 is the best single model and 1 the oracle. NaN when the oracle is no better than
    the best single model, because there is no gap to recover.
    """
    gap = oracle - best_single
    if gap <= 0:
        return math.nan
    return (reward - best_single) / gap


def _stream_baselines(
    data: _ReplayData, split: _SeedSplit, cost_weight: float
) -> StreamBaselines:
    outcomes = _stream_outcomes(data, split.stream_rows)
    quality, cost = outcomes.quality, outcomes.cost_usd
    tail = slice(len(quality) - last_fifth_size(len(quality)), None)
    return StreamBaselines(
        cost_weight=cost_weight,
        seed=split.seed,
        whole=hindsight(quality, cost, cost_weight),
        last_fifth=hindsight(quality[tail], cost[tail], cost_weight),
    )


def _outcome_metrics(
    quality: float,
    cost_usd: float,
    reward: float,
    reward_last_fifth: float,
    baselines: StreamBaselines,
) -> dict[str, float]:
    """Return the metrics shared by policies, single models and the oracle."""
    whole = baselines.whole
    tail = baselines.last_fifth
    return {
        "quality": quality,
        "cost_usd": cost_usd,
        "reward": reward,
        "regret": whole.oracle_reward - reward,
        "gap_recovered": gap_recovered(
            reward, whole.best_model_reward, whole.oracle_reward
        ),
        "reward_last_fifth": reward_last_fifth,
        "regret_last_fifth": tail.oracle_reward - reward_last_fifth,
        "gap_recovered_last_fifth": gap_recovered(
            reward_last_fifth, tail.best_model_reward, tail.oracle_reward
        ),
    }


def _run_metrics(trace: RunTrace, baselines: StreamBaselines) -> dict[str, float]:
    tail = slice(len(trace.reward) - last_fifth_size(len(trace.reward)), None)
    metrics = _outcome_metrics(
        quality=float(trace.quality.mean()),
        cost_usd=float(trace.cost_usd.mean()),
        reward=float(trace.reward.mean()),
        reward_last_fifth=float(trace.reward[tail].mean()),
        baselines=baselines,
    )
    metrics["propensity_mean"] = float(trace.propensity.mean())
    metrics["propensity_min"] = float(trace.propensity.min())
    return metrics


def _model_metrics(model: int, baselines: StreamBaselines) -> dict[str, float]:
    whole = baselines.whole
    return _outcome_metrics(
        quality=float(whole.model_quality[model]),
        cost_usd=float(whole.model_cost_usd[model]),
        reward=float(whole.model_reward[model]),
        reward_last_fifth=float(baselines.last_fifth.model_reward[model]),
        baselines=baselines,
    )


def _oracle_metrics(baselines: StreamBaselines) -> dict[str, float]:
    whole = baselines.whole
    return _outcome_metrics(
        quality=whole.oracle_quality,
        cost_usd=whole.oracle_cost_usd,
        reward=whole.oracle_reward,
        reward_last_fifth=baselines.last_fifth.oracle_reward,
        baselines=baselines,
    )


def _spread(
    per_seed: list[dict[str, float]], names: Iterable[str]
) -> dict[str, SeedSpread]:
    return {
        name: SeedSpread(np.array([metrics[name] for metrics in per_seed]))
        for name in names
    }


def _windowed(
    trace: RunTrace, edges: np.ndarray, n_models: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean reward and the model shares of each window of one run."""
    starts = edges[:-1]
    sizes = np.diff(edges)
    curve = np.add.reduceat(trace.reward, starts) / sizes

    one_hot = np.zeros((len(trace.model_index), n_models))
    one_hot[np.arange(len(trace.model_index)), trace.model_index] = 1.0
    shares = np.add.reduceat(one_hot, starts, axis=0) / sizes[:, None]
    return curve, shares


def _policy_summary(
    traces: list[RunTrace],
    baselines: list[StreamBaselines],
    edges: np.ndarray,
    n_models: int,
) -> PolicySummary:
    per_seed = [_run_metrics(t, b) for t, b in zip(traces, baselines, strict=True)]
    windowed = [_windowed(trace, edges, n_models) for trace in traces]
    return PolicySummary(
        policy=traces[0].policy,
        cost_weight=traces[0].cost_weight,
        metrics=_spread(per_seed, POLICY_METRICS),
        curve=np.stack([curve for curve, _ in windowed]),
        shares=np.stack([shares for _, shares in windowed]),
    )


def _reference_summary(
    baselines: list[StreamBaselines], model_names: tuple[str, ...]
) -> ReferenceSummary:
    models = {
        name: _spread([_model_metrics(k, b) for b in baselines], REFERENCE_METRICS)
        for k, name in enumerate(model_names)
    }
    oracle = _spread([_oracle_metrics(b) for b in baselines], REFERENCE_METRICS)
    best_model = max(model_names, key=lambda name: models[name]["reward"].mean)
    return ReferenceSummary(
        cost_weight=baselines[0].cost_weight,
        models=models,
        oracle=oracle,
        best_model=best_model,
    )


def _assemble_result(
    log: RoutingLog,
    settings: ReplaySettings,
    data: _ReplayData,
    splits: list[_SeedSplit],
    traces: list[RunTrace],
    excluded: int,
) -> ReplayResult:
    model_names = tuple(scenario_catalog(data.scenario, data.catalog).names)
    n_stream = len(splits[0].stream_rows)
    edges = window_edges(n_stream, settings.curve_points)

    baselines = {
        (weight_index, split.seed): _stream_baselines(data, split, weight)
        for weight_index, weight in enumerate(settings.cost_weights)
        for split in splits
    }
    by_run = {
        (
            settings.policies.index(t.policy),
            settings.cost_weights.index(t.cost_weight),
            t.seed,
        ): t
        for t in traces
    }

    summaries = []
    for policy_index, _ in enumerate(settings.policies):
        for weight_index, _ in enumerate(settings.cost_weights):
            seeds = range(settings.seeds)
            summaries.append(
                _policy_summary(
                    [by_run[policy_index, weight_index, seed] for seed in seeds],
                    [baselines[weight_index, seed] for seed in seeds],
                    edges,
                    len(model_names),
                )
            )

    references = tuple(
        _reference_summary(
            [baselines[weight_index, seed] for seed in range(settings.seeds)],
            model_names,
        )
        for weight_index, _ in enumerate(settings.cost_weights)
    )

    return ReplayResult(
        settings=settings,
        model_names=model_names,
        load_report=log.report,
        prompts=len(log),
        excluded_prompts=excluded,
        warm_start_prompts=len(splits[0].warm_rows),
        stream_prompts=n_stream,
        window_edges=edges,
        runs=tuple(traces),
        baselines=tuple(baselines.values()),
        summaries=tuple(summaries),
        references=references,
    )
