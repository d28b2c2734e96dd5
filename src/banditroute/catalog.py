"""The model catalog: which models can be chosen and what their tokens cost."""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.errors import ConfigError, UnknownModelError

TOKENS_PER_PRICE_UNIT = 1_000_000
"""Prices are quoted in USD per million tokens, as providers list them."""


def check_model_name(name: str) -> str:
    """Return ``name`` if it can name a model; raise ValueError saying why not.

    A name has no whitespace at either end and no control, format or line-separator
    character, so that it prints on one log line and in a metric label, and ``" a"``
    is never a second ``"a"``.
    """
    if not name.strip():
        raise ValueError("a model name must not be empty or only whitespace")
    if name != name.strip():
        raise ValueError(f"model name {name!r} has whitespace at an end; remove it")
    for character in name:
        category = unicodedata.category(character)
        if category.startswith("C") or category in ("Zl", "Zp"):
            raise ValueError(
                f"model name {name!r} contains the control or format character "
                f"U+{ord(character):04X}; remove it"
            )
    return name


@dataclass(frozen=True)
class ModelSpec:
    """One routable model and its list prices in USD per million tokens."""

    name: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ConfigError("A model name is empty; give every catalog entry a name.")
        try:
            check_model_name(self.name)
        except ValueError as error:
            raise ConfigError(f"{str(error).capitalize()}.") from None

        for field in ("input_usd_per_mtok", "output_usd_per_mtok"):
            price = getattr(self, field)
            if not math.isfinite(price) or price < 0:
                raise ConfigError(
                    f"Model {self.name!r} has {field}={price!r}; "
                    "prices must be finite and non-negative."
                )

    def to_arguments(self) -> dict[str, str | float]:
        """Return the name and prices as the arguments of a control event."""
        return {
            "name": self.name,
            "input_usd_per_mtok": self.input_usd_per_mtok,
            "output_usd_per_mtok": self.output_usd_per_mtok,
        }

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> ModelSpec:
        """Build a model from the arguments of an add or set-prices control event."""
        return cls(
            str(arguments["name"]),
            float(arguments["input_usd_per_mtok"]),
            float(arguments["output_usd_per_mtok"]),
        )


class Catalog:
    """An ordered set of models; a model's position is its index.

    Models can be appended (``add``) and disabled (``disable``) at run time but never
    removed or reordered, so an index stored anywhere keeps naming the same model. A
    disabled model stays in the catalog and is only masked out of routing decisions.
    """

    def __init__(self, models: Iterable[ModelSpec]) -> None:
        self.reset(models)

    def reset(self, models: Iterable[ModelSpec]) -> None:
        """Replace every model by ``models``, all enabled, in this same object.

        Only for a state that nothing refers to by index yet, such as a process that
        joins a shared state with another catalog before it learned anything.
        """
        models = tuple(models)
        if not models:
            raise ConfigError("The model catalog is empty; list at least one model.")

        names = tuple(model.name for model in models)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"The model catalog lists {duplicates} more than once.")

        self.models: tuple[ModelSpec, ...] = models
        self.names: tuple[str, ...] = names
        self._index = {name: i for i, name in enumerate(self.names)}
        self.enabled = np.ones(len(self.models), dtype=bool)
        """Mask of the models that routing decisions may choose."""
        self._set_prices()

    def _set_prices(self) -> None:
        self.input_usd_per_token = np.array(
            [m.input_usd_per_mtok / TOKENS_PER_PRICE_UNIT for m in self.models]
        )
        self.output_usd_per_token = np.array(
            [m.output_usd_per_mtok / TOKENS_PER_PRICE_UNIT for m in self.models]
        )

    def add(self, model: ModelSpec) -> int:
        """Append ``model``, enabled, and return its index."""
        if model.name in self._index:
            raise ConfigError(
                f"Model {model.name!r} is already in the catalog; give the new model "
                "another name, or enable the existing one."
            )

        self.models = (*self.models, model)
        self.names = (*self.names, model.name)
        self._index[model.name] = len(self.models) - 1
        self.enabled = np.append(self.enabled, True)
        self._set_prices()
        return len(self.models) - 1

    def set_prices(self, model: ModelSpec) -> int:
        """Give the model called ``model.name`` the prices of ``model``; return its
        index."""
        index = self.index(model.name)
        models = list(self.models)
        models[index] = model
        self.models = tuple(models)
        self._set_prices()
        return index

    def disable(self, name: str) -> int:
        """Mask the model called ``name`` out of routing decisions; return its index."""
        index = self.index(name)
        if self.enabled.sum() == 1 and self.enabled[index]:
            raise ConfigError(
                f"Model {name!r} is the last enabled model; enable or add another "
                "model before disabling it."
            )
        self.enabled[index] = False
        return index

    def enable(self, name: str) -> int:
        """Allow routing decisions to choose the model called ``name`` again."""
        index = self.index(name)
        self.enabled[index] = True
        return index

    def enabled_names(self) -> list[str]:
        """Return the names of the models that routing decisions may choose."""
        return [name for name, on in zip(self.names, self.enabled, strict=True) if on]

    def copy(self) -> Catalog:
        """Return an independent catalog with the same models and enabled mask."""
        copied = Catalog(self.models)
        copied.enabled = self.enabled.copy()
        return copied

    def __len__(self) -> int:
        return len(self.models)

    def __iter__(self):
        return iter(self.models)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"Catalog({list(self.names)!r})"

    def index(self, name: str) -> int:
        """Return the position of the model called ``name``."""
        try:
            return self._index[name]
        except KeyError:
            raise UnknownModelError(
                f"Model {name!r} is not in the catalog; "
                f"known models: {list(self.names)}."
            ) from None

    def mask(self, names: Iterable[str]) -> np.ndarray:
        """Return a boolean mask over the catalog that is true for the given names."""
        allowed = np.zeros(len(self), dtype=bool)
        for name in names:
            allowed[self.index(name)] = True
        return allowed

    def to_prices(self) -> dict[str, dict[str, float]]:
        """Return each model's two prices per Mtok in catalog order, as read by
        ``from_prices``."""
        return {
            model.name: {
                "input_usd_per_mtok": model.input_usd_per_mtok,
                "output_usd_per_mtok": model.output_usd_per_mtok,
            }
            for model in self.models
        }

    def cost_usd(self, input_tokens: float, output_tokens: np.ndarray) -> np.ndarray:
        """Return each model's cost in USD for one request with these token counts."""
        return (
            input_tokens * self.input_usd_per_token
            + np.asarray(output_tokens) * self.output_usd_per_token
        )

    def same_models(self, other: Catalog) -> bool:
        """Return whether ``other`` lists the same models, in order, at equal prices."""
        return self.models == other.models

    @classmethod
    def from_prices(cls, prices: Mapping[str, Mapping[str, float]]) -> Catalog:
        """Build a catalog from a mapping of model name to its two prices per Mtok."""
        models = []
        for name, entry in prices.items():
            missing = {"input_usd_per_mtok", "output_usd_per_mtok"} - set(entry)
            if missing:
                raise ConfigError(
                    f"Price entry of model {name!r} is missing {sorted(missing)}; "
                    "give both prices in USD per million tokens."
                )
            models.append(
                ModelSpec(
                    name=name,
                    input_usd_per_mtok=float(entry["input_usd_per_mtok"]),
                    output_usd_per_mtok=float(entry["output_usd_per_mtok"]),
                )
            )
        return cls(models)

    @classmethod
    def from_json(cls, path: str | Path) -> Catalog:
        """Read a ``models.json`` price file (model name to its two prices)."""
        path = Path(path)
        try:
            prices = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"Cannot read the price file {path}: {error}") from error

        if not isinstance(prices, dict):
            raise ConfigError(
                f"The price file {path} must hold a JSON object keyed by model name."
            )
        return cls.from_prices(prices)


@dataclass(frozen=True)
class CatalogChanges:
    """The changes that bring a current catalog to a wanted one (a settings file's).

    Models are never removed, so a model the wanted catalog does not list is
    disabled instead.
    """

    to_add: tuple[ModelSpec, ...]
    """Wanted models the current catalog lacks."""
    to_enable: tuple[str, ...]
    """Wanted models that the current catalog has disabled."""
    to_reprice: tuple[ModelSpec, ...]
    """Wanted models, at their wanted prices, that the current catalog prices
    otherwise."""
    to_disable: tuple[str, ...]
    """Enabled models of the current catalog that the wanted one does not list."""


def catalog_changes(current: Catalog, wanted: Catalog) -> CatalogChanges:
    """Return the additions, enables, price changes and disables from ``current``
    to ``wanted``."""
    listed = [model for model in wanted if model.name in current]
    enabled = current.enabled_names()
    return CatalogChanges(
        to_add=tuple(model for model in wanted if model.name not in current),
        to_enable=tuple(model.name for model in listed if model.name not in enabled),
        to_reprice=tuple(model for model in listed if model not in current.models),
        to_disable=tuple(name for name in enabled if name not in wanted),
    )
