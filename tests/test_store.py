"""Tests of the stores: the same behaviour in memory and in a real Redis.

Tests parametrized over ``store_kind`` run against MemoryStore and RedisStore alike.
Redis tests use the machine's Redis under a namespace of their own, except those that
stop or reconfigure the server, which start a private redis-server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import pytest
import redis.asyncio
from redis_server import RedisServer
from stored_events import append_event, append_repeat, payload_of

from banditroute.catalog import Catalog, ModelSpec
from banditroute.errors import ConfigError
from banditroute.events import (
    ControlEvent,
    DecisionRecord,
    FeedbackEvent,
    new_decision_id,
)
from banditroute.store import (
    STREAM_START_ID,
    MemoryStore,
    RedisStore,
    Snapshot,
    Store,
    StoreUnavailable,
    store_namespace,
    stream_id_order,
)

pytestmark = pytest.mark.anyio

NOW = 1_733_330_000.0
WINDOW_SECONDS = 60.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """A clock that moves only when a test advances it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class StoreUnderTest:
    store: Store
    wait: Callable[[float], Awaitable[None]]
    """Lets ``seconds`` pass for the store: advances a fake clock or sleeps."""


@pytest.fixture(params=["memory", "redis"])
async def store_kind(request, anyio_backend):
    if request.param == "memory":
        clock = FakeClock(NOW)

        async def advance(seconds: float) -> None:
            clock.now += seconds

        store: Store = MemoryStore(clock=clock)
        under_test = StoreUnderTest(store, advance)
    else:
        url = request.getfixturevalue("redis_url")
        namespace = request.getfixturevalue("redis_namespace")
        store = RedisStore(url, namespace=namespace)
        under_test = StoreUnderTest(store, asyncio.sleep)

    yield under_test
    await store.close()


def make_record(decision_id: str | None = None) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id or new_decision_id(time.time()),
        model="small",
        context=np.array([1.0, 0.2, -0.4], dtype=np.float32),
        input_tokens=50,
        propensity=0.8,
        cost_weight=1.0,
        expected_cost_usd=0.002,
        created_at=time.time(),
        posterior_version=3,
    )


def make_event(decision_id: str | None = None, quality: float = 0.5) -> FeedbackEvent:
    return FeedbackEvent(
        decision_id=decision_id or new_decision_id(time.time()),
        model="small",
        context=np.array([1.0, 0.2, -0.4], dtype=np.float32),
        quality=quality,
        output_tokens=200.0,
        cost_usd=None,
        error=False,
        source="user",
        latency_ms=None,
        received_at=time.time(),
    )


# Behaviour shared by both stores.


async def test_decision_round_trip(store_kind):
    store = store_kind.store
    record = make_record()

    await store.put_decision(record, WINDOW_SECONDS)
    stored = await store.get_decision(record.decision_id)

    assert stored is not None
    assert stored.decision_id == record.decision_id
    assert np.array_equal(stored.context, record.context)
    assert stored.posterior_version == 3


async def test_unknown_decision_is_none(store_kind):
    assert await store_kind.store.get_decision(new_decision_id(NOW)) is None


async def test_decision_expires_after_ttl(store_kind):
    store = store_kind.store
    record = make_record()

    await store.put_decision(record, ttl_seconds=0.2)
    before = await store.get_decision(record.decision_id)
    await store_kind.wait(0.35)
    after = await store.get_decision(record.decision_id)

    assert before is not None
    assert after is None


async def test_first_feedback_is_accepted(store_kind):
    result = await append_event(store_kind.store, make_event(), WINDOW_SECONDS)

    assert result.accepted is True
    assert stream_id_order(result.event_id) > (0, 0)


async def test_feedback_for_unknown_decision_appends_nothing(store_kind):
    store = store_kind.store

    result = await store.record_feedback(payload_of(make_event()), WINDOW_SECONDS)
    entries = await store.read_events(STREAM_START_ID, block_ms=0, count=10)

    assert result is None
    assert entries == []


async def test_event_copies_decision_fields(store_kind):
    store = store_kind.store
    record = dataclasses.replace(make_record(), group="default")
    await store.put_decision(record, WINDOW_SECONDS)
    payload = payload_of(make_event(record.decision_id))

    result = await store.record_feedback(payload, WINDOW_SECONDS)
    [(_, event)] = await store.read_events(STREAM_START_ID, block_ms=0, count=10)

    assert result is not None
    assert result.model == record.model
    assert event.model == record.model
    assert np.array_equal(event.context, record.context)
    assert event.input_tokens == record.input_tokens
    assert event.routed_at == record.created_at
    assert event.cost_weight == record.cost_weight
    assert event.group == record.group


async def test_reported_input_tokens_replace_the_estimate(store_kind):
    store = store_kind.store
    record = make_record()
    await store.put_decision(record, WINDOW_SECONDS)
    payload = dataclasses.replace(
        payload_of(make_event(record.decision_id)), input_tokens=4321
    )

    await store.record_feedback(payload, WINDOW_SECONDS)
    [(_, event)] = await store.read_events(STREAM_START_ID, block_ms=0, count=10)

    assert event.input_tokens == 4321


async def test_repeated_feedback_returns_first_event_id(store_kind):
    store = store_kind.store
    decision_id = new_decision_id(time.time())

    first = await append_event(store, make_event(decision_id, 0.9), WINDOW_SECONDS)
    repeat = await append_event(store, make_event(decision_id, 0.1), WINDOW_SECONDS)
    entries = await store.read_events(STREAM_START_ID, block_ms=0, count=10)

    assert repeat.accepted is False
    assert repeat.event_id == first.event_id
    assert [event.quality for _, event in entries] == [0.9]


async def test_concurrent_repeats_append_one_event(store_kind):
    store = store_kind.store
    event = make_event()

    results = await asyncio.gather(
        *(append_event(store, event, WINDOW_SECONDS) for _ in range(50))
    )
    entries = await store.read_events(STREAM_START_ID, block_ms=0, count=100)

    assert sum(result.accepted for result in results) == 1
    assert len({result.event_id for result in results}) == 1
    assert len(entries) == 1


async def test_events_are_read_in_append_order(store_kind):
    store = store_kind.store
    qualities = [0.0, 0.25, 0.5, 0.75, 1.0]
    appended = [
        await append_event(store, make_event(quality=q), WINDOW_SECONDS)
        for q in qualities
    ]

    entries = await store.read_events(STREAM_START_ID, block_ms=0, count=10)

    assert [event_id for event_id, _ in entries] == [r.event_id for r in appended]
    assert [event.quality for _, event in entries] == qualities


async def test_event_fields_survive_the_stream(store_kind):
    store = store_kind.store
    event = make_event()

    await append_event(store, event, WINDOW_SECONDS)
    [(_, stored)] = await store.read_events(STREAM_START_ID, block_ms=0, count=1)

    assert stored.decision_id == event.decision_id
    assert np.array_equal(stored.context, event.context)
    assert stored.output_tokens == 200.0
    assert stored.received_at == event.received_at


async def test_read_starts_after_the_given_id(store_kind):
    store = store_kind.store
    appended = [
        await append_event(store, make_event(), WINDOW_SECONDS) for _ in range(5)
    ]

    entries = await store.read_events(appended[1].event_id, block_ms=0, count=2)

    assert [event_id for event_id, _ in entries] == [
        appended[2].event_id,
        appended[3].event_id,
    ]


async def test_read_at_the_end_returns_nothing(store_kind):
    store = store_kind.store
    last = await append_event(store, make_event(), WINDOW_SECONDS)

    assert await store.read_events(last.event_id, block_ms=0, count=10) == []


async def test_blocking_read_returns_a_new_event(store_kind):
    store = store_kind.store
    last = await append_event(store, make_event(), WINDOW_SECONDS)

    reader = asyncio.create_task(
        store.read_events(last.event_id, block_ms=3000, count=10)
    )
    await asyncio.sleep(0.05)
    started = time.monotonic()
    appended = await append_event(store, make_event(), WINDOW_SECONDS)
    entries = await reader
    elapsed = time.monotonic() - started

    assert [event_id for event_id, _ in entries] == [appended.event_id]
    assert elapsed < 1.0


async def test_blocking_read_times_out_empty(store_kind):
    started = time.monotonic()
    entries = await store_kind.store.read_events(
        STREAM_START_ID, block_ms=150, count=10
    )
    elapsed = time.monotonic() - started

    assert entries == []
    assert elapsed >= 0.14


async def test_no_snapshot_loads_none(store_kind):
    assert await store_kind.store.load_snapshot() is None


async def test_snapshot_round_trip(store_kind):
    store = store_kind.store
    state = bytes(range(256)) * 1000
    snapshot = Snapshot(state=state, last_event_id="1700000000000-3", applied_events=9)

    saved = await store.save_snapshot(snapshot, lock_ttl_ms=1000)
    loaded = await store.load_snapshot()

    assert saved is True
    assert loaded == snapshot


async def test_first_state_claim_wins(store_kind):
    store = store_kind.store
    first = json.dumps(small_catalog("a", "b").to_prices())
    second = json.dumps(small_catalog("b", "a", "c").to_prices())

    claimed = [
        await store.claim_state("first", first),
        await store.claim_state("second", second),
    ]
    info = await store.stream_info()

    assert claimed == [("first", first), ("first", first)]
    assert info.state_id == "first"


async def test_snapshot_replaces_the_shared_catalog(store_kind):
    store = store_kind.store
    grown = json.dumps(small_catalog("a", "b", "c").to_prices())
    await store.claim_state("state", json.dumps(small_catalog("a", "b").to_prices()))
    snapshot = Snapshot(b"x", "1700000000000-1", 1, catalog=grown, state_id="state")

    saved = await store.save_snapshot(snapshot, lock_ttl_ms=1000)

    assert saved is True
    assert await store.claim_state("other", "{}") == ("state", grown)


async def test_snapshot_of_another_state_is_refused(store_kind):
    store = store_kind.store
    await store.claim_state("current", json.dumps(small_catalog("a").to_prices()))
    stale = Snapshot(b"x", "1700000000000-1", 1, catalog="{}", state_id="earlier")

    saved = await store.save_snapshot(stale, lock_ttl_ms=1000)

    assert saved is False
    assert await store.load_snapshot() is None


async def test_no_state_id_before_a_claim(store_kind):
    assert (await store_kind.store.stream_info()).state_id is None


async def test_two_savers_one_wins(store_kind):
    store = store_kind.store
    first = Snapshot(b"first", "1700000000000-1", 1)
    second = Snapshot(b"second", "1700000000000-2", 2)

    results = await asyncio.gather(
        store.save_snapshot(first, lock_ttl_ms=5000),
        store.save_snapshot(second, lock_ttl_ms=5000),
    )
    loaded = await store.load_snapshot()

    assert sorted(results) == [False, True]
    assert loaded == (first if results[0] else second)


async def test_lock_blocks_saves_until_it_expires(store_kind):
    store = store_kind.store
    await store.save_snapshot(Snapshot(b"a", "1700000000000-1", 1), lock_ttl_ms=200)

    during = await store.save_snapshot(
        Snapshot(b"b", "1700000000000-2", 2), lock_ttl_ms=200
    )
    await store_kind.wait(0.3)
    after = await store.save_snapshot(
        Snapshot(b"c", "1700000000000-3", 3), lock_ttl_ms=200
    )

    assert during is False
    assert after is True
    assert (await store.load_snapshot()).state == b"c"


async def test_older_snapshot_does_not_replace_newer(store_kind):
    store = store_kind.store
    newer = Snapshot(b"newer", "1700000000000-5", 5)
    await store.save_snapshot(newer, lock_ttl_ms=100)
    await store_kind.wait(0.2)

    saved = await store.save_snapshot(
        Snapshot(b"older", "1700000000000-4", 4), lock_ttl_ms=100
    )

    assert saved is False
    assert await store.load_snapshot() == newer


async def test_trim_keeps_events_after_the_snapshot(store_kind):
    store = store_kind.store
    appended = [
        await append_event(store, make_event(), WINDOW_SECONDS) for _ in range(5)
    ]
    snapshot_id = appended[2].event_id

    removed = await store.trim_events(snapshot_id)
    after_snapshot = await store.read_events(snapshot_id, block_ms=0, count=10)
    remaining = await store.read_events(STREAM_START_ID, block_ms=0, count=10)

    assert removed == 2
    assert [event_id for event_id, _ in after_snapshot] == [
        appended[3].event_id,
        appended[4].event_id,
    ]
    assert [event_id for event_id, _ in remaining] == [r.event_id for r in appended[2:]]


async def test_trim_before_the_first_event_removes_nothing(store_kind):
    store = store_kind.store
    await append_event(store, make_event(), WINDOW_SECONDS)

    assert await store.trim_events(STREAM_START_ID) == 0


async def test_stream_info_counts_added_and_trimmed_entries(store_kind):
    store = store_kind.store
    appended = [
        await append_event(store, make_event(), WINDOW_SECONDS) for _ in range(4)
    ]
    await store.trim_events(appended[2].event_id)

    info = await store.stream_info()

    assert info.length == 2
    assert info.entries_added == 4
    assert info.first_id == appended[2].event_id
    assert info.last_id == appended[3].event_id


async def test_stream_info_of_empty_stream(store_kind):
    info = await store_kind.store.stream_info()

    assert info.length == 0
    assert info.entries_added == 0
    assert info.first_id == STREAM_START_ID
    assert info.last_id == STREAM_START_ID


async def test_ping_succeeds_while_open(store_kind):
    await store_kind.store.ping()


async def test_closed_store_raises_unavailable(store_kind):
    store = store_kind.store
    await store.close()

    with pytest.raises(StoreUnavailable):
        await store.get_decision(new_decision_id(NOW))
    with pytest.raises(StoreUnavailable):
        await store.record_feedback(payload_of(make_event()), WINDOW_SECONDS)


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan"), float("inf")])
async def test_invalid_ttl_is_rejected(store_kind, ttl):
    with pytest.raises(ConfigError, match="ttl_seconds"):
        await store_kind.store.put_decision(make_record(), ttl)


async def test_invalid_after_id_is_rejected(store_kind):
    with pytest.raises(ValueError, match="not-an-id"):
        await store_kind.store.read_events("not-an-id", block_ms=0, count=1)


# Redis only: keys, connections and server failures.


async def test_redis_keys_live_under_the_namespace(redis_url, redis_namespace):
    store = RedisStore(redis_url, namespace=redis_namespace)
    record = make_record()
    await store.put_decision(record, WINDOW_SECONDS)
    await append_event(store, make_event(record.decision_id), WINDOW_SECONDS)
    # The lock outlives the key scan below, however slow the machine is.
    await store.save_snapshot(Snapshot(b"s", "1-1", 1), lock_ttl_ms=600_000)
    await store.close()

    client = redis.asyncio.Redis.from_url(redis_url)
    keys = {key.decode() async for key in client.scan_iter(f"{redis_namespace}:*")}
    await client.aclose()

    assert keys == {
        f"{redis_namespace}:decision:{record.decision_id}",
        f"{redis_namespace}:feedback:{record.decision_id}",
        f"{redis_namespace}:events",
        f"{redis_namespace}:snapshot",
        f"{redis_namespace}:snapshot-lock",
    }


async def test_redis_namespaces_are_isolated(redis_url, redis_namespace):
    first = RedisStore(redis_url, namespace=f"{redis_namespace}:a")
    second = RedisStore(redis_url, namespace=f"{redis_namespace}:b")
    record = make_record()

    await first.put_decision(record, WINDOW_SECONDS)
    await append_event(first, make_event(), WINDOW_SECONDS)
    seen_decision = await second.get_decision(record.decision_id)
    seen_events = await second.read_events(STREAM_START_ID, block_ms=0, count=10)
    await first.close()
    await second.close()

    assert seen_decision is None
    assert seen_events == []


async def test_undecodable_entry_reads_as_none(redis_url, redis_namespace):
    store = RedisStore(redis_url, namespace=redis_namespace)
    client = redis.asyncio.Redis.from_url(redis_url)
    damaged_id = (
        await client.xadd(f"{redis_namespace}:events", {"format": "unknown"})
    ).decode()
    await client.aclose()
    good = await append_event(store, make_event(), WINDOW_SECONDS)

    entries = await store.read_entries(STREAM_START_ID, block_ms=0, count=10)
    events = await store.read_events(STREAM_START_ID, block_ms=0, count=10)
    await store.close()

    assert entries[0] == (damaged_id, None)
    assert entries[1][0] == good.event_id
    assert [event_id for event_id, _ in events] == [good.event_id]


async def test_blocking_read_does_not_delay_requests(redis_url, redis_namespace):
    store = RedisStore(redis_url, namespace=redis_namespace)
    reader = asyncio.create_task(
        store.read_events(STREAM_START_ID, block_ms=2000, count=10)
    )
    await asyncio.sleep(0.05)

    started = time.monotonic()
    for _ in range(20):
        record = make_record()
        await store.put_decision(record, WINDOW_SECONDS)
        await store.get_decision(record.decision_id)
    elapsed = time.monotonic() - started
    reader.cancel()
    await store.close()

    assert elapsed < 1.0


def test_description_removes_the_password():
    store = RedisStore("redis://worker:s3cret@127.0.0.1:6380/2")

    assert store.description == "redis://worker@127.0.0.1:6380/2"
    assert "s3cret" not in repr(store)


def test_invalid_redis_url_is_a_config_error():
    with pytest.raises(ConfigError, match="redis://host:port/db"):
        RedisStore("http://127.0.0.1:6379/0")


async def test_stopped_server_raises_unavailable_quickly(private_redis):
    store = RedisStore(private_redis.url, namespace="test", socket_timeout=0.5)
    await store.ping()
    private_redis.stop()

    calls = {
        "ping": lambda: store.ping(),
        "put_decision": lambda: store.put_decision(make_record(), WINDOW_SECONDS),
        "get_decision": lambda: store.get_decision(new_decision_id(NOW)),
        "record_feedback": lambda: store.record_feedback(
            payload_of(make_event()), WINDOW_SECONDS
        ),
        "read_events": lambda: store.read_events(STREAM_START_ID, block_ms=0, count=1),
        "blocking read_events": lambda: store.read_events(
            STREAM_START_ID, block_ms=500, count=1
        ),
        "save_snapshot": lambda: store.save_snapshot(
            Snapshot(b"s", "1-1", 1), lock_ttl_ms=99
        ),
        "load_snapshot": lambda: store.load_snapshot(),
        "trim_events": lambda: store.trim_events("1-1"),
        "stream_info": lambda: store.stream_info(),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=re.escape(private_redis.url)):
            await call()
        assert time.monotonic() - started < 2.0, name
    await store.close()


async def test_store_recovers_after_restart(private_redis):
    store = RedisStore(private_redis.url, namespace="test", socket_timeout=0.5)
    record = make_record()
    await store.put_decision(record, WINDOW_SECONDS)
    before = await append_event(store, make_event(), WINDOW_SECONDS)

    private_redis.stop()
    with pytest.raises(StoreUnavailable):
        await store.get_decision(record.decision_id)
    private_redis.start()

    kept_record = await store.get_decision(record.decision_id)
    after = await append_event(store, make_event(), WINDOW_SECONDS)
    entries = await store.read_events(STREAM_START_ID, block_ms=0, count=10)
    await store.close()

    assert kept_record is not None
    assert after.accepted is True
    assert [event_id for event_id, _ in entries] == [before.event_id, after.event_id]


async def test_idempotency_survives_restart(private_redis):
    store = RedisStore(private_redis.url, namespace="test")
    event = make_event()
    first = await append_event(store, event, WINDOW_SECONDS)

    private_redis.restart()
    repeat = await append_repeat(store, event, WINDOW_SECONDS)
    await store.close()

    assert repeat.accepted is False
    assert repeat.event_id == first.event_id


async def test_persistence_check_warns_when_appendonly_is_off(tmp_path, caplog):
    if not RedisServer.available():
        pytest.skip("redis-server is not installed; install it to run this test.")

    with RedisServer(tmp_path / "redis", appendonly=False) as server:
        store = RedisStore(server.url, namespace="test")
        with caplog.at_level(logging.WARNING, logger="banditroute.store"):
            enabled = await store.check_persistence()
        await store.close()

    assert enabled is False
    assert "appendonly off" in caplog.text


async def test_persistence_check_is_quiet_when_appendonly_is_on(private_redis, caplog):
    store = RedisStore(private_redis.url, namespace="test")
    with caplog.at_level(logging.WARNING, logger="banditroute.store"):
        enabled = await store.check_persistence()
    await store.close()

    assert enabled is True
    assert caplog.records == []


async def test_persistence_check_survives_disabled_config(tmp_path):
    if not RedisServer.available():
        pytest.skip("redis-server is not installed; install it to run this test.")

    extra_args = ["--rename-command", "CONFIG", ""]
    with RedisServer(tmp_path / "redis", extra_args=extra_args) as server:
        store = RedisStore(server.url, namespace="test")
        enabled = await store.check_persistence()
        await store.close()

    assert enabled is None


# Namespaces and stream ids.


def small_catalog(*names: str) -> Catalog:
    return Catalog([ModelSpec(name, 1.0, 2.0) for name in names])


def test_namespace_is_stable():
    assert store_namespace(8, settings="x") == store_namespace(8, settings="x")


def test_namespace_keeps_the_prefix():
    namespace = store_namespace(8, prefix="router")

    assert namespace.startswith("router:")


@pytest.mark.parametrize(("dimension", "settings"), [(9, ""), (8, "encoder=other")])
def test_namespace_changes_with_what_the_state_means(dimension, settings):
    reference = store_namespace(8)

    assert store_namespace(dimension, settings=settings) != reference


@pytest.mark.parametrize(
    ("event_id", "order"),
    [("0", (0, 0)), ("0-0", (0, 0)), ("1700000000000-12", (1700000000000, 12))],
)
def test_stream_id_order(event_id, order):
    assert stream_id_order(event_id) == order


@pytest.mark.parametrize("event_id", ["", "-1", "1-", "a-1", "1-2-3", "$"])
def test_invalid_stream_id_is_rejected(event_id):
    with pytest.raises(ValueError, match="Stream id"):
        stream_id_order(event_id)


async def test_control_events_share_the_stream_with_feedback(store_kind):
    store = store_kind.store
    first = await append_event(store, make_event(), WINDOW_SECONDS)
    control_id = await store.append_control(
        ControlEvent("set_rollout", {"share": 0.25}, issued_at=NOW)
    )
    last = await append_event(store, make_event(), WINDOW_SECONDS)

    entries = await store.read_entries(STREAM_START_ID, block_ms=0, count=10)
    feedback = await store.read_events(STREAM_START_ID, block_ms=0, count=10)

    assert [event_id for event_id, _ in entries] == [
        first.event_id,
        control_id,
        last.event_id,
    ]
    assert entries[1][1] == ControlEvent("set_rollout", {"share": 0.25}, NOW)
    assert [event_id for event_id, _ in feedback] == [first.event_id, last.event_id]
