"""Tests of decision records, feedback events and decision ids."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from banditroute.events import (
    ControlEvent,
    DecisionRecord,
    EventFormatError,
    FeedbackEvent,
    decision_id_time,
    decode_stream_entry,
    new_decision_id,
)

NOW = 1_733_330_000.123


def make_record(**changes) -> DecisionRecord:
    values = dict(
        decision_id=new_decision_id(NOW),
        model="small",
        context=np.array([1.0, 0.1, -0.2, 1 / 3], dtype=np.float32),
        input_tokens=120,
        propensity=0.3,
        cost_weight=2.5,
        expected_cost_usd=0.1 + 0.2,
        created_at=NOW,
        posterior_version=42,
    )
    values.update(changes)
    return DecisionRecord(**values)


def make_event(**changes) -> FeedbackEvent:
    values = dict(
        decision_id=new_decision_id(NOW),
        model="large",
        context=np.array([1.0, 0.5, 0.25], dtype=np.float32),
        quality=0.7,
        output_tokens=512.0,
        cost_usd=0.004,
        error=False,
        source="user",
        latency_ms=830.5,
        received_at=NOW + 3,
    )
    values.update(changes)
    return FeedbackEvent(**values)


def as_bytes_keys(fields: dict[str, bytes]) -> dict[bytes, bytes]:
    """The field map as a Redis client returns it: bytes keys."""
    return {key.encode(): value for key, value in fields.items()}


def test_decision_record_round_trip_is_exact():
    record = make_record()

    decoded = DecisionRecord.from_fields(as_bytes_keys(record.to_fields()))

    assert decoded.decision_id == record.decision_id
    assert decoded.model == record.model
    assert decoded.context.dtype == np.float32
    assert np.array_equal(decoded.context, record.context)
    assert decoded.input_tokens == 120
    assert decoded.propensity == 0.3
    assert decoded.cost_weight == 2.5
    assert decoded.expected_cost_usd == 0.1 + 0.2
    assert decoded.created_at == NOW
    assert decoded.posterior_version == 42


def test_decision_record_reads_text_keys():
    record = make_record()

    decoded = DecisionRecord.from_fields(record.to_fields())

    assert decoded.decision_id == record.decision_id


def test_feedback_event_round_trip_is_exact():
    event = make_event()

    decoded = FeedbackEvent.from_fields(as_bytes_keys(event.to_fields()))

    assert decoded.decision_id == event.decision_id
    assert decoded.model == "large"
    assert np.array_equal(decoded.context, event.context)
    assert decoded.quality == 0.7
    assert decoded.output_tokens == 512.0
    assert decoded.cost_usd == 0.004
    assert decoded.error is False
    assert decoded.source == "user"
    assert decoded.latency_ms == 830.5
    assert decoded.received_at == NOW + 3


def test_feedback_event_keeps_missing_values_as_none():
    event = make_event(
        quality=None, output_tokens=None, cost_usd=None, latency_ms=None, error=True
    )

    decoded = FeedbackEvent.from_fields(event.to_fields())

    assert decoded.quality is None
    assert decoded.output_tokens is None
    assert decoded.cost_usd is None
    assert decoded.latency_ms is None
    assert decoded.error is True


def test_numpy_scalars_are_written_as_plain_numbers():
    record = make_record(propensity=np.float64(0.25), input_tokens=np.int64(7))

    fields = record.to_fields()

    assert fields["propensity"] == b"0.25"
    assert fields["input_tokens"] == b"7"


def test_context_is_float32_copy_of_the_input():
    context = np.array([1.0, 0.5, 0.25], dtype=np.float64)

    event = make_event(context=context)
    context[1] = 99.0

    assert event.context.dtype == np.float32
    assert event.context[1] == 0.5


def test_context_takes_four_bytes_per_value():
    record = make_record(context=np.ones(385, dtype=np.float32))

    assert len(record.to_fields()["context"]) == 1540


def test_missing_field_is_named():
    fields = make_event().to_fields()
    del fields["quality"]

    with pytest.raises(EventFormatError, match="'quality'"):
        FeedbackEvent.from_fields(fields)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quality", b"high"),
        ("error", b"yes"),
        ("context", b"abc"),
        ("context", b""),
        ("received_at", b""),
    ],
)
def test_invalid_field_value_is_named(field, value):
    fields = make_event().to_fields()
    fields[field] = value

    with pytest.raises(EventFormatError, match=repr(field)):
        FeedbackEvent.from_fields(fields)


@pytest.mark.parametrize(
    "changes",
    [
        {"quality": 1.5},
        {"quality": -0.1},
        {"quality": math.nan},
        {"output_tokens": -1.0},
        {"cost_usd": math.inf},
        {"latency_ms": -5.0},
        {"source": "robot"},
        {"model": ""},
        {"context": np.ones((2, 3))},
        {"context": np.array([1.0, np.nan])},
        {"received_at": math.nan},
    ],
)
def test_invalid_feedback_event_is_rejected(changes):
    with pytest.raises(EventFormatError):
        make_event(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"propensity": 0.0},
        {"propensity": 1.5},
        {"input_tokens": -1},
        {"posterior_version": 1.5},
        {"cost_weight": -1.0},
        {"expected_cost_usd": math.nan},
        {"decision_id": ""},
    ],
)
def test_invalid_decision_record_is_rejected(changes):
    with pytest.raises(EventFormatError):
        make_record(**changes)


def test_decision_id_embeds_creation_time_in_ms():
    decision_id = new_decision_id(NOW)

    assert decision_id_time(decision_id) == 1_733_330_000.123


def test_decision_ids_are_unique():
    ids = {new_decision_id(NOW) for _ in range(1000)}

    assert len(ids) == 1000


def test_decision_id_is_url_safe():
    decision_id = new_decision_id(NOW)

    assert all(c.isalnum() or c in "-_." for c in decision_id)


@pytest.mark.parametrize(
    "decision_id",
    [
        "",
        "abc",
        "1733330000123",
        "1733330000123.",
        "1733330000123.short",
        ".AAAAAAAAAAAAAAAAAAAAAA",
        "x733330000123.AAAAAAAAAAAAAAAAAAAAAA",
        "1733330000123.AAAAAAAAAAAAAAAAAAAAA!",
        "1733330000123.AAAAAAAAAAAAAAAAAAAAAA.extra",
        "9" * 40 + ".AAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_malformed_decision_id_has_no_time(decision_id):
    assert decision_id_time(decision_id) is None


def test_control_event_round_trip():
    event = ControlEvent(
        "add_model",
        {"name": "new", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2},
        issued_at=1_700_000_000.25,
    )

    decoded = decode_stream_entry(event.to_fields())

    assert decoded == event


def test_entry_without_kind_decodes_as_feedback():
    event = make_event()

    decoded = decode_stream_entry(event.to_fields())

    assert isinstance(decoded, FeedbackEvent)
    assert decoded.decision_id == event.decision_id


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": b"mystery"}, "unknown kind"),
        (
            {
                "kind": b"control",
                "action": b"explode",
                "arguments": b"{}",
                "issued_at": b"1.0",
            },
            "action='explode'",
        ),
        (
            {"kind": b"control", "action": b"set_budget", "issued_at": b"1.0"},
            "no field 'arguments'",
        ),
        (
            {
                "kind": b"control",
                "action": b"set_budget",
                "arguments": b"{not json",
                "issued_at": b"1.0",
            },
            "invalid value",
        ),
    ],
)
def test_bad_stream_entry_names_the_problem(fields, message):
    with pytest.raises(EventFormatError, match=re.escape(message)):
        decode_stream_entry(fields)
