"""Admin endpoints: change the catalog, the budget and the rollout at run time.

Every change is a control event appended to the shared stream, so every server
process applies it at the same position among the feedback events, and it survives
restarts in the snapshots. An endpoint returns once the process that received it has
applied the change. The endpoints need ``Authorization: Bearer <admin_key>``; without
an ``admin_key`` setting they are off.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from banditroute.catalog import catalog_changes
from banditroute.errors import BanditRouteError
from banditroute.events import ControlEvent
from banditroute.feedback import InvalidFieldError, RequestError
from banditroute.json_body import StrictJSONRoute
from banditroute.schemas import ERROR_RESPONSES, MAX_COST_USD
from banditroute.settings import ModelName, load_settings

if TYPE_CHECKING:
    from banditroute.api import Service

logger = logging.getLogger(__name__)

MAX_PRICE = 10_000.0
"""Highest list price accepted, in USD per million tokens."""
MIN_TARGET_COST_USD = 1e-9
"""Lowest target mean cost per request: a billionth of a USD."""

APPLY_TIMEOUT_SECONDS = 5.0
"""Time an endpoint waits for its own process to apply the change it appended."""

ADMIN_ERROR_RESPONSES = {
    **ERROR_RESPONSES,
    401: ERROR_RESPONSES[400],
    403: ERROR_RESPONSES[400],
    409: ERROR_RESPONSES[400],
}


class AdminUnauthorizedError(RequestError):
    status_code = 401
    error_code = "unauthorized"


class AdminDisabledError(RequestError):
    status_code = 403
    error_code = "admin_disabled"


class ChangeRejectedError(RequestError):
    """The stream refused the change, for example a concurrent one made it invalid."""

    status_code = 409
    error_code = "change_rejected"


class ModelNotFoundError(RequestError):
    status_code = 404
    error_code = "model_not_found"


class ModelPrices(BaseModel):
    """A model's list prices in USD per million tokens."""

    model_config = ConfigDict(extra="forbid", strict=True)

    input_usd_per_mtok: float = Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)
    output_usd_per_mtok: float = Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)


class NewModel(ModelPrices):
    """A model to add to the catalog, with its list prices."""

    name: ModelName = Field(max_length=200)


class BudgetChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    target_cost_usd: float | None = Field(
        ge=MIN_TARGET_COST_USD, le=MAX_COST_USD, allow_inf_nan=False
    )
    """Target mean cost per request in USD; null fixes the cost weight again."""


class RolloutChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    share: float | None = Field(ge=0, le=1, allow_inf_nan=False)
    """Share of requests the bandit routes; null ends the rollout."""
    default_model: str | None = None


class AdminRoute(StrictJSONRoute):
    """A strict JSON route that checks the admin key before it reads the body, so a
    request without the key gets 401 (or 403 when admin is off) whatever its body."""

    def check_before_body(self, request: Request) -> None:
        _require_admin_key(request)


def add_admin_endpoints(app: FastAPI) -> None:
    """Register the /admin endpoints on ``app``."""
    admin = APIRouter(route_class=AdminRoute)

    @admin.post("/admin/models", responses=ADMIN_ERROR_RESPONSES)
    async def add_model(body: NewModel, request: Request) -> dict[str, Any]:
        """Add a model to the catalog; it starts from the pooled prior and is probed."""
        service: Service = request.app.state.service
        if body.name in service.catalog:
            raise InvalidFieldError(
                f"The catalog already has a model named {body.name!r}; choose another "
                "name, or enable it if it is disabled.",
                field="name",
                value=body.name,
            )
        return await _apply(service, ControlEvent("add_model", body.model_dump()))

    @admin.post("/admin/models/{name:path}/disable", responses=ADMIN_ERROR_RESPONSES)
    async def disable_model(name: str, request: Request) -> dict[str, Any]:
        """Stop routing to a model; its feedback is still accepted and learned."""
        service: Service = request.app.state.service
        _check_known_model(service, name)
        if name == service.controls.rollout_default:
            raise InvalidFieldError(
                f"{name!r} is the rollout's default model; end the rollout or change "
                "its default model first.",
                field="name",
                value=name,
            )
        if service.catalog.enabled_names() == [name]:
            raise InvalidFieldError(
                f"{name!r} is the last enabled model; enable or add another model "
                "first.",
                field="name",
                value=name,
            )
        return await _apply(service, ControlEvent("disable_model", {"name": name}))

    @admin.post("/admin/models/{name:path}/enable", responses=ADMIN_ERROR_RESPONSES)
    async def enable_model(name: str, request: Request) -> dict[str, Any]:
        """Route to a disabled model again."""
        service: Service = request.app.state.service
        _check_known_model(service, name)
        return await _apply(service, ControlEvent("enable_model", {"name": name}))

    @admin.put("/admin/models/{name:path}/prices", responses=ADMIN_ERROR_RESPONSES)
    async def set_prices(
        name: str, body: ModelPrices, request: Request
    ) -> dict[str, Any]:
        """Change a model's list prices in every process; its learned state stays."""
        service: Service = request.app.state.service
        _check_known_model(service, name)
        arguments = {"name": name, **body.model_dump()}
        return await _apply(service, ControlEvent("set_prices", arguments))

    @admin.put("/admin/budget", responses=ADMIN_ERROR_RESPONSES)
    async def set_budget(body: BudgetChange, request: Request) -> dict[str, Any]:
        """Set the target mean cost per request, which the cost weight then tracks."""
        service: Service = request.app.state.service
        # The pacer settings travel with the target, so every process paces alike.
        arguments = {
            "target_cost_usd": body.target_cost_usd,
            **service.settings.budget.pacer_options(),
        }
        return await _apply(service, ControlEvent("set_budget", arguments))

    @admin.put("/admin/rollout", responses=ADMIN_ERROR_RESPONSES)
    async def set_rollout(body: RolloutChange, request: Request) -> dict[str, Any]:
        """Set the share of requests the bandit routes; the rest go to the default."""
        service: Service = request.app.state.service
        _check_rollout(service, body.share, body.default_model)
        arguments = {"share": body.share, "default_model": body.default_model}
        return await _apply(service, ControlEvent("set_rollout", arguments))

    @admin.post("/admin/reload", responses=ADMIN_ERROR_RESPONSES)
    async def reload(request: Request) -> dict[str, Any]:
        """Apply the settings file's catalog, budget and rollout to the running service.

        Models missing from the file are disabled, not removed, so stored decisions
        and their feedback stay valid.
        """
        service: Service = request.app.state.service
        events = _reload_events(service)
        result: dict[str, Any] = {"changes": [event.action for event in events]}
        for event in events:
            result.update(await _apply(service, event))
        return result

    app.include_router(admin)


def _require_admin_key(request: Request) -> None:
    """Reject a request without the admin key."""
    service: Service = request.app.state.service
    key = service.settings.admin_key
    if key is None:
        raise AdminDisabledError(
            "The admin endpoints are off; set admin_key in the settings (or "
            "BANDITROUTE_ADMIN_KEY) to turn them on."
        )

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = key.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        token.strip().encode(), expected
    ):
        logger.warning(
            "Rejected %s %s: missing or wrong admin key",
            request.method,
            request.url.path,
        )
        raise AdminUnauthorizedError(
            "The admin key is missing or wrong; send Authorization: Bearer "
            "<admin_key>.",
            field="Authorization",
        )


def _check_known_model(service: Service, name: str) -> None:
    if name not in service.catalog:
        raise ModelNotFoundError(
            f"No model named {name!r} is in the catalog; known models: "
            f"{list(service.catalog.names)}.",
            field="name",
            value=name,
        )


def _check_rollout(
    service: Service,
    share: float | None,
    default: str | None,
    enabled: list[str] | None = None,
) -> None:
    """Check a rollout against ``enabled``, by default the catalog's enabled models."""
    if (share is None) != (default is None):
        raise InvalidFieldError(
            "A rollout needs both share and default_model; send both, or null for "
            "both to end it.",
            field="default_model" if default is None else "share",
            value=None,
        )
    if enabled is None:
        enabled = service.catalog.enabled_names()
    if default is not None and default not in enabled:
        known = (
            "is disabled; enable it first"
            if default in service.catalog
            else (f"is not in the catalog; known models: {list(service.catalog.names)}")
        )
        raise InvalidFieldError(
            f"default_model {default!r} {known}.",
            field="default_model",
            value=default,
        )


def _reload_events(service: Service) -> list[ControlEvent]:
    """Return the control events that bring the service to its settings file."""
    try:
        settings = load_settings()
    except BanditRouteError as error:
        raise InvalidFieldError(
            f"The settings file cannot be loaded: {error}", field="settings"
        ) from error

    file_catalog = settings.build_catalog()
    with service.replica.reading() as policy:
        changes = catalog_changes(policy.catalog, file_catalog)
    events = [
        ControlEvent("add_model", model.to_arguments()) for model in changes.to_add
    ]
    for name in changes.to_enable:
        events.append(ControlEvent("enable_model", {"name": name}))
    for model in changes.to_reprice:
        events.append(ControlEvent("set_prices", model.to_arguments()))
    for name in changes.to_disable:
        events.append(ControlEvent("disable_model", {"name": name}))

    controls = service.controls
    target = settings.budget.target_cost_usd
    current_target = None if controls.pacer is None else controls.pacer.target_cost_usd
    if target != current_target:
        arguments = {"target_cost_usd": target, **settings.budget.pacer_options()}
        events.append(ControlEvent("set_budget", arguments))

    rollout = settings.rollout
    # The reload enables exactly the file's models, so the default is checked
    # against them.
    _check_rollout(
        service, rollout.share, rollout.default_model, list(file_catalog.names)
    )
    current_share = controls.rollout_share if controls.rollout_default else None
    if (rollout.share, rollout.default_model) != (
        current_share,
        controls.rollout_default,
    ):
        arguments = {"share": rollout.share, "default_model": rollout.default_model}
        events.append(ControlEvent("set_rollout", arguments))
    return events


async def _apply(service: Service, event: ControlEvent) -> dict[str, Any]:
    """Append ``event`` with the current time and wait until this process applied it."""
    stamped = ControlEvent(event.action, event.arguments, issued_at=service.clock())
    event_id = await service.store.append_control(stamped)
    applied = await service.replica.wait_for(event_id, APPLY_TIMEOUT_SECONDS)
    skipped = service.replica.recent_skips.get(event_id)
    if skipped is not None:
        logger.warning("Control event %s was not applied: %s", event_id, skipped)
        raise ChangeRejectedError(
            f"The {event.action} change was not applied because {skipped}; check "
            "GET /models and /stats and send it again if it still applies.",
            field="action",
            value=event.action,
        )
    logger.info(
        "Appended control event %s as %s (applied here: %s)",
        event.action,
        event_id,
        applied,
    )

    with service.replica.reading():
        controls = service.controls.describe(
            service.clock(), service.settings.cost_weight
        )
        enabled = service.catalog.enabled_names()
        models = [
            {"name": name, "enabled": name in enabled} for name in service.catalog.names
        ]
    return {
        "event_id": event_id,
        "applied": applied,
        "models": models,
        "controls": controls,
    }
