"""Routing policies by name: Thompson sampling and the baselines it is compared with."""

from __future__ import annotations

import numpy as np

from banditroute.catalog import Catalog
from banditroute.errors import ConfigError
from banditroute.policies.baselines import (
    BetaThompsonSampling,
    Cheapest,
    EpsilonGreedy,
    FixedModel,
    KNNRouter,
    LinUCB,
    UniformRandom,
)
from banditroute.policies.thompson import ContextualThompsonSampling
from banditroute.policy import Policy

__all__ = [
    "DEFAULT_POLICIES",
    "BetaThompsonSampling",
    "Cheapest",
    "ContextualThompsonSampling",
    "EpsilonGreedy",
    "FixedModel",
    "KNNRouter",
    "LinUCB",
    "UniformRandom",
    "available_policies",
    "make_policy",
]

DEFAULT_POLICIES: tuple[str, ...] = (
    "thompson",
    "linucb",
    "epsilon-greedy",
    "thompson-noncontextual",
    "knn",
    "random",
)
"""The policies a replay compares when none are named."""

FIXED_PREFIX = "fixed:"


def available_policies(catalog: Catalog) -> list[str]:
    """Return every policy name ``make_policy`` accepts for this catalog."""
    names = [*DEFAULT_POLICIES, "cheapest"]
    names.extend(FIXED_PREFIX + model for model in catalog.names)
    return names


def make_policy(
    name: str,
    catalog: Catalog,
    dimension: int,
    rng: np.random.Generator,
    *,
    half_life: float | None = None,
) -> Policy:
    """Build the policy called ``name`` with its default settings.

    ``dimension`` is the length of the context vectors the policy will see.
    ``half_life`` (feedback events) makes contextual Thompson sampling forget old
    feedback; the other policies do not forget and ignore it.
    """
    if name.startswith(FIXED_PREFIX):
        model = name.removeprefix(FIXED_PREFIX)
        if model not in catalog:
            raise ConfigError(
                f"Policy {name!r} names model {model!r}, which is not in the catalog; "
                f"known models: {list(catalog.names)}."
            )
        return FixedModel(catalog, rng, model)

    builders = {
        "thompson": lambda: ContextualThompsonSampling(
            catalog, dimension, rng, half_life=half_life
        ),
        "linucb": lambda: LinUCB(catalog, dimension, rng),
        "epsilon-greedy": lambda: EpsilonGreedy(catalog, dimension, rng),
        "thompson-noncontextual": lambda: BetaThompsonSampling(catalog, rng),
        "knn": lambda: KNNRouter(catalog, dimension, rng),
        "random": lambda: UniformRandom(catalog, rng),
        "cheapest": lambda: Cheapest(catalog, rng),
    }
    if name not in builders:
        raise ConfigError(
            f"Unknown policy {name!r}; choose from {available_policies(catalog)}."
        )
    return builders[name]()
