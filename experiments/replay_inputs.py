"""Load a routing log and its prompt contexts for the replay experiments.

Contexts come through the embedding cache (``$BANDITROUTE_CACHE_DIR`` or the user
cache folder), so only the first run of a log encodes its prompts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from banditroute.embedding_cache import EmbeddingCache, default_cache_path
from banditroute.encoder import DEFAULT_ENCODER_MODEL, Encoder
from banditroute.features import FeatureBuilder
from banditroute.routing_log import RoutingLog, read_routing_log

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
MULTITASK_LOG = DATA_DIR / "multitask" / "routing-log.jsonl.gz"
ALPACAEVAL_LOG = DATA_DIR / "alpacaeval" / "routing-log.jsonl.gz"


def load_log_and_contexts(path: Path) -> tuple[RoutingLog, np.ndarray]:
    """Read the log at ``path`` and return it with one context row per prompt."""
    log = read_routing_log(path)
    encoder = Encoder(DEFAULT_ENCODER_MODEL)
    with EmbeddingCache(default_cache_path()) as cache:
        embeddings = cache.get_or_encode(encoder, log.prompts, progress=False)
    contexts = FeatureBuilder(encoder.dimension).build(embeddings.vectors)
    return log, contexts


def format_spread(values: list[float] | np.ndarray, number_format: str) -> str:
    """Format the mean and sample standard deviation of ``values`` as 'm ± s'."""
    values = np.asarray(values, dtype=float)
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    mean = float(np.mean(values))
    return f"{mean:{number_format}} ± {spread:{number_format}}"
