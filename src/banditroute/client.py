"""Python clients of the routing service, synchronous and asynchronous.

Both return the service's own response models (``banditroute.schemas``), so the
client and the server cannot disagree on a field. Both raise ``ServiceError`` with
the status, field and value that the service named, and retry feedback on 503 after
the Retry-After delay, because the service records feedback for a decision at most
once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from banditroute.errors import BanditRouteError
from banditroute.schemas import FeedbackResponse, RouteResponse

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_FEEDBACK_RETRIES = 3
MAX_RETRY_DELAY_SECONDS = 30.0


class ServiceError(BanditRouteError):
    """The service rejected a request or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        field: str | None = None,
        value: object = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        """HTTP status; None when no response arrived."""
        self.error = error
        """The service's error code, such as "invalid_field"."""
        self.field = field
        self.value = value
        self.retry_after = retry_after
        """Seconds the service asked to wait before retrying (503 only)."""


def route_body(
    prompt: str | None,
    messages: Sequence[Mapping[str, str]] | None,
    metadata: Mapping[str, object] | None,
    allowed_models: Sequence[str] | None,
    cost_weight: float | None,
    max_cost_usd: float | None,
) -> dict[str, Any]:
    """Return the JSON body of ``POST /route``, leaving out unset fields."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "messages": None if messages is None else [dict(m) for m in messages],
        "metadata": None if metadata is None else dict(metadata),
        "allowed_models": None if allowed_models is None else list(allowed_models),
        "cost_weight": cost_weight,
        "max_cost_usd": max_cost_usd,
    }
    return {key: value for key, value in body.items() if value is not None}


def feedback_body(
    decision_id: str,
    rating: bool | float | None,
    scale: str | None,
    source: str,
    error: bool,
    input_tokens: int | None,
    output_tokens: int | None,
    cost_usd: float | None,
    latency_ms: float | None,
) -> dict[str, Any]:
    """Return the JSON body of ``POST /feedback``, leaving out unset fields."""
    body: dict[str, Any] = {
        "decision_id": decision_id,
        "rating": rating,
        "scale": scale,
        "source": source,
        "error": error,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost_usd,
        "latency_ms": latency_ms,
    }
    return {key: value for key, value in body.items() if value is not None}


def parse_response(response: httpx.Response) -> Any:
    """Return the JSON body of a 2xx response; raise ServiceError for any other."""
    if response.is_success:
        return response.json()
    raise error_from_response(response)


def error_from_response(response: httpx.Response) -> ServiceError:
    """Build the ServiceError that a non-2xx response describes."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}

    retry_after = _retry_after(response)
    message = body.get("message") or response.text[:200] or response.reason_phrase
    return ServiceError(
        f"{response.request.method} {response.request.url.path} failed with "
        f"{response.status_code}: {message}",
        status_code=response.status_code,
        error=body.get("error"),
        field=body.get("field"),
        value=body.get("value"),
        retry_after=retry_after,
    )


def _retry_after(response: httpx.Response) -> float | None:
    header = response.headers.get("retry-after")
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def _retry_delay(error: ServiceError, attempt: int) -> float | None:
    """Return the wait before retrying feedback, or None when it must not be retried."""
    if error.status_code != 503:
        return None
    delay = error.retry_after if error.retry_after is not None else 2.0**attempt
    return min(delay, MAX_RETRY_DELAY_SECONDS)


def _encoding_error(error: ValueError, path: str) -> ServiceError:
    # httpx encodes JSON without NaN or Infinity, which the service rejects too.
    return ServiceError(
        f"The request to {path} cannot be sent as JSON ({error}); pass finite numbers."
    )


def _connection_error(error: httpx.HTTPError, path: str) -> ServiceError:
    return ServiceError(
        f"Request to {path} failed: {error!r}; check that the service is running "
        "and reachable."
    )


class BanditRouteClient:
    """Synchronous client; pass ``http_client`` to reuse or test a transport."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        feedback_retries: int = DEFAULT_FEEDBACK_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._owns_client = http_client is None
        self._http = http_client or httpx.Client(base_url=base_url, timeout=timeout)
        self.feedback_retries = feedback_retries

    def __enter__(self) -> BanditRouteClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self._http.close()

    def route(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Mapping[str, str]] | None = None,
        metadata: Mapping[str, object] | None = None,
        allowed_models: Sequence[str] | None = None,
        cost_weight: float | None = None,
        max_cost_usd: float | None = None,
    ) -> RouteResponse:
        """Choose a model for ``prompt`` or ``messages`` (give exactly one)."""
        body = route_body(
            prompt, messages, metadata, allowed_models, cost_weight, max_cost_usd
        )
        result = self._request("POST", "/route", json=body)
        return RouteResponse.model_validate(result)

    def feedback(
        self,
        decision_id: str,
        rating: bool | float | None = None,
        *,
        scale: str | None = None,
        source: str = "user",
        error: bool = False,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
    ) -> FeedbackResponse:
        """Report the outcome of a routed request; retried on 503 after Retry-After."""
        body = feedback_body(
            decision_id,
            rating,
            scale,
            source,
            error,
            input_tokens,
            output_tokens,
            cost_usd,
            latency_ms,
        )
        attempt = 0
        while True:
            try:
                result = self._request("POST", "/feedback", json=body)
                return FeedbackResponse.model_validate(result)
            except ServiceError as service_error:
                delay = _retry_delay(service_error, attempt)
                if delay is None or attempt >= self.feedback_retries:
                    raise
            attempt += 1
            logger.info(
                "Feedback for decision %s got 503; retry %d of %d in %.1f s",
                decision_id,
                attempt,
                self.feedback_retries,
                delay,
            )
            time.sleep(delay)

    def models(self) -> list[dict[str, Any]]:
        return self._request("GET", "/models")["models"]

    def stats(self, *, digest: bool = True) -> dict[str, Any]:
        return self._request("GET", "/stats", params={"digest": digest})

    def ready(self) -> bool:
        """Return whether ``/readyz`` reports the service ready."""
        try:
            response = self._http.get("/readyz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise _connection_error(error, path) from error
        except ValueError as error:
            raise _encoding_error(error, path) from error
        return parse_response(response)


class AsyncBanditRouteClient:
    """Asynchronous client with the methods of ``BanditRouteClient``."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        feedback_retries: int = DEFAULT_FEEDBACK_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._owns_client = http_client is None
        self._http = http_client or httpx.AsyncClient(
            base_url=base_url, timeout=timeout
        )
        self.feedback_retries = feedback_retries

    async def __aenter__(self) -> AsyncBanditRouteClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._http.aclose()

    async def route(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Mapping[str, str]] | None = None,
        metadata: Mapping[str, object] | None = None,
        allowed_models: Sequence[str] | None = None,
        cost_weight: float | None = None,
        max_cost_usd: float | None = None,
    ) -> RouteResponse:
        """Choose a model for ``prompt`` or ``messages`` (give exactly one)."""
        body = route_body(
            prompt, messages, metadata, allowed_models, cost_weight, max_cost_usd
        )
        result = await self._request("POST", "/route", json=body)
        return RouteResponse.model_validate(result)

    async def feedback(
        self,
        decision_id: str,
        rating: bool | float | None = None,
        *,
        scale: str | None = None,
        source: str = "user",
        error: bool = False,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
    ) -> FeedbackResponse:
        """Report the outcome of a routed request; retried on 503 after Retry-After."""
        body = feedback_body(
            decision_id,
            rating,
            scale,
            source,
            error,
            input_tokens,
            output_tokens,
            cost_usd,
            latency_ms,
        )
        attempt = 0
        while True:
            try:
                result = await self._request("POST", "/feedback", json=body)
                return FeedbackResponse.model_validate(result)
            except ServiceError as service_error:
                delay = _retry_delay(service_error, attempt)
                if delay is None or attempt >= self.feedback_retries:
                    raise
            attempt += 1
            logger.info(
                "Feedback for decision %s got 503; retry %d of %d in %.1f s",
                decision_id,
                attempt,
                self.feedback_retries,
                delay,
            )
            await asyncio.sleep(delay)

    async def models(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "/models"))["models"]

    async def stats(self, *, digest: bool = True) -> dict[str, Any]:
        return await self._request("GET", "/stats", params={"digest": digest})

    async def ready(self) -> bool:
        """Return whether ``/readyz`` reports the service ready."""
        try:
            response = await self._http.get("/readyz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise _connection_error(error, path) from error
        except ValueError as error:
            raise _encoding_error(error, path) from error
        return parse_response(response)
