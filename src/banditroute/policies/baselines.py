"""Baseline routing policies, behind the same interface as Thompson sampling."""

from __future__ import annotations

import numpy as np

from banditroute.catalog import Catalog
from banditroute.policy import (
    Decision,
    Policy,
    WarmStartData,
    allowed_mask,
    argmax_random_tie,
)
from banditroute.posterior import DEFAULT_PRIOR, LinearPosteriors, PriorSettings


def _tie_propensity(scores: np.ndarray, chosen: int) -> float:
    """Return the choice probability of an argmax with random tie-breaking."""
    return 1.0 / int((scores == scores[chosen]).sum())


class UniformRandom(Policy):
    """Chooses uniformly among the allowed models."""

    name = "random"

    def decide(self, context, input_tokens, cost_weight, allowed=None) -> Decision:
        allowed = allowed_mask(allowed, self.n_models)
        chosen = int(self.rng.choice(np.flatnonzero(allowed)))
        scores = np.where(allowed, 0.0, -np.inf)
        expected_cost = self.cost_model.expected_cost(input_tokens)
        return Decision(chosen, 1.0 / int(allowed.sum()), expected_cost, scores)

    def update_quality(self, model_index, context, quality) -> None:
        return None


class FixedModel(Policy):
    """Always chooses one model, or the cheapest allowed one when it is not allowed."""

    def __init__(self, catalog: Catalog, rng: np.random.Generator, model: str) -> None:
        super().__init__(catalog, rng)
        self.model_index = catalog.index(model)
        self.name = f"fixed:{model}"

    def decide(self, context, input_tokens, cost_weight, allowed=None) -> Decision:
        allowed = allowed_mask(allowed, self.n_models)
        expected_cost = self.cost_model.expected_cost(input_tokens)
        scores = np.where(allowed, -expected_cost, -np.inf)
        scores[self.model_index] = np.inf if allowed[self.model_index] else -np.inf
        chosen = argmax_random_tie(scores, allowed, self.rng)
        return Decision(chosen, _tie_propensity(scores, chosen), expected_cost, scores)

    def update_quality(self, model_index, context, quality) -> None:
        return None


class Cheapest(Policy):
    """Chooses the allowed model with the lowest expected cost."""

    name = "cheapest"

    def decide(self, context, input_tokens, cost_weight, allowed=None) -> Decision:
        allowed = allowed_mask(allowed, self.n_models)
        expected_cost = self.cost_model.expected_cost(input_tokens)
        scores = np.where(allowed, -expected_cost, -np.inf)
        chosen = argmax_random_tie(scores, allowed, self.rng)
        return Decision(chosen, _tie_propensity(scores, chosen), expected_cost, scores)

    def update_quality(self, model_index, context, quality) -> None:
        return None


class BetaThompsonSampling(Policy):
    """Non-contextual Thompson sampling: one Beta posterior of mean quality per model.

    A quality q in [0, 1] adds q to the first Beta parameter and 1 - q to the second,
    the usual fractional update for rewards that are not strictly 0 or 1.
    """

    name = "thompson-noncontextual"

    def __init__(
        self,
        catalog: Catalog,
        rng: np.random.Generator,
        *,
        propensity_draws: int = 256,
    ) -> None:
        super().__init__(catalog, rng)
        self.alpha = np.ones(len(catalog))
        self.beta = np.ones(len(catalog))
        self.propensity_draws = propensity_draws

    def decide(self, context, input_tokens, cost_weight, allowed=None) -> Decision:
        allowed = allowed_mask(allowed, self.n_models)
        expected_cost = self.cost_model.expected_cost(input_tokens)
        penalty = cost_weight * expected_cost

        scores = np.where(
            allowed, self.rng.beta(self.alpha, self.beta) - penalty, -np.inf
        )
        chosen = argmax_random_tie(scores, allowed, self.rng)

        draws = self.rng.beta(
            self.alpha, self.beta, size=(self.propensity_draws, self.n_models)
        )
        draw_scores = np.where(allowed, draws - penalty, -np.inf)
        wins = int((draw_scores.argmax(axis=1) == chosen).sum())
        propensity = (wins + 1) / (self.propensity_draws + 1)
        return Decision(chosen, propensity, expected_cost, scores)

    def update_quality(self, model_index, context, quality) -> None:
        self.alpha[model_index] += quality
        self.beta[model_index] += 1.0 - quality


class _LinearBaseline(Policy):
    """Baselines that fit the same ridge regressions as Thompson sampling."""

    def __init__(
        self,
        catalog: Catalog,
        dimension: int,
        rng: np.random.Generator,
        *,
        prior: PriorSettings = DEFAULT_PRIOR,
    ) -> None:
        super().__init__(catalog, rng)
        self.posteriors = LinearPosteriors(len(catalog), dimension, prior)

    def update_quality(self, model_index, context, quality) -> None:
        self.posteriors.update(model_index, context, quality)

    def warm_start(self, history: WarmStartData) -> None:
        self.cost_model.fit(history.output_tokens)
        self.posteriors.fit_table(history.contexts, history.quality)


class EpsilonGreedy(_LinearBaseline):
    """Chooses the best ridge prediction, or with probability epsilon a random model."""

    name = "epsilon-greedy"

    def __init__(
        self,
        catalog: Catalog,
        dimension: int,
        rng: np.random.Generator,
        *,
        epsilon: float = 0.05,
        prior: PriorSettings = DEFAULT_PRIOR,
    ) -> None:
        super().__init__(catalog, dimension, rng, prior=prior)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}.")
        self.epsilon = epsilon

    def decide(self, context, input_tokens, cost_weight, allowed=None) -> Decision:
        allowed = allowed_mask(allowed, self.n_models)
        expected_cost = self.cost_model.expected_cost(input_tokens)
        means, _, _ = self.posteriors.project(context)
        scores = np.where(allowed, means - cost_weight * expected_cost, -np.inf)

        greedy = argmax_random_tie(scores, allowed, self.rng)
        explore = self.rng.random() < self.epsilon
        chosen = int(self.rng.choice(np.flatnonzero(allowed))) if explore else greedy

        n_allowed = int(allowed.sum())
        propensity = self.epsilon / n_allowed
        if scores[chosen] == scores[greedy]:
            propensity += (1.0 - self.epsilon) * _tie_propensity(scores, chosen)
        return Decision(chosen, propensity, expected_cost, scores)


class LinUCB(_LinearBaseline):
    """Chooses the highest upper confidence bound: prediction plus alpha widths."""

    name = "linucb"

    def __init__(
        self,
        catalog: Catalog,
        dimension: int,
        rng: np.random.Generator,
        *,
        alpha: float = 0.5,
        prior: PriorSettings = DEFAULT_PRIOR,
    ) -> None:
        super().__init__(catalog, dimension, rng, prior=prior)
        self.alpha = alpha

    def decide(self, context, input_tokens, cost_weight, allowed=None) -> Decision:
        allowed = allowed_mask(allowed, self.n_models)
        expected_cost = self.cost_model.expected_cost(input_tokens)
        means, spread, _ = self.posteriors.project(context)
        upper = means + self.alpha * np.sqrt(spread)
        scores = np.where(allowed, upper - cost_weight * expected_cost, -np.inf)
        chosen = argmax_random_tie(scores, allowed, self.rng)
        return Decision(chosen, _tie_propensity(scores, chosen), expected_cost, scores)


class KNNRouter(Policy):
    """Predicts each model's quality as the mean over the k most similar past prompts.

    Similarity is the dot product of contexts, which for unit-norm embeddings behind a
    constant bias ranks neighbours by cosine similarity. The memory starts from a warm
    start (every model's quality per prompt) and grows with online feedback, where only
    the chosen model's quality is known. A model with fewer than k neighbours is shrunk
    towards ``prior_quality`` with the weight of ``prior_weight`` neighbours.
    """

    name = "knn"

    def __init__(
        self,
        catalog: Catalog,
        dimension: int,
        rng: np.random.Generator,
        *,
        k: int = 50,
        prior_quality: float = 0.5,
        prior_weight: float = 1.0,
    ) -> None:
        super().__init__(catalog, rng)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        self.k = k
        self.prior_quality = prior_quality
        self.prior_weight = prior_weight
        self._contexts = np.empty((0, dimension), dtype=np.float32)
        self._quality = np.empty((0, len(catalog)))
        self._size = 0

    def decide(self, context, input_tokens, cost_weight, allowed=None) -> Decision:
        allowed = allowed_mask(allowed, self.n_models)
        expected_cost = self.cost_model.expected_cost(input_tokens)
        predicted = self._predict(context)
        scores = np.where(allowed, predicted - cost_weight * expected_cost, -np.inf)
        chosen = argmax_random_tie(scores, allowed, self.rng)
        return Decision(chosen, _tie_propensity(scores, chosen), expected_cost, scores)

    def update_quality(self, model_index, context, quality) -> None:
        row = np.full(self.n_models, np.nan)
        row[model_index] = quality
        self._append(context[np.newaxis], row[np.newaxis])

    def warm_start(self, history: WarmStartData) -> None:
        self.cost_model.fit(history.output_tokens)
        self._append(history.contexts, history.quality)

    def _append(self, contexts: np.ndarray, quality: np.ndarray) -> None:
        needed = self._size + len(contexts)
        if needed > len(self._contexts):
            capacity = max(needed, 2 * len(self._contexts), 256)
            self._contexts = _grow(self._contexts, capacity)
            self._quality = _grow(self._quality, capacity, fill=np.nan)
        self._contexts[self._size : needed] = contexts
        self._quality[self._size : needed] = quality
        self._size = needed

    def _predict(self, context: np.ndarray) -> np.ndarray:
        predicted = np.full(self.n_models, self.prior_quality)
        if self._size == 0:
            return predicted

        similarity = self._contexts[: self._size] @ context.astype(np.float32)
        quality = self._quality[: self._size]
        for model_index in range(self.n_models):
            observed = np.flatnonzero(np.isfinite(quality[:, model_index]))
            if len(observed) > self.k:
                nearest = np.argpartition(-similarity[observed], self.k)[: self.k]
                observed = observed[nearest]
            total = quality[observed, model_index].sum()
            weight = self.prior_weight + len(observed)
            predicted[model_index] = (
                total + self.prior_weight * self.prior_quality
            ) / weight
        return predicted


def _grow(array: np.ndarray, capacity: int, fill: float = 0.0) -> np.ndarray:
    grown = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown
