"""The context vector that policies see: a bias, the prompt embedding and metadata."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from banditroute.errors import ConfigError

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class FeatureSpec:
    """Request metadata that enters the context vector after the embedding.

    ``numeric`` lists keys whose values are used as numbers, unscaled, so a key with
    large values (a token count, say) should be transformed before it is passed in.
    ``categorical`` maps a key to its known values, each of which gets a one-hot
    column. Values are compared as given, so a value outside the list, a missing key
    and None all give a row of zeros.
    """

    numeric: tuple[str, ...] = ()
    categorical: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Lists from a YAML or JSON file become tuples, so the spec stays immutable.
        object.__setattr__(self, "numeric", tuple(self.numeric))
        object.__setattr__(
            self,
            "categorical",
            {key: tuple(values) for key, values in self.categorical.items()},
        )
        self._validate()

    def _validate(self) -> None:
        repeated_keys = _repeated(self.numeric)
        if repeated_keys:
            raise ConfigError(
                f"Numeric feature keys {repeated_keys} are listed more than once; "
                "list each key once."
            )

        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ConfigError(
                f"Feature keys {both} are both numeric and categorical; "
                "give each key one kind."
            )

        for key, values in self.categorical.items():
            repeated_values = _repeated(values)
            if repeated_values:
                raise ConfigError(
                    f"Categorical feature {key!r} lists values {repeated_values} more "
                    "than once; list each value once."
                )

    @property
    def width(self) -> int:
        """Number of columns the metadata takes in the context vector."""
        return len(self.numeric) + sum(len(v) for v in self.categorical.values())


class FeatureBuilder:
    """Builds context vectors ``[1, embedding..., numeric..., one-hots...]`` as float32.

    Column 0 is always the constant 1, which policies use as the intercept.
    """

    def __init__(
        self, embedding_dimension: int, spec: FeatureSpec | None = None
    ) -> None:
        if embedding_dimension < 1:
            raise ConfigError(
                f"embedding_dimension={embedding_dimension!r} is invalid; "
                "use the positive dimension of the encoder."
            )

        self.embedding_dimension = embedding_dimension
        self.spec = spec if spec is not None else FeatureSpec()
        self.names: list[str] = _feature_names(embedding_dimension, self.spec)
        self.dimension: int = len(self.names)

    def __repr__(self) -> str:
        return (
            f"FeatureBuilder(embedding_dimension={self.embedding_dimension}, "
            f"spec={self.spec!r})"
        )

    def build(
        self,
        embeddings: np.ndarray,
        metadata: Sequence[Mapping[str, object]] | None = None,
    ) -> np.ndarray:
        """Return the (n, dimension) float32 context vectors of n requests.

        ``metadata`` has one mapping per row, and None means no metadata for any row.
        A missing numeric key or a None value gives 0. Keys outside the spec are
        ignored. Raises ValueError for a wrong embedding shape, a non-finite embedding,
        a metadata list of the wrong length, and a numeric value that is not a finite
        number within float32 range.
        """
        embeddings = self._checked_embeddings(embeddings)
        rows = len(embeddings)
        if metadata is not None and len(metadata) != rows:
            raise ValueError(
                f"Got {len(metadata)} metadata entries for {rows} embeddings; "
                "pass one mapping per embedding row."
            )

        features = np.zeros((rows, self.dimension), dtype=np.float32)
        features[:, 0] = 1.0
        features[:, 1 : 1 + self.embedding_dimension] = embeddings
        if metadata is not None:
            start = 1 + self.embedding_dimension
            for row, entry in enumerate(metadata):
                features[row, start:] = self._metadata_columns(entry)
        return features

    def build_one(
        self, embedding: np.ndarray, metadata: Mapping[str, object] | None = None
    ) -> np.ndarray:
        """Return the (dimension,) context vector of one request."""
        embedding = np.asarray(embedding)
        if embedding.ndim != 1:
            raise ValueError(
                f"Expected one embedding of shape ({self.embedding_dimension},) but "
                f"got shape {embedding.shape}; use build() for several rows."
            )

        rows_metadata = None if metadata is None else [metadata]
        return self.build(embedding[np.newaxis, :], rows_metadata)[0]

    def _checked_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dimension:
            raise ValueError(
                f"Expected embeddings of shape (n, {self.embedding_dimension}) but got "
                f"shape {embeddings.shape}; pass embeddings from an encoder of that "
                "dimension."
            )

        if not np.isfinite(embeddings).all():
            row = int(np.flatnonzero(~np.isfinite(embeddings).all(axis=1))[0])
            raise ValueError(
                f"Embedding row {row} contains NaN or infinite values; "
                "re-encode that prompt."
            )
        return embeddings

    def _metadata_columns(self, entry: Mapping[str, object]) -> np.ndarray:
        columns = np.zeros(self.spec.width, dtype=np.float32)
        for i, key in enumerate(self.spec.numeric):
            columns[i] = _numeric_value(key, entry.get(key))

        offset = len(self.spec.numeric)
        for key, values in self.spec.categorical.items():
            value = entry.get(key)
            if value in values:
                columns[offset + values.index(value)] = 1.0
            offset += len(values)
        return columns


def _feature_names(embedding_dimension: int, spec: FeatureSpec) -> list[str]:
    names = ["bias"]
    names += [f"embedding[{i}]" for i in range(embedding_dimension)]
    names += [f"meta:{key}" for key in spec.numeric]
    for key, values in spec.categorical.items():
        names += [f"meta:{key}={value}" for value in values]
    return names


def _numeric_value(key: str, value: object) -> float:
    if value is None:
        return 0.0

    if not isinstance(value, numbers.Real | np.bool_):
        raise ValueError(
            f"Metadata {key!r} has the non-numeric value {value!r}; "
            "pass a finite number or leave the key out."
        )

    number = float(value)
    if not math.isfinite(number) or abs(number) > _FLOAT32_MAX:
        raise ValueError(
            f"Metadata {key!r} has the value {value!r}, which is not a finite float32; "
            "pass a finite number or leave the key out."
        )
    return number


def _repeated(items: Sequence[str]) -> list[str]:
    return sorted({item for item in items if items.count(item) > 1})
