"""Budget pacing, model health and gradual rollout applied to one replay stream.

A replay has no clock, so step i of the stream happens at time i times
``seconds_per_request``, and the feedback of each request arrives at the step it is
routed. ``StreamControls`` contains the pacer, the circuit breakers and the rollout of
one run, and records per-step arrays that the report summarizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from banditroute.catalog import Catalog
from banditroute.errors import ConfigError
from banditroute.health import HealthSettings, ModelHealth
from banditroute.pacing import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_WARMUP_REQUESTS,
    BudgetPacer,
)
from banditroute.rollout import Rollout, RolloutGroup, RolloutStats

if TYPE_CHECKING:
    from banditroute.replay import RunTrace

CONTROL_STREAM_KEY = 7_919
"""Second entry of the seed of the generator that assigns rollout groups.

The generator depends on the stream seed alone, so every policy replayed on one seed
gets the same group assignment, and the policies' own generators are unchanged."""


@dataclass(frozen=True)
class ControlSettings:
    """The self-tuning controls of a replay. The defaults turn every control off."""

    cost_target: float | None = None
    """Target mean cost per request in USD, which makes the pacer set the weight."""
    pacing_learning_rate: float = DEFAULT_LEARNING_RATE
    pacing_warmup_requests: int = DEFAULT_WARMUP_REQUESTS
    pacing_initial_weight: float | None = None
    """Initial cost weight of the pacer, or None to derive it from the target."""

    health: HealthSettings | None = None
    """Circuit-breaker settings, or None to route to models whatever their errors."""
    failing_model: str | None = None
    """A model whose every call fails from step ``failing_from_step`` on."""
    failing_from_step: int = 0
    seconds_per_request: float = 1.0
    """Time between two requests of the stream, which drives the cooldowns."""

    rollout_share: float | None = None
    """Share of requests routed by the policy. The rest go to ``default_model``."""
    default_model: str | None = None

    def __post_init__(self) -> None:
        if self.failing_from_step < 0:
            raise ConfigError(
                f"failing_from_step={self.failing_from_step!r} is invalid; give a "
                "stream step of 0 or more."
            )
        seconds = self.seconds_per_request
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(
                f"seconds_per_request={seconds!r} is invalid; give a positive number."
            )
        if (self.rollout_share is None) != (self.default_model is None):
            raise ConfigError(
                "A rollout needs both rollout_share and default_model; give both or "
                "neither."
            )
        if self.cost_target is not None:
            # Build a pacer once so that invalid pacing values fail before a run.
            self.make_pacer()
        if self.rollout_share is not None:
            Rollout(self.rollout_share, default_model=0)

    @property
    def active(self) -> bool:
        return (
            self.cost_target is not None
            or self.health is not None
            or self.failing_model is not None
            or self.rollout_share is not None
        )

    def make_pacer(self) -> BudgetPacer:
        return BudgetPacer(
            self.cost_target,
            initial_weight=self.pacing_initial_weight,
            learning_rate=self.pacing_learning_rate,
            warmup_requests=self.pacing_warmup_requests,
        )

    def check_models(self, catalog: Catalog) -> None:
        """Raise ConfigError when a named model is not in ``catalog``."""
        for name in (self.failing_model, self.default_model):
            if name is not None and name not in catalog:
                raise ConfigError(
                    f"Model {name!r} is not in the catalog; known models: "
                    f"{list(catalog.names)}."
                )


@dataclass
class StreamControls:
    """The controls of one run, with the per-step arrays they record."""

    settings: ControlSettings
    catalog: Catalog
    steps: int
    seed: int
    pacer: BudgetPacer | None = None
    health: ModelHealth | None = None
    rollout: Rollout | None = None
    records: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        settings = self.settings
        if settings.cost_target is not None:
            self.pacer = settings.make_pacer()
            self.records["cost_weight"] = np.empty(self.steps)
        if settings.health is not None:
            self.health = ModelHealth(len(self.catalog), settings.health)
        if settings.failing_model is not None or self.health is not None:
            self.records["error"] = np.zeros(self.steps, dtype=bool)
        if settings.failing_model is not None and self.health is not None:
            self.records["failing_allowed"] = np.ones(self.steps, dtype=bool)
        if settings.rollout_share is not None and settings.default_model is not None:
            self.rollout = Rollout(
                settings.rollout_share, self.catalog.index(settings.default_model)
            )
            self.records["group"] = np.empty(self.steps, dtype=np.int8)

        self._rng = np.random.default_rng([self.seed, CONTROL_STREAM_KEY])
        self._failing = (
            None
            if settings.failing_model is None
            else self.catalog.index(settings.failing_model)
        )

    def time(self, step: int) -> float:
        return step * self.settings.seconds_per_request

    def cost_weight(self, step: int, fixed_weight: float) -> float:
        """Return the cost weight of this step's decision."""
        if self.pacer is None:
            return fixed_weight

        weight = self.pacer.weight
        self.records["cost_weight"][step] = weight
        return weight

    def allowed(self, step: int) -> np.ndarray | None:
        """Return the mask of models this step may route to (None allows all)."""
        if self.health is None:
            return None

        allowed = self.health.allowed(self.time(step))
        if self._failing is not None:
            self.records["failing_allowed"][step] = allowed[self._failing]
        return allowed

    def default_choice(self, step: int, allowed: np.ndarray | None) -> int | None:
        """Return the default model when this step is in the default group.

        Returns None when the policy routes this step. A default model that the
        health mask excludes is replaced by the policy's choice, so the step stays in
        the default group but is routed by the policy.
        """
        if self.rollout is None:
            return None

        group = self.rollout.assign(self._rng)
        self.records["group"][step] = group
        model = self.rollout.default_model
        if group == RolloutGroup.BANDIT:
            return None
        if allowed is not None and not allowed[model]:
            return None
        return model

    def outcome(self, step: int, model: int) -> bool:
        """Return whether this step's call of ``model`` fails in the scenario."""
        failed = model == self._failing and step >= self.settings.failing_from_step
        if "error" in self.records:
            self.records["error"][step] = failed
        return failed

    def record(self, step: int, model: int, cost_usd: float, error: bool) -> None:
        """Feed one step's routing and feedback events to the pacer and breakers."""
        now = self.time(step)
        if self.health is not None:
            self.health.record_route(model, now)
            self.health.record_outcome(model, error, now, routed_at=now)
        if self.pacer is not None:
            self.pacer.observe(cost_usd, timestamp=now)


# Summaries of one run


def pacing_summary(
    cost_weight: np.ndarray, cost_usd: np.ndarray, warmup_requests: int
) -> dict[str, float]:
    """Return the realized spend and weights of a paced run after its warm-up."""
    after = slice(min(warmup_requests, len(cost_usd) - 1), None)
    return {
        "mean_cost_after_warmup": float(cost_usd[after].mean()),
        "mean_cost": float(cost_usd.mean()),
        "final_cost_weight": float(cost_weight[-1]),
        "median_cost_weight_after_warmup": float(np.median(cost_weight[after])),
    }


def failure_summary(
    model_index: np.ndarray,
    failing_allowed: np.ndarray | None,
    failing: int,
    from_step: int,
) -> dict[str, float]:
    """Return how many requests the failing model got once it started failing.

    ``failing_allowed`` is the per-step health mask entry of the failing model, or
    None without breakers. ``requests_before_cooldown`` counts the requests routed to
    the failing model from ``from_step`` up to its first cooldown.
    """
    routed = model_index[from_step:] == failing
    summary = {
        "requests_total": float(routed.sum()),
        "requests_before_cooldown": math.nan,
        "first_cooldown_step": math.nan,
    }
    if failing_allowed is None:
        return summary

    blocked = np.flatnonzero(~failing_allowed[from_step:])
    if len(blocked):
        first = int(blocked[0])
        summary["first_cooldown_step"] = float(from_step + first)
        summary["requests_before_cooldown"] = float(routed[:first].sum())
    return summary


def rollout_summary(
    group: np.ndarray,
    quality: np.ndarray,
    cost_usd: np.ndarray,
    cost_weight: float,
) -> dict[str, float]:
    """Return the group means, their difference and the 95% intervals of one run."""
    stats = RolloutStats()
    for step_group, step_quality, step_cost in zip(
        group, quality, cost_usd, strict=True
    ):
        stats.record(
            int(step_group), float(step_quality), float(step_cost), cost_weight
        )

    summary: dict[str, float] = {
        "bandit_requests": float(stats.count[RolloutGroup.BANDIT]),
        "default_requests": float(stats.count[RolloutGroup.DEFAULT]),
    }
    for comparison in stats.compare():
        for part in ("bandit", "default", "difference"):
            interval = getattr(comparison, part)
            prefix = f"{part}_{comparison.outcome}"
            summary[prefix] = interval.estimate
            summary[f"{prefix}_low"] = interval.low
            summary[f"{prefix}_high"] = interval.high
    return summary


def run_control_summary(
    trace: RunTrace, settings: ControlSettings, model_names: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Return the summaries of the controls that were active in one run."""
    records = trace.controls
    summary: dict[str, dict[str, float]] = {}
    if "cost_weight" in records:
        summary["pacing"] = pacing_summary(
            records["cost_weight"], trace.cost_usd, settings.pacing_warmup_requests
        )
    if settings.failing_model is not None:
        summary["failure"] = failure_summary(
            trace.model_index,
            records.get("failing_allowed"),
            model_names.index(settings.failing_model),
            settings.failing_from_step,
        )
    if "group" in records:
        summary["rollout"] = rollout_summary(
            records["group"], trace.quality, trace.cost_usd, trace.cost_weight
        )
    return summary
