"""Circuit breakers that take failing models out of routing for a cooldown.

Each model has a breaker with three states. CLOSED models receive traffic. A CLOSED
model OPENs after ``consecutive_errors`` failed calls in a row, or when the error
rate over its last ``window`` calls reaches ``error_rate`` (once at least
``min_window_requests`` calls are in the window). An OPEN model receives no traffic
until its cooldown ends. It is then HALF_OPEN: at most ``probe_requests`` requests are
routed to it, the first successful probe CLOSEs it and the first failed one OPENs it
again with the cooldown multiplied by ``backoff_factor``, up to
``max_cooldown_seconds``. Closing resets the cooldown to ``cooldown_seconds``.

The state changes only through ``record_route`` (a request was routed) and
``record_outcome`` (feedback on a request arrived), each with the event timestamp.
``allowed`` reads the state at a given time without changing it. So every process
that applies the same events in the same order has the same breakers, and
``snapshot``/``restore`` save and reload them bit for bit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from banditroute.errors import ConfigError

logger = logging.getLogger(__name__)


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2
    """The cooldown has ended and the first probe has been routed."""


@dataclass(frozen=True)
class HealthSettings:
    """When a model is cooled down, for how long, and how it is probed again."""

    consecutive_errors: int = 5
    """Failed calls in a row that open the breaker, or 0 to turn this rule off."""
    error_rate: float | None = 0.5
    """Error rate over the window that opens the breaker, or None to turn it off."""
    window: int = 20
    """Number of most recent calls of a model over which the error rate is taken."""
    min_window_requests: int = 10
    """Calls in the window needed before the error-rate rule applies."""
    cooldown_seconds: float = 30.0
    """Time an opened model receives no traffic, the first time it opens."""
    backoff_factor: float = 2.0
    """Each failed probe multiplies the cooldown by this factor."""
    max_cooldown_seconds: float = 600.0
    probe_requests: int = 3
    """Requests routed to a model while it is half-open, before its probes report."""

    def __post_init__(self) -> None:
        if self.consecutive_errors < 0:
            raise ConfigError(
                f"consecutive_errors={self.consecutive_errors!r} is invalid; give 0 "
                "(rule off) or a positive count."
            )
        if self.error_rate is not None and not 0.0 < self.error_rate <= 1.0:
            raise ConfigError(
                f"error_rate={self.error_rate!r} is invalid; give a rate in (0, 1] "
                "or None (rule off)."
            )
        if self.consecutive_errors == 0 and self.error_rate is None:
            raise ConfigError(
                "Both opening rules are off, so no model would ever be cooled down; "
                "set consecutive_errors or error_rate."
            )
        for name in ("window", "min_window_requests", "probe_requests"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} is invalid; give at least 1."
                )
        if self.min_window_requests > self.window:
            raise ConfigError(
                f"min_window_requests={self.min_window_requests!r} exceeds "
                f"window={self.window!r}; give at most the window size."
            )
        if not (math.isfinite(self.cooldown_seconds) and self.cooldown_seconds > 0):
            raise ConfigError(
                f"cooldown_seconds={self.cooldown_seconds!r} is invalid; give a "
                "positive number of seconds."
            )
        if not (math.isfinite(self.backoff_factor) and self.backoff_factor >= 1.0):
            raise ConfigError(
                f"backoff_factor={self.backoff_factor!r} is invalid; give 1 or more."
            )
        if not self.max_cooldown_seconds >= self.cooldown_seconds:
            raise ConfigError(
                f"max_cooldown_seconds={self.max_cooldown_seconds!r} is below "
                f"cooldown_seconds={self.cooldown_seconds!r}; give at least that."
            )


class ModelHealth:
    """One circuit breaker per catalog model, driven by routing and feedback events."""

    def __init__(self, n_models: int, settings: HealthSettings | None = None) -> None:
        if n_models < 1:
            raise ConfigError(f"n_models={n_models!r} is invalid; give at least 1.")
        self.settings = settings or HealthSettings()
        self.n_models = n_models

        window = self.settings.window
        self.state = np.zeros(n_models, dtype=np.int8)
        self.consecutive = np.zeros(n_models, dtype=np.int64)
        """Failed calls in a row per model."""
        self.window_errors = np.zeros((n_models, window), dtype=np.int8)
        """Ring buffer of the last calls' outcomes per model (1 = error)."""
        self.window_position = np.zeros(n_models, dtype=np.int64)
        self.window_count = np.zeros(n_models, dtype=np.int64)
        self.open_until = np.full(n_models, -np.inf)
        """Time in seconds at which each model's cooldown ends."""
        self.cooldown = np.full(n_models, self.settings.cooldown_seconds)
        """Length of the next cooldown per model, in seconds."""
        self.probe_start = np.full(n_models, -np.inf)
        """Time at which each model's cooldown ended and probing began."""
        self.probes_routed = np.zeros(n_models, dtype=np.int64)
        """Requests routed to each model in its current half-open period."""
        self.last_probe_time = np.full(n_models, -np.inf)
        self.opened = np.zeros(n_models, dtype=np.int64)
        """Number of times each model's breaker opened."""

    def add_model(self) -> int:
        """Append a breaker for a model added to the catalog; return its index.

        The new breaker starts closed, with no errors counted.
        """
        appended = ModelHealth(1, self.settings)
        for name in self._STATE_FIELDS:
            merged = np.concatenate([getattr(self, name), getattr(appended, name)])
            setattr(self, name, merged)
        self.n_models += 1
        return self.n_models - 1

    # Reading

    def states(self, now: float) -> np.ndarray:
        """Return each model's ``BreakerState`` at time ``now``, as int8 values.

        An OPEN model whose cooldown has ended reads as HALF_OPEN.
        """
        states = self.state.copy()
        ended = (states == BreakerState.OPEN) & (now >= self.open_until)
        states[ended] = BreakerState.HALF_OPEN
        return states

    def allowed(self, now: float) -> np.ndarray:
        """Return the boolean mask of models that may receive a request at ``now``.

        When every model is cooling down, the models whose cooldown ends first are
        allowed, because a request must go somewhere.
        """
        states = self.states(now)
        probing = (states == BreakerState.HALF_OPEN) & (
            (self.probes_routed < self.settings.probe_requests)
            | self._probes_unanswered(now)
        )
        mask = (states == BreakerState.CLOSED) | probing
        if mask.any():
            return mask

        # NOTE: this fallback can route to a model that is still failing. It sends
        # the request to the model closest to its next probe.
        return self.open_until == self.open_until.min()

    # Events

    def record_route(self, model: int, now: float) -> None:
        """Record that a request was routed to ``model`` at time ``now``.

        A model whose cooldown has ended enters HALF_OPEN here, and each request
        routed to it counts against its probe budget.
        """
        self._check_model(model)
        if self.state[model] == BreakerState.OPEN and now >= self.open_until[model]:
            self.state[model] = BreakerState.HALF_OPEN
            self.probe_start[model] = self.open_until[model]
            self.probes_routed[model] = 0
            logger.info("Model %d is half-open at t=%.3f; probing it.", model, now)

        if self.state[model] == BreakerState.HALF_OPEN:
            if self._probes_unanswered(now)[model]:
                self.probes_routed[model] = 0
            self.probes_routed[model] += 1
            self.last_probe_time[model] = now

    def _probes_unanswered(self, now: float) -> np.ndarray:
        """Return which models used their probe budget a cooldown ago with no outcome.

        Feedback on a probe can be lost, so such a model gets a new probe budget
        instead of staying half-open without traffic.
        """
        budget_used = self.probes_routed >= self.settings.probe_requests
        return budget_used & (now >= self.last_probe_time + self.cooldown)

    def record_outcome(
        self,
        model: int,
        error: bool,
        now: float,
        routed_at: float | None = None,
    ) -> None:
        """Record the outcome of one call of ``model`` reported at time ``now``.

        ``routed_at`` is when the call was routed, if known. While a model is
        half-open, only calls routed after its cooldown ended count as probes, so
        late feedback on calls from before the outage does not close it.
        """
        self._check_model(model)
        state = self.state[model]
        if state == BreakerState.OPEN:
            return

        if state == BreakerState.HALF_OPEN:
            if routed_at is not None and routed_at < self.probe_start[model]:
                return
            if error:
                self._open(model, now, backoff=True)
            else:
                self._close(model, now)
            return

        self._record_closed_outcome(model, error, now)

    def _record_closed_outcome(self, model: int, error: bool, now: float) -> None:
        self.consecutive[model] = self.consecutive[model] + 1 if error else 0

        position = self.window_position[model]
        self.window_errors[model, position] = int(error)
        self.window_position[model] = (position + 1) % self.settings.window
        self.window_count[model] = min(
            self.window_count[model] + 1, self.settings.window
        )

        if self._should_open(model):
            self._open(model, now, backoff=False)

    def _should_open(self, model: int) -> bool:
        settings = self.settings
        limit = settings.consecutive_errors
        if limit and self.consecutive[model] >= limit:
            return True

        count = self.window_count[model]
        if settings.error_rate is None or count < settings.min_window_requests:
            return False
        error_rate = self.window_errors[model].sum() / count
        return bool(error_rate >= settings.error_rate)

    def _open(self, model: int, now: float, *, backoff: bool) -> None:
        settings = self.settings
        if backoff:
            self.cooldown[model] = min(
                self.cooldown[model] * settings.backoff_factor,
                settings.max_cooldown_seconds,
            )
        self.state[model] = BreakerState.OPEN
        self.open_until[model] = now + self.cooldown[model]
        self.opened[model] += 1
        self.probes_routed[model] = 0
        self._clear_window(model)
        logger.warning(
            "Model %d is cooled down until t=%.3f (%.1f s) after failed calls.",
            model,
            self.open_until[model],
            self.cooldown[model],
        )

    def _close(self, model: int, now: float) -> None:
        self.state[model] = BreakerState.CLOSED
        self.cooldown[model] = self.settings.cooldown_seconds
        self.probes_routed[model] = 0
        self._clear_window(model)
        logger.info("Model %d is closed again at t=%.3f after a probe.", model, now)

    def _clear_window(self, model: int) -> None:
        self.consecutive[model] = 0
        self.window_errors[model] = 0
        self.window_position[model] = 0
        self.window_count[model] = 0

    def _check_model(self, model: int) -> None:
        if not 0 <= model < self.n_models:
            raise IndexError(
                f"Model index {model} is out of range; the catalog has "
                f"{self.n_models} models."
            )

    # State

    _STATE_FIELDS = (
        "state",
        "consecutive",
        "window_errors",
        "window_position",
        "window_count",
        "open_until",
        "cooldown",
        "probe_start",
        "probes_routed",
        "last_probe_time",
        "opened",
    )

    def snapshot(self) -> dict[str, np.ndarray]:
        """Return the state as named arrays (copies), restorable with ``restore``."""
        return {name: getattr(self, name).copy() for name in self._STATE_FIELDS}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replace the state with one returned by ``snapshot``."""
        for name in self._STATE_FIELDS:
            if name not in state:
                raise ConfigError(
                    f"The health state lacks {name!r}; restore a state that "
                    "ModelHealth.snapshot returned."
                )
            current = getattr(self, name)
            value = np.asarray(state[name])
            if value.shape != current.shape:
                raise ConfigError(
                    f"The health state's {name!r} has shape {value.shape}, but this "
                    f"ModelHealth needs {current.shape}; use the same model count "
                    "and window."
                )
        for name in self._STATE_FIELDS:
            current = getattr(self, name)
            setattr(self, name, np.asarray(state[name], dtype=current.dtype).copy())
