"""Feedback on routed requests: rating scales, validation and the append to the store.

A rating is mapped to a quality in [0, 1] on its scale. Feedback is accepted only for a
decision whose record is still stored, and the store appends it to the shared event
stream at most once per decision id.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from banditroute.catalog import Catalog
from banditroute.errors import BanditRouteError
from banditroute.events import FeedbackEvent, FeedbackPayload, decision_id_time
from banditroute.store import Store

logger = logging.getLogger(__name__)


class RequestError(BanditRouteError):
    """A request the service rejects; ``status_code`` is its HTTP status."""

    status_code = 400
    error_code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        value: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value


class InvalidFieldError(RequestError, ValueError):
    """A request field has an invalid value."""

    status_code = 422
    error_code = "invalid_field"


class DecisionNotFoundError(RequestError, KeyError):
    """No decision with this id exists, or its record was lost."""

    status_code = 404
    error_code = "decision_not_found"

    def __str__(self) -> str:
        return self.message


class DecisionExpiredError(RequestError):
    """The decision's feedback window has passed, so its record was deleted."""

    status_code = 410
    error_code = "decision_expired"


class RatingScale(StrEnum):
    """The scale of a rating. Each scale maps linearly onto quality in [0, 1]."""

    THUMBS = "thumbs"
    """0 or 1, or false or true."""
    STARS_5 = "stars_5"
    """1 to 5 stars, fractions allowed."""
    JUDGE_10 = "judge_10"
    """A judge's score from 1 to 10, fractions allowed."""
    UNIT = "unit"
    """A quality already in [0, 1]."""


class FeedbackSource(StrEnum):
    USER = "user"
    JUDGE = "judge"


_SCALE_RANGES: dict[RatingScale, tuple[float, float]] = {
    RatingScale.THUMBS: (0.0, 1.0),
    RatingScale.STARS_5: (1.0, 5.0),
    RatingScale.JUDGE_10: (1.0, 10.0),
    RatingScale.UNIT: (0.0, 1.0),
}


def quality_from_rating(rating: bool | float, scale: RatingScale) -> float:
    """Map ``rating`` on ``scale`` to a quality in [0, 1].

    Raises InvalidFieldError naming ``rating`` when the value is off its scale, and
    for a thumbs rating other than 0, 1, false or true.
    """
    if isinstance(rating, bool):
        if scale is not RatingScale.THUMBS:
            raise InvalidFieldError(
                f"rating {rating!r} is a boolean, which only the thumbs scale accepts; "
                f"send a number on the {scale.value} scale.",
                field="rating",
                value=rating,
            )
        return 1.0 if rating else 0.0

    value = float(rating)
    low, high = _SCALE_RANGES[scale]
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidFieldError(
            f"rating {rating!r} is off the {scale.value} scale; send a value from "
            f"{low:g} to {high:g}.",
            field="rating",
            value=rating,
        )

    if scale is RatingScale.THUMBS and value not in (0.0, 1.0):
        raise InvalidFieldError(
            f"rating {rating!r} is not a thumbs rating; send 0, 1, false or true.",
            field="rating",
            value=rating,
        )
    return (value - low) / (high - low)


@dataclass(frozen=True)
class FeedbackReport:
    """One feedback as received, already validated for types and ranges."""

    decision_id: str
    source: FeedbackSource
    rating: bool | float | None = None
    scale: RatingScale | None = None
    error: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class FeedbackOutcome:
    """The result of recording one feedback."""

    duplicate: bool
    event_id: str
    """Stream id of the event; for a duplicate, the id of the first feedback's event."""
    model: str
    quality: float


class FeedbackRecorder:
    """Validates feedback against its decision and appends it to the event stream.

    ``window_seconds`` is the feedback window: the decision record and the idempotency
    key of its feedback live that long, so a repeat within the window is detected.
    """

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        *,
        window_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.window_seconds = window_seconds
        self.clock = clock

    async def record(self, report: FeedbackReport) -> FeedbackOutcome:
        """Append the event of ``report`` once; a repeat returns ``duplicate`` true.

        Raises InvalidFieldError, DecisionNotFoundError, DecisionExpiredError, and the
        store's StoreUnavailable while Redis is unreachable.
        """
        quality = feedback_quality(report)
        created_at = decision_id_time(report.decision_id)
        if created_at is None or self.clock() - created_at > self.window_seconds:
            # /route never made such an id, or its window has closed, so the error
            # is known without a store lookup.
            raise self._missing_decision_error(report.decision_id)

        payload = FeedbackPayload(
            decision_id=report.decision_id,
            quality=quality,
            input_tokens=report.input_tokens,
            output_tokens=report.output_tokens,
            cost_usd=report.cost_usd,
            error=report.error,
            source=report.source.value,
            latency_ms=report.latency_ms,
            received_at=self.clock(),
        )
        result = await self.store.record_feedback(payload, self.window_seconds)
        if result is None:
            raise self._missing_decision_error(report.decision_id)

        return FeedbackOutcome(
            duplicate=not result.accepted,
            event_id=result.event_id,
            model=result.model,
            quality=quality,
        )

    def _missing_decision_error(self, decision_id: str) -> RequestError:
        # A record that is gone but whose id embeds a time older than the window has
        # expired. Any other missing record was never stored: an unknown id, or a
        # decision made while Redis was unreachable.
        created_at = decision_id_time(decision_id)
        now = self.clock()
        if created_at is not None and now - created_at > self.window_seconds:
            return DecisionExpiredError(
                f"The feedback window of decision {decision_id!r} closed "
                f"{now - created_at - self.window_seconds:.0f} s ago (the window is "
                f"{self.window_seconds:g} s); send feedback sooner after routing.",
                field="decision_id",
                value=decision_id,
            )
        return DecisionNotFoundError(
            f"Decision {decision_id!r} not found; send the decision_id returned by "
            "/route. Decisions routed while the store was unavailable (degraded true) "
            "take no feedback.",
            field="decision_id",
            value=decision_id,
        )


def event_cost_usd(event: FeedbackEvent, catalog: Catalog) -> float | None:
    """Return the cost of the call an event reports on, in USD; None if unknown.

    A cost the client reported wins. Otherwise the reported usage is priced at the
    catalog's list prices; the input count is the reported one or the estimate made
    at routing time.
    """
    if event.cost_usd is not None:
        return event.cost_usd
    if event.output_tokens is None or event.model not in catalog:
        return None

    input_tokens = 0.0 if event.input_tokens is None else event.input_tokens
    costs = catalog.cost_usd(input_tokens, np.asarray(event.output_tokens))
    return float(costs[catalog.index(event.model)])


def feedback_quality(report: FeedbackReport) -> float:
    """Return the quality that ``report`` teaches: its rating, or 0 for a failed call.

    Raises InvalidFieldError when the rating or its scale is missing without an error.
    """
    if report.rating is None:
        if report.error:
            return 0.0
        raise InvalidFieldError(
            "rating is missing; send a rating with its scale, or error true for a "
            "failed call.",
            field="rating",
            value=None,
        )

    if report.scale is None:
        raise InvalidFieldError(
            "scale is missing; send one of "
            f"{[scale.value for scale in RatingScale]} with the rating.",
            field="scale",
            value=None,
        )
    return quality_from_rating(report.rating, report.scale)
