import hashlib
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from banditroute import embedding_cache
from banditroute.embedding_cache import EmbeddingCache, default_cache_path
from banditroute.encoder import Embeddings, Encoder
from banditroute.errors import EmptyPromptError

PROMPTS = [
    "What is the boiling point of water at sea level?",
    "Write a limerick about a cat who loves lasagna.",
    "Explain the difference between TCP and UDP.",
]
LONG_PROMPT = "Each of these words adds to the length of a very long prompt. " * 60


class CountingEncoder:
    """The real encoder, wrapped to record every batch passed to ``encode``."""

    def __init__(self, encoder: Encoder, model_id: str | None = None) -> None:
        self._encoder = encoder
        self.model_id = model_id or encoder.model_id
        self.dimension = encoder.dimension
        self.calls: list[list[str]] = []

    @property
    def encoded_texts(self) -> list[str]:
        return [text for call in self.calls for text in call]

    def encode(self, texts: list[str]) -> Embeddings:
        self.calls.append(list(texts))
        return self._encoder.encode(texts)


@pytest.fixture
def counting(encoder):
    return CountingEncoder(encoder)


@pytest.fixture
def cache(tmp_path):
    with EmbeddingCache(tmp_path / "embeddings.sqlite") as opened:
        yield opened


def test_second_call_encodes_nothing(cache, counting):
    first = cache.get_or_encode(counting, PROMPTS)
    calls_after_first = len(counting.calls)

    second = cache.get_or_encode(counting, PROMPTS)

    assert calls_after_first == 1
    assert len(counting.calls) == 1
    np.testing.assert_array_equal(second.vectors, first.vectors)


def test_results_match_direct_encoding(cache, counting, encoder):
    cached = cache.get_or_encode(counting, PROMPTS)
    direct = encoder.encode(PROMPTS)

    np.testing.assert_allclose(cached.vectors, direct.vectors, atol=1e-5)
    assert cached.vectors.dtype == np.float32


def test_order_preserved_with_partial_hits(cache, counting, encoder):
    cache.get_or_encode(counting, [PROMPTS[1]])

    mixed = cache.get_or_encode(counting, [PROMPTS[2], PROMPTS[1], PROMPTS[0]])
    direct = encoder.encode([PROMPTS[2], PROMPTS[1], PROMPTS[0]])

    assert counting.calls[1] == [PROMPTS[2], PROMPTS[0]]
    np.testing.assert_allclose(mixed.vectors, direct.vectors, atol=1e-5)


def test_duplicates_encoded_once(cache, counting):
    texts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[0]]

    embeddings = cache.get_or_encode(counting, texts)

    assert counting.encoded_texts == [PROMPTS[0], PROMPTS[1]]
    assert embeddings.vectors.shape == (4, 384)
    np.testing.assert_array_equal(embeddings.vectors[2], embeddings.vectors[0])
    np.testing.assert_array_equal(embeddings.vectors[3], embeddings.vectors[0])
    assert len(cache) == 2


def test_truncation_and_token_counts_survive_cache(cache, counting):
    fresh = cache.get_or_encode(counting, [LONG_PROMPT, PROMPTS[0]])

    cached = cache.get_or_encode(counting, [LONG_PROMPT, PROMPTS[0]])

    assert len(counting.calls) == 1
    assert cached.truncated.tolist() == [True, False]
    assert cached.token_counts.tolist() == fresh.token_counts.tolist()


def test_two_caches_share_one_file(tmp_path, encoder):
    path = tmp_path / "shared.sqlite"
    first_encoder = CountingEncoder(encoder)
    second_encoder = CountingEncoder(encoder)

    with EmbeddingCache(path) as first, EmbeddingCache(path) as second:
        first.get_or_encode(first_encoder, PROMPTS[:2])
        second.get_or_encode(second_encoder, PROMPTS)
        first.get_or_encode(first_encoder, PROMPTS)

    assert second_encoder.encoded_texts == [PROMPTS[2]]
    assert first_encoder.encoded_texts == PROMPTS[:2]


def test_write_waits_for_other_writer(tmp_path, counting):
    path = tmp_path / "locked.sqlite"
    cache = EmbeddingCache(path)
    locked = threading.Event()

    def hold_write_lock() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        threading.Event().wait(1.0)
        other.execute("COMMIT")
        other.close()

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    locked.wait(timeout=10)
    try:
        embeddings = cache.get_or_encode(counting, PROMPTS)
    finally:
        holder.join()
        cache.close()

    assert embeddings.vectors.shape == (3, 384)
    with EmbeddingCache(path) as reopened:
        assert len(reopened) == 3


def test_model_ids_kept_apart(cache, encoder):
    minilm = CountingEncoder(encoder)
    renamed = CountingEncoder(encoder, model_id="another-encoder")

    cache.get_or_encode(minilm, PROMPTS)
    cache.get_or_encode(renamed, PROMPTS)

    assert renamed.encoded_texts == PROMPTS
    assert len(cache) == 6


def test_wrong_dimension_row_is_reencoded(cache, counting):
    digest = hashlib.sha256(PROMPTS[0].encode("utf-8")).digest()
    connection = sqlite3.connect(cache.path)
    with connection:
        connection.execute(
            "INSERT INTO embeddings VALUES (?, ?, ?, 0, 5)",
            (counting.model_id, digest, np.ones(8, dtype="<f4").tobytes()),
        )
    connection.close()

    embeddings = cache.get_or_encode(counting, [PROMPTS[0]])
    again = cache.get_or_encode(counting, [PROMPTS[0]])

    assert counting.calls == [[PROMPTS[0]]]
    assert embeddings.vectors.shape == (1, 384)
    np.testing.assert_array_equal(again.vectors, embeddings.vectors)


def test_misses_encoded_in_batches(cache, counting, monkeypatch):
    monkeypatch.setattr(embedding_cache, "ENCODE_BATCH_SIZE", 2)

    cache.get_or_encode(counting, PROMPTS)

    assert counting.calls == [PROMPTS[:2], PROMPTS[2:]]


def test_progress_bar_written_when_requested(cache, counting, capsys):
    cache.get_or_encode(counting, PROMPTS, progress=True)

    assert "3/3" in capsys.readouterr().err


def test_no_progress_bar_by_default(cache, counting, capsys):
    cache.get_or_encode(counting, PROMPTS)

    assert capsys.readouterr().err == ""


def test_empty_prompt_raises_before_lookup(cache, counting):
    cache.get_or_encode(counting, PROMPTS)

    with pytest.raises(EmptyPromptError, match="position 3"):
        cache.get_or_encode(counting, [*PROMPTS, "  "])


def test_non_str_prompt_raises_type_error(cache, counting):
    with pytest.raises(TypeError, match="position 0 is of type int"):
        cache.get_or_encode(counting, [7])


def test_empty_input_gives_empty_embeddings(cache, counting):
    embeddings = cache.get_or_encode(counting, [])

    assert embeddings.vectors.shape == (0, 384)
    assert counting.calls == []


def test_parent_folders_created(tmp_path):
    path = tmp_path / "a" / "b" / "embeddings.sqlite"

    with EmbeddingCache(path) as cache:
        assert len(cache) == 0

    assert path.is_file()


def test_file_uses_write_ahead_logging(cache):
    connection = sqlite3.connect(cache.path)
    (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
    connection.close()

    assert mode == "wal"


def test_default_path_prefers_override(monkeypatch, tmp_path):
    monkeypatch.setenv("BANDITROUTE_CACHE_DIR", str(tmp_path / "override"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert default_cache_path() == tmp_path / "override" / "embeddings.sqlite"


def test_default_path_uses_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("BANDITROUTE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    expected = tmp_path / "xdg" / "banditroute" / "embeddings.sqlite"
    assert default_cache_path() == expected


@pytest.mark.parametrize("xdg_cache_home", [None, "", "relative/cache"])
def test_default_path_falls_back_to_home(monkeypatch, tmp_path, xdg_cache_home):
    monkeypatch.delenv("BANDITROUTE_CACHE_DIR", raising=False)
    if xdg_cache_home is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg_cache_home)
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")

    expected = tmp_path / "home" / ".cache" / "banditroute" / "embeddings.sqlite"
    assert default_cache_path() == expected
