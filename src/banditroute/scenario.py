"""Replay scenarios that change model outcomes or the catalog partway through a stream.

A full-information log is stationary: a model's quality on a prompt does not depend
on when the prompt arrives. A scenario rewrites one seed's stream of outcomes so that
something changes at a chosen step (by default the midpoint):

- ``drift-drop:MODEL``: from the change on, MODEL's quality on each prompt is that of
  the model with the lowest mean quality on the stream.
- ``drift-swap:A,B``: from the change on, A and B exchange their qualities.
- ``arrival:MODEL``: a new model named ``MODEL-cheap`` joins the catalog at the
  change. It has MODEL's quality and output length on every prompt, and the token
  prices of the cheapest catalog model.

Costs stay tied to each model's prices, so only qualities drift. The adaptation
metrics measure how many decisions a policy needs to move its traffic after the change.

NOTE: the hindsight references of a replay (best single model, oracle) treat an
arrival's new model as available for the whole stream. The gap recovered of an
arrival replay is therefore measured against references that could use it before it
existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from banditroute.catalog import TOKENS_PER_PRICE_UNIT, Catalog, ModelSpec
from banditroute.errors import ConfigError

STATIONARY = "stationary"
DRIFT_DROP = "drift-drop"
DRIFT_SWAP = "drift-swap"
ARRIVAL = "arrival"
SCENARIO_KINDS = (STATIONARY, DRIFT_DROP, DRIFT_SWAP, ARRIVAL)

ARRIVAL_SUFFIX = "-cheap"
"""Suffix of the name of the model that an ``arrival`` scenario adds."""

DEFAULT_SHARE_WINDOW = 200
"""Decisions per window in which the adaptation metrics measure a model's share."""


@dataclass(frozen=True)
class Scenario:
    """The change of a replayed stream and the share of the stream it happens at."""

    kind: str = STATIONARY
    models: tuple[str, ...] = ()
    change_fraction: float = 0.5
    """The change happens at step floor(change_fraction x stream length)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        expected_models = {STATIONARY: 0, DRIFT_DROP: 1, DRIFT_SWAP: 2, ARRIVAL: 1}
        if self.kind not in expected_models:
            raise ConfigError(
                f"Unknown scenario {self.kind!r}; choose from {list(SCENARIO_KINDS)}."
            )

        if len(self.models) != expected_models[self.kind]:
            raise ConfigError(
                f"Scenario {self.kind!r} needs {expected_models[self.kind]} model "
                f"names, got {list(self.models)}; e.g. drift-drop:MODEL, "
                "drift-swap:A,B or arrival:MODEL."
            )

        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"Scenario {self.kind!r} names {self.models} twice.")

        if not (math.isfinite(self.change_fraction) and 0 < self.change_fraction < 1):
            raise ConfigError(
                f"change_fraction={self.change_fraction!r} is invalid; give a share of "
                "the stream strictly between 0 and 1."
            )

    @property
    def changes(self) -> bool:
        return self.kind != STATIONARY

    def change_step(self, steps: int) -> int | None:
        """Return the first step after the change, or None when nothing changes."""
        if not self.changes:
            return None
        return int(math.floor(self.change_fraction * steps))

    def validate(self, catalog: Catalog) -> None:
        """Raise ``ConfigError`` unless every named model is in ``catalog``."""
        for name in self.models:
            if name not in catalog:
                raise ConfigError(
                    f"Scenario {self.kind!r} names model {name!r}, which is not in "
                    f"the log; known models: {list(catalog.names)}."
                )

        if self.kind == ARRIVAL and self.models[0] + ARRIVAL_SUFFIX in catalog:
            raise ConfigError(
                f"The log already has a model {self.models[0] + ARRIVAL_SUFFIX!r}, "
                "the name an arrival scenario gives its new model; rename it."
            )


def parse_scenario(text: str, change_fraction: float = 0.5) -> Scenario:
    """Parse ``stationary``, ``drift-drop:MODEL``, ``drift-swap:A,B``, ``arrival:M``."""
    kind, _, models = text.strip().partition(":")
    names = tuple(name.strip() for name in models.split(",") if name.strip())
    return Scenario(kind=kind.strip(), models=names, change_fraction=change_fraction)


def arrival_model(scenario: Scenario, catalog: Catalog) -> ModelSpec:
    """Return the model that an arrival scenario adds: priced like the cheapest."""
    prices = catalog.input_usd_per_token + catalog.output_usd_per_token
    cheapest = catalog.models[int(np.argmin(prices))]
    return ModelSpec(
        name=scenario.models[0] + ARRIVAL_SUFFIX,
        input_usd_per_mtok=cheapest.input_usd_per_mtok,
        output_usd_per_mtok=cheapest.output_usd_per_mtok,
    )


def scenario_catalog(scenario: Scenario, catalog: Catalog) -> Catalog:
    """Return the catalog at the end of the stream: with the arrival model, if any."""
    final = catalog.copy()
    if scenario.kind == ARRIVAL:
        final.add(arrival_model(scenario, catalog))
    return final


@dataclass(frozen=True)
class StreamOutcomes:
    """Every model's outcome at each step of one stream, after the scenario's change.

    Arrays are (steps, models of the final catalog). With an arrival, the last column
    is the new model, and its entries before ``change_step`` are what it would have
    had, used only by the hindsight references.
    """

    quality: np.ndarray
    cost_usd: np.ndarray
    output_tokens: np.ndarray
    change_step: int | None
    added_model: ModelSpec | None = None


def stream_outcomes(
    scenario: Scenario,
    catalog: Catalog,
    quality: np.ndarray,
    cost_usd: np.ndarray,
    output_tokens: np.ndarray,
    input_tokens: np.ndarray,
) -> StreamOutcomes:
    """Apply ``scenario`` to the outcomes of a stream, one row per step, in order."""
    quality = np.array(quality, dtype=float)
    cost_usd = np.array(cost_usd, dtype=float)
    output_tokens = np.array(output_tokens, dtype=float)
    change = scenario.change_step(len(quality))
    added = None

    if scenario.kind == DRIFT_DROP:
        dropped = catalog.index(scenario.models[0])
        worst = int(np.argmin(quality.mean(axis=0)))
        quality[change:, dropped] = quality[change:, worst]
    elif scenario.kind == DRIFT_SWAP:
        first, second = (catalog.index(name) for name in scenario.models)
        quality[change:, [first, second]] = quality[change:, [second, first]]
    elif scenario.kind == ARRIVAL:
        source = catalog.index(scenario.models[0])
        added = arrival_model(scenario, catalog)
        added_tokens = output_tokens[:, source]
        added_cost = (
            np.asarray(input_tokens, dtype=float) * added.input_usd_per_mtok
            + np.nan_to_num(added_tokens) * added.output_usd_per_mtok
        ) / TOKENS_PER_PRICE_UNIT
        quality = np.column_stack([quality, quality[:, source]])
        cost_usd = np.column_stack([cost_usd, added_cost])
        output_tokens = np.column_stack([output_tokens, added_tokens])

    return StreamOutcomes(quality, cost_usd, output_tokens, change, added)


# Adaptation metrics


@dataclass(frozen=True)
class Adaptation:
    """How one run moved its traffic after the change of a scenario.

    ``shift_steps`` is the number of decisions after the change until the share of
    ``model`` in the next ``window`` decisions crosses ``threshold``, or None when it
    never does. For a model that got worse, the share must fall below the threshold,
    by default half its share in the ``window`` decisions before the change. For a
    model that arrived, it must rise above it, by default one half.
    """

    model: int
    threshold: float
    shift_steps: int | None
    regret_until_shift: float
    """Summed oracle reward minus reward from the change to the shift (or the end)."""
    regret_after_change: float
    """Mean oracle reward minus reward per step from the change to the end."""


def window_shares(chosen: np.ndarray, model: int, window: int) -> np.ndarray:
    """Return the share of ``model`` in each run of ``window`` consecutive steps.

    Entry t covers steps t to t + window - 1, so there are len(chosen) - window + 1.
    """
    hits = np.concatenate([[0], np.cumsum(chosen == model)])
    return (hits[window:] - hits[:-window]) / window


def adaptation(
    chosen: np.ndarray,
    reward: np.ndarray,
    oracle_reward: np.ndarray,
    change_step: int,
    model: int,
    *,
    arrived: bool,
    window: int = DEFAULT_SHARE_WINDOW,
    threshold: float | None = None,
) -> Adaptation:
    """Measure how fast a run moved traffic off (or, if ``arrived``, onto) ``model``."""
    if not 0 < window <= min(change_step, len(chosen) - change_step):
        raise ConfigError(
            f"window={window} does not fit both before and after the change at step "
            f"{change_step} of {len(chosen)}; give a smaller window."
        )

    after = window_shares(chosen[change_step:], model, window)
    if arrived:
        threshold = 0.5 if threshold is None else threshold
        crossed = np.flatnonzero(after > threshold)
    else:
        before = float(np.mean(chosen[change_step - window : change_step] == model))
        threshold = before / 2 if threshold is None else threshold
        crossed = np.flatnonzero(after < threshold)

    shift = int(crossed[0]) if len(crossed) else None
    end = len(chosen) if shift is None else change_step + shift
    regret = oracle_reward - reward
    return Adaptation(
        model=model,
        threshold=threshold,
        shift_steps=shift,
        regret_until_shift=float(regret[change_step:end].sum()),
        regret_after_change=float(regret[change_step:].mean()),
    )
