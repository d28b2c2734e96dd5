import math

import numpy as np
import pytest

from banditroute.errors import ConfigError
from banditroute.features import FeatureBuilder, FeatureSpec

SPEC = FeatureSpec(
    numeric=("log_input_tokens", "priority"),
    categorical={"tier": ("free", "pro"), "language": ("en", "de", "fr")},
)


def embeddings_of(rows: int, dimension: int = 4) -> np.ndarray:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(rows, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_without_metadata_bias_then_embedding():
    builder = FeatureBuilder(4)
    embeddings = embeddings_of(3)

    features = builder.build(embeddings)

    assert builder.dimension == 5
    assert features.shape == (3, 5)
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features[:, 0], 1.0)
    np.testing.assert_array_equal(features[:, 1:], embeddings)


def test_names_follow_column_order():
    builder = FeatureBuilder(2, SPEC)

    assert builder.names == [
        "bias",
        "embedding[0]",
        "embedding[1]",
        "meta:log_input_tokens",
        "meta:priority",
        "meta:tier=free",
        "meta:tier=pro",
        "meta:language=en",
        "meta:language=de",
        "meta:language=fr",
    ]
    assert builder.dimension == len(builder.names)


def test_metadata_columns_follow_embedding():
    builder = FeatureBuilder(4, SPEC)
    metadata = [
        {"log_input_tokens": 5.5, "priority": 2, "tier": "pro", "language": "de"},
        {"log_input_tokens": 1.0, "tier": "free", "language": "fr"},
    ]

    features = builder.build(embeddings_of(2), metadata)

    np.testing.assert_array_equal(features[0, 5:], [5.5, 2, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(features[1, 5:], [1.0, 0, 1, 0, 0, 0, 1])


def test_bias_stays_first_with_metadata():
    builder = FeatureBuilder(4, SPEC)

    features = builder.build(embeddings_of(2), [{"priority": 9.0}, {}])

    np.testing.assert_array_equal(features[:, 0], 1.0)
    assert builder.names[0] == "bias"


def test_missing_metadata_gives_zeros():
    builder = FeatureBuilder(4, SPEC)

    without = builder.build(embeddings_of(1))
    empty = builder.build(embeddings_of(1), [{}])
    none_values = builder.build(
        embeddings_of(1), [{"log_input_tokens": None, "tier": None}]
    )

    np.testing.assert_array_equal(without[0, 5:], 0.0)
    np.testing.assert_array_equal(empty[0, 5:], 0.0)
    np.testing.assert_array_equal(none_values[0, 5:], 0.0)


def test_unknown_category_value_gives_zeros():
    builder = FeatureBuilder(4, SPEC)

    features = builder.build(embeddings_of(1), [{"tier": "enterprise"}])

    np.testing.assert_array_equal(features[0, 7:9], [0, 0])


def test_category_values_compared_exactly():
    builder = FeatureBuilder(1, FeatureSpec(categorical={"tier": ("1", "2")}))

    features = builder.build(embeddings_of(1, 1), [{"tier": 1}])

    np.testing.assert_array_equal(features[0, 2:], [0, 0])


def test_unknown_keys_ignored():
    builder = FeatureBuilder(4, SPEC)
    embeddings = embeddings_of(1)

    plain = builder.build(embeddings, [{"priority": 1}])
    extra = builder.build(embeddings, [{"priority": 1, "user": "x", "score": "high"}])

    np.testing.assert_array_equal(extra, plain)


@pytest.mark.parametrize(
    "value", [True, np.float64(2.5), np.int64(3), np.float32(0.25), 7]
)
def test_numeric_accepts_number_types(value):
    builder = FeatureBuilder(1, FeatureSpec(numeric=("x",)))

    features = builder.build(embeddings_of(1, 1), [{"x": value}])

    assert features[0, 2] == np.float32(float(value))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e39])
def test_non_finite_numeric_raises_naming_key(value):
    builder = FeatureBuilder(4, SPEC)

    with pytest.raises(ValueError, match="'priority'") as error:
        builder.build(embeddings_of(1), [{"priority": value}])

    assert repr(value) in str(error.value)


@pytest.mark.parametrize("value", ["3", "high", [1.0], {"a": 1}])
def test_non_numeric_value_raises_naming_key(value):
    builder = FeatureBuilder(4, SPEC)

    with pytest.raises(ValueError, match="'log_input_tokens'") as error:
        builder.build(embeddings_of(1), [{"log_input_tokens": value}])

    assert repr(value) in str(error.value)


def test_build_one_matches_build_row():
    builder = FeatureBuilder(4, SPEC)
    embeddings = embeddings_of(2)
    metadata = [{"priority": 1, "tier": "pro"}, {"language": "en"}]

    rows = builder.build(embeddings, metadata)
    single = builder.build_one(embeddings[1], metadata[1])

    assert single.shape == (builder.dimension,)
    np.testing.assert_array_equal(single, rows[1])


def test_build_one_without_metadata():
    builder = FeatureBuilder(4, SPEC)
    embedding = embeddings_of(1)[0]

    single = builder.build_one(embedding)

    assert single[0] == 1.0
    np.testing.assert_array_equal(single[1:5], embedding)
    np.testing.assert_array_equal(single[5:], 0.0)


def test_build_one_rejects_matrix():
    builder = FeatureBuilder(4)

    with pytest.raises(ValueError, match="use build"):
        builder.build_one(embeddings_of(2))


def test_wrong_embedding_dimension_raises():
    builder = FeatureBuilder(384)

    with pytest.raises(ValueError, match=r"\(n, 384\).*\(2, 4\)"):
        builder.build(embeddings_of(2))


def test_one_dimensional_embeddings_raise():
    builder = FeatureBuilder(4)

    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        builder.build(embeddings_of(1)[0])


def test_non_finite_embedding_raises_naming_row():
    builder = FeatureBuilder(4)
    embeddings = embeddings_of(3)
    embeddings[2, 1] = np.nan

    with pytest.raises(ValueError, match="row 2"):
        builder.build(embeddings)


def test_metadata_length_mismatch_raises():
    builder = FeatureBuilder(4, SPEC)

    with pytest.raises(ValueError, match="2 metadata entries for 3 embeddings"):
        builder.build(embeddings_of(3), [{}, {}])


def test_empty_batch_gives_empty_matrix():
    builder = FeatureBuilder(4, SPEC)

    features = builder.build(np.zeros((0, 4), dtype=np.float32), [])

    assert features.shape == (0, builder.dimension)


def test_spec_lists_become_tuples():
    spec = FeatureSpec(numeric=["a"], categorical={"tier": ["free", "pro"]})

    assert spec.numeric == ("a",)
    assert spec.categorical == {"tier": ("free", "pro")}


def test_spec_repeated_numeric_key_raises():
    with pytest.raises(ConfigError, match="'a'"):
        FeatureSpec(numeric=("a", "b", "a"))


def test_spec_key_of_both_kinds_raises():
    with pytest.raises(ConfigError, match="both numeric and categorical"):
        FeatureSpec(numeric=("tier",), categorical={"tier": ("free",)})


def test_spec_repeated_category_value_raises():
    with pytest.raises(ConfigError, match="'free'"):
        FeatureSpec(categorical={"tier": ("free", "pro", "free")})


def test_invalid_embedding_dimension_raises():
    with pytest.raises(ConfigError, match="embedding_dimension=0"):
        FeatureBuilder(0)


def test_real_embeddings_build_features(encoder):
    embeddings = encoder.encode(["Summarize this article.", "Solve 2x + 3 = 7."])
    builder = FeatureBuilder(encoder.dimension, SPEC)

    features = builder.build(embeddings.vectors, [{"tier": "pro"}, {"priority": 1}])

    assert features.shape == (2, 1 + 384 + 7)
    np.testing.assert_array_equal(features[:, 1:385], embeddings.vectors)
