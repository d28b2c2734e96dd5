"""The encoding batcher: one prompt that fails to encode fails only its own request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from banditroute.batcher import EncodingBatcher
from banditroute.encoder import Embeddings

DIMENSION = 4


class PickyEncoder:
    """Embeds each text as its length in every dimension; fails on texts with 'bad'.

    A batch with one such text fails as a whole, as a tokenizer error would.
    """

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def encode(self, texts: Sequence[str]) -> Embeddings:
        self.batch_sizes.append(len(texts))
        if any("bad" in text for text in texts):
            raise TypeError("cannot tokenize this text")
        lengths = np.array([len(text) for text in texts], dtype=np.float32)
        return Embeddings(
            vectors=np.repeat(lengths[:, None], DIMENSION, axis=1),
            truncated=np.zeros(len(texts), dtype=bool),
            token_counts=lengths.astype(np.int64),
        )


async def encode_together(texts: list[str]) -> tuple[list[object], PickyEncoder]:
    encoder = PickyEncoder()
    batcher = EncodingBatcher(encoder, max_batch_size=16, batch_wait_ms=50)
    await batcher.start()
    try:
        results = await asyncio.gather(
            *(batcher.encode(text) for text in texts), return_exceptions=True
        )
    finally:
        await batcher.stop()
    return results, encoder


def test_bad_prompt_fails_only_its_own_request():
    texts = ["first prompt", "a bad prompt", "third", "another bad one", "fifth"]

    results, encoder = asyncio.run(encode_together(texts))

    failed = [
        text for text, r in zip(texts, results, strict=True) if isinstance(r, Exception)
    ]
    assert failed == ["a bad prompt", "another bad one"]
    assert results[0].vector[0] == len("first prompt")
    assert results[4].vector[0] == len("fifth")
    assert encoder.batch_sizes[0] == len(texts)


def test_prompts_share_one_batch():
    results, encoder = asyncio.run(encode_together(["one", "two", "three"]))

    assert [r.token_count for r in results] == [3, 3, 5]
    assert encoder.batch_sizes == [3]


@pytest.mark.parametrize("text", ["\ud800", "start \udfff end"])
def test_lone_surrogate_is_rejected_before_batching(text):
    results, encoder = asyncio.run(encode_together([text]))

    assert isinstance(results[0], ValueError)
    assert "surrogate" in str(results[0])
    assert encoder.batch_sizes == []
