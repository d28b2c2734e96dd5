"""The choice of a model for one request, from the posterior and the control state.

A request may limit the models (allowed names, a maximum expected cost). Of those,
disabled models and models cooling down after failures are left out, unless that
leaves none. The cost weight is the request's own, else the budget pacer's, else the
setting. During a rollout, a request outside the rollout share goes to the default
model; every other request goes to the Thompson-sampling choice. When the default
model is not among the candidates (disabled, failing or not allowed), the bandit
routes the request, and it counts in the bandit group.

``Router.choose`` reads the posterior and the control state, so the replica runs it
under the lock that event application holds (``PosteriorReplica.run_locked``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from banditroute.catalog import Catalog
from banditroute.control_state import ControlState, ProbeBudget
from banditroute.feedback import InvalidFieldError
from banditroute.policies.thompson import ContextualThompsonSampling

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutingRequest:
    """The inputs of one routing decision, once the prompt is embedded."""

    context: np.ndarray
    input_tokens: int
    allowed_models: list[str] | None = None
    cost_weight: float | None = None
    """The request's own cost weight; None uses the pacer's or the setting's."""
    max_cost_usd: float | None = None


@dataclass(frozen=True)
class RoutingChoice:
    """The model chosen for one request and how it was chosen."""

    model: str
    expected_cost_usd: float
    propensity: float
    """Probability of this choice given the rollout group."""
    cost_weight: float
    group: str
    """Rollout group: "bandit" or "default"."""


class Router:
    """Chooses models for requests; one per server process.

    ``default_cost_weight`` applies when neither the request nor a budget sets one.
    ``rng`` draws the rollout group of each request.
    """

    def __init__(
        self,
        controls: ControlState,
        *,
        default_cost_weight: float,
        probe_requests: int,
        rng: np.random.Generator,
    ) -> None:
        self.controls = controls
        self.default_cost_weight = default_cost_weight
        self.probes = ProbeBudget(probe_requests)
        self.rng = rng

    def choose(
        self, policy: ContextualThompsonSampling, request: RoutingRequest, now: float
    ) -> RoutingChoice:
        """Choose the model of ``request`` at time ``now`` (Unix seconds).

        Raises InvalidFieldError when the request's limits leave no model.
        """
        expected_costs = policy.cost_model.expected_cost(request.input_tokens)
        candidates = self._requested(policy, request, expected_costs)
        candidates = self._without_failing(candidates, now)
        weight = request.cost_weight
        if weight is None:
            weight = self.controls.cost_weight(self.default_cost_weight)

        default = self._default_choice(candidates)
        if default is None:
            decision = policy.decide(
                request.context, request.input_tokens, weight, candidates
            )
            model, propensity, group = (
                decision.model_index,
                decision.propensity,
                "bandit",
            )
        else:
            # The default group's choice is deterministic given the group.
            model, propensity, group = default, 1.0, "default"

        self.probes.record(model, self.controls.half_open(now))
        return RoutingChoice(
            model=policy.catalog.names[model],
            expected_cost_usd=float(expected_costs[model]),
            propensity=float(propensity),
            cost_weight=float(weight),
            group=group,
        )

    def _requested(
        self,
        policy: ContextualThompsonSampling,
        request: RoutingRequest,
        expected_costs: np.ndarray,
    ) -> np.ndarray:
        """Return the mask of enabled models that the request allows."""
        catalog = policy.catalog
        allowed = allowed_mask(catalog, request.allowed_models)
        enabled = allowed & catalog.enabled
        if not enabled.any():
            raise InvalidFieldError(
                f"Every model in allowed_models is disabled; allow one of the enabled "
                f"models {catalog.enabled_names()}.",
                field="allowed_models",
                value=request.allowed_models,
            )

        if request.max_cost_usd is None:
            return enabled
        within = enabled & (expected_costs <= request.max_cost_usd)
        if within.any():
            return within

        cheapest = float(expected_costs[enabled].min())
        raise InvalidFieldError(
            f"max_cost_usd {request.max_cost_usd:g} is below the expected cost of "
            f"every allowed model (the cheapest is {cheapest:.3g} USD for this "
            "prompt); raise it or allow cheaper models.",
            field="max_cost_usd",
            value=request.max_cost_usd,
        )

    def _without_failing(self, candidates: np.ndarray, now: float) -> np.ndarray:
        """Leave out models that are cooling down or have used their probes."""
        controls = self.controls
        healthy = controls.healthy(now)
        if controls.health is not None:
            healthy &= self.probes.allowed(
                controls.half_open(now), controls.health.open_until
            )

        remaining = candidates & healthy
        if remaining.any():
            return remaining
        # A request must go somewhere: when every allowed model is failing, the
        # breakers do not narrow the choice.
        logger.debug("Every allowed model is cooling down; routing among all of them.")
        return candidates

    def _default_choice(self, candidates: np.ndarray) -> int | None:
        """Return the default model for a request outside the rollout share, or None."""
        controls = self.controls
        if controls.rollout_default is None:
            return None
        if self.rng.random() < controls.rollout_share:
            return None
        if not candidates[controls.default_model]:
            return None
        return controls.default_model


def allowed_mask(catalog: Catalog, allowed: list[str] | None) -> np.ndarray:
    """Return the mask of ``allowed`` in ``catalog``; every model when None.

    Raises InvalidFieldError naming an empty list or an unknown model.
    """
    if allowed is None:
        return np.ones(len(catalog), dtype=bool)

    if not allowed:
        raise InvalidFieldError(
            "allowed_models is empty; list at least one model or leave it out.",
            field="allowed_models",
            value=allowed,
        )

    for name in allowed:
        if name not in catalog:
            raise InvalidFieldError(
                f"allowed_models names {name!r}, which is not in the catalog; known "
                f"models: {list(catalog.names)}.",
                field="allowed_models",
                value=name,
            )
    return catalog.mask(allowed)
