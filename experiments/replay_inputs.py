"""Load a routing log and its prompt contexts for the replay experiments.

Contexts come through the embedding cache (``$BANDITROUTE_CACHE_DIR`` or the user
cache folder), so only the first run of a log encodes its prompts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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


def rolling_share(model_index: np.ndarray, model: int, window: int) -> np.ndarray:
    """Return the share of ``model`` among the ``window`` decisions ending at each step.

    Entry i covers decisions i - window + 1 to i; the first window - 1 steps average
    over the decisions so far.
    """
    chosen = (np.asarray(model_index) == model).astype(float)
    totals = np.cumsum(chosen)
    totals[window:] = totals[window:] - totals[:-window]
    counts = np.minimum(np.arange(1, len(chosen) + 1), window)
    return totals / counts


def plot_shares(
    panels: dict[str, dict[str, np.ndarray]],
    change_step: int,
    path: Path,
    ylabel: str,
) -> None:
    """Plot one panel per title, one curve per label, and mark the change step."""
    figure = Figure(figsize=(6 * len(panels), 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes_row = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (title, curves) in zip(axes_row, panels.items(), strict=True):
        for label, curve in curves.items():
            axes.plot(np.arange(len(curve)), curve, label=label, linewidth=1.2)
        axes.axvline(change_step, color="0.5", linestyle=":", linewidth=1)
        axes.set_title(title, fontsize="medium")
        axes.set_xlabel("decision")
        axes.set_ylabel(ylabel)
        axes.set_ylim(0, 1)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"plot written to {path}")
