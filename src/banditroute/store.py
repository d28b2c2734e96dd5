"""Shared storage of decision records, feedback events and posterior snapshots.

Server processes share what they learn through a ``Store``. ``RedisStore`` keeps it in
Redis, so several processes on one or several hosts learn together. ``MemoryStore``
keeps it in the process with the same behaviour, for a single process and for tests.
Keys of one store live under a namespace::

    <namespace>:decision:<decision id>  hash: a DecisionRecord, expires after the window
    <namespace>:feedback:<decision id>  string: id of the decision's feedback event
    <namespace>:events                  stream of FeedbackEvent and ControlEvent entries
    <namespace>:snapshot                hash: state, last_event_id, applied_events
    <namespace>:snapshot-lock           string: set while one process stores snapshots
    <namespace>:state-id                string: id of the shared state, set by its
                                        first process
    <namespace>:catalog                 string: the shared state's catalog (JSON)

Stream entry ids have the Redis form ``<milliseconds>-<sequence>``; ``"0-0"`` is the
position before the first entry.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import heapq
import json
import logging
import math
import os
import re
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from banditroute.errors import BanditRouteError, ConfigError
from banditroute.events import (
    ControlEvent,
    DecisionRecord,
    EventFormatError,
    FeedbackEvent,
    FeedbackPayload,
    StreamEvent,
    decode_stream_entry,
)

logger = logging.getLogger(__name__)

STREAM_START_ID = "0-0"
"""Position before the first stream entry: read from here to get every event."""

_BULK_CONNECTIONS = 16
"""Connections for blocking reads and snapshot transfers: one per concurrent reader."""

_STREAM_ID_PATTERN = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")

# Redis errors that mean the server cannot serve writes right now (out of memory, a
# read-only replica, failed background save, loading its data) rather than a bug.
_UNAVAILABLE_REPLY_PREFIXES = (
    "OOM",
    "READONLY",
    "MISCONF",
    "MASTERDOWN",
    "NOREPLICAS",
    "LOADING",
)

Result = TypeVar("Result")


class StoreUnavailable(BanditRouteError):
    """The store cannot be reached or did not respond in time.

    The failed call can be retried once the store is back.
    """


@dataclass(frozen=True)
class AppendResult:
    """Outcome of recording feedback: accepted, or a duplicate of earlier feedback."""

    accepted: bool
    """False when the decision already had feedback, which then stays the only one."""
    event_id: str
    """Stream id of the decision's first (and only counted) feedback event."""
    model: str
    """Model of the decision the feedback is about."""


@dataclass(frozen=True)
class Snapshot:
    """A stored posterior: the serialized state and the stream position it covers."""

    state: bytes
    last_event_id: str
    """Id of the last stream entry the state includes."""
    applied_events: int
    """Number of events applied to the state since the stream began."""
    catalog: str = ""
    """The state's catalog (JSON), stored with the snapshot as the shared catalog, so
    that new processes build their policy in its order and with its prices."""
    state_id: str = ""
    """Id of the shared state the snapshot belongs to; the store rejects a snapshot
    of another state. Empty skips the check."""

    def __post_init__(self) -> None:
        stream_id_order(self.last_event_id)
        if self.applied_events < 0:
            raise ValueError(
                f"applied_events={self.applied_events!r} is invalid; "
                "give a non-negative count."
            )


@dataclass(frozen=True)
class StreamInfo:
    """Counters of the event stream, for lag estimates and trimming checks.

    ``entries_added - length`` entries were trimmed, always the oldest ones.
    """

    length: int
    """Entries in the stream now."""
    entries_added: int
    """Entries ever added, trimmed ones included."""
    first_id: str
    """Id of the oldest entry in the stream, ``"0-0"`` when it is empty."""
    last_id: str
    """Id of the newest entry ever added, ``"0-0"`` when none was."""
    state_id: str | None = None
    """Id of the shared state (``Store.claim_state``), None when none is stored."""


def stream_id_order(event_id: str) -> tuple[int, int]:
    """Return ``(milliseconds, sequence)`` of a stream id, for ordering ids.

    ``"0"`` and other ids without a sequence number mean sequence 0.
    """
    match = _STREAM_ID_PATTERN.fullmatch(event_id)
    if match is None:
        raise ValueError(
            f"Stream id {event_id!r} is invalid; use the form "
            "'<milliseconds>-<sequence>', for example '1700000000000-0'."
        )
    return int(match.group(1)), int(match.group(2) or 0)


def store_namespace(
    dimension: int,
    *,
    settings: str = "",
    prefix: str = "banditroute",
) -> str:
    """Return a key namespace for the state of a policy with contexts of this shape.

    The namespace changes with the context dimension and with ``settings``, any
    further text that changes what stored state means (for example the encoder model
    and feature spec). It leaves out the catalog: the shared state keeps its own
    catalog (``Store.claim_state``), so models can be added without losing what
    was learned.
    """
    identity = json.dumps(
        {"dimension": dimension, "settings": settings}, sort_keys=True
    )
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return f"{prefix}:{digest}"


class Store(ABC):
    """Decision records, the feedback event stream and the newest posterior snapshot.

    Every method raises StoreUnavailable when the backing server cannot be reached or
    does not respond in time, and after ``close``.
    """

    description: str
    """Location of the data, for logs: a Redis URL without its password, or "memory"."""

    @abstractmethod
    async def put_decision(self, record: DecisionRecord, ttl_seconds: float) -> None:
        """Store a decision record that expires after ``ttl_seconds``."""

    @abstractmethod
    async def get_decision(self, decision_id: str) -> DecisionRecord | None:
        """Return the stored decision record, or None if it is unknown or expired."""

    @abstractmethod
    async def record_feedback(
        self, payload: FeedbackPayload, ttl_seconds: float
    ) -> AppendResult | None:
        """Append the event of ``payload`` unless its decision already has feedback.

        The event is completed with the decision record's model, context and input
        tokens (see ``FeedbackEvent.from_decision``). Returns None, and appends
        nothing, when the decision record is unknown or expired. The checks and the
        append are one atomic step, so concurrent repeats of the same feedback append
        exactly one event. The store keeps the mark that the decision has feedback
        for ``ttl_seconds``.
        """

    @abstractmethod
    async def read_entries(
        self, after_id: str, *, block_ms: int, count: int
    ) -> list[tuple[str, StreamEvent | None]]:
        """Return up to ``count`` stream entries after ``after_id``, oldest first.

        An entry that cannot be decoded comes back as ``(id, None)``, so that a reader
        can count it and move past it. When no entry is there yet, waits up to
        ``block_ms`` for one; ``block_ms <= 0`` returns at once.
        """

    async def read_events(
        self, after_id: str, *, block_ms: int, count: int
    ) -> list[tuple[str, FeedbackEvent]]:
        """Return the feedback events among the next ``count`` entries, oldest first.

        Like ``read_entries``, but control events and entries that cannot be decoded
        are left out.
        """
        entries = await self.read_entries(after_id, block_ms=block_ms, count=count)
        return [
            (event_id, event)
            for event_id, event in entries
            if isinstance(event, FeedbackEvent)
        ]

    @abstractmethod
    async def append_control(self, event: ControlEvent) -> str:
        """Append a control event to the stream; return its stream id."""

    @abstractmethod
    async def claim_state(self, state_id: str, catalog: str) -> tuple[str, str]:
        """Return the shared state's id and catalog, starting a new state if none is.

        When the store contains no state id, ``state_id`` and ``catalog`` (JSON) become
        the shared state's. Every process builds its policy from the stored catalog,
        so that model indices and prices agree across processes whatever their own
        settings files list. A stored snapshot replaces the catalog with its own.
        """

    @abstractmethod
    async def save_snapshot(self, snapshot: Snapshot, *, lock_ttl_ms: int) -> bool:
        """Store ``snapshot`` as the newest one; return False if it was not stored.

        The store first takes the snapshot lock for ``lock_ttl_ms`` and keeps it
        until it expires, so across all processes at most one snapshot is stored per
        lock period. Returns False when another process holds the lock, or when the
        stored snapshot already covers ``snapshot.last_event_id``.
        """

    @abstractmethod
    async def offer_snapshot(self, snapshot: Snapshot) -> bool:
        """Store ``snapshot`` unless a snapshot is stored; return whether it was.

        Used after the store lost its data: of the processes that offer their
        posterior, exactly one is stored, and the others restore it. The snapshot's
        state id must match the stored one, as in ``save_snapshot``.
        """

    @abstractmethod
    async def load_snapshot(self) -> Snapshot | None:
        """Return the newest stored snapshot, or None if there is none."""

    @abstractmethod
    async def trim_events(self, before_id: str) -> int:
        """Delete the stream entries with ids below ``before_id``; return how many.

        Trimming is the only way entries leave the stream, so the trimmed entries are
        always the oldest ones.
        """

    @abstractmethod
    async def stream_info(self) -> StreamInfo:
        """Return the counters of the event stream."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the store responds; raise StoreUnavailable otherwise."""

    async def check_persistence(self) -> bool | None:
        """Return whether stored data survives a restart of the store; None if unknown.

        Logs a WARNING when it does not.
        """
        return None

    async def other_namespaces(self, prefix: str) -> list[str]:
        """Return other namespaces under ``prefix`` that hold an event stream."""
        return []

    @abstractmethod
    async def close(self) -> None:
        """Release connections; later calls raise StoreUnavailable."""


class MemoryStore(Store):
    """A store inside this process, for a single server process and for tests.

    It behaves like ``RedisStore``, expiry included, with times taken from ``clock``
    (Unix seconds). Stream ids are built from the same clock and stay increasing when
    it goes back. Everything is lost when the process exits.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.description = "memory"
        self._clock = clock
        self._closed = False

        self._decisions: dict[str, tuple[float, dict[str, bytes]]] = {}
        self._feedback_ids: dict[str, tuple[float, str]] = {}
        # (expiry time, key kind, key): expired keys are purged in expiry order.
        self._expiry_queue: list[tuple[float, str, str]] = []

        self._entry_orders: list[tuple[int, int]] = []
        self._entries: list[tuple[str, dict[str, bytes]]] = []
        self._last_order = (0, 0)
        self._entries_added = 0
        self._appended = asyncio.Event()

        self._snapshot: Snapshot | None = None
        self._snapshot_lock_expiry = -math.inf
        self._state_id: str | None = None
        self._catalog = ""

    async def put_decision(self, record: DecisionRecord, ttl_seconds: float) -> None:
        self._check_open()
        expires_at = self._clock() + _checked_ttl(ttl_seconds)
        self._purge_expired()

        self._decisions[record.decision_id] = (expires_at, record.to_fields())
        heapq.heappush(self._expiry_queue, (expires_at, "decision", record.decision_id))

    async def get_decision(self, decision_id: str) -> DecisionRecord | None:
        self._check_open()
        stored = self._decisions.get(decision_id)
        if stored is None or stored[0] <= self._clock():
            return None
        return DecisionRecord.from_fields(stored[1])

    async def record_feedback(
        self, payload: FeedbackPayload, ttl_seconds: float
    ) -> AppendResult | None:
        self._check_open()
        now = self._clock()
        expires_at = now + _checked_ttl(ttl_seconds)
        record = await self.get_decision(payload.decision_id)
        if record is None:
            return None

        decision_id = payload.decision_id
        first = self._feedback_ids.get(decision_id)
        if first is not None and first[0] > now:
            return AppendResult(accepted=False, event_id=first[1], model=record.model)

        event = FeedbackEvent.from_decision(record, payload)
        event_id = self._append_entry(event.to_fields(), now)
        self._feedback_ids[decision_id] = (expires_at, event_id)
        heapq.heappush(self._expiry_queue, (expires_at, "feedback", decision_id))
        return AppendResult(accepted=True, event_id=event_id, model=record.model)

    async def append_control(self, event: ControlEvent) -> str:
        self._check_open()
        return self._append_entry(event.to_fields(), self._clock())

    async def read_entries(
        self, after_id: str, *, block_ms: int, count: int
    ) -> list[tuple[str, StreamEvent | None]]:
        self._check_open()
        after = stream_id_order(after_id)
        entries = self._entries_after(after, count)
        if entries or block_ms <= 0:
            return entries

        appended = self._appended
        try:
            async with asyncio.timeout(block_ms / 1000):
                await appended.wait()
        except TimeoutError:
            return []
        self._check_open()
        return self._entries_after(after, count)

    async def save_snapshot(self, snapshot: Snapshot, *, lock_ttl_ms: int) -> bool:
        self._check_open()
        now = self._clock()
        if now < self._snapshot_lock_expiry:
            return False
        self._snapshot_lock_expiry = now + _checked_lock_ttl_ms(lock_ttl_ms) / 1000

        if snapshot.state_id and snapshot.state_id != self._state_id:
            return False
        stored = self._snapshot
        if stored is not None and stream_id_order(
            stored.last_event_id
        ) >= stream_id_order(snapshot.last_event_id):
            return False
        self._snapshot = snapshot
        if snapshot.catalog:
            self._catalog = snapshot.catalog
        return True

    async def offer_snapshot(self, snapshot: Snapshot) -> bool:
        self._check_open()
        if snapshot.state_id and snapshot.state_id != self._state_id:
            return False
        if self._snapshot is not None:
            return False
        self._snapshot = snapshot
        if snapshot.catalog:
            self._catalog = snapshot.catalog
        return True

    async def claim_state(self, state_id: str, catalog: str) -> tuple[str, str]:
        self._check_open()
        if self._state_id is None:
            self._state_id, self._catalog = state_id, catalog
        return self._state_id, self._catalog

    async def load_snapshot(self) -> Snapshot | None:
        self._check_open()
        return self._snapshot

    async def trim_events(self, before_id: str) -> int:
        self._check_open()
        cut = bisect.bisect_left(self._entry_orders, stream_id_order(before_id))
        if cut == 0:
            return 0

        del self._entry_orders[:cut]
        del self._entries[:cut]
        return cut

    async def stream_info(self) -> StreamInfo:
        self._check_open()
        first_id = self._entries[0][0] if self._entries else STREAM_START_ID
        return StreamInfo(
            length=len(self._entries),
            entries_added=self._entries_added,
            first_id=first_id,
            last_id=_format_stream_id(self._last_order),
            state_id=self._state_id,
        )

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
        # Wake blocked readers, which then raise StoreUnavailable.
        self._appended.set()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(
                "The in-memory store is closed; create a new store to continue."
            )

    def _append_entry(self, fields: dict[str, bytes], now: float) -> str:
        milliseconds = max(int(now * 1000), 0)
        last_milliseconds, last_sequence = self._last_order
        if milliseconds > last_milliseconds:
            order = (milliseconds, 0)
        else:
            order = (last_milliseconds, last_sequence + 1)
        if order == (0, 0):
            order = (0, 1)

        event_id = _format_stream_id(order)
        self._last_order = order
        self._entry_orders.append(order)
        self._entries.append((event_id, fields))
        self._entries_added += 1

        self._appended.set()
        self._appended = asyncio.Event()
        return event_id

    def _entries_after(
        self, after: tuple[int, int], count: int
    ) -> list[tuple[str, StreamEvent | None]]:
        start = bisect.bisect_right(self._entry_orders, after)
        selected = self._entries[start : start + max(count, 1)]
        return [
            (event_id, _decoded_event(event_id, fields))
            for event_id, fields in selected
        ]

    def _purge_expired(self) -> None:
        now = self._clock()
        while self._expiry_queue and self._expiry_queue[0][0] <= now:
            expires_at, kind, key = heapq.heappop(self._expiry_queue)
            table: dict[str, Any] = (
                self._decisions if kind == "decision" else self._feedback_ids
            )
            stored = table.get(key)
            # A key stored again later has a later expiry and stays.
            if stored is not None and stored[0] == expires_at:
                del table[key]


# Appends one feedback event unless its decision is unknown or already has feedback.
# The event takes the model, context, time, cost weight, rollout group and (unless
# reported) input tokens from the decision record. Running as one script makes the
# checks and the append a single atomic step and a single round trip.
# KEYS[1]: the decision record. KEYS[2]: the decision's feedback key.
# KEYS[3]: the event stream.
# ARGV[1]: lifetime of the feedback key in ms. ARGV[2]: reported input tokens, or ''.
# ARGV[3..]: field, value, field, value, ... of the feedback payload.
# Returns {-1} for an unknown decision, {0, id of the first entry, model} for a
# duplicate, and {1, id of the new entry, model} when appended.
_RECORD_FEEDBACK_SCRIPT = """
local decision = redis.call('HMGET', KEYS[1], 'model', 'context', 'input_tokens',
    'created_at', 'cost_weight', 'group')
local model = decision[1]
if not model then
    return {-1}
end
local first_id = redis.call('GET', KEYS[2])
if first_id then
    return {0, first_id, model}
end
local input_tokens = ARGV[2]
if input_tokens == '' then
    input_tokens = decision[3]
end
local event_id = redis.call('XADD', KEYS[3], '*', 'model', model,
    'context', decision[2], 'input_tokens', input_tokens,
    'routed_at', decision[4], 'cost_weight', decision[5],
    'group', decision[6] or 'bandit', unpack(ARGV, 3))
redis.call('SET', KEYS[2], event_id, 'PX', ARGV[1])
return {1, event_id, model}
"""

# Returns the counters of the event stream without its first and last entries, which
# XINFO STREAM sends in full (contexts included) and a reader does not need.
# KEYS[1]: the event stream. KEYS[2]: the state id.
# Returns {length, entries added, first id, last generated id, state id or ''}.
# NOTE: Redis before 7.0 does not report entries-added; the counts then assume that
# nothing was trimmed, so readers do not notice trimming.
_STREAM_INFO_SCRIPT = """
local state_id = redis.call('GET', KEYS[2]) or ''
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {0, 0, '0-0', '0-0', state_id}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local length, added, first_id, last_id = 0, nil, '0-0', '0-0'
for i = 1, #info, 2 do
    local name, value = info[i], info[i + 1]
    if name == 'length' then
        length = value
    elseif name == 'entries-added' then
        added = value
    elseif name == 'last-generated-id' then
        last_id = value
    elseif name == 'first-entry' and value then
        first_id = value[1]
    end
end
return {length, added or length, first_id, last_id, state_id}
"""

# Stores a snapshot unless the stored one already covers a later stream entry, so a
# slow process never replaces a newer snapshot with an older one.
# KEYS[1]: the snapshot hash. KEYS[2]: the shared catalog. KEYS[3]: the state id.
# ARGV[1]: the serialized state. ARGV[2]: id of the last entry the state includes.
# ARGV[3]: number of events applied to the state. ARGV[4]: the state's catalog, or ''.
# ARGV[5]: id of the state the snapshot belongs to, or '' to skip that check.
# ARGV[6]: '1' to store only when no snapshot is stored.
# Returns 1 when stored, 0 when the state id differs or the stored snapshot is not
# older (or exists, with ARGV[6]).
_SAVE_SNAPSHOT_SCRIPT = """
local function order(stream_id)
    local milliseconds, sequence = string.match(stream_id, '^(%d+)-(%d+)$')
    return tonumber(milliseconds), tonumber(sequence)
end
if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[5] then
    return 0
end
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
local stored_id = redis.call('HGET', KEYS[1], 'last_event_id')
if stored_id then
    local stored_ms, stored_seq = order(stored_id)
    local new_ms, new_seq = order(ARGV[2])
    if stored_ms > new_ms or (stored_ms == new_ms and stored_seq >= new_seq) then
        return 0
    end
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'last_event_id', ARGV[2],
    'applied_events', ARGV[3])
if ARGV[4] ~= '' then
    redis.call('SET', KEYS[2], ARGV[4])
end
return 1
"""

# KEYS[1]: the state id. KEYS[2]: the shared catalog.
# ARGV[1]: the id of a new state. ARGV[2]: its catalog.
# Returns {stored state id, stored catalog}, after storing the arguments if no state
# id was stored.
_CLAIM_STATE_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
    redis.call('SET', KEYS[2], ARGV[2])
end
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]) or ''}
"""


class RedisStore(Store):
    """A store in Redis, shared by every process that uses the same URL and namespace.

    Requests use a pool of up to ``max_connections`` connections, and their commands
    time out after ``socket_timeout`` seconds. A caller that finds every connection
    busy waits up to ``socket_timeout`` for one. Blocking stream reads and snapshot
    transfers (about 20 MB with nine models at d = 385) use a second pool, so they
    never hold a connection that a request waits for. A failed command
    is retried once at once on a new connection, which bridges a server restart.
    Needs Redis 7.0 or newer for the stream counters of ``stream_info``.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "banditroute",
        socket_timeout: float = 1.0,
        snapshot_timeout: float = 30.0,
        max_connections: int = 64,
    ) -> None:
        for name, value in (
            ("socket_timeout", socket_timeout),
            ("snapshot_timeout", snapshot_timeout),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}={value!r} is invalid; give seconds above 0.")
        if not namespace:
            raise ConfigError("The Redis key namespace is empty; give a key prefix.")
        if max_connections < 1:
            raise ConfigError(
                f"max_connections={max_connections!r} is invalid; give at least 1."
            )

        self.description = _url_without_password(url)
        self.namespace = namespace
        self.socket_timeout = socket_timeout
        self.snapshot_timeout = snapshot_timeout
        self._closed = False

        self._client = _redis_client(
            url,
            socket_timeout,
            read_timeout=socket_timeout,
            max_connections=max_connections,
        )
        self._bulk_client = _redis_client(
            url,
            socket_timeout,
            read_timeout=None,
            max_connections=_BULK_CONNECTIONS,
        )
        self._record_script = self._client.register_script(_RECORD_FEEDBACK_SCRIPT)
        self._save_script = self._bulk_client.register_script(_SAVE_SNAPSHOT_SCRIPT)
        self._stream_info_script = self._client.register_script(_STREAM_INFO_SCRIPT)
        self._claim_script = self._client.register_script(_CLAIM_STATE_SCRIPT)

        self._events_key = f"{namespace}:events"
        self._snapshot_key = f"{namespace}:snapshot"
        self._catalog_key = f"{namespace}:catalog"
        self._state_id_key = f"{namespace}:state-id"
        self._lock_key = f"{namespace}:snapshot-lock"
        self._lock_owner = f"{socket.gethostname()}:{os.getpid()}"

    def __repr__(self) -> str:
        return f"RedisStore({self.description!r}, namespace={self.namespace!r})"

    async def put_decision(self, record: DecisionRecord, ttl_seconds: float) -> None:
        ttl_ms = _milliseconds(_checked_ttl(ttl_seconds))
        key = self._decision_key(record.decision_id)

        async def write() -> None:
            async with self._client.pipeline(transaction=True) as pipeline:
                fields: dict[Any, Any] = record.to_fields()
                pipeline.hset(key, mapping=fields)
                pipeline.pexpire(key, ttl_ms)
                await pipeline.execute()

        await self._run("storing a decision", write)

    async def get_decision(self, decision_id: str) -> DecisionRecord | None:
        key = self._decision_key(decision_id)
        # The clients do not decode replies, so keys and values are bytes.
        fields = cast(
            dict[bytes, bytes],
            await self._run("reading a decision", lambda: self._client.hgetall(key)),
        )
        if not fields:
            return None
        return DecisionRecord.from_fields(fields)

    async def record_feedback(
        self, payload: FeedbackPayload, ttl_seconds: float
    ) -> AppendResult | None:
        ttl_ms = _milliseconds(_checked_ttl(ttl_seconds))
        reported_input = (
            b"" if payload.input_tokens is None else repr(payload.input_tokens).encode()
        )
        arguments: list[bytes | str | int] = [ttl_ms, reported_input]
        for name, value in payload.to_fields().items():
            arguments += [name, value]
        decision_id = payload.decision_id
        keys = [
            self._decision_key(decision_id),
            self._feedback_key(decision_id),
            self._events_key,
        ]

        reply = await self._run(
            "recording feedback",
            lambda: self._record_script(keys=keys, args=arguments),
        )
        if int(reply[0]) < 0:
            return None
        return AppendResult(
            accepted=int(reply[0]) == 1,
            event_id=_as_text(reply[1]),
            model=_as_text(reply[2]),
        )

    async def append_control(self, event: ControlEvent) -> str:
        fields: dict[Any, Any] = event.to_fields()
        event_id = await self._run(
            "appending a control event",
            lambda: self._client.xadd(self._events_key, fields),
        )
        return _as_text(event_id)

    async def read_entries(
        self, after_id: str, *, block_ms: int, count: int
    ) -> list[tuple[str, StreamEvent | None]]:
        stream_id_order(after_id)
        streams: dict[Any, Any] = {self._events_key: after_id}
        if block_ms > 0:
            reply = await self._run(
                "reading events",
                lambda: self._bulk_client.xread(
                    streams, count=max(count, 1), block=block_ms
                ),
                timeout=block_ms / 1000 + self.socket_timeout,
            )
        else:
            reply = await self._run(
                "reading events",
                lambda: self._client.xread(streams, count=max(count, 1)),
            )
        return [
            (_as_text(event_id), _decoded_event(_as_text(event_id), fields))
            for event_id, fields in _stream_entries(reply)
        ]

    async def save_snapshot(self, snapshot: Snapshot, *, lock_ttl_ms: int) -> bool:
        lock_ttl_ms = _checked_lock_ttl_ms(lock_ttl_ms)
        locked = await self._run(
            "taking the snapshot lock",
            lambda: self._client.set(
                self._lock_key, self._lock_owner, nx=True, px=lock_ttl_ms
            ),
        )
        if not locked:
            return False

        return await self._store_snapshot(snapshot, only_if_absent=False)

    async def offer_snapshot(self, snapshot: Snapshot) -> bool:
        return await self._store_snapshot(snapshot, only_if_absent=True)

    async def _store_snapshot(
        self, snapshot: Snapshot, *, only_if_absent: bool
    ) -> bool:
        keys = [self._snapshot_key, self._catalog_key, self._state_id_key]
        arguments: list[Any] = [
            snapshot.state,
            snapshot.last_event_id,
            snapshot.applied_events,
            snapshot.catalog,
            snapshot.state_id,
            "1" if only_if_absent else "0",
        ]
        stored = await self._run(
            "storing a snapshot",
            lambda: self._save_script(keys=keys, args=arguments),
            timeout=self.snapshot_timeout,
        )
        return bool(stored)

    async def claim_state(self, state_id: str, catalog: str) -> tuple[str, str]:
        keys = [self._state_id_key, self._catalog_key]
        stored_id, stored_catalog = await self._run(
            "claiming the shared state",
            lambda: self._claim_script(keys=keys, args=[state_id, catalog]),
        )
        return _as_text(stored_id), _as_text(stored_catalog)

    async def load_snapshot(self) -> Snapshot | None:
        fields = cast(
            dict[bytes, bytes],
            await self._run(
                "loading the snapshot",
                lambda: self._bulk_client.hgetall(self._snapshot_key),
                timeout=self.snapshot_timeout,
            ),
        )
        if not fields:
            return None

        values: dict[str, bytes] = {
            _as_text(key): value for key, value in fields.items()
        }
        return Snapshot(
            state=values["state"],
            last_event_id=_as_text(values["last_event_id"]),
            applied_events=int(values["applied_events"]),
        )

    async def trim_events(self, before_id: str) -> int:
        stream_id_order(before_id)
        return await self._run(
            "trimming events",
            lambda: self._client.xtrim(
                self._events_key, minid=before_id, approximate=False
            ),
        )

    async def stream_info(self) -> StreamInfo:
        reply = await self._run(
            "reading stream counters",
            lambda: self._stream_info_script(
                keys=[self._events_key, self._state_id_key]
            ),
        )
        length, entries_added, first_id, last_id, state_id = reply
        return StreamInfo(
            length=int(length),
            entries_added=int(entries_added),
            first_id=_as_text(first_id),
            last_id=_as_text(last_id),
            state_id=_as_text(state_id) if state_id else None,
        )

    async def ping(self) -> None:
        await self._run("ping", self._client.ping)

    async def other_namespaces(self, prefix: str) -> list[str]:
        async def scan() -> list[str]:
            found = set()
            pattern = f"{prefix}:*:events"
            async for key in self._client.scan_iter(match=pattern, count=1000):
                namespace = _as_text(key).rsplit(":", 1)[0]
                if namespace != self.namespace:
                    found.add(namespace)
            return sorted(found)

        return await self._run("listing namespaces", scan)

    async def check_persistence(self) -> bool | None:
        async def read_setting() -> Mapping[Any, Any] | None:
            try:
                return await self._client.config_get("appendonly")
            except redis.exceptions.ResponseError as error:
                # Managed Redis services often disable or rename CONFIG.
                logger.info(
                    "Could not read the appendonly setting of Redis at %s (%s); "
                    "make sure it persists data, or feedback can be lost on restart.",
                    self.description,
                    error,
                )
                return None

        setting = await self._run("reading the appendonly setting", read_setting)
        if not setting:
            return None

        values = {_as_text(key): _as_text(value) for key, value in setting.items()}
        enabled = values.get("appendonly") == "yes"
        if not enabled:
            logger.warning(
                "Redis at %s runs with appendonly off: acknowledged feedback can be "
                "lost if it restarts. Turn it on with 'CONFIG SET appendonly yes' and "
                "in its configuration file.",
                self.description,
            )
        return enabled

    async def close(self) -> None:
        self._closed = True
        await self._client.aclose()
        await self._bulk_client.aclose()

    def _decision_key(self, decision_id: str) -> str:
        return f"{self.namespace}:decision:{decision_id}"

    def _feedback_key(self, decision_id: str) -> str:
        return f"{self.namespace}:feedback:{decision_id}"

    async def _run(
        self,
        operation: str,
        call: Callable[[], Awaitable[Result]],
        *,
        timeout: float | None = None,
    ) -> Result:
        """Run one Redis call, turning connection failures into StoreUnavailable."""
        if self._closed:
            raise StoreUnavailable(
                f"The store for Redis at {self.description} is closed; "
                "create a new store to continue."
            )

        try:
            if timeout is None:
                return await call()
            async with asyncio.timeout(timeout):
                return await call()
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            TimeoutError,
            OSError,
        ) as error:
            raise self._unavailable(operation, error) from error
        except redis.exceptions.ResponseError as error:
            if str(error).startswith(_UNAVAILABLE_REPLY_PREFIXES):
                raise self._unavailable(operation, error) from error
            raise

    def _unavailable(self, operation: str, error: BaseException) -> StoreUnavailable:
        reason = str(error).rstrip(".") or type(error).__name__
        return StoreUnavailable(
            f"Redis at {self.description} failed while {operation}: {reason}. "
            "Check that the server is running and reachable; the call can be retried."
        )


def _redis_client(
    url: str,
    connect_timeout: float,
    *,
    read_timeout: float | None,
    max_connections: int,
) -> redis.asyncio.Redis:
    # A blocking pool makes callers beyond max_connections wait for a free
    # connection (up to the read timeout) instead of failing at once.
    try:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=read_timeout,
            socket_timeout=read_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), retries=1),
        )
    except ValueError as error:
        raise ConfigError(
            f"Redis URL {_url_without_password(url)!r} is invalid ({error}); "
            "use the form redis://host:port/db."
        ) from error
    return redis.asyncio.Redis.from_pool(pool)


def _url_without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url

    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _stream_entries(reply: Any) -> list[tuple[Any, Mapping[Any, bytes]]]:
    """Return the entries of an XREAD reply for one stream (RESP2 or RESP3 form)."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        streams = list(reply.values())
        return list(streams[0][0]) if streams else []
    return list(reply[0][1])


def _decoded_event(event_id: str, fields: Mapping[Any, bytes]) -> StreamEvent | None:
    try:
        return decode_stream_entry(fields)
    except EventFormatError as error:
        logger.debug("Stream entry %s cannot be decoded: %s", event_id, error)
        return None


def _format_stream_id(order: tuple[int, int]) -> str:
    return f"{order[0]}-{order[1]}"


def _as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _checked_ttl(ttl_seconds: float) -> float:
    if not (math.isfinite(ttl_seconds) and ttl_seconds > 0):
        raise ConfigError(
            f"ttl_seconds={ttl_seconds!r} is invalid; "
            "give a lifetime in seconds above 0."
        )
    return ttl_seconds


def _checked_lock_ttl_ms(lock_ttl_ms: int) -> int:
    if lock_ttl_ms < 1:
        raise ConfigError(
            f"lock_ttl_ms={lock_ttl_ms!r} is invalid; give a lock lifetime of at least "
            "1 ms."
        )
    return int(lock_ttl_ms)
