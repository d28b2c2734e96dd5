"""Contextual Thompson sampling over per-model Bayesian linear regressions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from banditroute.catalog import Catalog, ModelSpec
from banditroute.cost import CostModel
from banditroute.errors import ConfigError
from banditroute.policy import (
    Decision,
    Policy,
    WarmStartData,
    allowed_mask,
    argmax_random_tie,
    ranked_scores,
)
from banditroute.posterior import DEFAULT_PRIOR, LinearPosteriors, PriorSettings

DEFAULT_PROPENSITY_DRAWS = 256

DEFAULT_EXPLORATION = 0.5
"""Multiplier on the posterior standard deviation of each sampled quality.

The prior is not too loose: maximizing the evidence of the feedback gives weight
precisions mostly below the default 30 (see below). Yet exact Thompson sampling
(1.0) explores more than a stream of a few thousand requests repays. With nine
models, each new prompt leaves every model some variance in directions the feedback
has not pinned down, and the highest of nine such draws often belongs to a model
that is worse on average. On the multitask routing log (10 seeds from scratch), 0.5
beat 1.0 (which stayed below the best single model) and 0.3 (which sometimes settled
on a poor model early). After a warm start,
0.3 to 0.4 did slightly better than 0.5. Exploration from the learned noise variance
alone (1.0) was also worse on both real logs at cost weight 0 and above: from
scratch over 5 seeds, its gap recovered over the whole stream was 0.07 to 0.13 lower
on the multitask log and 0.07 to 0.25 lower on AlpacaEval (``experiments/noise.py``).

Learning each model's weight precision from the feedback
(``PriorSettings.learn_weight_precision``) does not remove the need for 0.5. With it
and exploration 1.0, the whole-stream gap recovered over 5 seeds was -0.19 ± 0.05 and
-0.10 ± 0.03 on the multitask log (cost weights 0 and 200), against 0.01 ± 0.04 and
0.02 ± 0.04 for 0.5. On AlpacaEval it was -0.41 ± 0.03 and -0.24 ± 0.04 (weights 0
and 20), against -0.26 ± 0.01 and -0.23 ± 0.05. The evidence puts the precision of
the models chosen most below 30 (9 to 23 in one multitask run), which widens
their draws. It puts the precision of rarely chosen models at its upper bound, which
leaves them only the intercept to explore.
"""

DEFAULT_PROBE_SHARE = 0.2
"""Share of decisions that go to models added at run time while they are probed."""

DEFAULT_PROBE_OBSERVATIONS = 200
"""Feedback events a model added at run time receives before its probing ends."""

NORMAL_APPROXIMATION_DEGREES = 30.0
"""Above this many degrees of freedom a Student-t draw is replaced by a normal one: the
two differ by under 2% in scale there, and normal draws cost several times less."""


class ContextualThompsonSampling(Policy):
    """Chooses the model with the highest sampled quality minus cost weight times cost.

    For one context x, drawing theta_k from model k's posterior and taking x . theta_k
    has the same law as drawing the scalar directly from its Student-t marginal
    (location x . mean_k, scale^2 = scale_k / shape_k * x' covariance_k x, 2 shape_k
    degrees of freedom). The policy draws those K scalars, which costs one O(K d^2)
    product instead of a d x d factorization per model.

    With ``pooled_prior`` (the default), every model's prior mean is the posterior mean
    of one regression fitted on the feedback of all models. A model with little data
    thus starts from what the others have shown about a prompt (its difficulty) and
    learns only its own difference. The shared part moves all models alike, so it
    cannot change the argmax, and only the per-model uncertainty drives exploration.

    ``exploration`` scales the sampled standard deviation (see
    ``DEFAULT_EXPLORATION``). With ``noise_variance`` set, the noise variance is fixed
    to it and the draw is normal instead of learned from the feedback.

    ``half_life`` (feedback events, None to keep everything) makes every model's
    regression and the pooled one forget old feedback, for quality that drifts. Both
    count time in feedback events of all models.

    ``add_model`` appends a model at run time. Its regression starts at the prior: the
    pooled mean (what the other models have shown about each prompt) with the full
    prior covariance. It is also probed: it takes ``probe_share`` of the decisions it
    is allowed for, whatever its sampled quality, until it has
    ``probe_observations`` feedback events. Without probes, a new model's context
    weights start at zero against the learned ones of the models it competes with,
    so it can lose most prompts before its feedback could show that it is better.

    ``disable_model`` masks a model out of decisions, keeps its state and still
    learns from its feedback.
    """

    name = "thompson"

    def __init__(
        self,
        catalog: Catalog,
        dimension: int,
        rng: np.random.Generator,
        *,
        prior: PriorSettings = DEFAULT_PRIOR,
        noise_variance: float | None = None,
        propensity_draws: int = DEFAULT_PROPENSITY_DRAWS,
        pooled_prior: bool = True,
        exploration: float = DEFAULT_EXPLORATION,
        half_life: float | None = None,
        probe_share: float = DEFAULT_PROBE_SHARE,
        probe_observations: int = DEFAULT_PROBE_OBSERVATIONS,
        dtype: type[np.floating] = np.float32,
    ) -> None:
        if not 0.0 <= probe_share <= 1.0:
            raise ConfigError(f"probe_share={probe_share!r} is invalid; give 0 to 1.")
        super().__init__(catalog, rng)
        self.posteriors = LinearPosteriors(
            len(catalog), dimension, prior, half_life=half_life, dtype=dtype
        )
        self.pooled = None
        if pooled_prior:
            self.pooled = LinearPosteriors(
                1, dimension, prior, half_life=half_life, dtype=dtype
            )
        self.noise_variance = noise_variance
        self.exploration = exploration
        self.propensity_draws = propensity_draws
        self.probe_share = probe_share
        self.probe_observations = probe_observations
        self.probe_until = np.zeros(len(catalog), dtype=np.int64)
        """Per model, the feedback count below which it is probed (0: never)."""
        self._last_projection: tuple[np.ndarray, int, np.ndarray] | None = None

    def decide(
        self,
        context: np.ndarray,
        input_tokens: float,
        cost_weight: float,
        allowed: np.ndarray | None = None,
    ) -> Decision:
        allowed = allowed_mask(allowed, self.n_models) & self.catalog.enabled
        if not allowed.any():
            raise ConfigError(
                "Every model allowed for this request is disabled; allow an enabled "
                f"model (enabled: {self.catalog.enabled_names()})."
            )
        means, spread, covariance_x = self.posteriors.project(context)
        n_observed = int(self.posteriors.n_observations.sum())
        self._last_projection = (context, n_observed, covariance_x)

        expected_cost = self.cost_model.expected_cost(input_tokens)
        penalty = cost_weight * expected_cost

        # Row 0 is the Thompson draw that decides. The other rows are fresh draws of
        # the same posterior, because Thompson sampling has no closed form for the
        # probability of its choice. Counting row 0 as well keeps that estimate above
        # zero for the chosen model.
        draws = self._sample_quality(means, spread, rows=1 + self.propensity_draws)
        scores = np.where(allowed, draws[0] - penalty, -np.inf)
        chosen = argmax_random_tie(scores, allowed, self.rng)
        probed = np.flatnonzero(
            allowed & (self.posteriors.n_observations < self.probe_until)
        )
        if len(probed) == 0:
            propensity = self._propensity(chosen, draws, penalty, allowed)
            return Decision(chosen, propensity, expected_cost, scores)

        # A model added at run time gets probe_share of the decisions, whatever its
        # sampled quality, until it has probe_observations feedback events. The
        # propensity mixes the probe and the Thompson choice.
        if self.rng.random() < self.probe_share:
            chosen = int(self.rng.choice(probed))
        sampled = self._propensity(chosen, draws, penalty, allowed)
        probe = self.probe_share * float(chosen in probed) / len(probed)
        propensity = (1.0 - self.probe_share) * sampled + probe
        return Decision(chosen, propensity, expected_cost, scores)

    def update_quality(
        self, model_index: int, context: np.ndarray, quality: float
    ) -> None:
        covariance_x = None
        if self._last_projection is not None:
            last_context, n_observed, last_covariance_x = self._last_projection
            unchanged = n_observed == int(self.posteriors.n_observations.sum())
            if last_context is context and unchanged:
                covariance_x = last_covariance_x[model_index]
        self._last_projection = None
        self.posteriors.update(model_index, context, quality, covariance_x)

        if self.pooled is not None:
            self.pooled.update(0, context, quality)
            self.posteriors.set_prior_mean(self.pooled.posterior_mean(0))

    def warm_start(self, history: WarmStartData) -> None:
        self.cost_model.fit(history.output_tokens)
        if self.pooled is not None:
            rows, models = np.nonzero(np.isfinite(history.quality))
            self.pooled.fit(0, history.contexts[rows], history.quality[rows, models])
            self.posteriors.set_prior_mean(self.pooled.posterior_mean(0))

        self.posteriors.fit_table(history.contexts, history.quality)

    def add_model(self, model: ModelSpec) -> int:
        """Append ``model`` to the catalog with a prior posterior; return its index."""
        index = self.catalog.add(model)
        self.cost_model.add_model()
        self.posteriors.add_model()
        self.probe_until = np.append(self.probe_until, self.probe_observations)
        self._last_projection = None
        return index

    def reset(self, models: Iterable[ModelSpec]) -> None:
        """Forget everything learned and start from the prior with ``models``.

        The catalog object is changed in place, so every holder of it reads the new
        models.
        """
        self.catalog.reset(models)
        self.cost_model = CostModel(self.catalog)
        self.posteriors = self._new_posteriors(len(self.catalog))
        if self.pooled is not None:
            self.pooled = self._new_posteriors(1)
        self.probe_until = np.zeros(len(self.catalog), dtype=np.int64)
        self._last_projection = None

    def _new_posteriors(self, n_models: int) -> LinearPosteriors:
        posteriors = self.posteriors
        return LinearPosteriors(
            n_models,
            posteriors.dimension,
            posteriors.prior,
            half_life=posteriors.half_life,
            dtype=posteriors.covariance.dtype.type,
        )

    def disable_model(self, name: str) -> int:
        """Mask the model called ``name`` out of decisions; return its index."""
        return self.catalog.disable(name)

    def enable_model(self, name: str) -> int:
        """Let decisions choose the model called ``name`` again; return its index."""
        return self.catalog.enable(name)

    def snapshot(self) -> dict[str, np.ndarray]:
        """Return the learned state as named arrays, restorable with ``restore``.

        The catalog (names, prices and enabled mask) is part of it, so a snapshot
        taken after ``add_model`` restores into a policy built with the original
        catalog.
        """
        catalog = self.catalog
        state = {
            "catalog.names": np.array(catalog.names),
            "catalog.input_usd_per_mtok": np.array(
                [model.input_usd_per_mtok for model in catalog.models]
            ),
            "catalog.output_usd_per_mtok": np.array(
                [model.output_usd_per_mtok for model in catalog.models]
            ),
            "catalog.enabled": catalog.enabled.copy(),
            "catalog.probe_until": self.probe_until.copy(),
        }
        state.update({f"cost.{k}": v for k, v in self.cost_model.snapshot().items()})
        state.update({f"models.{k}": v for k, v in self.posteriors.snapshot().items()})
        if self.pooled is not None:
            state.update({f"pooled.{k}": v for k, v in self.pooled.snapshot().items()})
        return state

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replace the learned state with one returned by ``snapshot``."""
        parts: dict[str, dict[str, np.ndarray]] = {
            "catalog": {},
            "cost": {},
            "models": {},
            "pooled": {},
        }
        for key, value in state.items():
            part, name = key.split(".", 1)
            parts[part][name] = value
        self._restore_catalog(parts["catalog"])
        self.cost_model.restore(parts["cost"])
        self.posteriors.restore(parts["models"])
        if self.pooled is not None:
            self.pooled.restore(parts["pooled"])
        self._last_projection = None

    def _restore_catalog(self, state: dict[str, np.ndarray]) -> None:
        """Copy the snapshot's prices and enabled mask, and add its models beyond
        this catalog."""
        names = [str(name) for name in state["names"]]
        current = list(self.catalog.names)
        if names[: len(current)] != current:
            raise ValueError(
                f"The snapshot's catalog {names} does not start with this policy's "
                f"catalog {current}; restore into a policy built with the catalog "
                "the snapshot started from."
            )

        for index, name in enumerate(names):
            model = ModelSpec(
                name=name,
                input_usd_per_mtok=float(state["input_usd_per_mtok"][index]),
                output_usd_per_mtok=float(state["output_usd_per_mtok"][index]),
            )
            if index < len(current):
                self.catalog.set_prices(model)
            else:
                self.add_model(model)
        self.catalog.enabled[:] = np.asarray(state["enabled"], dtype=bool)
        self.probe_until = np.asarray(state["probe_until"], dtype=np.int64).copy()

    def _sample_quality(
        self, means: np.ndarray, spread: np.ndarray, rows: int
    ) -> np.ndarray:
        """Return ``rows`` independent draws of every model's quality at one context."""
        noise = self.rng.standard_normal((rows, len(means)))
        if self.noise_variance is not None:
            scale = np.sqrt(self.noise_variance * spread)
            return means + self.exploration * scale * noise

        posteriors = self.posteriors
        degrees_of_freedom = 2.0 * posteriors.shape
        heavy_tailed = np.flatnonzero(degrees_of_freedom < NORMAL_APPROXIMATION_DEGREES)
        if len(heavy_tailed):
            noise[:, heavy_tailed] = self.rng.standard_t(
                degrees_of_freedom[heavy_tailed], size=(rows, len(heavy_tailed))
            )
        scale = np.sqrt(posteriors.scale / posteriors.shape * spread)
        return means + self.exploration * scale * noise

    def _propensity(
        self,
        chosen: int,
        draws: np.ndarray,
        penalty: np.ndarray,
        allowed: np.ndarray,
    ) -> float:
        if allowed.sum() == 1:
            return 1.0
        scores = np.where(allowed, ranked_scores(draws - penalty), -np.inf)
        wins = int((scores.argmax(axis=1) == chosen).sum())
        return max(wins, 1) / len(draws)
