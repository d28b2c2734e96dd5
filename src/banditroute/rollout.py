"""Gradual rollout: route a share of requests by the bandit and the rest by default.

With rollout share s, each request goes to the bandit's choice with probability s
(the "bandit" group) and to the team's default model otherwise (the "default"
group). Feedback from both groups trains the posteriors. The default group's choice
is deterministic, so its logged propensity is 1. The bandit group's is the bandit's
own propensity. Both are propensities given the group.

NOTE: an off-policy estimate that pools both groups needs each request's marginal
propensity, share * p_bandit(model) + (1 - share) * [model is the default]. The
bandit's probability of the default model is not computed for default-group requests,
so pooling them needs that extra decision.

``RolloutStats`` compares the two groups on quality, cost and reward with 95%
confidence intervals for each group's mean and for the difference of the means
(Welch's t interval), so the share can be raised once the bandit group is shown to
be no worse. Its state changes only through ``record``, which takes one event's
group and outcome, and ``snapshot``/``restore`` save and reload it bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy import stats

from banditroute.errors import ConfigError

CONFIDENCE_LEVEL = 0.95

OUTCOMES = ("quality", "cost_usd", "reward")
"""Outcome names, in the order of the columns of ``RolloutStats`` arrays."""


class RolloutGroup(IntEnum):
    DEFAULT = 0
    """Routed to the team's default model."""
    BANDIT = 1
    """Routed to the bandit's choice."""


class Rollout:
    """Assigns each request to the bandit or the default group with a given share.

    ``set_share`` changes the share for later requests, so a team can raise it at run
    time. The assignment draws from the generator passed to ``assign``.
    """

    def __init__(self, share: float, default_model: int) -> None:
        if default_model < 0:
            raise ConfigError(
                f"default_model={default_model!r} is invalid; give a catalog index."
            )
        self.default_model = default_model
        self.share = _checked_share(share)

    def set_share(self, share: float) -> None:
        """Set the share of later requests that the bandit routes."""
        self.share = _checked_share(share)

    def assign(self, rng: np.random.Generator) -> RolloutGroup:
        """Draw the group of one request."""
        if rng.random() < self.share:
            return RolloutGroup.BANDIT
        return RolloutGroup.DEFAULT


def _checked_share(share: float) -> float:
    if not (math.isfinite(share) and 0.0 <= share <= 1.0):
        raise ConfigError(f"share={share!r} is invalid; give a share in [0, 1].")
    return float(share)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval (NaN when undefined)."""

    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class OutcomeComparison:
    """One outcome's group means and the difference bandit minus default."""

    outcome: str
    bandit: Interval
    default: Interval
    difference: Interval


class RolloutStats:
    """Running mean and variance of each group's quality, cost and reward.

    Uses Welford's update, which stays accurate for costs far below 1.
    """

    def __init__(self) -> None:
        shape = (len(RolloutGroup), len(OUTCOMES))
        self.count = np.zeros(len(RolloutGroup), dtype=np.int64)
        self.mean = np.zeros(shape)
        self.sum_squares = np.zeros(shape)
        """Sum of squared deviations from the mean (Welford's M2)."""

    def record(
        self,
        group: RolloutGroup | int,
        quality: float,
        cost_usd: float,
        cost_weight: float,
    ) -> None:
        """Add one request's outcome; reward is quality - cost_weight * cost_usd."""
        group = RolloutGroup(group)
        values = np.array([quality, cost_usd, quality - cost_weight * cost_usd])
        if not np.isfinite(values).all():
            raise ValueError(
                f"quality={quality!r}, cost_usd={cost_usd!r} and "
                f"cost_weight={cost_weight!r} must be finite numbers."
            )

        self.count[group] += 1
        delta = values - self.mean[group]
        self.mean[group] += delta / self.count[group]
        self.sum_squares[group] += delta * (values - self.mean[group])

    def variance(self, group: RolloutGroup) -> np.ndarray:
        """Return the sample variance of each outcome (NaN below two requests)."""
        count = self.count[group]
        if count < 2:
            return np.full(len(OUTCOMES), math.nan)
        return self.sum_squares[group] / (count - 1)

    def compare(self) -> list[OutcomeComparison]:
        """Return each outcome's group means and difference with 95% intervals."""
        return [self._compare_outcome(k, name) for k, name in enumerate(OUTCOMES)]

    def _compare_outcome(self, k: int, name: str) -> OutcomeComparison:
        groups = {}
        for group in RolloutGroup:
            count = int(self.count[group])
            variance = float(self.variance(group)[k])
            groups[group] = (float(self.mean[group, k]), variance, count)

        return OutcomeComparison(
            outcome=name,
            bandit=mean_interval(*groups[RolloutGroup.BANDIT]),
            default=mean_interval(*groups[RolloutGroup.DEFAULT]),
            difference=welch_interval(
                groups[RolloutGroup.BANDIT], groups[RolloutGroup.DEFAULT]
            ),
        )

    def snapshot(self) -> dict[str, np.ndarray]:
        """Return the state as named arrays (copies), restorable with ``restore``."""
        return {
            "count": self.count.copy(),
            "mean": self.mean.copy(),
            "sum_squares": self.sum_squares.copy(),
        }

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replace the state with one returned by ``snapshot``."""
        for name in ("count", "mean", "sum_squares"):
            if name not in state:
                raise ConfigError(
                    f"The rollout state lacks {name!r}; restore a state that "
                    "RolloutStats.snapshot returned."
                )
        self.count = np.asarray(state["count"], dtype=np.int64).copy()
        self.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self.sum_squares = np.asarray(state["sum_squares"], dtype=np.float64).copy()


def mean_interval(mean: float, variance: float, count: int) -> Interval:
    """Return the t interval of a mean from its sample variance and count."""
    if count < 2:
        return Interval(mean if count else math.nan, math.nan, math.nan)

    half_width = _t_quantile(count - 1) * math.sqrt(variance / count)
    return Interval(mean, mean - half_width, mean + half_width)


def welch_interval(
    first: tuple[float, float, int], second: tuple[float, float, int]
) -> Interval:
    """Return Welch's t interval of mean(first) - mean(second).

    Each argument is (mean, sample variance, count). The degrees of freedom come from
    the Welch-Satterthwaite equation.
    """
    (mean_a, var_a, n_a), (mean_b, var_b, n_b) = first, second
    if n_a < 2 or n_b < 2:
        return Interval(math.nan, math.nan, math.nan)

    difference = mean_a - mean_b
    share_a, share_b = var_a / n_a, var_b / n_b
    standard_error = math.sqrt(share_a + share_b)
    if standard_error == 0:
        return Interval(difference, difference, difference)

    degrees = (share_a + share_b) ** 2 / (
        share_a**2 / (n_a - 1) + share_b**2 / (n_b - 1)
    )
    half_width = _t_quantile(degrees) * standard_error
    return Interval(difference, difference - half_width, difference + half_width)


def _t_quantile(degrees_of_freedom: float) -> float:
    return float(stats.t.ppf(0.5 + CONFIDENCE_LEVEL / 2, degrees_of_freedom))
