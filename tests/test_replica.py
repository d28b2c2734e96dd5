"""Tests of the posterior replica: processes that share one event stream agree.

Policies use a three-model catalog and 8-dimensional contexts so the tests are fast;
one test uses d = 385 and nine models to measure the snapshot size. Tests
parametrized over ``store_factory`` run against MemoryStore and the machine's Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np
import pytest
import redis.asyncio
from stored_events import append_event, payload_of

from banditroute.catalog import Catalog, ModelSpec
from banditroute.control_state import ControlState
from banditroute.events import ControlEvent, FeedbackEvent, new_decision_id
from banditroute.policies.thompson import ContextualThompsonSampling
from banditroute.replica import (
    PosteriorReplica,
    SnapshotError,
    decode_state,
    encode_state,
    policy_state,
    restore_policy_state,
    state_digest,
)
from banditroute.store import (
    MemoryStore,
    RedisStore,
    Snapshot,
    Store,
    StoreUnavailable,
)

pytestmark = pytest.mark.anyio

CATALOG = Catalog(
    [
        ModelSpec("small", 0.1, 0.4),
        ModelSpec("medium", 1.0, 4.0),
        ModelSpec("large", 5.0, 20.0),
    ]
)
DIMENSION = 8
WINDOW_SECONDS = 600.0
WAIT_SECONDS = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "redis"])
async def store_factory(request, anyio_backend):
    """Returns a function that opens another client of one shared store."""
    opened: list[Store] = []
    if request.param == "memory":
        shared = MemoryStore()

        def open_store() -> Store:
            return shared

    else:
        url = request.getfixturevalue("redis_url")
        namespace = request.getfixturevalue("redis_namespace")

        def open_store() -> Store:
            store = RedisStore(url, namespace=namespace)
            opened.append(store)
            return store

    yield open_store
    for store in opened:
        await store.close()


def make_policy(
    catalog: Catalog = CATALOG, dimension: int = DIMENSION, seed: int = 0
) -> ContextualThompsonSampling:
    return ContextualThompsonSampling(catalog, dimension, np.random.default_rng(seed))


def make_context(rng: np.random.Generator, dimension: int = DIMENSION) -> np.ndarray:
    features = rng.standard_normal(dimension - 1) / np.sqrt(dimension)
    return np.concatenate([[1.0], features]).astype(np.float32)


def make_event(
    rng: np.random.Generator,
    *,
    model: str | None = None,
    quality: float | None = -1.0,
    output_tokens: float | None = -1.0,
    error: bool = False,
    dimension: int = DIMENSION,
    catalog: Catalog = CATALOG,
) -> FeedbackEvent:
    """A feedback event; values left at -1 are drawn at random."""
    return FeedbackEvent(
        decision_id=new_decision_id(time.time()),
        model=model or str(rng.choice(catalog.names)),
        context=make_context(rng, dimension),
        quality=float(rng.random()) if quality == -1.0 else quality,
        output_tokens=(
            float(rng.integers(10, 800)) if output_tokens == -1.0 else output_tokens
        ),
        cost_usd=None,
        error=error,
        source="user",
        latency_ms=None,
        received_at=time.time(),
    )


def mixed_events(count: int, seed: int = 1) -> list[FeedbackEvent]:
    """Rated events with a usage-only and an error-only event every ten."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(count):
        if i % 10 == 3:
            events.append(make_event(rng, quality=None))
        elif i % 10 == 7:
            events.append(make_event(rng, quality=None, output_tokens=None, error=True))
        else:
            events.append(make_event(rng))
    return events


async def append_all(store: Store, events: list[FeedbackEvent]) -> list[str]:
    """Append events one by one; return the ids of the accepted ones."""
    ids = []
    for event in events:
        result = await append_event(store, event, WINDOW_SECONDS)
        assert result.accepted
        ids.append(result.event_id)
    return ids


async def eventually(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


# Convergence of processes that share one store.


async def test_replicas_converge_under_concurrent_appends(store_factory):
    first = PosteriorReplica(make_policy(seed=1), store_factory(), block_ms=200)
    second = PosteriorReplica(make_policy(seed=2), store_factory(), block_ms=200)
    await first.start()
    await second.start()

    # Every event is sent twice at once, as a client retrying would.
    events = mixed_events(150)
    writer = store_factory()
    results = await asyncio.gather(
        *(append_event(writer, e, WINDOW_SECONDS) for e in events + events)
    )
    accepted_ids = [r.event_id for r in results if r.accepted]
    last_id = max(accepted_ids, key=lambda i: tuple(map(int, i.split("-"))))
    first_done = await first.wait_for(last_id, WAIT_SECONDS)
    second_done = await second.wait_for(last_id, WAIT_SECONDS)
    await first.stop()
    await second.stop()

    assert len(accepted_ids) == len(events)
    assert first_done
    assert second_done
    assert first.applied_events == len(accepted_ids)
    assert second.applied_events == len(accepted_ids)
    assert first.digest() == second.digest()


async def test_late_replica_starts_from_snapshot(store_factory):
    store = store_factory()
    early = PosteriorReplica(
        make_policy(),
        store,
        snapshot_every=40,
        snapshot_lock_ms=1,
        trim_margin_seconds=0.0,
        block_ms=200,
    )
    await early.start()
    ids = await append_all(store, mixed_events(130))
    await early.wait_for(ids[-1], WAIT_SECONDS)
    await early.stop()
    info = await store.stream_info()

    late = PosteriorReplica(make_policy(seed=5), store_factory())
    await late.start()
    await late.stop()

    assert early.snapshots_saved >= 1
    assert info.length < len(ids)
    assert late.loaded_snapshot_id is not None
    assert late.applied_events == len(ids)
    assert late.last_event_id == ids[-1]
    assert late.digest() == early.digest()


async def test_trimmed_unread_events_reload_snapshot(
    store_factory,
):
    store = store_factory()
    paused = PosteriorReplica(make_policy(), store_factory(), block_ms=200)
    await paused.start()
    await paused.stop()

    active = PosteriorReplica(
        make_policy(),
        store,
        snapshot_every=25,
        snapshot_lock_ms=1,
        trim_margin_seconds=0.0,
        block_ms=200,
    )
    await active.start()
    ids = await append_all(store, mixed_events(60))
    await active.wait_for(ids[-1], WAIT_SECONDS)
    await active.stop()

    await paused.start()
    caught_up = await paused.wait_for(ids[-1], WAIT_SECONDS)
    await paused.stop()

    assert active.snapshots_saved >= 1
    assert caught_up
    assert paused.loaded_snapshot_id is not None
    assert paused.missed_events == 0
    assert paused.applied_events == len(ids)
    assert paused.digest() == active.digest()


async def test_one_of_two_replicas_stores_the_snapshot(store_factory):
    first = PosteriorReplica(
        make_policy(), store_factory(), snapshot_every=20, block_ms=200
    )
    second = PosteriorReplica(
        make_policy(), store_factory(), snapshot_every=20, block_ms=200
    )
    await first.start()
    await second.start()

    writer = store_factory()
    ids = await append_all(writer, mixed_events(45))
    await first.wait_for(ids[-1], WAIT_SECONDS)
    await second.wait_for(ids[-1], WAIT_SECONDS)
    await first.stop()
    await second.stop()
    snapshot = await writer.load_snapshot()

    # The default lock (5 s) outlasts the test, so only the first slot is stored.
    assert first.snapshots_saved + second.snapshots_saved == 1
    assert snapshot is not None
    assert snapshot.applied_events >= 20


# What an event changes in the posterior.


async def test_rated_events_update_their_model_only(store_factory):
    store = store_factory()
    rng = np.random.default_rng(3)
    events = [make_event(rng, model="small") for _ in range(4)]
    events += [make_event(rng, model="large") for _ in range(2)]
    ids = await append_all(store, events)

    replica = PosteriorReplica(make_policy(), store)
    await replica.start()
    await replica.stop()
    observations = replica.policy.posteriors.n_observations

    assert replica.last_event_id == ids[-1]
    assert observations.tolist() == [4, 0, 2]


async def test_usage_only_event_updates_cost_only(store_factory):
    store = store_factory()
    rng = np.random.default_rng(4)
    await append_all(
        store, [make_event(rng, model="medium", quality=None, output_tokens=300.0)]
    )

    policy = make_policy()
    tokens_before = policy.cost_model.expected_output_tokens.copy()
    replica = PosteriorReplica(policy, store)
    await replica.start()
    await replica.stop()
    tokens_after = policy.cost_model.expected_output_tokens

    assert replica.applied_events == 1
    assert policy.posteriors.n_observations.tolist() == [0, 0, 0]
    assert tokens_after[1] == (tokens_before[1] + 300.0) / 2
    assert tokens_after[0] == tokens_before[0]


async def test_unrated_failure_counts_as_zero(store_factory):
    store = store_factory()
    rng = np.random.default_rng(5)
    failed = make_event(
        rng, model="large", quality=None, output_tokens=None, error=True
    )
    await append_all(store, [failed])

    replica = PosteriorReplica(make_policy(), store)
    await replica.start()
    await replica.stop()
    posteriors = replica.policy.posteriors

    assert posteriors.n_observations.tolist() == [0, 0, 1]
    assert posteriors.sum_squared_quality[2] == 0.0
    assert not posteriors.quality_moment[2].any()


async def test_unknown_model_is_skipped_and_counted(store_factory, caplog):
    store = store_factory()
    rng = np.random.default_rng(6)
    events = [
        make_event(rng, model="retired"),
        make_event(rng, model="small"),
        make_event(rng, model="retired"),
    ]
    ids = await append_all(store, events)

    replica = PosteriorReplica(make_policy(), store)
    with caplog.at_level(logging.WARNING, logger="banditroute.replica"):
        await replica.start()
    await replica.stop()
    warnings = [r for r in caplog.records if "retired" in r.getMessage()]

    assert replica.skipped_events == 2
    assert replica.applied_events == 1
    assert replica.last_event_id == ids[-1]
    assert len(warnings) == 1


async def test_context_of_wrong_size_is_skipped(store_factory):
    store = store_factory()
    rng = np.random.default_rng(7)
    await append_all(store, [make_event(rng, dimension=DIMENSION + 1)])

    replica = PosteriorReplica(make_policy(), store)
    await replica.start()
    await replica.stop()

    assert replica.skipped_events == 1
    assert replica.applied_events == 0


async def test_undecodable_entry_is_skipped(redis_url, redis_namespace):
    store = RedisStore(redis_url, namespace=redis_namespace)
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.xadd(f"{redis_namespace}:events", {"format": "unknown"})
    await client.aclose()
    ids = await append_all(store, mixed_events(3))

    replica = PosteriorReplica(make_policy(), store)
    await replica.start()
    await replica.stop()
    await store.close()

    assert replica.skipped_events == 1
    assert replica.applied_events == 3
    assert replica.last_event_id == ids[-1]


# Waiting, lag and routing.


async def test_wait_for_a_future_event_times_out(store_factory):
    replica = PosteriorReplica(make_policy(), store_factory(), block_ms=50)
    await replica.start()

    started = time.monotonic()
    reached = await replica.wait_for("99999999999999-0", timeout=0.2)
    elapsed = time.monotonic() - started
    await replica.stop()

    assert reached is False
    assert 0.15 <= elapsed < 2.0


async def test_lag_counts_unread_events(store_factory):
    store = store_factory()
    replica = PosteriorReplica(make_policy(), store)
    await replica.start()
    await replica.stop()
    lag_before = replica.lag

    await append_all(store, mixed_events(5))
    lag_after = await replica.refresh_lag()

    assert lag_before == 0
    assert lag_after == 5


async def test_replica_routes_from_its_posterior(store_factory):
    replica = PosteriorReplica(make_policy(), store_factory())
    await replica.start()
    decision = replica.decide(make_context(np.random.default_rng(0)), 100, 1.0)
    await replica.stop()

    assert 0 <= decision.model_index < len(CATALOG)
    assert 0 < decision.propensity <= 1


async def test_starting_twice_is_rejected():
    replica = PosteriorReplica(make_policy(), MemoryStore())
    await replica.start()

    with pytest.raises(RuntimeError, match="already running"):
        await replica.start()
    await replica.stop()


# Redis stopping and coming back (a private server).


async def test_replica_survives_redis_restart(private_redis, caplog):
    store = RedisStore(private_redis.url, namespace="test", socket_timeout=0.5)
    replica = PosteriorReplica(
        make_policy(), store, block_ms=200, retry_max_seconds=0.2
    )
    caplog.set_level(logging.INFO, logger="banditroute.replica")
    await replica.start()
    first_ids = await append_all(store, mixed_events(20, seed=1))
    await replica.wait_for(first_ids[-1], WAIT_SECONDS)

    private_redis.stop()
    went_down = await eventually(lambda: not replica.store_available, WAIT_SECONDS)
    decision = replica.decide(make_context(np.random.default_rng(0)), 100, 1.0)
    with pytest.raises(StoreUnavailable):
        await store.record_feedback(
            payload_of(mixed_events(1, seed=9)[0]), WINDOW_SECONDS
        )
    await asyncio.sleep(0.5)
    private_redis.start()

    second_ids = await append_all(store, mixed_events(20, seed=2))
    caught_up = await replica.wait_for(second_ids[-1], WAIT_SECONDS)
    await replica.stop()

    fresh = PosteriorReplica(make_policy(), store)
    await fresh.start()
    await fresh.stop()
    await store.close()
    lost = [r for r in caplog.records if r.getMessage().startswith("Lost the store")]
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]

    assert went_down
    assert 0 <= decision.model_index < len(CATALOG)
    assert caught_up
    assert replica.store_available
    assert replica.applied_events == 40
    assert replica.digest() == fresh.digest()
    assert len(lost) == 1
    assert lost[0].levelno == logging.WARNING
    assert len(back) == 1
    assert back[0].levelno == logging.INFO


async def test_replica_started_while_redis_is_down(private_redis):
    store = RedisStore(private_redis.url, namespace="test", socket_timeout=0.5)
    ids = await append_all(store, mixed_events(10))
    private_redis.stop()

    replica = PosteriorReplica(
        make_policy(), store, block_ms=200, retry_max_seconds=0.2
    )
    await replica.start()
    available_while_down = replica.store_available
    caught_up_while_down = replica.caught_up
    private_redis.start()
    caught_up = await replica.wait_for(ids[-1], WAIT_SECONDS)
    await replica.stop()
    await store.close()

    assert available_while_down is False
    assert caught_up_while_down is False
    assert caught_up
    assert replica.applied_events == 10


REVERSED = Catalog(reversed(CATALOG.models))


async def test_replica_builds_its_policy_on_the_shared_catalog(store_factory):
    first = PosteriorReplica(make_policy(), store_factory(), block_ms=200)
    second = PosteriorReplica(make_policy(REVERSED), store_factory(), block_ms=200)
    await first.start()
    await second.start()
    ids = await append_all(first.store, mixed_events(12))
    await first.wait_for(ids[-1], WAIT_SECONDS)
    await second.wait_for(ids[-1], WAIT_SECONDS)
    await first.stop()
    await second.stop()

    assert second.policy.catalog.names == CATALOG.names
    assert second.state_id == first.state_id
    assert second.digest() == first.digest()


async def test_late_replica_joins_shared_catalog(private_redis):
    store = RedisStore(private_redis.url, namespace="test", socket_timeout=0.5)
    reference = PosteriorReplica(make_policy(), store)
    await reference.start()
    ids = await append_all(store, mixed_events(10))
    await reference.wait_for(ids[-1], WAIT_SECONDS)
    await reference.stop()
    private_redis.stop()

    late = PosteriorReplica(
        make_policy(REVERSED), store, block_ms=200, retry_max_seconds=0.2
    )
    await late.start()
    private_redis.start()
    caught_up = await late.wait_for(ids[-1], WAIT_SECONDS)
    await late.stop()
    await store.close()

    assert caught_up
    assert late.policy.catalog.names == CATALOG.names
    assert late.digest() == reference.digest()


async def test_replica_joins_a_state_started_after_data_loss(private_redis, caplog):
    store = RedisStore(private_redis.url, namespace="test", socket_timeout=0.5)
    paused = PosteriorReplica(make_policy(), store, block_ms=100)
    caplog.set_level(logging.WARNING, logger="banditroute.replica")
    await paused.start()
    ids = await append_all(store, mixed_events(12, seed=3))
    await paused.wait_for(ids[-1], WAIT_SECONDS)
    # The process stops reading (paused, or cut off), Redis loses everything, and a
    # process with another settings file starts a new shared state.
    await paused.stop()
    client = redis.asyncio.Redis.from_url(private_redis.url)
    await client.flushdb()
    await client.aclose()
    newcomer = PosteriorReplica(make_policy(REVERSED), store, block_ms=100)
    await newcomer.start()
    later_ids = await append_all(store, mixed_events(3, seed=4))
    await newcomer.wait_for(later_ids[-1], WAIT_SECONDS)

    await paused.start()
    joined = await paused.wait_for(later_ids[-1], WAIT_SECONDS)
    await paused.stop()
    await newcomer.stop()
    await store.close()
    warnings = [r for r in caplog.records if "drops its posterior" in r.getMessage()]

    assert joined
    assert paused.resets == 1
    assert len(warnings) == 1
    assert paused.state_id == newcomer.state_id
    assert paused.policy.catalog.names == REVERSED.names
    assert paused.applied_events == newcomer.applied_events == 3
    assert paused.digest() == newcomer.digest()


@pytest.mark.parametrize("behind_first", [True, False])
async def test_replicas_of_one_state_agree_after_data_loss(private_redis, behind_first):
    store = RedisStore(private_redis.url, namespace="test", socket_timeout=0.5)
    behind = PosteriorReplica(make_policy(seed=1), store, block_ms=100)
    ahead = PosteriorReplica(make_policy(seed=2), store, block_ms=100)
    await behind.start()
    await ahead.start()
    ids = await append_all(store, mixed_events(10, seed=3))
    await behind.wait_for(ids[-1], WAIT_SECONDS)
    await behind.stop()
    more_ids = await append_all(store, mixed_events(3, seed=4))
    await ahead.wait_for(more_ids[-1], WAIT_SECONDS)
    await ahead.stop()

    # Redis loses everything while both processes are paused; then they resume one
    # after the other and feedback goes on.
    client = redis.asyncio.Redis.from_url(private_redis.url)
    await client.flushdb()
    await client.aclose()
    for replica in (behind, ahead) if behind_first else (ahead, behind):
        await replica.start()
        await eventually_async(store.load_snapshot, WAIT_SECONDS)
    later_ids = await append_all(store, mixed_events(4, seed=5))
    for replica in (behind, ahead):
        await replica.wait_for(later_ids[-1], WAIT_SECONDS)
        await replica.stop()
    await store.close()

    first_count = 10 if behind_first else 13
    restored = ahead if behind_first else behind
    assert behind.applied_events == ahead.applied_events == first_count + 4
    assert behind.digest() == ahead.digest()
    assert restored.replacements == 1


# Snapshot encoding.


def update_with(policy: ContextualThompsonSampling, events: list[FeedbackEvent]):
    for event in events:
        policy.update(CATALOG.index(event.model), event.context, event.quality or 0.0)


def test_state_round_trip_keeps_the_digest():
    policy = make_policy()
    update_with(policy, mixed_events(30))

    state, _ = decode_state(encode_state(policy_state(policy)))
    restored = make_policy(seed=3)
    restore_policy_state(restored, state)

    assert state_digest(policy_state(restored)) == state_digest(policy_state(policy))


def test_restored_policy_stays_identical_under_updates():
    events = mixed_events(80)
    replayed = make_policy()
    update_with(replayed, events)

    halfway = make_policy()
    update_with(halfway, events[:40])
    state, _ = decode_state(encode_state(policy_state(halfway)))
    restored = make_policy(seed=3)
    restore_policy_state(restored, state)
    update_with(restored, events[40:])

    assert state_digest(policy_state(restored)) == state_digest(policy_state(replayed))


def test_metadata_round_trip():
    metadata = {"skipped_events": 4, "missed_events": 1}

    _, decoded = decode_state(encode_state(policy_state(make_policy()), metadata))

    assert decoded["skipped_events"] == 4
    assert decoded["missed_events"] == 1


def test_digest_ignores_unused_pending_rows():
    state = make_policy().snapshot()
    state["models.pending"][:, 5:] = 123.0
    state["models.n_pending"][:] = 5

    changed = {key: value.copy() for key, value in state.items()}
    changed["models.pending"][:, 5:] = -7.0

    assert state_digest(changed) == state_digest(state)


def test_digest_changes_with_an_update():
    policy = make_policy()
    before = state_digest(policy.snapshot())

    policy.update(0, make_context(np.random.default_rng(0)), 0.9)

    assert state_digest(policy.snapshot()) != before


def test_damaged_snapshot_is_a_snapshot_error():
    with pytest.raises(SnapshotError, match="cannot be decoded"):
        decode_state(b"not an npz archive")


async def test_snapshot_of_another_shape_is_rejected():
    store = MemoryStore()
    payload = encode_state(policy_state(make_policy(dimension=DIMENSION)))
    await store.save_snapshot(Snapshot(payload, "1-0", 1), lock_ttl_ms=1)

    replica = PosteriorReplica(make_policy(dimension=DIMENSION + 1), store)
    with pytest.raises(SnapshotError, match="store_namespace"):
        await replica.start()


async def test_snapshot_size_at_full_dimension(capsys):
    catalog = Catalog([ModelSpec(f"model-{i}", 0.1 * (i + 1), 0.4) for i in range(9)])
    dimension = 385
    rng = np.random.default_rng(9)
    events = [make_event(rng, dimension=dimension, catalog=catalog) for _ in range(300)]
    store = MemoryStore()
    ids = await append_all(store, events)

    writer = PosteriorReplica(
        make_policy(catalog, dimension), store, snapshot_every=len(events)
    )
    started = time.perf_counter()
    await writer.start()
    seconds = time.perf_counter() - started
    await writer.stop()
    reader = PosteriorReplica(make_policy(catalog, dimension, seed=4), store)
    await reader.start()
    await reader.stop()

    with capsys.disabled():
        print(
            f"\nsnapshot at d={dimension}, K={len(catalog)}, {len(events)} events: "
            f"{writer.last_snapshot_bytes} bytes; first start took {seconds:.2f} s"
        )
    assert writer.snapshots_saved == 1
    assert writer.last_snapshot_bytes < 20_000_000
    assert reader.loaded_snapshot_id == ids[-1]
    assert reader.digest() == writer.digest()


async def test_lost_stream_is_replaced_by_a_snapshot(private_redis, caplog):
    store = RedisStore(private_redis.url, namespace="test", socket_timeout=0.5)
    replica = PosteriorReplica(make_policy(), store, block_ms=100)
    caplog.set_level(logging.WARNING, logger="banditroute.replica")
    await replica.start()
    ids = await append_all(store, mixed_events(12, seed=3))
    await replica.wait_for(ids[-1], WAIT_SECONDS)

    # Redis loses everything, as on a restart without persistence.
    client = redis.asyncio.Redis.from_url(private_redis.url)
    await client.flushdb()
    await client.aclose()
    later_ids = await append_all(store, mixed_events(3, seed=4))
    await replica.wait_for(later_ids[-1], WAIT_SECONDS)
    stored = await eventually_async(store.load_snapshot, WAIT_SECONDS)

    newcomer = PosteriorReplica(make_policy(), store)
    await newcomer.start()
    await newcomer.stop()
    await replica.stop()
    await store.close()
    warnings = [r for r in caplog.records if "lost data" in r.getMessage()]

    assert stored is not None
    assert len(warnings) == 1
    assert newcomer.applied_events == replica.applied_events == 15
    assert newcomer.digest() == replica.digest()


async def eventually_async(read, timeout: float):
    """Return the first non-None result of ``read()`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await read()
        if result is not None:
            return result
        await asyncio.sleep(0.05)
    return None


async def test_skipped_control_event_keeps_its_reason(store_factory):
    store = store_factory()
    controls = ControlState(CATALOG)
    replica = PosteriorReplica(make_policy(), store, block_ms=100, controls=controls)
    await replica.start()
    name = CATALOG.names[0]
    event_id = await store.append_control(
        ControlEvent(
            "add_model",
            {"name": name, "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0},
        )
    )
    await replica.wait_for(event_id, WAIT_SECONDS)
    await replica.stop()

    assert "already has" in replica.recent_skips[event_id]
    assert replica.skipped_events == 1
