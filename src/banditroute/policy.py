"""The interface every routing policy implements, and the pieces they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from banditroute.catalog import Catalog
from banditroute.cost import CostModel


@dataclass(frozen=True)
class Decision:
    """The model a policy chose for one request, and why."""

    model_index: int
    propensity: float
    """Probability that the policy chooses this model for this context (0 to 1]."""
    expected_cost_usd: np.ndarray
    """Expected cost in USD of every catalog model for this request."""
    scores: np.ndarray
    """The value the policy maximized per model; -inf for models not allowed."""


@dataclass(frozen=True)
class WarmStartData:
    """A full-information history: every model's quality and output length per prompt.

    ``quality`` and ``output_tokens`` are (prompts, models) arrays with NaN where a
    model has no observation for a prompt.
    """

    contexts: np.ndarray
    input_tokens: np.ndarray
    quality: np.ndarray
    output_tokens: np.ndarray


class Policy(ABC):
    """A routing policy: chooses a model per request and learns from feedback.

    Contexts are feature vectors built by ``banditroute.features``; policies that do
    not use them ignore them. All randomness comes from the generator passed in, so a
    seeded generator makes a run repeatable.
    """

    name: str = "policy"

    def __init__(self, catalog: Catalog, rng: np.random.Generator) -> None:
        self.catalog = catalog
        self.rng = rng
        self.cost_model = CostModel(catalog)

    @property
    def n_models(self) -> int:
        return len(self.catalog)

    @abstractmethod
    def decide(
        self,
        context: np.ndarray,
        input_tokens: float,
        cost_weight: float,
        allowed: np.ndarray | None = None,
    ) -> Decision:
        """Choose a model for one request.

        ``cost_weight`` is the quality a caller gives up to save one USD; ``allowed``
        is a boolean mask over the catalog (None allows every model).
        """

    def update(
        self,
        model_index: int,
        context: np.ndarray,
        quality: float,
        output_tokens: float | None = None,
    ) -> None:
        """Learn from the feedback of one routed request (quality in [0, 1])."""
        if output_tokens is not None:
            self.cost_model.update(model_index, output_tokens)
        self.update_quality(model_index, context, quality)

    @abstractmethod
    def update_quality(
        self, model_index: int, context: np.ndarray, quality: float
    ) -> None:
        """Learn one observed quality of ``model_index`` for ``context``."""

    def warm_start(self, history: WarmStartData) -> None:
        """Learn from a full-information history before the online run starts."""
        self.cost_model.fit(history.output_tokens)
        for model_index in range(self.n_models):
            observed = np.isfinite(history.quality[:, model_index])
            for row in np.flatnonzero(observed):
                self.update_quality(
                    model_index,
                    history.contexts[row],
                    float(history.quality[row, model_index]),
                )


def allowed_mask(allowed: np.ndarray | None, n_models: int) -> np.ndarray:
    """Return ``allowed`` as a boolean mask (all true for None); reject an empty one."""
    if allowed is None:
        return np.ones(n_models, dtype=bool)

    if not allowed.any():
        raise ValueError("No model is allowed for this request; allow at least one.")
    return allowed


def argmax_random_tie(
    scores: np.ndarray, allowed: np.ndarray, rng: np.random.Generator
) -> int:
    """Return the index of the highest allowed score, breaking ties at random.

    Only allowed models are ever returned: NaN scores rank lowest, and when every
    allowed score is minus infinity or NaN, an allowed model is drawn at random.
    """
    candidates = np.flatnonzero(allowed)
    if len(candidates) == 0:
        raise ValueError("No model is allowed; allow at least one model.")

    values = ranked_scores(scores[candidates])
    best = candidates[values == values.max()]
    if len(best) == 1:
        return int(best[0])
    return int(rng.choice(best))


def ranked_scores(scores: np.ndarray) -> np.ndarray:
    """Return ``scores`` with each NaN (0 times an infinite cost) as minus infinity."""
    return np.where(np.isnan(scores), -np.inf, scores)
