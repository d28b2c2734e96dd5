"""An in-memory posterior kept in step with the shared feedback event stream.

The posterior is a pure function of the ordered feedback events, so every server
process that applies the same stream in the same order has the same posterior. It is
the same bit for bit when the processes run the same numpy and BLAS build on the same
kind of CPU, which ``digest`` checks. A ``PosteriorReplica`` loads the newest snapshot,
replays the events after it, then tails the stream. From time to time one process
stores a snapshot and trims the stream behind it, so that new processes start quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np

from banditroute.catalog import Catalog, ModelSpec
from banditroute.control_state import ControlState
from banditroute.errors import BanditRouteError, ConfigError
from banditroute.events import ControlEvent, FeedbackEvent, StreamEvent
from banditroute.feedback import event_cost_usd
from banditroute.policies.thompson import ContextualThompsonSampling
from banditroute.policy import Decision
from banditroute.store import (
    STREAM_START_ID,
    Snapshot,
    Store,
    StoreUnavailable,
    StreamInfo,
    stream_id_order,
)

logger = logging.getLogger(__name__)

Result = TypeVar("Result")

SNAPSHOT_FORMAT = 2
"""Version of the snapshot encoding written by ``encode_state``."""

_STOP_RETRY_SECONDS = 0.1

_METADATA_KEY = "replica.metadata"
_CONTROLS_PREFIX = "controls."
_RECENT_SKIPS = 100
_PENDING_SUFFIX = "pending"


class SnapshotError(BanditRouteError):
    """A stored snapshot cannot be decoded or does not fit the policy."""


class PosteriorReplica:
    """Keeps ``policy`` equal to the posterior of every event in the store's stream.

    ``start`` loads the newest snapshot, applies the events after it and starts a task
    that tails the stream in this event loop. Routing (``decide``) reads only the
    in-memory posterior, so it keeps working while the store is unreachable. The tail
    task then retries with exponential backoff capped at ``retry_max_seconds`` and
    resumes after its last applied event when the store is back. The default cap of
    1 s bounds how long requests stay degraded after the store returns, at the price
    of one small call per process and second during an outage. While events keep
    arriving, the task waits ``read_interval_seconds`` between reads, so that it reads
    them in batches.

    After each ``snapshot_every`` applied events the replica tries to store a snapshot.
    At most one process per ``snapshot_lock_ms`` succeeds, and it trims the stream
    entries older than ``trim_margin_seconds`` (in stream time) before the snapshot's
    last event. A replica that finds events trimmed before it applied them reloads the
    snapshot.

    Events are applied in a worker thread, so that a covariance refresh (tens of ms)
    never stalls the event loop. Only the replica may change the policy; other code
    reads it through ``decide``, ``run_locked`` or ``reading``, which hold the lock that
    every change holds.
    """

    def __init__(
        self,
        policy: ContextualThompsonSampling,
        store: Store,
        *,
        snapshot_every: int = 10_000,
        block_ms: int = 1000,
        clock: Callable[[], float] = time.time,
        batch_size: int = 32,
        snapshot_lock_ms: int = 5000,
        trim_margin_seconds: float = 60.0,
        retry_initial_seconds: float = 0.05,
        retry_max_seconds: float = 1.0,
        read_interval_seconds: float = 0.005,
        controls: ControlState | None = None,
    ) -> None:
        for name, value in (
            ("snapshot_every", snapshot_every),
            ("block_ms", block_ms),
            ("batch_size", batch_size),
            ("snapshot_lock_ms", snapshot_lock_ms),
        ):
            if value < 1:
                raise ConfigError(f"{name}={value!r} is invalid; give at least 1.")
        if read_interval_seconds < 0:
            raise ConfigError(
                f"read_interval_seconds={read_interval_seconds!r} is invalid; "
                "give 0 or more seconds."
            )
        if trim_margin_seconds < 0:
            raise ConfigError(
                f"trim_margin_seconds={trim_margin_seconds!r} is invalid; "
                "give 0 or more seconds."
            )

        self.policy = policy
        self.store = store
        self.snapshot_every = snapshot_every
        self.block_ms = block_ms
        self.clock = clock
        self.batch_size = batch_size
        self.snapshot_lock_ms = snapshot_lock_ms
        self.trim_margin_seconds = trim_margin_seconds
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self.read_interval_seconds = read_interval_seconds
        self.controls = controls
        """Budget pacing, model breakers and rollout, kept from the same events."""
        self.new_state_catalog = policy.catalog.copy()
        """The policy's catalog at construction: that of a new shared state, if this
        replica is the one to start it."""

        self.applied_events = 0
        """Events applied to the posterior since the stream began: its version."""
        self.skipped_events = 0
        """Stream entries passed over: unknown model, wrong context size or damaged."""
        self.missed_events = 0
        """Entries trimmed from the stream before this replica could apply them."""
        self.last_event_id = STREAM_START_ID
        self.caught_up = False
        """True after a read returned fewer entries than a batch: none left unread."""
        self.store_available = False
        self.last_error: str | None = None
        self.lag: int | None = None
        """Estimated entries after ``last_event_id``; None until first checked."""
        self.loaded_snapshot_id: str | None = None
        """Last event id of the snapshot this replica restored, if it restored one."""
        self.snapshots_saved = 0
        self.last_snapshot_bytes: int | None = None
        self.last_update_time: float | None = None
        """``clock()`` time when the replica last applied or skipped an entry."""

        self.state_id: str | None = None
        """Id of the shared state this replica follows, once it joined one."""
        self.resets = 0
        """Times this replica dropped its posterior to join another shared state."""
        self.replacements = 0
        """Times the posterior was replaced other than by applying events: snapshot
        restores and resets. With ``applied_events`` it distinguishes two states."""
        self._new_state_id = secrets.token_hex(8)
        self._bootstrapped = False
        self._recovering = False
        self._persistence_checked = False
        self._outage_logged = False
        self._logged_skip_reasons: set[str] = set()
        self._snapshot_slot = 0
        self._entries_added_seen = 0
        self.recent_skips: OrderedDict[str, str] = OrderedDict()
        """Reasons of the last skipped entries by stream id, newest last."""
        self._progress = asyncio.Event()
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def posterior_version(self) -> int:
        return self.applied_events

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Load the newest snapshot, catch up with the stream, then start tailing it.

        When the store is unreachable, returns with ``store_available`` False and
        ``caught_up`` False, and the tail task loads and catches up once it is back.
        """
        if self.running:
            raise RuntimeError("The replica is already running; call stop() first.")

        try:
            await self._synchronize()
            self._mark_available()
        except StoreUnavailable as error:
            self._mark_unavailable(error)
        self._task = asyncio.create_task(self._tail(), name="posterior-replica-tail")

    async def stop(self) -> None:
        """Stop the tail task; the in-memory posterior stays usable."""
        task, self._task = self._task, None
        if task is None:
            return

        self._stopping = True
        # NOTE: on Python 3.11, asyncio.wait_for (which redis-py uses to send a
        # command) drops a cancellation that arrives as the awaited call completes.
        # The tail loop also checks _stopping, and the cancel is repeated until the
        # task ends.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=_STOP_RETRY_SECONDS)
        self._stopping = False
        with contextlib.suppress(asyncio.CancelledError):
            task.result()

    def decide(
        self,
        context: np.ndarray,
        input_tokens: float,
        cost_weight: float,
        allowed: np.ndarray | None = None,
    ) -> Decision:
        """Choose a model for one request from the in-memory posterior.

        Waits while an event is being applied; use ``run_locked`` in the event loop.
        """
        with self._lock:
            return self.policy.decide(context, input_tokens, cost_weight, allowed)

    async def run_locked(
        self, function: Callable[[ContextualThompsonSampling], Result]
    ) -> Result:
        """Return ``function(policy)``, run in a worker thread under the lock.

        The event loop goes on serving requests while an event holds the lock.
        """

        def call() -> Result:
            with self._lock:
                return function(self.policy)

        return await asyncio.to_thread(call)

    @contextlib.contextmanager
    def reading(self) -> Iterator[ContextualThompsonSampling]:
        """Hold the posterior still while the caller reads the returned policy."""
        with self._lock:
            yield self.policy

    def digest(self) -> str:
        """Return a SHA-256 hex digest of the posterior, to compare processes."""
        with self._lock:
            return state_digest(self._state())

    async def wait_for(self, event_id: str, timeout: float) -> bool:
        """Wait until the entry ``event_id`` has been applied or skipped.

        Returns False when ``timeout`` seconds pass first.
        """
        target = stream_id_order(event_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while stream_id_order(self.last_event_id) < target:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            progress = self._progress
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await progress.wait()
        return True

    async def refresh_lag(self) -> int:
        """Read the stream counters and return the updated ``lag`` estimate.

        Raises StoreUnavailable when the store cannot be reached.
        """
        self.lag = self._estimate_lag(await self.store.stream_info())
        return self.lag

    async def _tail(self) -> None:
        delay = self.retry_initial_seconds
        while not self._stopping:
            try:
                if self.caught_up:
                    await self._read_once(block_ms=self.block_ms)
                else:
                    await self._synchronize()
                self._mark_available()
                delay = self.retry_initial_seconds
            except StoreUnavailable as error:
                self._mark_unavailable(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)
            except Exception as error:
                # A failure here is a bug or damaged data. Routing goes on from the
                # in-memory posterior, so log it and retry rather than stop learning.
                self.last_error = f"{type(error).__name__}: {error}"
                logger.exception(
                    "The posterior replica failed after event %s; retrying in %.2f s.",
                    self.last_event_id,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_seconds)

    async def _synchronize(self) -> None:
        """Load a snapshot on first use, then read until no full batch is left."""
        if not self._persistence_checked:
            await self.store.check_persistence()
            self._persistence_checked = True

        if not self._bootstrapped:
            await self._join_shared_state()
            await self._load_snapshot()
            self._bootstrapped = True

        self.caught_up = False
        while not self.caught_up:
            await self._read_once(block_ms=0)
            # Let requests run between batches of a long catch-up.
            await asyncio.sleep(0)

    async def _join_shared_state(self) -> None:
        """Take the id and catalog of the store's shared state, or start a new one.

        A policy built from another catalog (a settings file that lists the models in
        another order or at other prices) is rebuilt on the shared catalog. This runs
        before the replica applies any entry, so nothing learned is dropped.
        """
        proposal = json.dumps(self.new_state_catalog.to_prices())
        state_id, stored = await self.store.claim_state(self._new_state_id, proposal)
        shared = self._decode_shared_catalog(stored)
        with self._lock:
            if not self.policy.catalog.same_models(shared):
                self._forget_state(shared)
        self.state_id = state_id
        if state_id == self._new_state_id:
            logger.info(
                "Started the shared state %s in %s with the models %s.",
                state_id,
                self.store.description,
                list(shared.names),
            )

    def _decode_shared_catalog(self, stored: str) -> Catalog:
        if not stored:
            return self.new_state_catalog.copy()
        try:
            return Catalog.from_prices(json.loads(stored))
        except (BanditRouteError, ValueError, TypeError, AttributeError) as error:
            raise SnapshotError(
                f"The shared catalog in {self.store.description} cannot be read "
                f"({error}); delete the namespace's catalog and state-id keys to "
                "start a new shared state."
            ) from error

    async def _load_snapshot(self) -> None:
        snapshot = await self.store.load_snapshot()
        if snapshot is None:
            logger.info(
                "No snapshot in %s; applying the event stream from its start.",
                self.store.description,
            )
            return
        await self._restore(snapshot)

    def _forget_state(self, catalog: Catalog) -> None:
        """Drop everything applied and start from the prior with ``catalog``."""
        self.policy.reset(catalog.models)
        if self.controls is not None:
            self.controls.reset()
        self.applied_events = 0
        self.skipped_events = 0
        self.missed_events = 0
        self.last_event_id = STREAM_START_ID
        self.loaded_snapshot_id = None
        self._snapshot_slot = 0
        self.recent_skips.clear()
        self._logged_skip_reasons.clear()
        self.resets += 1
        self.replacements += 1

    async def _read_once(self, *, block_ms: int) -> None:
        info = await self.store.stream_info()
        self._mark_available()
        await self._check_reset(info)
        await self._check_trimmed(info)
        self.lag = self._estimate_lag(info)

        entries = await self.store.read_entries(
            self.last_event_id, block_ms=block_ms, count=self.batch_size
        )
        await self._apply_entries(entries)
        self.caught_up = len(entries) < self.batch_size
        if self.caught_up:
            self.lag = 0
        await self._save_snapshot_when_due()

        if entries and self.caught_up and block_ms > 0:
            # While feedback keeps arriving, a short pause lets events gather into
            # one read, so the two reads per batch are not paid for every event.
            await asyncio.sleep(self.read_interval_seconds)

    async def _apply_entries(
        self, entries: list[tuple[str, StreamEvent | None]]
    ) -> None:
        if not entries:
            return

        await asyncio.to_thread(self._apply_in_order, entries)
        self.last_update_time = self.clock()
        self._progress.set()
        self._progress = asyncio.Event()

    def _apply_in_order(self, entries: list[tuple[str, StreamEvent | None]]) -> None:
        # The lock is taken per event, so that a decision waits for one event at most.
        for event_id, event in entries:
            skip_reason = self._skip_reason(event)
            with self._lock:
                if isinstance(event, ControlEvent) and skip_reason is None:
                    skip_reason = self._try_control(event)
                elif skip_reason is None:
                    assert isinstance(event, FeedbackEvent)
                    skip_reason = self._try_feedback(event, event_id)
                if skip_reason is None:
                    self.applied_events += 1
                self.last_event_id = event_id
            if skip_reason is not None:
                self._count_skipped(event_id, skip_reason)

    def _skip_reason(self, event: StreamEvent | None) -> str | None:
        if event is None:
            return "it cannot be decoded; an incompatible version may have written it"
        if isinstance(event, ControlEvent):
            return self._control_skip_reason(event)
        if event.model not in self.policy.catalog:
            return (
                f"its model {event.model!r} is not in the catalog "
                f"{list(self.policy.catalog.names)}"
            )
        dimension = self.policy.posteriors.dimension
        if event.context.shape != (dimension,):
            return (
                f"its context has {event.context.shape[0]} values and the policy "
                f"expects {dimension}"
            )
        return None

    def _try_feedback(self, event: FeedbackEvent, event_id: str) -> str | None:
        # Every process fails the same way on the same entry, so skipping it keeps
        # them equal, where retrying it would stop learning for good.
        try:
            self._apply_event(event, stream_time(event_id))
        except (BanditRouteError, ValueError, IndexError) as error:
            logger.exception("Applying stream entry %s failed", event_id)
            return f"applying it failed: {type(error).__name__}: {error}"
        return None

    def _try_control(self, event: ControlEvent) -> str | None:
        # Endpoints check control events before appending them, so a failure here
        # means a damaged or hand-written entry, which is skipped like one.
        try:
            self._apply_control(event)
        except (BanditRouteError, KeyError, TypeError, ValueError) as error:
            return f"its {event.action} failed: {error}"
        return None

    def _control_skip_reason(self, event: ControlEvent) -> str | None:
        if self.controls is None:
            return "it is a control event and this process keeps no control state"

        catalog = self.policy.catalog
        name = event.arguments.get("name")
        if event.action == "add_model" and name in catalog:
            return f"it adds the model {name!r}, which the catalog already has"
        model_actions = ("disable_model", "enable_model", "set_prices")
        if event.action in model_actions and name not in catalog:
            return f"it names the model {name!r}, which is not in the catalog"
        return None

    def _count_skipped(self, event_id: str, reason: str) -> None:
        self.skipped_events += 1
        self.recent_skips[event_id] = reason
        while len(self.recent_skips) > _RECENT_SKIPS:
            self.recent_skips.popitem(last=False)
        if reason in self._logged_skip_reasons:
            return

        # Logged once per reason: a changed catalog can make many entries unusable.
        self._logged_skip_reasons.add(reason)
        logger.warning(
            "Skipped stream entry %s because %s; further entries skipped for the same "
            "reason are only counted.",
            event_id,
            reason,
        )

    def _apply_control(self, event: ControlEvent) -> None:
        assert self.controls is not None
        arguments = event.arguments
        if event.action == "add_model":
            self.policy.add_model(ModelSpec.from_arguments(arguments))
            self.controls.add_model()
        elif event.action == "disable_model":
            self.policy.disable_model(str(arguments["name"]))
        elif event.action == "enable_model":
            self.policy.enable_model(str(arguments["name"]))
        elif event.action == "set_prices":
            self.policy.catalog.set_prices(ModelSpec.from_arguments(arguments))
        else:
            self.controls.apply_control(event)
        logger.info("Applied control event %s %s", event.action, dict(arguments))

    def _apply_event(self, event: FeedbackEvent, now: float) -> None:
        model_index = self.policy.catalog.index(event.model)
        quality = event.quality
        if quality is None and event.error:
            # A failed call that carries no rating counts as quality 0.
            quality = 0.0

        if self.controls is not None:
            cost = event_cost_usd(event, self.policy.catalog)
            self.controls.observe_feedback(event, model_index, cost, now)

        if quality is None:
            if event.output_tokens is not None:
                self.policy.cost_model.update(model_index, event.output_tokens)
            return
        self.policy.update(model_index, event.context, quality, event.output_tokens)

    async def _check_trimmed(self, info: StreamInfo) -> None:
        """Reload the snapshot when entries this replica has not read were trimmed.

        Trimming removes the oldest entries, so entries were lost to this replica
        exactly when more entries were trimmed than it has consumed.
        """
        if info.entries_added - info.length <= self._consumed_events():
            return

        snapshot = await self.store.load_snapshot()
        if snapshot is not None and snapshot.last_event_id != self.last_event_id:
            logger.warning(
                "Stream entries were trimmed before this process read them (it was at "
                "%s); restoring the snapshot at %s and replaying the entries after it.",
                self.last_event_id,
                snapshot.last_event_id,
            )
            await self._restore(snapshot)

        missed = info.entries_added - info.length - self._consumed_events()
        if missed <= 0:
            return
        # Counting the loss keeps the check quiet until more entries are lost.
        self.missed_events += missed
        logger.error(
            "%d stream entries were trimmed before this process applied them (it was "
            "at %s) and no snapshot covers them; this posterior misses them until the "
            "process restarts from a newer snapshot.",
            missed,
            self.last_event_id,
        )

    async def _check_reset(self, info: StreamInfo) -> None:
        """Follow the shared state when the store lost it.

        When Redis restarts without persistence, the stream, the snapshot and the
        state id are gone. The processes that followed the state then recover it
        together (``_recover``): the first posterior stored as the new snapshot is the
        one every one of them continues from. A process that finds another state id,
        which a process started after the loss created, drops its posterior and joins
        that state. Either way, processes never split into two states. The count of
        entries ever added falling while the id stays means the stream alone was
        deleted, which is recovered in the same way.
        """
        lost = info.entries_added < self._entries_added_seen
        self._entries_added_seen = info.entries_added
        id_kept = info.state_id == self.state_id
        if id_kept and not lost and not self._recovering:
            return

        proposal = json.dumps(self.policy.catalog.to_prices())
        assert self.state_id is not None
        state_id, stored = await self.store.claim_state(self.state_id, proposal)
        if state_id != self.state_id:
            await self._join_other_state(state_id, stored)
            return

        if not self._recovering:
            self._recovering = True
            logger.warning(
                "The store %s lost data (%d stream entries added, the state id %s). "
                "This process offers its posterior (%d events applied, up to %s) as "
                "the snapshot that the state continues from.",
                self.store.description,
                info.entries_added,
                "kept" if id_kept else "gone",
                self.applied_events,
                self.last_event_id,
            )
        await self._recover()

    async def _recover(self) -> None:
        """Store this posterior as the snapshot unless one is stored, then continue
        from the stored one.

        Only the first posterior offered is stored, so every process of the state
        ends up with the same one, even those that had applied more or fewer events
        when the data was lost. Until a snapshot is stored (a process with nothing
        applied offers none), each read tries again.
        """
        if self.applied_events > 0:
            offered = await self._current_snapshot()
            if await self.store.offer_snapshot(offered):
                self.snapshots_saved += 1
                self.last_snapshot_bytes = len(offered.state)

        stored = await self.store.load_snapshot()
        if stored is None:
            return
        self._recovering = False
        own = (stored.last_event_id, stored.applied_events) == (
            self.last_event_id,
            self.applied_events,
        )
        if own:
            logger.info(
                "The shared state continues from this process's posterior (%d events "
                "applied, up to %s).",
                self.applied_events,
                self.last_event_id,
            )
            return

        logger.warning(
            "The shared state continues from another process's posterior (%d events "
            "applied, up to %s); this process (%d events, up to %s) restores it.",
            stored.applied_events,
            stored.last_event_id,
            self.applied_events,
            self.last_event_id,
        )
        await self._restore(stored)

    async def _join_other_state(self, state_id: str, stored: str) -> None:
        logger.warning(
            "The shared state in %s is now %s, which another process started after "
            "the store lost data. This process drops its posterior (%d events "
            "applied) and joins that state.",
            self.store.description,
            state_id,
            self.applied_events,
        )
        shared = self._decode_shared_catalog(stored)
        with self._lock:
            self._forget_state(shared)
        self.state_id = state_id
        self._recovering = False
        await self._load_snapshot()

    def _consumed_events(self) -> int:
        """Stream entries this replica's position covers, from the stream's start."""
        return self.applied_events + self.skipped_events + self.missed_events

    def _estimate_lag(self, info: StreamInfo) -> int:
        if stream_id_order(info.last_id) <= stream_id_order(self.last_event_id):
            return 0
        unread = info.entries_added - self._consumed_events()
        return max(1, min(info.length, unread))

    async def _restore(self, snapshot: Snapshot) -> None:
        state, metadata = await asyncio.to_thread(decode_state, snapshot.state)
        with self._lock:
            _check_state_fits(state, self._state())
            try:
                self._restore_state(state)
            except ValueError as error:
                raise SnapshotError(
                    f"The stored snapshot does not fit the policy: {error}"
                ) from error

        self.replacements += 1
        self.applied_events = snapshot.applied_events
        self.skipped_events = int(metadata.get("skipped_events", 0))
        self.missed_events = int(metadata.get("missed_events", 0))
        self.last_event_id = snapshot.last_event_id
        self.loaded_snapshot_id = snapshot.last_event_id
        self._snapshot_slot = self.applied_events // self.snapshot_every
        self._progress.set()
        self._progress = asyncio.Event()
        logger.info(
            "Restored the snapshot at event %s (%d events applied, %d bytes).",
            snapshot.last_event_id,
            snapshot.applied_events,
            len(snapshot.state),
        )

    async def _save_snapshot_when_due(self) -> None:
        slot = self.applied_events // self.snapshot_every
        if slot <= self._snapshot_slot:
            return
        self._snapshot_slot = slot
        await self._save_snapshot()

    async def _current_snapshot(self) -> Snapshot:
        """Encode the posterior, controls and catalog at the current position."""
        metadata = {
            "skipped_events": self.skipped_events,
            "missed_events": self.missed_events,
        }
        # Copying and encoding tens of MB runs in a worker thread so that requests
        # keep being served. Only this task applies events and changes the catalog,
        # and it waits here, so the copy and the catalog match last_event_id.
        # Routing meanwhile only reads the posterior.
        payload = await asyncio.to_thread(lambda: self._encode_snapshot(metadata))
        return Snapshot(
            payload,
            self.last_event_id,
            self.applied_events,
            catalog=json.dumps(self.policy.catalog.to_prices()),
            state_id=self.state_id or "",
        )

    async def _save_snapshot(self) -> None:
        snapshot = await self._current_snapshot()
        saved = await self.store.save_snapshot(
            snapshot, lock_ttl_ms=self.snapshot_lock_ms
        )
        if not saved:
            return

        self.snapshots_saved += 1
        self.last_snapshot_bytes = len(snapshot.state)
        trimmed = await self.store.trim_events(
            self._trim_before(snapshot.last_event_id)
        )
        logger.info(
            "Stored a snapshot at event %s (%d events applied, %d bytes); trimmed %d "
            "older stream entries.",
            snapshot.last_event_id,
            snapshot.applied_events,
            len(snapshot.state),
            trimmed,
        )

    def _state(self) -> dict[str, np.ndarray]:
        state = policy_state(self.policy)
        if self.controls is not None:
            for key, value in self.controls.snapshot().items():
                state[f"{_CONTROLS_PREFIX}{key}"] = value
        return state

    def _restore_state(self, state: dict[str, np.ndarray]) -> None:
        start = len(_CONTROLS_PREFIX)
        controls = {
            key[start:]: value
            for key, value in state.items()
            if key.startswith(_CONTROLS_PREFIX)
        }
        restore_policy_state(self.policy, _learned_part(state))
        if self.controls is not None:
            self.controls.restore(controls)

    def _encode_snapshot(self, metadata: Mapping[str, object]) -> bytes:
        with self._lock:
            state = self._state()
        return encode_state(state, metadata)

    def _trim_before(self, last_event_id: str) -> str:
        # Entries within the margin stay, so a process a little behind the snapshot
        # reads them from the stream instead of reloading the whole snapshot.
        margin_ms = round(self.trim_margin_seconds * 1000)
        if margin_ms == 0:
            return last_event_id
        milliseconds, _ = stream_id_order(last_event_id)
        return f"{max(milliseconds - margin_ms, 0)}-0"

    def _mark_available(self) -> None:
        self.store_available = True
        if self._outage_logged:
            self._outage_logged = False
            logger.info(
                "The store %s is reachable again; resuming after event %s.",
                self.store.description,
                self.last_event_id,
            )

    def _mark_unavailable(self, error: StoreUnavailable) -> None:
        self.store_available = False
        self.caught_up = False
        self.last_error = str(error)
        if not self._outage_logged:
            self._outage_logged = True
            logger.warning(
                "Lost the store (%s); routing continues from the in-memory posterior "
                "at event %s, and the replica retries with backoff up to %.1f s.",
                error,
                self.last_event_id,
                self.retry_max_seconds,
            )


def _learned_part(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        key: value
        for key, value in state.items()
        if not key.startswith(_CONTROLS_PREFIX)
    }


def stream_time(event_id: str) -> float:
    """Return the time in Unix seconds at which the store added entry ``event_id``."""
    return stream_id_order(event_id)[0] / 1000


def policy_state(policy: ContextualThompsonSampling) -> dict[str, np.ndarray]:
    """Return the policy's full learned state, restorable bit for bit."""
    return policy.snapshot()


def restore_policy_state(
    policy: ContextualThompsonSampling, state: dict[str, np.ndarray]
) -> None:
    """Restore a state returned by ``policy_state``."""
    policy.restore(state)


def encode_state(
    state: dict[str, np.ndarray], metadata: Mapping[str, object] | None = None
) -> bytes:
    """Serialize a policy snapshot and JSON-compatible ``metadata`` as .npz bytes.

    Of each ``<part>.pending`` array (contexts waiting for a covariance refresh), only
    the ``<part>.n_pending`` rows in use are written, as float32 when that is exact
    (contexts are float32 vectors), which halves their size.
    """
    arrays: dict[str, Any] = {}
    pending_layouts: dict[str, dict[str, object]] = {}
    for key, value in state.items():
        counts_key = _pending_counts_key(key)
        if counts_key is None or counts_key not in state:
            arrays[key] = value
            continue

        counts = state[counts_key]
        rows = np.concatenate(
            [value[model, :count] for model, count in enumerate(counts)]
        )
        narrow = rows.astype(np.float32)
        arrays[key] = narrow if np.array_equal(narrow, rows) else rows
        pending_layouts[key] = {"shape": list(value.shape), "dtype": value.dtype.str}

    header = {
        **(metadata or {}),
        "format": SNAPSHOT_FORMAT,
        "pending": pending_layouts,
    }
    arrays[_METADATA_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_state(payload: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Decode bytes written by ``encode_state`` into the policy state and metadata."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        metadata = json.loads(arrays.pop(_METADATA_KEY).tobytes())
    except (OSError, ValueError, KeyError) as error:
        raise SnapshotError(
            f"The stored snapshot cannot be decoded ({error}); delete the snapshot key "
            "to rebuild the posterior from the stream."
        ) from error

    if metadata.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(
            f"The stored snapshot has format {metadata.get('format')!r}, this version "
            f"reads format {SNAPSHOT_FORMAT}; use a new key namespace for this version."
        )

    for key, layout in metadata["pending"].items():
        counts = arrays[_pending_counts_key(key)]
        rows = arrays[key]
        pending = np.zeros(layout["shape"], dtype=np.dtype(layout["dtype"]))
        start = 0
        for model, count in enumerate(counts):
            pending[model, :count] = rows[start : start + count]
            start += count
        arrays[key] = pending
    return arrays, metadata


def state_digest(state: dict[str, np.ndarray]) -> str:
    """Return a SHA-256 hex digest of a policy snapshot.

    Rows of ``<part>.pending`` beyond ``<part>.n_pending`` are unused memory and are
    left out, so equal posteriors give equal digests.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        value = np.ascontiguousarray(state[key])
        counts_key = _pending_counts_key(key)
        if counts_key is not None and counts_key in state:
            value = value.copy()
            for model, count in enumerate(state[counts_key]):
                value[model, count:] = 0
        digest.update(f"{key}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _pending_counts_key(key: str) -> str | None:
    part, _, name = key.rpartition(".")
    if name != _PENDING_SUFFIX:
        return None
    return f"{part}.n_{_PENDING_SUFFIX}" if part else f"n_{_PENDING_SUFFIX}"


def _check_state_fits(
    state: dict[str, np.ndarray], current: dict[str, np.ndarray]
) -> None:
    # The control state's arrays depend on the budget and breakers in force, which
    # the snapshot sets, so ControlState.restore checks them instead.
    state = _learned_part(state)
    current = _learned_part(current)
    missing = sorted(set(current) - set(state))
    unexpected = sorted(set(state) - set(current))
    if missing or unexpected:
        raise SnapshotError(
            f"The stored snapshot does not fit the policy: missing arrays {missing}, "
            f"unexpected arrays {unexpected}. Use a key namespace keyed on the context "
            "dimension and settings (store_namespace)."
        )

    # Models added at run time make the snapshot's model axis (axis 0) longer than
    # that of a process started from the settings' catalog.
    for key, value in current.items():
        shape = state[key].shape
        grown = shape[1:] == value.shape[1:] and shape[:1] >= value.shape[:1]
        if shape != value.shape and not grown:
            raise SnapshotError(
                f"The stored snapshot array {key!r} has shape {state[key].shape}, the "
                f"policy has {value.shape}. Use a key namespace keyed on the context "
                "dimension and settings (store_namespace)."
            )
