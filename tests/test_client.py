"""The Python clients against the real app, the real encoder and a real Redis."""

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from redis_server import free_port

from banditroute.api import create_app
from banditroute.client import (
    AsyncBanditRouteClient,
    BanditRouteClient,
    ServiceError,
)
from banditroute.schemas import FeedbackResponse, RouteResponse
from banditroute.settings import ServiceSettings, load_settings

CATALOG = [
    {"name": "large", "input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0},
    {"name": "small", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.1},
]
PROMPT = "Summarize the causes of the French Revolution in three sentences."


def write_settings(folder: Path, redis_url: str, namespace: str) -> ServiceSettings:
    path = folder / "service.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "catalog": CATALOG,
                "redis_url": redis_url,
                "redis_namespace": namespace,
                "retry_after_seconds": 1,
                "redis_timeout_seconds": 0.5,
                "seed": 0,
            }
        )
    )
    return load_settings(path)


@pytest.fixture
def app_client(tmp_path, redis_url, redis_namespace, encoder) -> Iterator[TestClient]:
    settings = write_settings(tmp_path, redis_url, redis_namespace)
    with TestClient(create_app(settings, encoder=encoder)) as test_client:
        yield test_client


@pytest.fixture
def client(app_client) -> BanditRouteClient:
    return BanditRouteClient(http_client=app_client, feedback_retries=0)


def test_route_returns_result(client):
    result = client.route(PROMPT, cost_weight=0.0)

    assert isinstance(result, RouteResponse)
    assert result.model in {"large", "small"}
    assert result.degraded is False


def test_route_with_messages(client):
    result = client.route(messages=[{"role": "user", "content": PROMPT}])

    assert result.decision_id


def test_feedback_and_duplicate(client):
    decision = client.route(PROMPT)

    first = client.feedback(decision.decision_id, 5, scale="stars_5")
    repeat = client.feedback(decision.decision_id, 1, scale="stars_5")

    assert first == FeedbackResponse(
        accepted=True, duplicate=False, event_id=first.event_id
    )
    assert repeat.duplicate is True
    assert repeat.event_id == first.event_id


def test_invalid_request_raises_with_field(client):
    with pytest.raises(ServiceError) as raised:
        client.route(PROMPT, allowed_models=["medium"])

    assert raised.value.status_code == 422
    assert raised.value.error == "invalid_field"
    assert raised.value.field == "allowed_models"
    assert raised.value.value == "medium"


def test_unknown_decision_raises_404(client):
    with pytest.raises(ServiceError) as raised:
        client.feedback("missing", True, scale="thumbs")

    assert raised.value.status_code == 404
    assert raised.value.field == "decision_id"


def test_models_and_stats(client):
    client.route(PROMPT, allowed_models=["small"])

    models = client.models()
    stats = client.stats(digest=False)

    assert [model["name"] for model in models] == ["large", "small"]
    assert stats["decisions"] == 1
    assert "digest" not in stats["posterior"]


def test_ready_reports_true(client):
    assert client.ready() is True


def test_unreachable_service_raises_service_error():
    client = BanditRouteClient(f"http://127.0.0.1:{free_port()}", timeout=1.0)

    with pytest.raises(ServiceError) as raised:
        client.route(PROMPT)
    client.close()

    assert raised.value.status_code is None


def test_async_client_routes_and_records_feedback(
    tmp_path, redis_url, redis_namespace, encoder
):
    settings = write_settings(tmp_path, redis_url, redis_namespace)
    app = create_app(settings, encoder=encoder)

    async def exercise() -> tuple[RouteResponse, FeedbackResponse, bool]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as http,
        ):
            client = AsyncBanditRouteClient(http_client=http)
            decision = await client.route(PROMPT)
            feedback = await client.feedback(decision.decision_id, 0.8, scale="unit")
            return decision, feedback, await client.ready()

    decision, feedback, ready = asyncio.run(exercise())

    assert decision.degraded is False
    assert feedback.duplicate is False
    assert ready is True


def test_feedback_retried_until_redis_returns(tmp_path, private_redis, encoder):
    settings = write_settings(tmp_path, private_redis.url, "client-retry")
    with TestClient(create_app(settings, encoder=encoder)) as app_client:
        client = BanditRouteClient(http_client=app_client, feedback_retries=5)
        decision = client.route(PROMPT)
        private_redis.stop()
        restarter = threading.Timer(0.5, private_redis.start)
        restarter.start()

        started = time.monotonic()
        result = client.feedback(decision.decision_id, True, scale="thumbs")
        restarter.join()

    assert result.duplicate is False
    assert time.monotonic() - started >= 0.5


def test_feedback_503_raises_with_retry_after(tmp_path, private_redis, encoder):
    settings = write_settings(tmp_path, private_redis.url, "client-outage")
    with TestClient(create_app(settings, encoder=encoder)) as app_client:
        client = BanditRouteClient(http_client=app_client, feedback_retries=0)
        decision = client.route(PROMPT)
        private_redis.stop()

        with pytest.raises(ServiceError) as raised:
            client.feedback(decision.decision_id, True, scale="thumbs")
        private_redis.start()

    assert raised.value.status_code == 503
    assert raised.value.retry_after == 1.0


def test_non_finite_number_raises_service_error(client):
    with pytest.raises(ServiceError, match="finite") as raised:
        client.route(PROMPT, cost_weight=float("nan"))

    assert raised.value.status_code is None
