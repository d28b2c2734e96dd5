"""A SQLite cache of prompt embeddings, so that a log replay embeds each prompt once."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from tqdm import tqdm

from banditroute.encoder import Embeddings, Encoder, validate_prompts

ENCODE_BATCH_SIZE = 256
"""Prompts passed to the encoder per call, which is also the progress bar's step."""

BUSY_TIMEOUT_SECONDS = 60.0
"""Maximum time to wait for another process's write lock on the cache file."""

_QUERY_CHUNK_SIZE = 500
"""Hashes per SELECT, below the 999 bound parameters that SQLite before 3.32 allows."""

_VECTOR_DTYPE = np.dtype("<f4")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model_id TEXT NOT NULL,
    text_sha256 BLOB NOT NULL,
    vector BLOB NOT NULL,
    truncated INTEGER NOT NULL,
    token_count INTEGER NOT NULL,
    PRIMARY KEY (model_id, text_sha256)
) WITHOUT ROWID
"""

_CachedRow = tuple[np.ndarray, bool, int]


def default_cache_path() -> Path:
    """Return the cache file path from the environment.

    The folder is ``$BANDITROUTE_CACHE_DIR`` if set, else
    ``$XDG_CACHE_HOME/banditroute`` if that variable is an absolute path, else
    ``~/.cache/banditroute``.
    """
    override = os.environ.get("BANDITROUTE_CACHE_DIR")
    if override:
        return Path(override).expanduser() / "embeddings.sqlite"

    # The XDG Base Directory specification requires ignoring a relative path.
    xdg_cache_home = os.environ.get("XDG_CACHE_HOME")
    if xdg_cache_home and Path(xdg_cache_home).is_absolute():
        return Path(xdg_cache_home) / "banditroute" / "embeddings.sqlite"

    return Path.home() / ".cache" / "banditroute" / "embeddings.sqlite"


class EmbeddingCache:
    """Embeddings stored in a SQLite file, keyed by encoder model id and prompt text.

    A row stores the float32 vector, the truncated flag and the token count of one
    prompt, under the SHA-256 of the prompt's UTF-8 bytes. Several processes may use
    the same file at once: the file uses write-ahead logging, and a writer waits up to
    ``BUSY_TIMEOUT_SECONDS`` for another's lock. One EmbeddingCache object must be used
    from the thread that created it, as ``sqlite3`` requires by default.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)

        # isolation_level=None leaves transactions to the explicit BEGIN in _store.
        self._connection = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    def __len__(self) -> int:
        (count,) = self._connection.execute(
            "SELECT COUNT(*) FROM embeddings"
        ).fetchone()
        return int(count)

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        self._connection.close()

    def get_or_encode(
        self, encoder: Encoder, texts: Sequence[str], *, progress: bool = False
    ) -> Embeddings:
        """Return the embeddings of ``texts`` in input order, encoding only new prompts.

        Each distinct prompt that the cache lacks for ``encoder.model_id`` is encoded
        once, in batches of ``ENCODE_BATCH_SIZE``, with a tqdm progress bar on stderr
        when ``progress`` is true. The new rows are written in one transaction after
        all of them are encoded. A stored vector whose length differs from
        ``encoder.dimension`` counts as missing and is replaced.

        Raises TypeError or EmptyPromptError, as ``Encoder.encode`` does, for an invalid
        prompt, even when the other prompts are all cached.
        """
        prompts = validate_prompts(texts)
        hashes = [_text_hash(text) for text in prompts]
        first_text_by_hash = dict(zip(hashes, prompts, strict=True))

        rows = self._load(encoder.model_id, encoder.dimension, list(first_text_by_hash))
        missing = [digest for digest in first_text_by_hash if digest not in rows]
        if missing:
            texts_to_encode = [first_text_by_hash[digest] for digest in missing]
            encoded = _encode_in_batches(encoder, texts_to_encode, progress)
            self._store(encoder.model_id, missing, encoded)
            rows.update(_rows_of(missing, encoded))

        return _assemble(hashes, rows, encoder.dimension)

    def _load(
        self, model_id: str, dimension: int, hashes: list[bytes]
    ) -> dict[bytes, _CachedRow]:
        rows: dict[bytes, _CachedRow] = {}
        for chunk in _chunks(hashes, _QUERY_CHUNK_SIZE):
            placeholders = ",".join("?" * len(chunk))
            cursor = self._connection.execute(
                "SELECT text_sha256, vector, truncated, token_count FROM embeddings "
                f"WHERE model_id = ? AND text_sha256 IN ({placeholders})",
                (model_id, *chunk),
            )
            for digest, blob, truncated, token_count in cursor:
                if len(blob) != dimension * _VECTOR_DTYPE.itemsize:
                    continue
                vector = np.frombuffer(blob, dtype=_VECTOR_DTYPE)
                rows[digest] = (vector, bool(truncated), int(token_count))
        return rows

    def _store(self, model_id: str, hashes: list[bytes], encoded: Embeddings) -> None:
        records = [
            (
                model_id,
                digest,
                encoded.vectors[i].astype(_VECTOR_DTYPE).tobytes(),
                int(encoded.truncated[i]),
                int(encoded.token_counts[i]),
            )
            for i, digest in enumerate(hashes)
        ]

        # BEGIN IMMEDIATE takes the write lock up front, so a concurrent writer waits
        # for the busy timeout here instead of failing partway through the inserts.
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            self._connection.executemany(
                "INSERT OR REPLACE INTO embeddings "
                "(model_id, text_sha256, vector, truncated, token_count) "
                "VALUES (?, ?, ?, ?, ?)",
                records,
            )
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")


def _text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _chunks(items: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _encode_in_batches(
    encoder: Encoder, texts: list[str], progress: bool
) -> Embeddings:
    batches = []
    with tqdm(
        total=len(texts), desc="Embedding prompts", unit="prompt", disable=not progress
    ) as bar:
        for start in range(0, len(texts), ENCODE_BATCH_SIZE):
            batch = texts[start : start + ENCODE_BATCH_SIZE]
            batches.append(encoder.encode(batch))
            bar.update(len(batch))

    return Embeddings(
        vectors=np.concatenate([batch.vectors for batch in batches]),
        truncated=np.concatenate([batch.truncated for batch in batches]),
        token_counts=np.concatenate([batch.token_counts for batch in batches]),
    )


def _rows_of(hashes: list[bytes], encoded: Embeddings) -> dict[bytes, _CachedRow]:
    return {
        digest: (
            encoded.vectors[i],
            bool(encoded.truncated[i]),
            int(encoded.token_counts[i]),
        )
        for i, digest in enumerate(hashes)
    }


def _assemble(
    hashes: list[bytes], rows: dict[bytes, _CachedRow], dimension: int
) -> Embeddings:
    vectors = np.zeros((len(hashes), dimension), dtype=np.float32)
    truncated = np.zeros(len(hashes), dtype=bool)
    token_counts = np.zeros(len(hashes), dtype=np.int64)

    for i, digest in enumerate(hashes):
        vectors[i], truncated[i], token_counts[i] = rows[digest]

    return Embeddings(vectors=vectors, truncated=truncated, token_counts=token_counts)
