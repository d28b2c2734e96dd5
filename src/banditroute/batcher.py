"""Batches concurrent prompts into one encoder call on a dedicated thread.

The encoder is not thread-safe and a call takes milliseconds, so it runs on one thread
outside the event loop. Prompts that arrive while a batch is being embedded form the
next batch, which makes batches grow with the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from banditroute.encoder import Embeddings, validate_prompts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedPrompt:
    """The embedding of one prompt."""

    vector: np.ndarray
    """(dimension,) float32, L2-normalized."""
    truncated: bool
    token_count: int
    """Word pieces of the full prompt, special tokens included."""


class PromptEncoder(Protocol):
    """The part of ``banditroute.encoder.Encoder`` that the batcher calls."""

    def encode(self, texts: Sequence[str]) -> Embeddings: ...


@dataclass
class _Pending:
    text: str
    future: asyncio.Future[EncodedPrompt]


class EncodingBatcher:
    """Collects prompts from concurrent requests and embeds them in batches.

    A batch is sent to the encoder when it has ``max_batch_size`` prompts or when
    ``batch_wait_ms`` has passed since its first prompt arrived. ``on_batch`` is
    called with the size of every embedded batch. Call ``start`` in the event loop that
    will call ``encode``, and ``stop`` before the loop ends.
    """

    def __init__(
        self,
        encoder: PromptEncoder,
        *,
        max_batch_size: int = 32,
        batch_wait_ms: float = 2.0,
        on_batch: Callable[[int], object] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(
                f"max_batch_size={max_batch_size!r} is invalid; use 1 or more."
            )
        if batch_wait_ms < 0:
            raise ValueError(
                f"batch_wait_ms={batch_wait_ms!r} is invalid; use 0 or more."
            )

        self.encoder = encoder
        self.max_batch_size = max_batch_size
        self.batch_wait_seconds = batch_wait_ms / 1000.0
        self.on_batch = on_batch
        self.batches = 0
        self.prompts = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def mean_batch_size(self) -> float:
        return self.prompts / self.batches if self.batches else 0.0

    async def start(self) -> None:
        """Start the thread and the task that form batches."""
        if self._task is not None:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="banditroute-encoder"
        )
        self._task = asyncio.create_task(self._run(), name="encoding-batcher")

    async def stop(self) -> None:
        """Stop forming batches, fail waiting prompts and end the encoder thread."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

        assert self._queue is not None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(
                    RuntimeError("The encoding batcher stopped before this prompt.")
                )

        assert self._executor is not None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def encode(self, text: str) -> EncodedPrompt:
        """Embed one prompt with whichever others arrive at the same time.

        Raises TypeError or EmptyPromptError for an invalid prompt, before batching, so
        one bad prompt never fails the others of its batch.
        """
        validate_prompts([text])
        if self._queue is None:
            raise RuntimeError("EncodingBatcher.start() was not called.")

        future: asyncio.Future[EncodedPrompt] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.put_nowait(_Pending(text, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect_batch()
            if not batch:
                continue

            texts = [pending.text for pending in batch]
            started = time.perf_counter()
            try:
                embeddings = await loop.run_in_executor(
                    self._executor, self.encoder.encode, texts
                )
            except asyncio.CancelledError:
                _fail(batch, RuntimeError("The encoding batcher stopped."))
                raise
            except Exception as error:
                logger.exception("Encoding a batch of %d prompts failed", len(batch))
                if len(batch) == 1:
                    _fail(batch, error)
                else:
                    # One prompt the checks missed must not fail the others.
                    await self._encode_each(batch)
                continue

            self.batches += 1
            self.prompts += len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch))
            logger.debug(
                "Encoded a batch of %d prompts in %.1f ms",
                len(batch),
                (time.perf_counter() - started) * 1000,
            )
            _deliver(batch, embeddings)

    async def _encode_each(self, batch: list[_Pending]) -> None:
        """Encode the prompts of a failed batch one at a time."""
        loop = asyncio.get_running_loop()
        for pending in batch:
            try:
                embeddings = await loop.run_in_executor(
                    self._executor, self.encoder.encode, [pending.text]
                )
            except asyncio.CancelledError:
                _fail(batch, RuntimeError("The encoding batcher stopped."))
                raise
            except Exception as error:
                _fail([pending], error)
                continue
            _deliver([pending], embeddings)

    async def _collect_batch(self) -> list[_Pending]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.batch_wait_seconds
        while len(batch) < self.max_batch_size:
            # Prompts that queued up during the previous encoder call are taken without
            # waiting. Only a batch that is not full waits, and at most until the
            # deadline set when its first prompt was taken.
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue

            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [pending for pending in batch if not pending.future.cancelled()]


def _deliver(batch: list[_Pending], embeddings: Embeddings) -> None:
    for row, pending in enumerate(batch):
        if pending.future.done():
            continue
        pending.future.set_result(
            EncodedPrompt(
                vector=embeddings.vectors[row],
                truncated=bool(embeddings.truncated[row]),
                token_count=int(embeddings.token_counts[row]),
            )
        )


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
