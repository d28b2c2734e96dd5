"""Self-tuning state that every server process derives from the event stream.

Feedback events move the budget pacer, the model breakers and the rollout statistics.
Control events change the budget target and the rollout. Because the state changes
only through events, in stream order and with the events' own timestamps, every
process that applies the same stream ends in the same state, and it is snapshotted
with the posterior.

Which requests a half-open model receives is a routing fact, not an event, so each
process limits its own probes (``ProbeBudget``): a recovering model gets at most
``probe_requests`` requests per process and half-open period.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from banditroute.catalog import Catalog
from banditroute.errors import ConfigError
from banditroute.events import ControlEvent, FeedbackEvent
from banditroute.health import BreakerState, HealthSettings, ModelHealth
from banditroute.pacing import BudgetPacer
from banditroute.rollout import RolloutGroup, RolloutStats

logger = logging.getLogger(__name__)

_NO_MODEL = -1

PACER_OPTIONS = ("warmup_requests", "learning_rate")
"""Pacer settings that a set_budget event carries, so every process uses the same."""


@dataclass(frozen=True)
class RolloutSetting:
    """Share of requests routed by the bandit; the rest go to ``default_model``."""

    share: float
    default_model: str


class ControlState:
    """The budget pacer, the model breakers and the rollout of one routing service.

    ``cost_target_usd`` is the initial target mean cost per request; None keeps the
    cost weight fixed. ``pacer_options`` are further ``BudgetPacer`` arguments.
    ``health`` sets the breakers; None never cools a model down. ``rollout`` is the
    initial rollout; None lets the bandit route every request.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        cost_target_usd: float | None = None,
        pacer_options: Mapping[str, Any] | None = None,
        health: HealthSettings | None = None,
        rollout: RolloutSetting | None = None,
    ) -> None:
        self.catalog = catalog
        self.pacer_options = dict(pacer_options or {})
        self.health_settings = health
        self.reset()
        self._set_budget(cost_target_usd)
        if rollout is not None:
            self._set_rollout(rollout.share, rollout.default_model)

    def reset(self) -> None:
        """Return to the state before any event: no budget, no rollout, and closed
        breakers for every model of the catalog."""
        health = self.health_settings
        self.health = ModelHealth(len(self.catalog), health) if health else None
        self.pacer: BudgetPacer | None = None
        self.rollout_share = 1.0
        self.default_model = _NO_MODEL
        self.rollout_stats = RolloutStats()

    # Reading at routing time

    def cost_weight(self, default: float) -> float:
        """Return the pacer's cost weight, or ``default`` when no target is set."""
        return default if self.pacer is None else self.pacer.weight

    def healthy(self, now: float) -> np.ndarray:
        """Return the mask of models whose breaker lets traffic through at ``now``."""
        if self.health is None:
            return np.ones(len(self.catalog), dtype=bool)
        return self.health.allowed(now)

    def half_open(self, now: float) -> np.ndarray:
        """Return the mask of models being probed after a cooldown at ``now``."""
        if self.health is None:
            return np.zeros(len(self.catalog), dtype=bool)
        return self.health.states(now) == BreakerState.HALF_OPEN

    @property
    def rollout_default(self) -> str | None:
        """Default model of the rollout, or None when the bandit routes everything."""
        if self.default_model == _NO_MODEL:
            return None
        return self.catalog.names[self.default_model]

    # Events

    def add_model(self) -> None:
        """Follow a model appended to the catalog: give it a closed breaker."""
        if self.health is not None:
            self.health.add_model()

    def observe_feedback(
        self, event: FeedbackEvent, model: int, cost_usd: float | None, now: float
    ) -> None:
        """Update the pacer, the breaker of ``model`` and the rollout statistics.

        ``now`` is the event's time in the stream, which never decreases along it.
        Clocks of the processes that stamp ``received_at`` can disagree, so it is not
        used here.
        """
        if self.pacer is not None and cost_usd is not None:
            self.pacer.observe(cost_usd, now)

        if self.health is not None:
            # The shared probe count follows probes with feedback, because only
            # those are events. Each process's ProbeBudget limits routed probes.
            routed_at = now if event.routed_at is None else min(event.routed_at, now)
            self.health.record_route(model, routed_at)
            self.health.record_outcome(model, event.error, now, routed_at=routed_at)

        if event.quality is not None and cost_usd is not None:
            weight = 0.0 if event.cost_weight is None else event.cost_weight
            group = RolloutGroup[event.group.upper()]
            self.rollout_stats.record(group, event.quality, cost_usd, weight)

    def apply_control(self, event: ControlEvent) -> None:
        """Apply a ``set_budget`` or ``set_rollout`` control event."""
        arguments = event.arguments
        if event.action == "set_budget":
            options = {
                name: arguments[name] for name in PACER_OPTIONS if name in arguments
            }
            self._set_budget(arguments.get("target_cost_usd"), options)
        elif event.action == "set_rollout":
            share = arguments.get("share")
            default_model = arguments.get("default_model")
            if share is None or default_model is None:
                self.rollout_share, self.default_model = 1.0, _NO_MODEL
            else:
                self._set_rollout(float(share), str(default_model))
            self.rollout_stats = RolloutStats()
        logger.info("Applied control event %s %s", event.action, dict(arguments))

    def _set_budget(
        self, target: float | None, options: Mapping[str, Any] | None = None
    ) -> None:
        """Set the target; ``options`` from the event override ``pacer_options``."""
        if target is None:
            self.pacer = None
            return

        # A new target keeps the current weight as its starting point.
        weight = None if self.pacer is None else self.pacer.weight
        merged = {**self.pacer_options, **(options or {})}
        self.pacer = BudgetPacer(float(target), initial_weight=weight, **merged)

    def _set_rollout(self, share: float, default_model: str) -> None:
        if not (math.isfinite(share) and 0.0 <= share <= 1.0):
            raise ConfigError(f"share={share!r} is invalid; give a share in [0, 1].")
        if default_model not in self.catalog:
            raise ConfigError(
                f"default_model {default_model!r} is not in the catalog; known "
                f"models: {list(self.catalog.names)}."
            )
        self.rollout_share = share
        self.default_model = self.catalog.index(default_model)

    # Reports

    def describe(self, now: float, default_weight: float) -> dict[str, Any]:
        """Return the state for /stats: weight, budget, breakers and rollout."""
        budget = None
        if self.pacer is not None:
            budget = {
                "target_cost_usd": self.pacer.target_cost_usd,
                "mean_cost_usd": _finite_or_none(self.pacer.mean_cost_usd),
                "warmed_up": self.pacer.warmed_up,
            }

        breakers = None
        if self.health is not None:
            states = self.health.states(now)
            breakers = {
                name: {
                    "state": BreakerState(int(states[index])).name.lower(),
                    "cooldown_ends_at": _finite_or_none(self.health.open_until[index]),
                    "times_opened": int(self.health.opened[index]),
                }
                for index, name in enumerate(self.catalog.names)
            }

        rollout = None
        if self.rollout_default is not None:
            rollout = {
                "share": self.rollout_share,
                "default_model": self.rollout_default,
                "requests": {
                    group.name.lower(): int(self.rollout_stats.count[group])
                    for group in RolloutGroup
                },
                "comparison": [
                    {
                        "outcome": comparison.outcome,
                        "bandit": _interval(comparison.bandit),
                        "default": _interval(comparison.default),
                        "bandit_minus_default": _interval(comparison.difference),
                    }
                    for comparison in self.rollout_stats.compare()
                ],
            }

        return {
            "cost_weight": self.cost_weight(default_weight),
            "budget": budget,
            "breakers": breakers,
            "rollout": rollout,
        }

    # State

    def snapshot(self) -> dict[str, np.ndarray]:
        """Return the state as named arrays, restorable with ``restore``."""
        state: dict[str, np.ndarray] = {
            "rollout.setting": np.array([self.rollout_share, self.default_model]),
        }
        state.update(_prefixed("rollout", self.rollout_stats.snapshot()))
        if self.health is not None:
            state.update(_prefixed("health", self.health.snapshot()))
        if self.pacer is not None:
            # The initial weight sets the pacer's weight bounds, so it is kept too.
            pacer = self.pacer
            state["budget.target"] = np.array(
                [
                    pacer.target_cost_usd,
                    pacer.initial_weight,
                    pacer.warmup_requests,
                    pacer.learning_rate,
                ]
            )
            state.update(_prefixed("budget", self.pacer.snapshot()))
        return state

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replace the state with one returned by ``snapshot``."""
        share, default_model = state["rollout.setting"]
        self.rollout_share, self.default_model = float(share), int(default_model)
        self.rollout_stats.restore(_unprefixed("rollout", state))
        if self.health is not None:
            self._restore_health(_unprefixed("health", state))

        if "budget.target" not in state:
            self.pacer = None
            return
        target, initial_weight, warmup, learning_rate = state["budget.target"]
        self.pacer = BudgetPacer(
            float(target),
            initial_weight=float(initial_weight),
            warmup_requests=int(warmup),
            learning_rate=float(learning_rate),
        )
        self.pacer.restore(_unprefixed("budget", state))

    def _restore_health(self, state: dict[str, np.ndarray]) -> None:
        # Health settings are not part of the store's namespace, so a snapshot may
        # come from processes without breakers or with another window size. The
        # breakers then start closed, which only drops the count of recent errors.
        assert self.health is not None
        if not state:
            return
        while self.health.n_models < len(state["state"]):
            self.health.add_model()
        try:
            self.health.restore(state)
        except ConfigError as error:
            logger.warning(
                "The snapshot's model breakers do not fit the health settings (%s); "
                "every breaker starts closed.",
                error,
            )


class ProbeBudget:
    """Limits the requests one process sends to each model being probed.

    The shared breakers mark which models are half-open. Each process counts the
    requests it routed to such a model since its current cooldown ended, and stops at
    ``probe_requests`` until feedback closes or reopens the breaker.
    """

    def __init__(self, probe_requests: int) -> None:
        self.probe_requests = probe_requests
        self._period: dict[int, float] = {}
        self._routed: dict[int, int] = {}

    def allowed(self, half_open: np.ndarray, cooldown_ends: np.ndarray) -> np.ndarray:
        """Return the mask of half-open models this process may still probe."""
        mask = np.ones(len(half_open), dtype=bool)
        for index in np.flatnonzero(half_open):
            model = int(index)
            period = float(cooldown_ends[model])
            if self._period.get(model) != period:
                self._period[model] = period
                self._routed[model] = 0
            mask[model] = self._routed[model] < self.probe_requests
        return mask

    def record(self, model: int, half_open: np.ndarray) -> None:
        """Count a request routed to ``model`` if it is being probed."""
        if half_open[model]:
            self._routed[model] = self._routed.get(model, 0) + 1


def _prefixed(prefix: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{name}": value for name, value in state.items()}


def _unprefixed(prefix: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    start = len(prefix) + 1
    return {
        name[start:]: value
        for name, value in state.items()
        if name.startswith(f"{prefix}.")
    }


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _interval(interval: Any) -> dict[str, float | None]:
    return {
        "estimate": _finite_or_none(interval.estimate),
        "low": _finite_or_none(interval.low),
        "high": _finite_or_none(interval.high),
    }
