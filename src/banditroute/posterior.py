"""Per-model Bayesian linear regression of quality on the prompt context.

Each model k has the conjugate normal-inverse-gamma posterior

    theta_k | sigma_k^2 ~ N(mean_k, sigma_k^2 * covariance_k)
    sigma_k^2           ~ InverseGamma(shape_k, scale_k)

so quality = context . theta_k + noise with noise variance sigma_k^2 learned from the
feedback. ``covariance_k`` is the inverse of the precision matrix
``prior_precision + sum of x x'`` and is kept up to date by Sherman-Morrison rank-one
updates, so scoring a context costs O(K d^2) with no factorization per request.
Round-off drift is bounded by re-computing the covariance from the precision through a
Cholesky factorization every ``refresh_interval`` updates of a model.

With a ``half_life``, old feedback is forgotten: an observation's weight halves with
every ``half_life`` feedback events applied after it (counting the events of all
models, so a model that stops being chosen still forgets). Only the data part of the
precision, X'y, y'y and the noise shape is discounted, and the prior is kept, so the
covariance never exceeds the prior covariance in any direction. The discount is
applied exactly, observation by observation, whenever a model's covariance is
re-computed. Between two re-computations, the observations since the last one count
with weight 1 and the older ones keep their weight from then.

With ``PriorSettings.learn_weight_precision``, each model's prior precision of the
non-bias weights is re-estimated at every refresh by type-II maximum likelihood:
MacKay's fixed point on the evidence, with the noise variance integrated out (see
``estimate_weight_precision``). A model then also refreshes when its feedback count
reaches a power of two below ``refresh_interval``, so the estimate follows the data
from the first observations on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import get_blas_funcs
from scipy.linalg.lapack import get_lapack_funcs

DEFAULT_REFRESH_INTERVAL = 1000

FORGETTING_REFRESH_SHARE = 0.25
"""With a half-life, covariances are re-computed (and discounted) at least every
quarter half-life of events, so the weights lag the exact discount by at most that."""

_STATE_ARRAYS = (
    "prior_mean",
    "precision",
    "covariance",
    "quality_moment",
    "shape",
    "scale",
    "sum_squared_quality",
    "n_observations",
    "discounted_at",
)


@dataclass(frozen=True)
class PriorSettings:
    """The prior shared by every model's regression.

    The context's first column is the bias (intercept). Precisions are in units of
    1/sigma^2, so ``bias_precision = 1`` with a noise variance of 0.25 means a prior
    standard deviation of 0.5 on the intercept. The default weight precision is strong
    because a unit-norm 384-dimensional embedding spreads its length over many
    directions that feedback never pins down. On the multitask routing log (9 models,
    5,608 prompts, 10 seeds), 30 did better than 10 and 20 after a warm start and
    about as well from scratch.
    """

    mean_quality: float = 0.5
    """Prior mean of the intercept: the quality expected of an unseen model."""
    bias_precision: float = 1.0
    weight_precision: float = 30.0
    """Prior precision of every non-bias weight (embedding and metadata features), or
    its starting value with ``learn_weight_precision``."""
    learn_weight_precision: bool = False
    """Re-estimate each model's weight precision from its feedback at every refresh,
    by maximizing the marginal likelihood (see ``estimate_weight_precision``). Off by
    default because Thompson sampling did worse with it on both real routing logs
    (see ``DEFAULT_EXPLORATION`` in ``banditroute.policies.thompson``)."""
    noise_shape: float = 2.0
    """Inverse-gamma shape of the noise variance. Small values let the data decide."""
    noise_variance: float = 0.25
    """Prior guess of the noise variance; the inverse-gamma scale is shape times it."""


DEFAULT_PRIOR = PriorSettings()


def discount_factor(half_life: float) -> float:
    """Return the per-event weight factor that halves a weight every ``half_life``."""
    if not (np.isfinite(half_life) and half_life > 0):
        raise ValueError(
            f"half_life={half_life!r} is invalid; give a positive number of events."
        )
    return float(0.5 ** (1.0 / half_life))


def forgetting_refresh_interval(half_life: float, dimension: int) -> int:
    """Return the refresh interval used with forgetting when none is given.

    A quarter of the half-life, but at least ``dimension`` events, because each
    refresh costs O(d^3) and so adds O(d^2) per event amortized only over at least d
    events. At most ``DEFAULT_REFRESH_INTERVAL``.
    """
    quarter = int(half_life * FORGETTING_REFRESH_SHARE)
    return min(DEFAULT_REFRESH_INTERVAL, max(dimension, quarter))


WEIGHT_PRECISION_BOUNDS = (1e-6, 1e8)
"""Range of a learned weight precision. The evidence can rise without end as the
precision grows (feedback with no signal beyond the prior mean) or shrinks, so the
estimate stops at these numerical limits, far beyond any useful value."""

_ESTIMATE_TOLERANCE = 1e-9
_ESTIMATE_MAX_ITERATIONS = 500


@dataclass(frozen=True)
class EvidenceTerms:
    """A model's feedback reduced to what its evidence needs as a function of the
    weight precision alpha, for the prior N(m0, sigma^2 diag(b, alpha, ..., alpha)).

    Integrating out the bias leaves the Schur complement ``T`` of the data precision
    X'X on the non-bias weights, with eigenvalues ``eigenvalues`` and ``projections``
    (the eigenbasis coordinates of the non-bias part of X'y - X'X m0 after the same
    elimination). With them, every quantity below costs O(d) per value of alpha.
    """

    eigenvalues: np.ndarray
    projections: np.ndarray
    bias_fit: float
    """Squared residual moment explained by the bias: r0^2 / (X'X[0, 0] + b)."""
    prior_residual: float
    """Sum of squared residuals of the prior mean: ||y - X m0||^2."""
    shape: float
    """Posterior inverse-gamma shape a_N."""
    base_scale: float
    """Prior inverse-gamma scale b_0."""

    def fixed_point(self, alpha: float) -> float:
        """Return MacKay's update alpha' = gamma * s^2 / ||m_N - m0||^2 (non-bias).

        gamma = sum mu / (mu + alpha) is the number of weight directions the data
        determine, and s^2 = b_N / a_N is the noise scale the Student-t predictive
        uses. A fixed point sets the derivative of the log evidence to zero.
        """
        denominator = self.eigenvalues + alpha
        determined = float(np.sum(self.eigenvalues / denominator))
        shift = self.projections / denominator
        fitted = self.bias_fit + float(self.projections @ shift)
        noise_scale = (
            self.base_scale + 0.5 * max(self.prior_residual - fitted, 0.0)
        ) / self.shape
        shift_squared = float(shift @ shift)
        if shift_squared <= 0.0:
            return WEIGHT_PRECISION_BOUNDS[1]
        return determined * noise_scale / shift_squared

    def log_evidence(self, alpha: float) -> float:
        """Return the log evidence of the feedback, up to a term free of alpha."""
        denominator = self.eigenvalues + alpha
        fitted = self.bias_fit + float(
            self.projections @ (self.projections / denominator)
        )
        scale = self.base_scale + 0.5 * max(self.prior_residual - fitted, 0.0)
        dimension = len(self.eigenvalues)
        return float(
            0.5 * dimension * np.log(alpha)
            - 0.5 * np.sum(np.log(denominator))
            - self.shape * np.log(scale)
        )


def evidence_terms(
    data_precision: np.ndarray,
    quality_moment: np.ndarray,
    sum_squared_quality: float,
    prior_mean: np.ndarray,
    prior: PriorSettings,
    shape: float,
) -> EvidenceTerms:
    """Reduce one model's sufficient statistics to its ``EvidenceTerms``.

    ``data_precision`` is X'X without the prior, ``quality_moment`` X'y and
    ``sum_squared_quality`` y'y (all discounted alike under forgetting). Costs one
    symmetric eigendecomposition of size d - 1.
    """
    bias_total = data_precision[0, 0] + prior.bias_precision
    cross = data_precision[1:, 0]
    residual_moment = quality_moment - data_precision @ prior_mean
    complement = data_precision[1:, 1:] - np.outer(cross, cross / bias_total)
    eigenvalues, eigenvectors = np.linalg.eigh(complement)
    eliminated = residual_moment[1:] - cross * (residual_moment[0] / bias_total)
    prior_residual = (
        sum_squared_quality
        - 2.0 * float(prior_mean @ quality_moment)
        + float(prior_mean @ (data_precision @ prior_mean))
    )
    return EvidenceTerms(
        eigenvalues=np.maximum(eigenvalues, 0.0),
        projections=eigenvectors.T @ eliminated,
        bias_fit=float(residual_moment[0] ** 2 / bias_total),
        prior_residual=max(prior_residual, 0.0),
        shape=shape,
        base_scale=prior.noise_shape * prior.noise_variance,
    )


def estimate_weight_precision(terms: EvidenceTerms, start: float) -> float:
    """Return the weight precision that maximizes the evidence, from ``start``.

    Iterates MacKay's fixed point in log space until it moves by under 1e-9
    (relative) or 500 iterations, clipped to ``WEIGHT_PRECISION_BOUNDS``. The result
    depends only on the inputs, so every process that applies the same feedback
    reaches the same value.
    """
    low, high = WEIGHT_PRECISION_BOUNDS
    alpha = float(np.clip(start, low, high))
    for _ in range(_ESTIMATE_MAX_ITERATIONS):
        updated = float(np.clip(terms.fixed_point(alpha), low, high))
        converged = abs(np.log(updated) - np.log(alpha)) < _ESTIMATE_TOLERANCE
        alpha = updated
        if converged:
            break
    return alpha


class LinearPosteriors:
    """The posteriors of ``n_models`` independent Bayesian linear regressions.

    ``dtype`` is the float type of the kept covariance matrices, the one large array
    read on every decision. float32 halves the memory traffic of scoring, and the
    periodic refresh from the float64 precision bounds its round-off.

    ``half_life`` (in feedback events of all models, None to keep all feedback) turns
    on forgetting; see the module documentation. ``refresh_interval`` defaults to
    ``DEFAULT_REFRESH_INTERVAL`` without forgetting and to
    ``forgetting_refresh_interval`` with it.
    """

    def __init__(
        self,
        n_models: int,
        dimension: int,
        prior: PriorSettings = DEFAULT_PRIOR,
        *,
        refresh_interval: int | None = None,
        half_life: float | None = None,
        dtype: type[np.floating] = np.float32,
    ) -> None:
        self.discount = None if half_life is None else discount_factor(half_life)
        if refresh_interval is None:
            refresh_interval = DEFAULT_REFRESH_INTERVAL
            if half_life is not None:
                refresh_interval = forgetting_refresh_interval(half_life, dimension)
        if refresh_interval < 1:
            raise ValueError(
                f"refresh_interval must be at least 1, got {refresh_interval}."
            )

        self.n_models = n_models
        self.dimension = dimension
        self.prior = prior
        self.half_life = half_life
        self.refresh_interval = refresh_interval

        self.weight_precision = np.full(n_models, float(prior.weight_precision))
        """Per model, the prior precision of the non-bias weights (units 1/sigma^2)."""
        self.prior_mean = np.zeros(dimension)
        self.prior_mean[0] = prior.mean_quality
        self._set_prior_precision()

        self.precision = np.stack([np.diag(row) for row in self.prior_precision])
        self.covariance = np.stack(
            [np.diag(1.0 / row) for row in self.prior_precision]
        ).astype(dtype)
        # X'y per model: with the prior term added, covariance @ (prior_precision *
        # prior_mean + quality_moment) is the posterior mean. Keeping the two apart lets
        # the prior mean move (a pooled estimate shared by all models) at no cost.
        self.quality_moment = np.zeros((n_models, dimension))
        # Posterior means, kept by the recursive least-squares update while the prior
        # mean stays put, and recomputed on demand after it moves.
        self._mean = np.tile(self.prior_mean, (n_models, 1))
        self._mean_valid = np.ones(n_models, dtype=bool)
        self._rank_one_update = get_blas_funcs("ger", dtype=self.covariance.dtype)
        self.shape = np.full(n_models, prior.noise_shape)
        self.scale = np.full(n_models, prior.noise_shape * prior.noise_variance)
        self.sum_squared_quality = np.zeros(n_models)
        self.n_observations = np.zeros(n_models, dtype=np.int64)
        self.clock = 0
        """Feedback events applied by ``update`` (all models): the forgetting time."""
        self.discounted_at = np.zeros(n_models, dtype=np.int64)
        """``clock`` at each model's last discount (used only with a half-life)."""

        # Contexts observed since each model's last refresh, with their qualities and
        # clock times. The refresh adds them to the float64 precision in one matrix
        # product instead of one rank-one update per observation, and with
        # forgetting weights each by its age.
        self._pending = [self._empty_pending() for _ in range(n_models)]
        self._pending_quality = [np.zeros(refresh_interval) for _ in range(n_models)]
        self._pending_time = [
            np.zeros(refresh_interval, dtype=np.int64) for _ in range(n_models)
        ]
        self._n_pending = np.zeros(n_models, dtype=np.int64)
        self._factorize = get_lapack_funcs("potrf", dtype=np.float64)
        self._invert_factor = get_lapack_funcs("potri", dtype=np.float64)

    def _empty_pending(self) -> np.ndarray:
        return np.empty((self.refresh_interval, self.dimension))

    def _set_prior_precision(self) -> None:
        """Set the (n_models, d) prior precisions and terms from weight_precision."""
        self.prior_precision = np.repeat(
            self.weight_precision[:, None], self.dimension, axis=1
        )
        self.prior_precision[:, 0] = self.prior.bias_precision
        self._prior_term = self.prior_precision * self.prior_mean

    @property
    def effective_observations(self) -> np.ndarray:
        """Observations per model after discounting (the raw count without forgetting).

        Pending observations count with weight 1 until the next refresh.
        """
        return 2.0 * (self.shape - self.prior.noise_shape)

    @property
    def noise_variance(self) -> np.ndarray:
        """Posterior mean of each model's noise variance (scale / (shape - 1))."""
        return self.scale / np.maximum(self.shape - 1.0, 1e-9)

    def project(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return per model the mean prediction, ``x' C x`` and ``C x`` (C: covariance).

        One matrix-vector product over all stacked covariances: the O(K d^2) step.
        """
        x = context.astype(self.covariance.dtype, copy=False)
        covariance_x = (self.covariance.reshape(-1, self.dimension) @ x).reshape(
            self.n_models, self.dimension
        )
        spread = np.maximum(covariance_x @ x, 0.0).astype(np.float64)
        means = np.einsum(
            "kd,kd->k", covariance_x, self._prior_term + self.quality_moment
        )
        return means, spread, covariance_x

    def set_prior_mean(self, prior_mean: np.ndarray) -> None:
        """Move every model's prior mean, for example to a pooled estimate."""
        self.prior_mean = np.asarray(prior_mean, dtype=np.float64)
        self._prior_term = self.prior_precision * self.prior_mean
        self._mean_valid[:] = False

    def posterior_mean(self, model_index: int) -> np.ndarray:
        """Return the posterior mean of the weights of ``model_index``.

        O(d) while the prior mean has not moved since the last call, O(d^2) after.
        """
        k = model_index
        if not self._mean_valid[k]:
            moment = self._prior_term[k] + self.quality_moment[k]
            self._mean[k] = self.covariance[k].astype(np.float64) @ moment
            self._mean_valid[k] = True
        return self._mean[k].copy()

    def update(
        self,
        model_index: int,
        context: np.ndarray,
        quality: float,
        covariance_x: np.ndarray | None = None,
    ) -> None:
        """Add one observation ``quality`` of ``model_index`` at ``context``.

        ``covariance_x`` may pass ``covariance[model_index] @ context`` when the caller
        already computed it for this exact context and state, saving one product.
        """
        k = model_index
        if covariance_x is None:
            x = context.astype(self.covariance.dtype, copy=False)
            covariance_x = self.covariance[k] @ x
        gain_denominator = 1.0 + float(covariance_x @ context)
        prediction = float(
            covariance_x @ (self._prior_term[k] + self.quality_moment[k])
        )
        residual = quality - prediction
        if self._mean_valid[k]:
            self._mean[k] += covariance_x * (residual / gain_denominator)

        # In-place BLAS rank-one update, a single pass over the matrix. The covariance
        # is symmetric, so updating its Fortran-ordered transpose view updates it too.
        self._rank_one_update(
            -1.0 / gain_denominator,
            covariance_x,
            covariance_x,
            a=self.covariance[k].T,
            overwrite_a=True,
        )
        self.shape[k] += 0.5
        self.scale[k] += 0.5 * residual * residual / gain_denominator

        self.quality_moment[k] += quality * context
        self.sum_squared_quality[k] += quality * quality
        self.n_observations[k] += 1
        self.clock += 1
        slot = self._n_pending[k]
        self._pending[k][slot] = context
        self._pending_quality[k][slot] = quality
        self._pending_time[k][slot] = self.clock
        self._n_pending[k] += 1
        if self._n_pending[k] == self.refresh_interval or self._estimates_at(
            self.n_observations[k]
        ):
            self.refresh(k)
        if self.discount is not None and self.clock % self.refresh_interval == 0:
            self._discount_stalest()

    def _estimates_at(self, n_observations: int) -> bool:
        # With a learned weight precision, a model is also refreshed (and its
        # precision re-estimated) when its feedback count reaches a power of two
        # below refresh_interval, so that the estimate follows the data early on. That
        # adds about log2(refresh_interval) refreshes per model.
        if not self.prior.learn_weight_precision:
            return False
        n = int(n_observations)
        return 2 <= n < self.refresh_interval and n & (n - 1) == 0

    def _discount_stalest(self) -> None:
        # Models that receive no feedback still forget: every refresh_interval events
        # the model discounted longest ago is refreshed. With the refreshes of full
        # pending buffers this is at most two O(d^3) refreshes per refresh_interval
        # events, whatever the number of models.
        stalest = int(np.argmin(self.discounted_at))
        if self.clock - self.discounted_at[stalest] >= self.refresh_interval:
            self.refresh(stalest)

    def fit(
        self, model_index: int, contexts: np.ndarray, qualities: np.ndarray
    ) -> None:
        """Add many observations of one model at once (a warm start), then refresh.

        The observations count as made now, with weight 1, and do not advance the
        forgetting clock.
        """
        self.refresh(model_index)
        contexts = np.asarray(contexts, dtype=np.float64)
        qualities = np.asarray(qualities, dtype=np.float64)

        self.precision[model_index] += contexts.T @ contexts
        self.quality_moment[model_index] += contexts.T @ qualities
        self.sum_squared_quality[model_index] += float(qualities @ qualities)
        self.shape[model_index] += 0.5 * len(qualities)
        self.n_observations[model_index] += len(qualities)
        self._estimate_weight_precision(model_index)
        self._refactorize(model_index)

    def fit_table(self, contexts: np.ndarray, quality: np.ndarray) -> None:
        """Fit every model from a (prompts, models) quality table; NaN entries skip."""
        for model_index in range(self.n_models):
            observed = np.isfinite(quality[:, model_index])
            self.fit(model_index, contexts[observed], quality[observed, model_index])

    def refresh(self, model_index: int) -> None:
        """Fold pending contexts into the precision and re-derive the covariance.

        With forgetting, also discount the model's data to the current clock.
        """
        k = model_index
        n = self._n_pending[k]
        if self.discount is not None:
            self._discount(k)
        elif n == 0:
            return
        else:
            pending = self._pending[k][:n]
            self.precision[k] += pending.T @ pending
        self._n_pending[k] = 0
        self._estimate_weight_precision(k)
        self._refactorize(k)

    def _discount(self, k: int) -> None:
        """Weight model ``k``'s data by discount ** (events since it was observed).

        The data folded in at the last discount are scaled by one factor, and each
        pending observation gets its own weight from its clock time. The prior parts
        of the precision, the noise shape and the scale stay as they are.
        """
        assert self.discount is not None
        n = self._n_pending[k]
        contexts = self._pending[k][:n]
        qualities = self._pending_quality[k][:n]
        weights = self.discount ** (self.clock - self._pending_time[k][:n])
        decay = self.discount ** (self.clock - self.discounted_at[k])

        # The recursive updates already added the pending observations with weight 1
        # to the moments and the shape (but not to the precision), so take them out.
        old_moment = self.quality_moment[k] - contexts.T @ qualities
        old_squares = self.sum_squared_quality[k] - float(qualities @ qualities)
        old_data_shape = self.shape[k] - self.prior.noise_shape - 0.5 * n

        diagonal = np.diag_indices(self.dimension)
        precision = self.precision[k]
        precision[diagonal] -= self.prior_precision[k]
        precision *= decay
        precision[diagonal] += self.prior_precision[k]
        precision += contexts.T @ (weights[:, None] * contexts)

        self.quality_moment[k] = decay * old_moment + contexts.T @ (weights * qualities)
        self.sum_squared_quality[k] = decay * old_squares + float(
            weights @ (qualities * qualities)
        )
        self.shape[k] = (
            self.prior.noise_shape + decay * old_data_shape + 0.5 * float(weights.sum())
        )
        self.discounted_at[k] = self.clock
        self._mean_valid[k] = False

    def _estimate_weight_precision(self, k: int) -> None:
        """Replace model ``k``'s weight precision by its evidence maximum.

        Call with every observation folded into the precision. The data part of the
        precision and the moments do not depend on the prior, so only the prior
        diagonal of the precision changes.
        """
        if not self.prior.learn_weight_precision:
            return
        if self.shape[k] <= self.prior.noise_shape:
            return
        diagonal = np.diag_indices(self.dimension)
        data_precision = self.precision[k].copy()
        data_precision[diagonal] -= self.prior_precision[k]
        terms = evidence_terms(
            data_precision,
            self.quality_moment[k],
            float(self.sum_squared_quality[k]),
            self.prior_mean,
            self.prior,
            float(self.shape[k]),
        )
        alpha = estimate_weight_precision(terms, float(self.weight_precision[k]))
        self.precision[k][diagonal] -= self.prior_precision[k]
        self.weight_precision[k] = alpha
        self.prior_precision[k, 1:] = alpha
        self._prior_term[k] = self.prior_precision[k] * self.prior_mean
        self.precision[k][diagonal] += self.prior_precision[k]

    def precision_matrix(self, model_index: int) -> np.ndarray:
        """Return the exact precision of ``model_index``, pending contexts included."""
        n = self._n_pending[model_index]
        pending = self._pending[model_index][:n]
        return self.precision[model_index] + pending.T @ pending

    def add_model(self) -> int:
        """Append one model with the prior as its posterior and return its index.

        Its prior mean is the current shared prior mean, so after ``set_prior_mean``
        with a pooled estimate, a new model starts from what the others have shown.
        """
        self.weight_precision = np.append(
            self.weight_precision, self.prior.weight_precision
        )
        self._set_prior_precision()
        prior_precision = np.diag(self.prior_precision[-1])
        prior_covariance = np.diag(1.0 / self.prior_precision[-1])
        self.precision = np.concatenate([self.precision, prior_precision[None]])
        self.covariance = np.concatenate(
            [self.covariance, prior_covariance[None].astype(self.covariance.dtype)]
        )
        self.quality_moment = np.concatenate(
            [self.quality_moment, np.zeros((1, self.dimension))]
        )
        self._mean = np.concatenate([self._mean, self.prior_mean[None]])
        self._mean_valid = np.append(self._mean_valid, False)
        self.shape = np.append(self.shape, self.prior.noise_shape)
        self.scale = np.append(
            self.scale, self.prior.noise_shape * self.prior.noise_variance
        )
        self.sum_squared_quality = np.append(self.sum_squared_quality, 0.0)
        self.n_observations = np.append(self.n_observations, 0)
        self.discounted_at = np.append(self.discounted_at, self.clock)

        self._pending.append(self._empty_pending())
        self._pending_quality.append(np.zeros(self.refresh_interval))
        self._pending_time.append(np.zeros(self.refresh_interval, dtype=np.int64))
        self._n_pending = np.append(self._n_pending, 0)
        self.n_models += 1
        return self.n_models - 1

    def snapshot(self) -> dict[str, np.ndarray]:
        """Return the whole state as named arrays (copies), for storage and restore."""
        state = {name: getattr(self, name).copy() for name in _STATE_ARRAYS}
        state["clock"] = np.array(self.clock, dtype=np.int64)
        state["pending"] = np.stack(self._pending)
        state["pending_quality"] = np.stack(self._pending_quality)
        state["pending_time"] = np.stack(self._pending_time)
        state["n_pending"] = self._n_pending.copy()
        state["mean"] = self._mean.copy()
        state["mean_valid"] = self._mean_valid.copy()
        # Only a learned weight precision is state, so snapshots of a fixed prior keep
        # the arrays (and digests) they had before the precision could be learned.
        if self.prior.learn_weight_precision:
            state["weight_precision"] = self.weight_precision.copy()
        return state

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replace the state with one returned by ``snapshot`` of the same shape.

        Call ``add_model`` first for models the snapshot has beyond this instance's.
        """
        expected = (self.n_models, self.dimension, self.dimension)
        if state["covariance"].shape != expected:
            raise ValueError(
                f"Snapshot covariance has shape {state['covariance'].shape}, expected "
                f"{expected}; restore only snapshots of the same catalog and features."
            )
        pending_shape = (self.n_models, self.refresh_interval, self.dimension)
        if state["pending"].shape != pending_shape:
            raise ValueError(
                f"Snapshot pending contexts have shape {state['pending'].shape}, "
                f"expected {pending_shape}; restore with the same refresh_interval "
                "and half_life as the snapshot was taken with."
            )
        for name in _STATE_ARRAYS:
            current = getattr(self, name)
            setattr(self, name, np.asarray(state[name], dtype=current.dtype).copy())
        self.clock = int(state["clock"])
        self._pending = [np.array(rows) for rows in state["pending"]]
        self._pending_quality = [
            np.array(rows, dtype=np.float64) for rows in state["pending_quality"]
        ]
        self._pending_time = [
            np.array(rows, dtype=np.int64) for rows in state["pending_time"]
        ]
        self._n_pending = np.asarray(state["n_pending"], dtype=np.int64).copy()
        if self.prior.learn_weight_precision:
            if "weight_precision" not in state:
                raise ValueError(
                    "The snapshot has no learned weight precision; restore it into "
                    "posteriors built with learn_weight_precision=False, as it was "
                    "taken."
                )
            self.weight_precision = np.asarray(
                state["weight_precision"], dtype=np.float64
            ).copy()
        else:
            self.weight_precision = np.full(
                self.n_models, float(self.prior.weight_precision)
            )
        self._set_prior_precision()
        # The kept means carry the rounding of their recursive updates. Restoring them
        # makes a restored replica continue bit for bit like the one it came from.
        self._mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self._mean_valid = np.asarray(state["mean_valid"], dtype=bool).copy()

    def _refactorize(self, k: int) -> None:
        # Covariance = L^-T L^-1 from the Cholesky factor L of the precision (LAPACK
        # potrf then potri, a third of the work of a general inverse). It is symmetric
        # positive definite whatever drift the rank-one updates had.
        factor, info = self._factorize(self.precision[k], lower=True)
        if info != 0:
            raise np.linalg.LinAlgError(
                f"The precision of model {k} is not positive definite (LAPACK potrf "
                f"info {info}); its feedback contains non-finite values."
            )
        lower_inverse, info = self._invert_factor(factor, lower=True)
        if info != 0:
            raise np.linalg.LinAlgError(
                f"Inverting the Cholesky factor of model {k} failed (LAPACK potri "
                f"info {info})."
            )
        covariance = np.tril(lower_inverse)
        covariance += np.tril(covariance, -1).T
        self.covariance[k] = covariance
        self._mean_valid[k] = False

        # The inverse-gamma scale from its closed form, which also removes the drift of
        # the recursive residual updates.
        moment = self._prior_term[k] + self.quality_moment[k]
        prior_term = float(self.prior_mean @ self._prior_term[k])
        fitted_term = float(moment @ (covariance @ moment))
        explained = self.sum_squared_quality[k] + prior_term - fitted_term
        base_scale = self.prior.noise_shape * self.prior.noise_variance
        self.scale[k] = base_scale + 0.5 * max(explained, 0.0)
