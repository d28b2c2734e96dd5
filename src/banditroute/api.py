"""The HTTP routing service: ``create_app`` builds the FastAPI app.

``POST /route`` embeds the prompt, builds its context and lets the in-memory posterior
choose a model. ``POST /feedback`` appends the rating to the event stream that every
server process applies in the same order (see ``banditroute.replica``). The request
path reads no matrices from the store. It writes only the decision record and the
feedback event.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import threadpoolctl
from fastapi import FastAPI, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from banditroute.admin import add_admin_endpoints
from banditroute.batcher import EncodingBatcher
from banditroute.catalog import Catalog, catalog_changes
from banditroute.control_state import ControlState
from banditroute.encoder import Encoder
from banditroute.errors import (
    EmptyPromptError,
    InvalidTextError,
    UnknownModelError,
)
from banditroute.events import ControlEvent, DecisionRecord, new_decision_id
from banditroute.features import FeatureBuilder
from banditroute.feedback import (
    FeedbackRecorder,
    FeedbackReport,
    InvalidFieldError,
    RequestError,
)
from banditroute.json_body import StrictJSONRoute
from banditroute.metrics import ServiceMetrics, mark_process_dead
from banditroute.policies.thompson import ContextualThompsonSampling
from banditroute.replica import PosteriorReplica
from banditroute.routing import Router, RoutingRequest
from banditroute.schemas import (
    ERROR_RESPONSES,
    ROUTE_ERROR_RESPONSES,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    RouteRequest,
    RouteResponse,
)
from banditroute.settings import ServiceSettings, load_settings
from banditroute.store import (
    STREAM_START_ID,
    MemoryStore,
    RedisStore,
    Store,
    StoreUnavailable,
)

logger = logging.getLogger(__name__)

REPLICA_STOP_TIMEOUT_SECONDS = 2.0
SEED_WAIT_SECONDS = 5.0
"""Time a new service waits to apply the budget and rollout events it stored."""
SETTINGS_SYNC_POLL_SECONDS = 0.5
"""Poll interval of a service waiting for the store before it applies its file."""
GAUGE_UPDATE_SECONDS = 1.0
"""Interval at which each process refreshes its posterior gauges."""


# Errors


def error_response(error: Exception, request: Request | None = None) -> JSONResponse:
    """Map each error class to its status code and an ``ErrorResponse`` body."""
    headers: dict[str, str] = {}
    if isinstance(error, RequestError):
        status = error.status_code
        body = ErrorResponse(
            error=error.error_code,
            message=error.message,
            field=error.field,
            value=_json_value(error.value),
        )
        if status == 401:
            # A 401 response names the authentication scheme the client must use.
            headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(error, RequestValidationError):
        status, body = 422, _validation_error_body(error)
    elif isinstance(error, StoreUnavailable):
        status = 503
        retry_after = _retry_after_seconds(request)
        headers["Retry-After"] = str(retry_after)
        body = ErrorResponse(
            error="store_unavailable",
            message=f"The shared store is unavailable: {str(error).rstrip('.')}. "
            f"Retry in "
            f"{retry_after} s; feedback is idempotent, so repeating it is safe.",
        )
    elif isinstance(error, UnknownModelError | EmptyPromptError | InvalidTextError):
        status = 422
        body = ErrorResponse(error="invalid_field", message=str(error))
    else:
        raise TypeError(f"No status code is mapped to {type(error).__name__}.")

    return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)


async def _handle_error(request: Request, error: Exception) -> JSONResponse:
    # Feedback that fails before the endpoint runs (body parsing and validation) is
    # counted here; the endpoint counts its own rejections and marks the request.
    service = getattr(request.app.state, "service", None)
    counted = getattr(request.state, "feedback_counted", False)
    if request.url.path == "/feedback" and service is not None and not counted:
        _count_rejected_feedback(service, error, source="unknown")
    return error_response(error, request)


async def _handle_http_error(request: Request, error: Exception) -> JSONResponse:
    """Return the error body of an unknown path or method in the service's format."""
    assert isinstance(error, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = ErrorResponse(
        error=codes.get(error.status_code, "http_error"),
        message=f"{request.method} {request.url.path}: {error.detail}. See /docs for "
        "the endpoints and their methods.",
    )
    return JSONResponse(
        body.model_dump(),
        status_code=error.status_code,
        headers=getattr(error, "headers", None),
    )


def _validation_error_body(error: RequestValidationError) -> ErrorResponse:
    first = error.errors()[0]
    location = [str(part) for part in first["loc"]]
    if location and location[0] == "body":
        location = location[1:]
    field_name = ".".join(location) or "body"

    value = None if first["type"] == "missing" else first.get("input")
    message = f"{field_name}: {first['msg']}"
    if len(error.errors()) > 1:
        message += f" (and {len(error.errors()) - 1} more invalid fields)"
    return ErrorResponse(
        error="invalid_field",
        message=message + ".",
        field=field_name,
        value=_json_value(value),
    )


def _json_value(value: object) -> Any:
    try:
        return jsonable_encoder(value)
    except (TypeError, ValueError):
        return repr(value)


def _retry_after_seconds(request: Request | None) -> int:
    service = getattr(request.app.state, "service", None) if request else None
    if service is None:
        return ServiceSettings.model_fields["retry_after_seconds"].default
    return service.settings.retry_after_seconds


# Service state


@dataclass
class ProcessStats:
    """Counters of this process since it started."""

    decisions: int = 0
    degraded_decisions: int = 0
    choices: Counter[str] = field(default_factory=Counter)
    expected_cost_usd_sum: float = 0.0
    feedback_accepted: int = 0
    feedback_duplicates: int = 0
    feedback_rejected: int = 0
    quality_sum: float = 0.0
    reported_cost_usd_sum: float = 0.0
    reported_costs: int = 0


@dataclass
class Service:
    """The components one server process uses to handle requests."""

    settings: ServiceSettings
    catalog: Catalog
    encoder: Encoder
    features: FeatureBuilder
    policy: ContextualThompsonSampling
    store: Store
    replica: PosteriorReplica
    batcher: EncodingBatcher
    recorder: FeedbackRecorder
    metrics: ServiceMetrics
    controls: ControlState
    router: Router
    clock: Callable[[], float]
    started_at: float
    stats: ProcessStats = field(default_factory=ProcessStats)
    _digest: tuple[tuple[int, int], str] | None = None
    _gauge_task: asyncio.Task[None] | None = None
    settings_sync: asyncio.Task[None] | None = None
    """Task that applies the settings file to each shared state this process joins
    after its start."""
    outage_logged: bool = False
    """True once a request failed on the store, until one succeeds again."""

    def digest(self) -> str:
        """Return the replica's posterior digest, recomputed only after new events."""
        version = (self.replica.replacements, self.replica.applied_events)
        if self._digest is None or self._digest[0] != version:
            self._digest = (version, self.replica.digest())
        return self._digest[1]

    def start_gauge_updates(self) -> None:
        """Refresh the posterior gauges every second, scraped or not.

        With several workers, a scrape reaches one of them, and the merged metrics
        show each worker's gauges as that worker last set them.
        """
        self._gauge_task = asyncio.create_task(
            _update_gauges_forever(self), name="gauge-updates"
        )

    async def stop(self) -> None:
        for task in (self._gauge_task, self.settings_sync):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        mark_process_dead()
        await self.batcher.stop()
        await _stop_replica(self.replica)
        await self.store.close()


async def _stop_replica(replica: PosteriorReplica) -> None:
    # NOTE: a replica stopped right after it started can miss its first cancel while
    # redis-py opens a connection. On timeout, wait_for cancels it again.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(replica.stop(), REPLICA_STOP_TIMEOUT_SECONDS)


async def start_service(
    settings: ServiceSettings,
    *,
    encoder: Encoder | None = None,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
) -> Service:
    """Load the encoder, open the store and catch the posterior up with the stream."""
    file_catalog = settings.build_catalog()
    if encoder is None:
        encoder = Encoder(settings.encoder_model)
    _set_torch_threads(settings.resolved_torch_threads())
    _limit_blas_threads()

    features = FeatureBuilder(encoder.dimension, settings.features.to_spec())
    if store is None:
        store = _open_store(settings, features.dimension)
    # The replica rebuilds the policy on the shared state's catalog when it joins
    # one. It changes this catalog object in place, so every part of the service
    # that holds it reads the shared models.
    catalog = file_catalog.copy()
    policy = ContextualThompsonSampling(
        catalog,
        features.dimension,
        np.random.default_rng(settings.seed),
        prior=settings.prior.to_prior(),
        half_life=settings.half_life,
        exploration=settings.exploration.scale,
        noise_variance=settings.exploration.noise_variance,
    )

    metrics = ServiceMetrics()
    controls = settings.build_controls(catalog)
    replica = PosteriorReplica(
        policy, store, snapshot_every=settings.snapshot_every, controls=controls
    )
    await replica.start()
    await _warn_of_other_namespaces(settings, store, replica)
    applied_for = None
    if replica.caught_up:
        await _apply_settings_file(settings, file_catalog, store, replica, clock)
        applied_for = replica.resets
    # When the store did not respond, or when this process later joins a state that
    # another process started, the file is applied once the replica has caught up.
    settings_sync = asyncio.create_task(
        _apply_settings_file_on_join(
            settings, file_catalog, store, replica, clock, applied_for
        ),
        name="settings-file-sync",
    )
    router = Router(
        controls,
        default_cost_weight=settings.cost_weight,
        probe_requests=settings.health.probe_requests,
        rng=np.random.default_rng(_router_seed(settings.seed)),
    )

    batcher = EncodingBatcher(
        encoder,
        max_batch_size=settings.batch.max_batch_size,
        batch_wait_ms=settings.batch.batch_wait_ms,
        on_batch=metrics.encoder_batch_size.observe,
    )
    await batcher.start()

    recorder = FeedbackRecorder(
        store, catalog, window_seconds=settings.feedback_window_seconds, clock=clock
    )
    service = Service(
        settings=settings,
        catalog=catalog,
        encoder=encoder,
        features=features,
        policy=policy,
        store=store,
        replica=replica,
        batcher=batcher,
        recorder=recorder,
        metrics=metrics,
        controls=controls,
        router=router,
        clock=clock,
        started_at=clock(),
    )
    service.settings_sync = settings_sync
    service.start_gauge_updates()
    _freeze_startup_objects()
    _log_start(service)
    return service


async def _apply_settings_file(
    settings: ServiceSettings,
    file_catalog: Catalog,
    store: Store,
    replica: PosteriorReplica,
    clock: Callable[[], float],
) -> None:
    """Bring the file's budget and rollout into a new stream, and its new models."""
    await _seed_controls(settings, store, replica, clock())
    await _add_file_models(file_catalog, store, replica, clock())


async def _apply_settings_file_on_join(
    settings: ServiceSettings,
    file_catalog: Catalog,
    store: Store,
    replica: PosteriorReplica,
    clock: Callable[[], float],
    applied_for: int | None,
) -> None:
    """Apply the settings file each time the replica has caught up with a state it
    joined: after a start without the store, and after it dropped its posterior to
    join a state that another process started. ``applied_for`` is the replica's
    ``resets`` count the file was last applied for, None if it never was."""
    while True:
        await asyncio.sleep(SETTINGS_SYNC_POLL_SECONDS)
        ready = replica.caught_up and replica.store_available
        if not ready or replica.resets == applied_for:
            continue
        try:
            await _apply_settings_file(settings, file_catalog, store, replica, clock)
        except Exception:
            logger.exception("Applying the settings file to the shared state failed")
            continue
        applied_for = replica.resets
        logger.info("Applied the settings file to the shared state it joined.")


async def _add_file_models(
    file_catalog: Catalog, store: Store, replica: PosteriorReplica, now: float
) -> None:
    """Add the settings file's models that the shared state lacks.

    Only additions are made at start: a process restarted with an older file must
    not undo what newer ones did. Models the file no longer lists, and prices it
    changes, are logged; ``POST /admin/reload`` applies them.
    """
    if not replica.store_available:
        return
    with replica.reading() as policy:
        changes = catalog_changes(policy.catalog, file_catalog)
    if changes.to_enable:
        logger.info(
            "The settings file lists %s, which the shared state has disabled; POST "
            "/admin/reload enables them.",
            list(changes.to_enable),
        )
    if changes.to_disable:
        logger.info(
            "The shared state routes to %s, which the settings file does not list; "
            "POST /admin/reload disables them.",
            list(changes.to_disable),
        )
    if changes.to_reprice:
        logger.warning(
            "The settings file prices %s differently from the shared state, whose "
            "prices apply in every process; POST /admin/reload applies the file's.",
            [model.name for model in changes.to_reprice],
        )

    event_id = None
    try:
        for model in changes.to_add:
            event_id = await store.append_control(
                ControlEvent("add_model", model.to_arguments(), issued_at=now)
            )
    except StoreUnavailable as error:
        logger.warning("The settings file's new models were not added: %s", error)
        return
    if event_id is not None:
        logger.info(
            "Added the settings file's models %s to the shared state.",
            [model.name for model in changes.to_add],
        )
        await replica.wait_for(event_id, SEED_WAIT_SECONDS)


async def _warn_of_other_namespaces(
    settings: ServiceSettings, store: Store, replica: PosteriorReplica
) -> None:
    """Warn when a new shared state starts beside the state of other settings."""
    if replica.last_event_id != STREAM_START_ID:
        return
    try:
        others = await store.other_namespaces(settings.redis_namespace)
    except StoreUnavailable:
        return
    if others:
        logger.warning(
            "This process starts a new shared state in %s, while Redis also contains "
            "%s under the same prefix. The namespace digests the encoder, features, "
            "prior and half_life of the settings file, so changing one of them "
            "starts over. To keep the learned state, restore the earlier values.",
            getattr(store, "namespace", store.description),
            others,
        )


async def _seed_controls(
    settings: ServiceSettings, store: Store, replica: PosteriorReplica, now: float
) -> None:
    """Put the settings file's budget and rollout into a new, empty event stream.

    Later starts leave them to the shared state, which the admin endpoints change.
    Processes that start together on an empty stream may each append them, which
    changes nothing, because every process applies the same events.
    """
    if not replica.store_available or replica.last_event_id != STREAM_START_ID:
        return
    try:
        if (await store.stream_info()).entries_added > 0:
            return
        event_id = None
        for event in settings.initial_control_events(now):
            event_id = await store.append_control(event)
    except StoreUnavailable as error:
        logger.warning(
            "The budget and rollout of the settings were not stored: %s", error
        )
        return
    if event_id is not None:
        await replica.wait_for(event_id, SEED_WAIT_SECONDS)


def _router_seed(seed: int | None) -> list[int] | None:
    # A seed of its own, so that rollout draws do not change the policy's draws.
    return None if seed is None else [seed, 1]


def _freeze_startup_objects() -> None:
    # The encoder and its libraries leave about half a million long-lived objects, and
    # a full garbage collection that walks them all took 0.4 s here. Frozen objects are
    # skipped, so collections only walk what requests allocate.
    gc.collect()
    gc.freeze()


def _open_store(settings: ServiceSettings, feature_dimension: int) -> Store:
    if settings.redis_url is None:
        return MemoryStore()
    return RedisStore(
        settings.redis_url,
        namespace=settings.store_namespace(feature_dimension),
        socket_timeout=settings.redis_timeout_seconds,
    )


def _limit_blas_threads() -> None:
    # The posterior's matrix-vector products and rank-one updates are a few hundred
    # kilobytes each. A second BLAS thread speeds them up little and, with the
    # encoder and other workers on the same cores, slows applying events many-fold.
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def _set_torch_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _log_start(service: Service) -> None:
    settings = service.settings
    store = service.store.description
    if settings.redis_url is None:
        store += " (single process: learned state is lost when it stops)"

    exploration = settings.exploration
    noise = exploration.noise_variance
    logger.info(
        "Server process %d ready: store %s, %d models in the catalog, encoder %s "
        "(dimension %d, %d torch threads), workers configured: %d, stream entries "
        "applied: %d, exploration scale %g with %s noise variance",
        os.getpid(),
        store,
        len(service.catalog),
        service.encoder.model_id,
        service.encoder.dimension,
        settings.resolved_torch_threads(),
        settings.workers,
        service.replica.applied_events,
        exploration.scale,
        "learned" if noise is None else f"fixed {noise:g}",
    )


# Request logging and metrics


class RequestLogMiddleware:
    """Logs one INFO line per request and records its count and latency.

    The line has the method, path, status, latency, and the chosen model and decision
    id where there is one. It never contains the prompt.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        route_path = getattr(route, "path", None)
        if route_path is None:
            # FastAPI's /docs and /openapi.json routes leave no route in the scope.
            # Paths that were not found share one label, so that scans of random
            # paths cannot add label values without bound.
            route_path = "unmatched" if status == 404 else scope["path"]
        state: Mapping[str, Any] = scope.get("state", {})

        service: Service | None = getattr(scope["app"].state, "service", None)
        if service is not None:
            service.metrics.observe_request(route_path, status, seconds)

        details = ""
        if "model" in state:
            details = f" model={state['model']} decision_id={state['decision_id']}"
        logger.info(
            "%s %s %d %.1f ms%s",
            scope["method"],
            scope["path"],
            status,
            seconds * 1000,
            details,
        )


# Endpoints


def create_app(
    settings: ServiceSettings | None = None,
    *,
    encoder: Encoder | None = None,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build the routing service.

    ``settings`` defaults to ``load_settings()``. Pass an already loaded ``encoder``
    to share it between apps, and a ``store`` to use it instead of the one the
    settings name. ``clock`` returns unix seconds and dates decisions and feedback.
    """
    if settings is None:
        settings = load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = await start_service(
            settings, encoder=encoder, store=store, clock=clock
        )
        try:
            yield
        finally:
            await app.state.service.stop()
            logger.info("Server process %d stopped", os.getpid())

    app = FastAPI(
        title="banditroute",
        summary="Routes each LLM request to the model with the best expected quality "
        "for its cost, and learns from feedback.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.router.route_class = StrictJSONRoute
    for error_class in (RequestError, RequestValidationError, StoreUnavailable):
        app.add_exception_handler(error_class, _handle_error)
    app.add_exception_handler(UnknownModelError, _handle_error)
    app.add_exception_handler(EmptyPromptError, _handle_error)
    app.add_exception_handler(InvalidTextError, _handle_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
    app.add_middleware(RequestLogMiddleware)

    _add_routing_endpoints(app)
    _add_status_endpoints(app)
    add_admin_endpoints(app)
    return app


def create_app_from_environment() -> FastAPI:
    """Build the app from ``$BANDITROUTE_CONFIG`` and the environment (for uvicorn)."""
    return create_app(load_settings())


def _add_routing_endpoints(app: FastAPI) -> None:
    @app.post("/route", response_model=RouteResponse, responses=ROUTE_ERROR_RESPONSES)
    async def route(body: RouteRequest, request: Request) -> RouteResponse:
        """Choose a model for one prompt."""
        service: Service = request.app.state.service
        response = await route_request(service, body)
        request.state.model = response.model
        request.state.decision_id = response.decision_id
        return response

    @app.post("/feedback", response_model=FeedbackResponse, responses=ERROR_RESPONSES)
    async def feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
        """Record the quality, usage or failure of one routed request, at most once."""
        service: Service = request.app.state.service
        try:
            return await record_feedback(service, body)
        except (RequestError, StoreUnavailable):
            request.state.feedback_counted = True
            raise


async def route_request(service: Service, body: RouteRequest) -> RouteResponse:
    """Embed the prompt, choose a model and store the decision record."""
    text = _prompt_text(body, service.settings.max_prompt_chars)
    encoded = await service.batcher.encode(text)
    request = RoutingRequest(
        context=_build_context(service.features, encoded.vector, body.metadata),
        input_tokens=encoded.token_count,
        allowed_models=body.allowed_models,
        cost_weight=body.cost_weight,
        max_cost_usd=body.max_cost_usd,
    )

    now = service.clock()
    choice = await service.replica.run_locked(
        lambda policy: service.router.choose(policy, request, now)
    )
    record = DecisionRecord(
        decision_id=new_decision_id(now),
        model=choice.model,
        context=request.context,
        input_tokens=request.input_tokens,
        propensity=choice.propensity,
        cost_weight=choice.cost_weight,
        expected_cost_usd=choice.expected_cost_usd,
        created_at=now,
        posterior_version=service.replica.applied_events,
        group=choice.group,
    )
    degraded = not await _store_decision(service, record)

    _count_decision(service, choice.model, choice.expected_cost_usd, degraded)
    return RouteResponse(
        decision_id=record.decision_id,
        model=choice.model,
        expected_cost_usd=choice.expected_cost_usd,
        propensity=choice.propensity,
        truncated=encoded.truncated,
        posterior_version=record.posterior_version,
        degraded=degraded,
        cost_weight=choice.cost_weight,
        rollout_group=choice.group,
    )


def _prompt_text(body: RouteRequest, max_chars: int) -> str:
    """Return the text to embed; raise InvalidFieldError naming the empty field."""
    if body.prompt is None and body.messages is None:
        raise InvalidFieldError(
            "prompt is missing; send a prompt or chat messages.",
            field="prompt",
            value=None,
        )
    if body.prompt is not None and body.messages is not None:
        raise InvalidFieldError(
            "Both prompt and messages were sent; send only one of them.",
            field="messages",
            value=_json_value(body.messages),
        )

    if body.prompt is not None:
        text, field_name = body.prompt, "prompt"
    else:
        assert body.messages is not None
        text = "\n".join(message.content for message in body.messages)
        field_name = "messages"

    if not text.strip():
        raise InvalidFieldError(
            f"{field_name} is empty or contains only whitespace; send the text to "
            "route.",
            field=field_name,
            value=text,
        )

    if len(text) > max_chars:
        raise InvalidFieldError(
            f"{field_name} has {len(text)} characters, more than the maximum of "
            f"{max_chars}; send a shorter prompt.",
            field=field_name,
            value=len(text),
        )
    return text


def _build_context(
    features: FeatureBuilder, vector: np.ndarray, metadata: dict[str, Any] | None
) -> np.ndarray:
    if metadata is None:
        return features.build_one(vector)

    spec = features.spec
    for key in spec.numeric:
        value = metadata.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise InvalidFieldError(
                f"metadata.{key} must be a number, not {value!r}; send a finite "
                "number or leave the key out.",
                field=f"metadata.{key}",
                value=value,
            )

    try:
        return features.build_one(vector, metadata)
    except ValueError as error:
        raise InvalidFieldError(
            str(error), field="metadata", value=_json_value(metadata)
        ) from error


async def _store_decision(service: Service, record: DecisionRecord) -> bool:
    # While the replica finds the store down, routing does not wait for a timeout on
    # every request. The replica's retries detect when the store is back.
    if not service.replica.store_available:
        _log_outage(service, "Decision %s was not stored", record.decision_id)
        return False

    try:
        await service.store.put_decision(
            record, service.settings.feedback_window_seconds
        )
    except StoreUnavailable as error:
        _log_outage(
            service, "Decision %s was not stored: %s", record.decision_id, error
        )
        return False
    service.outage_logged = False
    return True


def _log_outage(service: Service, message: str, *arguments: object) -> None:
    """Log the first request that the store failed, once per outage."""
    if service.outage_logged:
        logger.debug(message, *arguments)
        return

    service.outage_logged = True
    logger.warning(
        message + "; feedback on such decisions is rejected, and the store is not "
        "tried again for requests until it responds to the replica. Further failed "
        "requests are only counted until then.",
        *arguments,
    )


def _count_decision(
    service: Service, model: str, expected_cost: float, degraded: bool
) -> None:
    stats = service.stats
    stats.decisions += 1
    stats.choices[model] += 1
    stats.expected_cost_usd_sum += expected_cost
    service.metrics.choices.labels(model=model).inc()
    if degraded:
        stats.degraded_decisions += 1
        service.metrics.degraded_decisions.inc()


async def record_feedback(service: Service, body: FeedbackRequest) -> FeedbackResponse:
    """Append one feedback event; count a repeat for the same decision only once."""
    report = FeedbackReport(
        decision_id=body.decision_id,
        source=body.source,
        rating=body.rating,
        scale=body.scale,
        error=body.error,
        input_tokens=body.input_tokens,
        output_tokens=body.output_tokens,
        cost_usd=body.cost_usd,
        latency_ms=body.latency_ms,
    )
    source = body.source.value
    try:
        if not service.replica.store_available:
            raise StoreUnavailable(
                f"The store {service.store.description} did not respond to the last "
                "attempts; the replica is retrying"
            )
        outcome = await service.recorder.record(report)
        service.outage_logged = False
    except (RequestError, StoreUnavailable) as error:
        if isinstance(error, StoreUnavailable):
            _log_outage(
                service,
                "Feedback for decision %s was not recorded: %s",
                body.decision_id,
                error,
            )
        _count_rejected_feedback(service, error, source)
        raise

    stats = service.stats
    if outcome.duplicate:
        stats.feedback_duplicates += 1
        service.metrics.feedback.labels(source=source, outcome="duplicate").inc()
    else:
        stats.feedback_accepted += 1
        stats.quality_sum += outcome.quality
        if body.cost_usd is not None:
            stats.reported_cost_usd_sum += body.cost_usd
            stats.reported_costs += 1
        service.metrics.feedback.labels(source=source, outcome="accepted").inc()
    return FeedbackResponse(
        accepted=True, duplicate=outcome.duplicate, event_id=outcome.event_id
    )


def _count_rejected_feedback(service: Service, error: Exception, source: str) -> None:
    service.stats.feedback_rejected += 1
    service.metrics.feedback.labels(
        source=source, outcome=_feedback_outcome(error)
    ).inc()


def _feedback_outcome(error: Exception) -> str:
    if isinstance(error, StoreUnavailable):
        return "unavailable"
    outcomes = {404: "not_found", 410: "expired"}
    return outcomes.get(getattr(error, "status_code", 422), "invalid")


def _add_status_endpoints(app: FastAPI) -> None:
    @app.get("/models")
    async def models(request: Request) -> dict[str, Any]:
        """List the catalog with prices and what the posterior learned of each model."""
        service: Service = request.app.state.service
        return {"models": model_statistics(service)}

    @app.get("/stats")
    async def stats(
        request: Request,
        digest: Annotated[
            bool, Query(description="Include the posterior digest (a SHA-256).")
        ] = True,
    ) -> dict[str, Any]:
        """Report this process's counters and the state of its posterior."""
        service: Service = request.app.state.service
        return service_statistics(service, include_digest=digest)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Report that the process is running."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "Not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        """Report whether the store is reachable and the posterior is caught up."""
        service: Service | None = getattr(request.app.state, "service", None)
        checks = await readiness_checks(service)
        ready = all(checks.values())
        return JSONResponse(
            {"ready": ready, "checks": checks}, status_code=200 if ready else 503
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        service: Service = request.app.state.service
        _update_gauges(service)
        return Response(
            service.metrics.render(), media_type=service.metrics.content_type
        )


def model_statistics(service: Service) -> list[dict[str, Any]]:
    """Return each catalog model's prices and learned statistics."""
    with service.replica.reading() as policy:
        posteriors = policy.posteriors
        observations = posteriors.n_observations.copy()
        # Column 0 of every context is the constant 1, so column 0 of the quality
        # moment is the sum of the qualities observed for the model.
        quality_sums = posteriors.quality_moment[:, 0].copy()
        output_tokens = policy.cost_model.expected_output_tokens.copy()
        noise_variance = posteriors.noise_variance.copy()
        specs = list(policy.catalog)
        enabled = policy.catalog.enabled.copy()

    rows = []
    for index, spec in enumerate(specs):
        count = int(observations[index])
        rows.append(
            {
                "name": spec.name,
                "enabled": bool(enabled[index]),
                "input_usd_per_mtok": spec.input_usd_per_mtok,
                "output_usd_per_mtok": spec.output_usd_per_mtok,
                "observations": count,
                "mean_quality": float(quality_sums[index] / count) if count else None,
                "expected_output_tokens": float(output_tokens[index]),
                "noise_variance": float(noise_variance[index]),
            }
        )
    return rows


def service_statistics(service: Service, *, include_digest: bool) -> dict[str, Any]:
    """Return this process's counters and the state of its posterior replica."""
    stats = service.stats
    replica = service.replica
    decisions = stats.decisions
    shares = {
        name: stats.choices[name] / decisions if decisions else 0.0
        for name in service.catalog.names
    }
    with replica.reading() as policy:
        observations = int(policy.posteriors.n_observations.sum())
        quality_total = float(policy.posteriors.quality_moment[:, 0].sum())
        controls = service.controls.describe(
            service.clock(), service.settings.cost_weight
        )

    result: dict[str, Any] = {
        "process_id": os.getpid(),
        "uptime_seconds": service.clock() - service.started_at,
        "decisions": decisions,
        "degraded_decisions": stats.degraded_decisions,
        "model_shares": shares,
        "mean_expected_cost_usd": (
            stats.expected_cost_usd_sum / decisions if decisions else None
        ),
        "feedback": {
            "accepted": stats.feedback_accepted,
            "duplicates": stats.feedback_duplicates,
            "rejected": stats.feedback_rejected,
        },
        "mean_reported_quality": (
            stats.quality_sum / stats.feedback_accepted
            if stats.feedback_accepted
            else None
        ),
        "mean_reported_cost_usd": (
            stats.reported_cost_usd_sum / stats.reported_costs
            if stats.reported_costs
            else None
        ),
        "posterior": {
            "applied_events": replica.applied_events,
            "last_event_id": replica.last_event_id,
            "observations": observations,
            "mean_quality": quality_total / observations if observations else None,
            "caught_up": replica.caught_up,
            "store_available": replica.store_available,
        },
        "controls": controls,
        "encoder": {
            "batches": service.batcher.batches,
            "mean_batch_size": service.batcher.mean_batch_size,
        },
    }
    if include_digest:
        result["posterior"]["digest"] = service.digest()
    return result


async def readiness_checks(service: Service | None) -> dict[str, bool]:
    """Return each readiness condition: encoder loaded, store reachable, caught up."""
    if service is None:
        return {"encoder_loaded": False, "store_reachable": False, "caught_up": False}

    try:
        await service.store.ping()
        reachable = True
    except StoreUnavailable:
        reachable = False
    return {
        "encoder_loaded": True,
        "store_reachable": reachable,
        "caught_up": service.replica.caught_up,
    }


async def _update_gauges_forever(service: Service) -> None:
    while True:
        _update_gauges(service)
        await asyncio.sleep(GAUGE_UPDATE_SECONDS)


def _update_gauges(service: Service) -> None:
    replica = service.replica
    service.metrics.applied_events.set(replica.applied_events)
    service.metrics.store_available.set(1 if replica.store_available else 0)
    lag = getattr(replica, "lag", None)
    if lag is not None:
        service.metrics.stream_lag.set(lag)
