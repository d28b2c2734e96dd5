"""Decision records and feedback events, and their field encoding for Redis.

A decision record is written when a request is routed and read back when its feedback
arrives. A feedback event is what the posterior learns from: every server process
applies the same events in stream order. Both travel as flat field maps of bytes
(a Redis hash or stream entry). Floats are written with ``repr`` so that they read back
bit for bit, and contexts are little-endian float32 bytes (1,540 bytes at d = 385).
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from banditroute.errors import BanditRouteError

CONTEXT_DTYPE = np.dtype("<f4")
"""Wire type of context vectors: float32, the type the feature builder produces."""

FEEDBACK_SOURCES = ("user", "judge")
ROLLOUT_GROUPS = ("bandit", "default")

_DECISION_INTEGERS = ("input_tokens", "posterior_version")
_DECISION_NUMBERS = ("propensity", "cost_weight", "expected_cost_usd", "created_at")
_FEEDBACK_NUMBERS = (
    "quality",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "received_at",
)

_FEEDBACK_KIND = b"feedback"
_CONTROL_KIND = b"control"

_DECISION_ID_TOKEN_BYTES = 16
_DECISION_ID_PATTERN = re.compile(r"(\d{1,15})\.([A-Za-z0-9_-]{22})")


_FieldMap = Mapping[bytes, bytes] | Mapping[str, bytes]
"""A field map as written by ``to_fields`` or as a Redis client returns it."""


class EventFormatError(BanditRouteError, ValueError):
    """A decision record or feedback event has a missing or invalid field."""


@dataclass(frozen=True)
class DecisionRecord:
    """Record of the model chosen for one request, kept until its feedback arrives."""

    decision_id: str
    model: str
    context: np.ndarray
    """Context vector of the request, float32 of shape (dimension,)."""
    input_tokens: int
    propensity: float
    cost_weight: float
    expected_cost_usd: float
    """Expected cost in USD of the chosen model."""
    created_at: float
    """Unix time in seconds."""
    posterior_version: int
    """Number of feedback events the deciding process had applied."""
    group: str = "bandit"
    """Rollout group: "bandit" when the policy chose, else "default"."""

    def __post_init__(self) -> None:
        _coerce_fields(self, integers=_DECISION_INTEGERS, numbers=_DECISION_NUMBERS)
        _check_group(self.group)
        _check_text("decision_id", self.decision_id)
        _check_text("model", self.model)
        _check_count("input_tokens", self.input_tokens)
        _check_count("posterior_version", self.posterior_version)
        if not (0.0 < self.propensity <= 1.0):
            raise EventFormatError(
                f"propensity={self.propensity!r} is invalid; a choice probability "
                "must be in (0, 1]."
            )
        _check_non_negative("cost_weight", self.cost_weight)
        _check_non_negative("expected_cost_usd", self.expected_cost_usd)
        _check_finite("created_at", self.created_at)

    def to_fields(self) -> dict[str, bytes]:
        """Encode the record as a field map for a Redis hash."""
        return {
            "decision_id": self.decision_id.encode(),
            "model": self.model.encode(),
            "context": self.context.tobytes(),
            "input_tokens": str(self.input_tokens).encode(),
            "propensity": _number_bytes(self.propensity),
            "cost_weight": _number_bytes(self.cost_weight),
            "expected_cost_usd": _number_bytes(self.expected_cost_usd),
            "created_at": _number_bytes(self.created_at),
            "posterior_version": str(self.posterior_version).encode(),
            "group": self.group.encode(),
        }

    @classmethod
    def from_fields(cls, fields: _FieldMap) -> DecisionRecord:
        """Decode a field map written by ``to_fields``.

        Raises EventFormatError naming the first missing or invalid field.
        """
        reader = _FieldReader(fields, "decision record")
        return cls(
            decision_id=reader.text("decision_id"),
            model=reader.text("model"),
            context=reader.context("context"),
            input_tokens=reader.integer("input_tokens"),
            propensity=reader.number("propensity"),
            cost_weight=reader.number("cost_weight"),
            expected_cost_usd=reader.number("expected_cost_usd"),
            created_at=reader.number("created_at"),
            posterior_version=reader.integer("posterior_version"),
            group=reader.optional_text("group") or "bandit",
        )


@dataclass(frozen=True)
class FeedbackPayload:
    """The part of a feedback event that the feedback request sets.

    The store completes the event with the decision record's model, context and
    estimated input tokens in the same atomic step that checks for a repeat, so that
    recording feedback takes one round trip.
    """

    decision_id: str
    quality: float | None
    """Quality in [0, 1]; None when only an error or usage was reported."""
    input_tokens: float | None
    """Prompt tokens the client reported; None to keep the estimate made at routing."""
    output_tokens: float | None
    cost_usd: float | None
    """Cost the client reported; None to price the usage at list prices."""
    error: bool
    """True when the routed call failed."""
    source: str
    """Rater of the response: "user" or "judge"."""
    latency_ms: float | None
    received_at: float
    """Unix time in seconds."""

    def __post_init__(self) -> None:
        _check_feedback_values(self)

    def to_fields(self) -> dict[str, bytes]:
        """Encode the payload's fields of a stream entry, input tokens aside.

        A None value is written as an empty field, so every event has the same fields.
        """
        return _feedback_fields(self)


@dataclass(frozen=True)
class FeedbackEvent:
    """One piece of feedback on a routed request, as the posterior learns it."""

    decision_id: str
    model: str
    context: np.ndarray
    """Context vector of the request, float32 of shape (dimension,)."""
    quality: float | None
    """Quality in [0, 1]; None when only an error or usage was reported."""
    output_tokens: float | None
    cost_usd: float | None
    """Cost the client reported; None when it reported none."""
    error: bool
    """True when the routed call failed."""
    source: str
    """Rater of the response: "user" or "judge"."""
    latency_ms: float | None
    received_at: float
    """Unix time in seconds."""
    input_tokens: float | None = None
    """Prompt tokens: as reported with the feedback, else as estimated at routing."""
    routed_at: float | None = None
    """Unix time in seconds of the decision; None for events of older versions."""
    cost_weight: float | None = None
    """Cost weight the decision was made with; None for events of older versions."""
    group: str = "bandit"
    """Rollout group of the decision."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", _checked_context(self.context))
        _check_text("model", self.model)
        _check_feedback_values(self)
        _check_group(self.group)
        for name in ("routed_at", "cost_weight"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))
                _check_finite(name, value)

    @classmethod
    def from_decision(
        cls, record: DecisionRecord, payload: FeedbackPayload
    ) -> FeedbackEvent:
        """Complete ``payload`` with the model, context and tokens of its decision."""
        input_tokens = (
            float(record.input_tokens)
            if payload.input_tokens is None
            else payload.input_tokens
        )
        return cls(
            decision_id=payload.decision_id,
            model=record.model,
            context=record.context,
            quality=payload.quality,
            output_tokens=payload.output_tokens,
            cost_usd=payload.cost_usd,
            error=payload.error,
            source=payload.source,
            latency_ms=payload.latency_ms,
            received_at=payload.received_at,
            input_tokens=input_tokens,
            routed_at=record.created_at,
            cost_weight=record.cost_weight,
            group=record.group,
        )

    def to_fields(self) -> dict[str, bytes]:
        """Encode the event as a field map for a Redis stream entry.

        A None value is written as an empty field, so every event has the same fields.
        """
        return {
            "model": self.model.encode(),
            "context": self.context.tobytes(),
            "input_tokens": _optional_number_bytes(self.input_tokens),
            "routed_at": _optional_number_bytes(self.routed_at),
            "cost_weight": _optional_number_bytes(self.cost_weight),
            "group": self.group.encode(),
            **_feedback_fields(self),
        }

    @classmethod
    def from_fields(cls, fields: _FieldMap) -> FeedbackEvent:
        """Decode a field map written by ``to_fields``.

        Raises EventFormatError naming the first missing or invalid field.
        """
        reader = _FieldReader(fields, "feedback event")
        return cls(
            decision_id=reader.text("decision_id"),
            model=reader.text("model"),
            context=reader.context("context"),
            quality=reader.optional_number("quality"),
            output_tokens=reader.optional_number("output_tokens"),
            cost_usd=reader.optional_number("cost_usd"),
            error=reader.flag("error"),
            source=reader.text("source"),
            latency_ms=reader.optional_number("latency_ms"),
            received_at=reader.number("received_at"),
            input_tokens=reader.added_number("input_tokens"),
            routed_at=reader.added_number("routed_at"),
            cost_weight=reader.added_number("cost_weight"),
            group=reader.optional_text("group") or "bandit",
        )


CONTROL_ACTIONS = (
    "add_model",
    "disable_model",
    "enable_model",
    "set_prices",
    "set_rollout",
    "set_budget",
)
"""Changes of the shared routing setup that a control event can carry."""


@dataclass(frozen=True)
class ControlEvent:
    """A change of the routing setup that every process applies in stream order.

    Control events share the stream with feedback events, so that every process applies
    a change at the same position among the feedback and ends in the same state.
    """

    action: str
    """One of ``CONTROL_ACTIONS``."""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    """JSON-compatible arguments of the action."""
    issued_at: float = 0.0
    """Unix time in seconds."""

    def __post_init__(self) -> None:
        if self.action not in CONTROL_ACTIONS:
            raise EventFormatError(
                f"action={self.action!r} is invalid; use one of "
                f"{list(CONTROL_ACTIONS)}."
            )
        if not isinstance(self.arguments, Mapping):
            raise EventFormatError(
                f"arguments={self.arguments!r} is invalid; give a JSON object."
            )
        _check_finite("issued_at", float(self.issued_at))

    def to_fields(self) -> dict[str, bytes]:
        """Encode the event as a field map for a Redis stream entry."""
        return {
            "kind": _CONTROL_KIND,
            "action": self.action.encode(),
            "arguments": json.dumps(dict(self.arguments), sort_keys=True).encode(),
            "issued_at": _number_bytes(self.issued_at),
        }

    @classmethod
    def from_fields(cls, fields: _FieldMap) -> ControlEvent:
        """Decode a field map written by ``to_fields``.

        Raises EventFormatError naming the first missing or invalid field.
        """
        reader = _FieldReader(fields, "control event")
        raw_arguments = reader.raw("arguments")
        try:
            arguments = json.loads(raw_arguments)
        except ValueError:
            raise reader._invalid("arguments") from None
        return cls(
            action=reader.text("action"),
            arguments=arguments,
            issued_at=reader.number("issued_at"),
        )


StreamEvent = FeedbackEvent | ControlEvent
"""An entry of the shared event stream."""


def decode_stream_entry(fields: _FieldMap) -> StreamEvent:
    """Decode a stream entry as a control event or, without a kind, as feedback.

    Raises EventFormatError naming the first missing or invalid field.
    """
    # Redis clients return bytes keys, to_fields writes str keys.
    kind = fields.get(b"kind", fields.get("kind"))  # type: ignore[call-overload]
    if kind is None or kind == _FEEDBACK_KIND:
        return FeedbackEvent.from_fields(fields)
    if kind == _CONTROL_KIND:
        return ControlEvent.from_fields(fields)
    raise EventFormatError(
        f"The stream entry has the unknown kind {kind!r}; it was written by a newer "
        "version or is damaged."
    )


def new_decision_id(now: float) -> str:
    """Create an unguessable decision id that embeds its creation time.

    The id is ``<unix time in ms>.<22 random URL-safe characters>`` (128 random bits),
    so ``decision_id_time`` can tell an expired id from one that never existed.
    """
    milliseconds = int(now * 1000)
    if milliseconds < 0:
        raise ValueError(f"now={now!r} is before 1970; pass the current Unix time.")

    return f"{milliseconds}.{secrets.token_urlsafe(_DECISION_ID_TOKEN_BYTES)}"


def decision_id_time(decision_id: str) -> float | None:
    """Return the creation time in Unix seconds embedded in a decision id.

    Returns None when the id does not have the form that ``new_decision_id`` creates.
    """
    match = _DECISION_ID_PATTERN.fullmatch(decision_id)
    if match is None:
        return None
    return int(match.group(1)) / 1000


class _FieldReader:
    """Reads typed fields from a field map, naming the field in every error."""

    def __init__(self, fields: _FieldMap, kind: str) -> None:
        self.fields: dict[str, bytes] = {
            _as_text(key): value for key, value in fields.items()
        }
        self.kind = kind

    def raw(self, name: str) -> bytes:
        try:
            value = self.fields[name]
        except KeyError:
            raise EventFormatError(
                f"The {self.kind} has no field {name!r}; it was written by an "
                "incompatible version or is damaged."
            ) from None
        return value.encode() if isinstance(value, str) else bytes(value)

    def text(self, name: str) -> str:
        try:
            return self.raw(name).decode()
        except UnicodeDecodeError:
            raise self._invalid(name) from None

    def optional_text(self, name: str) -> str | None:
        """Return the field's text, or None when an older version did not write it."""
        if name not in self.fields:
            return None
        return self.text(name)

    def added_number(self, name: str) -> float | None:
        """Return the number, or None when empty or not written by an older version."""
        if name not in self.fields:
            return None
        return self.optional_number(name)

    def number(self, name: str) -> float:
        try:
            return float(self.raw(name))
        except ValueError:
            raise self._invalid(name) from None

    def optional_number(self, name: str) -> float | None:
        if self.raw(name) == b"":
            return None
        return self.number(name)

    def integer(self, name: str) -> int:
        try:
            return int(self.raw(name))
        except ValueError:
            raise self._invalid(name) from None

    def flag(self, name: str) -> bool:
        value = self.raw(name)
        if value not in (b"0", b"1"):
            raise self._invalid(name)
        return value == b"1"

    def context(self, name: str) -> np.ndarray:
        value = self.raw(name)
        if len(value) == 0 or len(value) % CONTEXT_DTYPE.itemsize:
            raise self._invalid(name)
        return np.frombuffer(value, dtype=CONTEXT_DTYPE)

    def _invalid(self, name: str) -> EventFormatError:
        shown = self.fields[name][:40]
        return EventFormatError(
            f"The {self.kind} has the invalid value {shown!r} in field {name!r}; "
            "it was written by an incompatible version or is damaged."
        )


def _as_text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _number_bytes(value: float) -> bytes:
    return repr(float(value)).encode()


def _optional_number_bytes(value: float | None) -> bytes:
    return b"" if value is None else _number_bytes(value)


def _coerce_fields(
    record: DecisionRecord,
    *,
    integers: tuple[str, ...],
    numbers: tuple[str, ...],
) -> None:
    # NumPy scalars become Python numbers, so that ``repr`` writes plain digits, and
    # the context becomes a private float32 copy that later changes by the caller
    # cannot reach.
    object.__setattr__(record, "context", _checked_context(record.context))
    for name in integers:
        value = getattr(record, name)
        if isinstance(value, np.integer):
            object.__setattr__(record, name, int(value))
    _coerce_numbers(record, numbers)


def _coerce_numbers(
    record: DecisionRecord | FeedbackPayload | FeedbackEvent, names: tuple[str, ...]
) -> None:
    """Turn the fields ``names`` of ``record`` into floats, leaving None as it is."""
    for name in names:
        value = getattr(record, name)
        if value is None:
            continue
        try:
            object.__setattr__(record, name, float(value))
        except (TypeError, ValueError):
            raise EventFormatError(
                f"{name}={value!r} is invalid; give a number."
            ) from None


def _feedback_fields(feedback: FeedbackPayload | FeedbackEvent) -> dict[str, bytes]:
    """Encode the fields that the feedback request decides."""
    return {
        "decision_id": feedback.decision_id.encode(),
        "quality": _optional_number_bytes(feedback.quality),
        "output_tokens": _optional_number_bytes(feedback.output_tokens),
        "cost_usd": _optional_number_bytes(feedback.cost_usd),
        "error": b"1" if feedback.error else b"0",
        "source": feedback.source.encode(),
        "latency_ms": _optional_number_bytes(feedback.latency_ms),
        "received_at": _number_bytes(feedback.received_at),
    }


def _check_feedback_values(feedback: FeedbackPayload | FeedbackEvent) -> None:
    """Coerce and check the fields that a payload and an event share."""
    _coerce_numbers(feedback, _FEEDBACK_NUMBERS)
    object.__setattr__(feedback, "error", bool(feedback.error))

    _check_text("decision_id", feedback.decision_id)
    if feedback.quality is not None and not (0.0 <= feedback.quality <= 1.0):
        raise EventFormatError(
            f"quality={feedback.quality!r} is invalid; give a value in [0, 1] or None."
        )
    for name in ("input_tokens", "output_tokens", "cost_usd", "latency_ms"):
        value = getattr(feedback, name)
        if value is not None:
            _check_non_negative(name, value)
    if feedback.source not in FEEDBACK_SOURCES:
        raise EventFormatError(
            f"source={feedback.source!r} is invalid; "
            f"use one of {list(FEEDBACK_SOURCES)}."
        )
    _check_finite("received_at", feedback.received_at)


def _checked_context(context: np.ndarray) -> np.ndarray:
    try:
        array = np.array(context, dtype=CONTEXT_DTYPE, copy=True)
    except (TypeError, ValueError):
        raise EventFormatError(
            f"context of type {type(context).__name__} is invalid; pass a float vector."
        ) from None
    if array.ndim != 1 or array.size == 0:
        raise EventFormatError(
            f"context has shape {array.shape}; pass one context vector of shape "
            "(dimension,)."
        )
    if not np.isfinite(array).all():
        raise EventFormatError(
            "context contains NaN or infinite values; "
            "build it with the feature builder."
        )
    return array


def _check_group(group: str) -> None:
    if group not in ROLLOUT_GROUPS:
        raise EventFormatError(
            f"group={group!r} is invalid; use one of {list(ROLLOUT_GROUPS)}."
        )


def _check_text(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise EventFormatError(f"{name}={value!r} is invalid; give a non-empty string.")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise EventFormatError(
            f"{name}={value!r} is invalid; give a non-negative integer."
        )


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise EventFormatError(f"{name}={value!r} is invalid; give a finite number.")


def _check_non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise EventFormatError(
            f"{name}={value!r} is invalid; give a finite number of at least 0."
        )
