"""Appending given feedback events to a store, as the feedback path does.

A store appends an event only for a stored decision, taking the model, context and
input tokens from the decision record. These helpers store that record first.
"""

from __future__ import annotations

from banditroute.events import DecisionRecord, FeedbackEvent, FeedbackPayload
from banditroute.store import AppendResult, Store


def decision_of(event: FeedbackEvent) -> DecisionRecord:
    """Return a decision record from which ``event`` would be built."""
    return DecisionRecord(
        decision_id=event.decision_id,
        model=event.model,
        context=event.context,
        input_tokens=0 if event.input_tokens is None else int(event.input_tokens),
        propensity=1.0,
        cost_weight=0.0,
        expected_cost_usd=0.0,
        created_at=event.received_at,
        posterior_version=0,
    )


def payload_of(event: FeedbackEvent) -> FeedbackPayload:
    return FeedbackPayload(
        decision_id=event.decision_id,
        quality=event.quality,
        input_tokens=None,
        output_tokens=event.output_tokens,
        cost_usd=event.cost_usd,
        error=event.error,
        source=event.source,
        latency_ms=event.latency_ms,
        received_at=event.received_at,
    )


async def append_event(
    store: Store, event: FeedbackEvent, ttl_seconds: float
) -> AppendResult:
    """Store the decision of ``event`` and record its feedback; return the result."""
    await store.put_decision(decision_of(event), ttl_seconds)
    result = await store.record_feedback(payload_of(event), ttl_seconds)
    assert result is not None
    return result


async def append_repeat(
    store: Store, event: FeedbackEvent, ttl_seconds: float
) -> AppendResult:
    """Record the feedback of ``event`` again, for a decision already stored."""
    result = await store.record_feedback(payload_of(event), ttl_seconds)
    assert result is not None
    return result
