"""Pydantic models of the HTTP service's request and response bodies."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from banditroute.feedback import FeedbackSource, RatingScale

MAX_TOKENS = 10_000_000
"""Largest token count accepted in feedback, far above any model's context window.

One absurd count would skew a model's learned mean output length for good."""
MAX_COST_USD = 10_000.0
"""Largest cost of one call accepted in feedback."""
MAX_LATENCY_MS = 86_400_000.0
"""Largest latency accepted in feedback: one day."""


REQUEST_CONFIG = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)
"""Request bodies reject unknown fields and coerce no types; field notes document
the schema."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, use_attribute_docstrings=True
    )

    role: str = Field(min_length=1)
    content: str


class RouteRequest(BaseModel):
    """A request to route; send exactly one of ``prompt`` and ``messages``."""

    model_config = ConfigDict(
        extra="forbid", strict=True, use_attribute_docstrings=True
    )

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    """Chat messages; their contents, joined by newlines, are embedded."""
    metadata: dict[str, Any] | None = None
    """Values of the metadata features in the settings; other keys are ignored."""
    allowed_models: list[str] | None = None
    """Catalog names the router may choose from; default: every model."""
    cost_weight: float | None = Field(None, ge=0, allow_inf_nan=False)
    """Quality points given up to save one USD; default: the service setting."""
    max_cost_usd: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Only models whose expected cost in USD is at most this are chosen."""


class RouteResponse(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    decision_id: str
    model: str
    expected_cost_usd: float
    """Expected cost of the chosen model for this request, in USD."""
    propensity: float
    """Estimated probability that the router chooses this model for this request."""
    truncated: bool
    """True when the prompt exceeded the encoder's max sequence length."""
    posterior_version: int
    """Feedback events applied to the posterior that made this decision."""
    degraded: bool
    """True when the decision record could not be stored, so feedback returns 404."""
    cost_weight: float
    """Cost weight of the decision: the request's, else the budget pacer's or the
    setting's."""
    rollout_group: str
    """"bandit" when the bandit chose the model, "default" for the rollout's default
    model."""


RatingValue = Annotated[
    bool | float | None,
    WithJsonSchema(
        {"anyOf": [{"type": "boolean"}, {"type": "number"}, {"type": "null"}]}
    ),
]


class FeedbackRequest(BaseModel):
    """The outcome of one routed request."""

    model_config = ConfigDict(
        extra="forbid", strict=True, use_attribute_docstrings=True
    )

    decision_id: str = Field(min_length=1, max_length=256)
    rating: RatingValue = None
    scale: RatingScale | None = Field(None, strict=False)
    source: FeedbackSource = Field(FeedbackSource.USER, strict=False)
    input_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)
    output_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)
    cost_usd: float | None = Field(None, ge=0, le=MAX_COST_USD, allow_inf_nan=False)
    latency_ms: float | None = Field(None, ge=0, le=MAX_LATENCY_MS, allow_inf_nan=False)
    error: bool = False
    """True for a failed call; without a rating, it counts as quality 0."""

    @field_validator("rating", mode="plain")
    @classmethod
    def _rating_is_a_number(cls, value: object) -> bool | float | None:
        # A plain validator keeps the error location at "rating", where a union of
        # types would add the name of each member type to it.
        if value is None or isinstance(value, bool | int | float):
            return value
        raise ValueError("rating must be a number or a boolean")


class FeedbackResponse(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    accepted: bool
    duplicate: bool
    """True when feedback for this decision was already recorded; nothing changed."""
    event_id: str


class ErrorResponse(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    error: str
    message: str
    field: str | None = None
    value: Any = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 404, 410, 413, 415, 422, 503)
}
"""Error responses of /feedback, and of the admin endpoints."""
ROUTE_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 413, 415, 422)
}
