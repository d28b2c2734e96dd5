"""Expected cost of a request for every model, from prices and output lengths."""

from __future__ import annotations

import numpy as np

from banditroute.catalog import Catalog

DEFAULT_PRIOR_OUTPUT_TOKENS = 256.0
"""Output tokens expected of a model before any usage has been reported for it."""


class CostModel:
    """Predicts each model's cost in USD as input cost plus expected output cost.

    The input token count of a request is known when it is routed, but the output
    count is not. Each model's mean output token count is therefore learned from
    reported usage, starting at ``prior_output_tokens`` with the weight of
    ``prior_weight`` requests.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        prior_output_tokens: float = DEFAULT_PRIOR_OUTPUT_TOKENS,
        prior_weight: float = 1.0,
    ) -> None:
        self.catalog = catalog
        self.prior_output_tokens = prior_output_tokens
        self.prior_weight = prior_weight
        self.token_sum = np.full(len(catalog), prior_output_tokens * prior_weight)
        self.count = np.full(len(catalog), float(prior_weight))

    @property
    def expected_output_tokens(self) -> np.ndarray:
        """Mean output token count per model."""
        return self.token_sum / self.count

    def expected_cost(self, input_tokens: float) -> np.ndarray:
        """Return each model's expected cost in USD of a request of ``input_tokens``."""
        return self.catalog.cost_usd(input_tokens, self.expected_output_tokens)

    def update(self, model_index: int, output_tokens: float) -> None:
        """Add one reported output token count of ``model_index``."""
        self.token_sum[model_index] += output_tokens
        self.count[model_index] += 1.0

    def add_model(self) -> int:
        """Append the prior output length of a model just added to the catalog.

        Returns the new model's index, which must match its catalog index.
        """
        self.token_sum = np.append(
            self.token_sum, self.prior_output_tokens * self.prior_weight
        )
        self.count = np.append(self.count, float(self.prior_weight))
        return len(self.count) - 1

    def fit(self, output_tokens: np.ndarray) -> None:
        """Add output token counts, one row per request; NaN entries are skipped."""
        observed = np.isfinite(output_tokens)
        self.token_sum += np.where(observed, output_tokens, 0.0).sum(axis=0)
        self.count += observed.sum(axis=0)

    def snapshot(self) -> dict[str, np.ndarray]:
        """Return the learned state as named arrays (copies)."""
        return {"token_sum": self.token_sum.copy(), "count": self.count.copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Replace the learned state with one returned by ``snapshot``."""
        self.token_sum = np.asarray(state["token_sum"], dtype=np.float64).copy()
        self.count = np.asarray(state["count"], dtype=np.float64).copy()
