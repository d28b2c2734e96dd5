"""The routing service over HTTP, with the real encoder and a real Redis."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from banditroute.api import create_app
from banditroute.settings import ServiceSettings, load_settings

CATALOG = [
    {"name": "frontier", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0},
    {"name": "mid", "input_usd_per_mtok": 0.4, "output_usd_per_mtok": 1.6},
    {"name": "open-small", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.1},
]
PROMPT = "Write a Python function that returns the n-th Fibonacci number."
MAX_BODY_BYTES = 4096
MAX_PROMPT_CHARS = 500
APPLY_TIMEOUT_SECONDS = 10.0
JSON = {"content-type": "application/json"}


def write_settings(
    folder: Path, redis_url: str | None, namespace: str, **values: object
) -> ServiceSettings:
    """Write a settings file with a small catalog and load it."""
    content = {
        "catalog": CATALOG,
        "redis_url": redis_url,
        "redis_namespace": namespace,
        "max_body_bytes": MAX_BODY_BYTES,
        "max_prompt_chars": MAX_PROMPT_CHARS,
        "features": {"numeric": ["priority"], "categorical": {"tier": ["free", "pro"]}},
        "seed": 0,
        **values,
    }
    path = folder / "service.yaml"
    path.write_text(yaml.safe_dump(content))
    return load_settings(path)


@pytest.fixture
def settings(tmp_path, redis_url, redis_namespace) -> ServiceSettings:
    return write_settings(tmp_path, redis_url, redis_namespace)


@pytest.fixture
def client(settings, encoder) -> Iterator[TestClient]:
    with TestClient(create_app(settings, encoder=encoder)) as test_client:
        yield test_client


def route(client: TestClient, **body: object) -> dict:
    response = client.post("/route", json={"prompt": PROMPT, **body})
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_applied(client: TestClient, count: int) -> dict:
    """Poll /stats until the posterior has applied ``count`` events."""
    deadline = time.monotonic() + APPLY_TIMEOUT_SECONDS
    while True:
        stats = client.get("/stats").json()
        if stats["posterior"]["applied_events"] >= count:
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} events not applied: {stats['posterior']}")
        time.sleep(0.02)


def observations(client: TestClient) -> dict[str, int]:
    models = client.get("/models").json()["models"]
    return {model["name"]: model["observations"] for model in models}


def assert_error(response, status: int, field: str, value: object) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field
    assert body["value"] == value
    assert body["message"]


# Routing


def test_route_returns_decision(client):
    decision = route(client)

    assert decision["model"] in {entry["name"] for entry in CATALOG}
    assert 0 < decision["propensity"] <= 1
    assert decision["expected_cost_usd"] > 0
    assert decision["truncated"] is False
    assert decision["posterior_version"] == 0
    assert decision["degraded"] is False
    assert decision["decision_id"]


def test_route_accepts_chat_messages(client):
    messages = [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": PROMPT},
    ]
    response = client.post("/route", json={"messages": messages})

    assert response.status_code == 200
    assert response.json()["degraded"] is False


def test_route_accepts_metadata_features(client):
    decision = route(client, metadata={"priority": 2, "tier": "pro", "other": "x"})

    assert decision["degraded"] is False


def test_allowed_models_limit_choice(client):
    models = {route(client, allowed_models=["mid"])["model"] for _ in range(5)}

    assert models == {"mid"}


def test_max_cost_excludes_expensive_models(client):
    # About 15 prompt tokens and the prior's 256 output tokens: the frontier model is
    # expected to cost about 4e-3 USD, the others less than 5e-4 USD.
    models = {route(client, max_cost_usd=1e-3)["model"] for _ in range(10)}

    assert "frontier" not in models


def test_long_prompt_is_marked_truncated(client):
    # Each "a," is two word pieces, so 250 of them exceed the 256 word pieces that
    # all-MiniLM-L6-v2 embeds, within the 500 characters this service accepts.
    long_prompt = "a," * 250

    response = client.post("/route", json={"prompt": long_prompt})

    assert response.status_code == 200
    assert response.json()["truncated"] is True


# Feedback


def test_feedback_updates_posterior(client):
    decision = route(client)

    response = client.post(
        "/feedback",
        json={
            "decision_id": decision["decision_id"],
            "rating": 4,
            "scale": "stars_5",
            "output_tokens": 120,
        },
    )

    assert response.status_code == 200
    assert response.json()["accepted"] is True
    assert response.json()["duplicate"] is False
    stats = wait_for_applied(client, 1)
    assert stats["posterior"]["last_event_id"] == response.json()["event_id"]
    assert observations(client)[decision["model"]] == 1


def test_duplicate_feedback_counted_once(client):
    decision = route(client)
    body = {"decision_id": decision["decision_id"], "rating": True, "scale": "thumbs"}

    first = client.post("/feedback", json=body)
    repeat = client.post("/feedback", json={**body, "rating": False})

    assert first.json()["duplicate"] is False
    assert repeat.status_code == 200
    assert repeat.json()["duplicate"] is True
    assert repeat.json()["event_id"] == first.json()["event_id"]
    stats = wait_for_applied(client, 1)
    time.sleep(0.2)
    assert client.get("/stats").json()["posterior"]["applied_events"] == 1
    assert stats["feedback"] == {"accepted": 1, "duplicates": 1, "rejected": 0}
    assert sum(observations(client).values()) == 1


def test_failed_call_counts_as_zero_quality(client):
    decision = route(client, allowed_models=["mid"])

    response = client.post(
        "/feedback",
        json={"decision_id": decision["decision_id"], "error": True, "source": "judge"},
    )

    assert response.status_code == 200
    wait_for_applied(client, 1)
    mid = next(m for m in client.get("/models").json()["models"] if m["name"] == "mid")
    assert mid["observations"] == 1
    assert mid["mean_quality"] == 0.0


def test_unknown_decision_is_404(client):
    response = client.post(
        "/feedback",
        json={"decision_id": "no-such-decision", "rating": 1, "scale": "thumbs"},
    )

    assert_error(response, 404, "decision_id", "no-such-decision")


def test_recent_decision_id_never_stored_is_404(client):
    unknown = f"{int(time.time() * 1000)}.AAAAAAAAAAAAAAAAAAAAAA"

    response = client.post(
        "/feedback", json={"decision_id": unknown, "rating": 1, "scale": "thumbs"}
    )

    assert_error(response, 404, "decision_id", unknown)


def test_expired_decision_is_410(tmp_path, redis_url, redis_namespace, encoder):
    settings = write_settings(
        tmp_path, redis_url, redis_namespace, feedback_window_seconds=0.5
    )
    with TestClient(create_app(settings, encoder=encoder)) as client:
        decision = route(client)
        time.sleep(0.8)

        response = client.post(
            "/feedback",
            json={
                "decision_id": decision["decision_id"],
                "rating": 1,
                "scale": "thumbs",
            },
        )

    assert_error(response, 410, "decision_id", decision["decision_id"])


# Invalid requests


@pytest.mark.parametrize(
    ("body", "field", "value"),
    [
        ({"prompt": ""}, "prompt", ""),
        ({"prompt": "   \n"}, "prompt", "   \n"),
        ({"prompt": 42}, "prompt", 42),
        ({}, "prompt", None),
        ({"messages": [{"role": "user", "content": " "}]}, "messages", " "),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt", MAX_PROMPT_CHARS + 1),
        ({"prompt": PROMPT, "cost_weight": -1}, "cost_weight", -1),
        ({"prompt": PROMPT, "cost_weight": "high"}, "cost_weight", "high"),
        ({"prompt": PROMPT, "max_cost_usd": 0}, "max_cost_usd", 0),
        ({"prompt": PROMPT, "max_cost_usd": 1e-9}, "max_cost_usd", 1e-9),
        ({"prompt": PROMPT, "allowed_models": ["gpt-9"]}, "allowed_models", "gpt-9"),
        ({"prompt": PROMPT, "allowed_models": []}, "allowed_models", []),
        ({"prompt": PROMPT, "metadata": {"priority": "x"}}, "metadata.priority", "x"),
        ({"prompt": PROMPT, "temperature": 0.2}, "temperature", 0.2),
    ],
)  # fmt: skip
def test_invalid_route_is_422(client, body, field, value):
    response = client.post("/route", json=body)

    assert_error(response, 422, field, value)


def test_prompt_and_messages_together_is_422(client):
    messages = [{"role": "user", "content": PROMPT}]

    response = client.post("/route", json={"prompt": PROMPT, "messages": messages})

    assert_error(response, 422, "messages", messages)


@pytest.mark.parametrize(
    ("raw", "field", "value"),
    [
        ('{"prompt": "hi", "cost_weight": NaN}', "cost_weight", "NaN"),
        ('{"prompt": "hi", "cost_weight": Infinity}', "cost_weight", "Infinity"),
        ('{"prompt": "hi", "max_cost_usd": -Infinity}', "max_cost_usd", "-Infinity"),
        ('{"prompt": "hi", "cost_weight": 1e999}', "cost_weight", "1e999"),
        ('{"prompt": "hi", "metadata": {"priority": NaN}}', "metadata.priority", "NaN"),
    ],
)
def test_non_finite_number_is_422(client, raw, field, value):
    response = client.post(
        "/route", content=raw, headers={"content-type": "application/json"}
    )

    assert_error(response, 422, field, value)


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"rating": 6, "scale": "stars_5"}, "rating", 6),
        ({"rating": 0, "scale": "stars_5"}, "rating", 0),
        ({"rating": 0.5, "scale": "thumbs"}, "rating", 0.5),
        ({"rating": 11, "scale": "judge_10"}, "rating", 11),
        ({"rating": 1.2, "scale": "unit"}, "rating", 1.2),
        ({"rating": "great", "scale": "stars_5"}, "rating", "great"),
        ({"rating": 3, "scale": "stars_10"}, "scale", "stars_10"),
        ({"rating": 3, "scale": None}, "scale", None),
        ({"rating": None, "scale": "stars_5"}, "rating", None),
        ({"source": "robot"}, "source", "robot"),
        ({"input_tokens": -1}, "input_tokens", -1),
        ({"output_tokens": -5}, "output_tokens", -5),
        ({"output_tokens": 2.5}, "output_tokens", 2.5),
        ({"cost_usd": -0.01}, "cost_usd", -0.01),
        ({"latency_ms": -3}, "latency_ms", -3),
        ({"decision_id": ""}, "decision_id", ""),
    ],
)
def test_invalid_feedback_is_422(client, changes, field, value):
    decision = route(client)
    body = {"decision_id": decision["decision_id"], "rating": 4, "scale": "stars_5"}
    body.update(changes)

    response = client.post("/feedback", json=body)

    assert_error(response, 422, field, value)


def test_invalid_feedback_is_not_recorded(client):
    decision = route(client)
    body = {"decision_id": decision["decision_id"], "rating": 9, "scale": "stars_5"}

    rejected = client.post("/feedback", json=body)
    accepted = client.post("/feedback", json={**body, "rating": 5})

    assert rejected.status_code == 422
    assert accepted.json()["duplicate"] is False


def test_nan_rating_is_422(client):
    decision = route(client)
    decision_id = decision["decision_id"]
    raw = f'{{"decision_id": "{decision_id}", "rating": NaN, "scale": "unit"}}'

    response = client.post(
        "/feedback", content=raw, headers={"content-type": "application/json"}
    )

    assert_error(response, 422, "rating", "NaN")


@pytest.mark.parametrize(
    "raw",
    [b'{"prompt": "hi"', b"not json", b"", b'{"prompt": "caf\xe9"}', b"\xff\xfe{}"],
)
@pytest.mark.parametrize("path", ["/route", "/feedback"])
def test_malformed_body_is_400(client, path, raw):
    response = client.post(
        path, content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["field"] == "body"


def test_body_above_limit_is_413(client):
    response = client.post("/route", json={"prompt": "x" * MAX_BODY_BYTES})

    assert response.status_code == 413
    assert response.json()["field"] == "body"
    assert response.json()["value"] > MAX_BODY_BYTES


def test_non_json_content_type_is_415(client):
    response = client.post(
        "/route", content=b'{"prompt": "hi"}', headers={"content-type": "text/plain"}
    )

    assert_error(response, 415, "Content-Type", "text/plain")


def test_missing_content_type_is_415(client):
    response = client.post("/route", content=b'{"prompt": "hi"}')

    assert_error(response, 415, "Content-Type", None)


# Status endpoints


def test_readyz_reports_ready(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {
        "encoder_loaded": True,
        "store_reachable": True,
        "caught_up": True,
    }


def test_healthz_is_ok(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_models_lists_catalog_with_prices(client):
    models = client.get("/models").json()["models"]

    assert [model["name"] for model in models] == [entry["name"] for entry in CATALOG]
    assert models[0]["input_usd_per_mtok"] == 3.0
    assert models[0]["output_usd_per_mtok"] == 15.0
    assert models[0]["observations"] == 0
    assert models[0]["mean_quality"] is None
    assert models[0]["expected_output_tokens"] > 0
    assert models[0]["noise_variance"] > 0


def test_stats_counts_decisions_and_shares(client):
    decisions = [route(client, allowed_models=["open-small"]) for _ in range(3)]

    stats = client.get("/stats").json()

    assert stats["decisions"] == len(decisions)
    assert stats["model_shares"]["open-small"] == 1.0
    assert stats["posterior"]["digest"]
    assert stats["process_id"] > 0


def test_stats_digest_changes_with_feedback(client):
    before = client.get("/stats").json()["posterior"]["digest"]
    decision = route(client)
    client.post(
        "/feedback",
        json={"decision_id": decision["decision_id"], "rating": 1, "scale": "thumbs"},
    )

    after = wait_for_applied(client, 1)["posterior"]["digest"]

    assert after != before


def test_metrics_count_requests_and_choices(client):
    decision = route(client, allowed_models=["mid"])
    client.post(
        "/feedback",
        json={"decision_id": decision["decision_id"], "rating": 1, "scale": "thumbs"},
    )
    client.post("/route", json={"prompt": ""})

    text = client.get("/metrics").text

    assert 'banditroute_requests_total{route="/route",status="200"} 1.0' in text
    assert 'banditroute_requests_total{route="/route",status="422"} 1.0' in text
    assert 'banditroute_route_choices_total{model="mid"} 1.0' in text
    assert 'banditroute_feedback_total{outcome="accepted",source="user"} 1.0' in text
    assert "banditroute_request_duration_seconds_bucket" in text
    assert "banditroute_applied_events" in text


def test_openapi_documents_endpoints(client):
    schema = client.get("/openapi.json").json()

    assert {"/route", "/feedback", "/models", "/stats", "/healthz", "/readyz"} <= set(
        schema["paths"]
    )
    assert "RouteRequest" in schema["components"]["schemas"]
    assert "FeedbackRequest" in schema["components"]["schemas"]


def test_request_log_omits_prompt(client, caplog):
    caplog.set_level("INFO", logger="banditroute.api")

    decision = route(client, prompt="a secret prompt about payroll")

    lines = [r.getMessage() for r in caplog.records if r.name == "banditroute.api"]
    request_lines = [line for line in lines if line.startswith("POST /route 200")]
    assert len(request_lines) == 1
    assert decision["decision_id"] in request_lines[0]
    assert decision["model"] in request_lines[0]
    assert "payroll" not in "\n".join(lines)


# Redis outage


def wait_until(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_redis_outage_degrades_then_recovers(tmp_path, private_redis, encoder):
    settings = write_settings(
        tmp_path, private_redis.url, "outage", redis_timeout_seconds=0.5
    )
    with TestClient(create_app(settings, encoder=encoder)) as client:
        before = route(client)
        assert (
            client.post(
                "/feedback",
                json={
                    "decision_id": before["decision_id"],
                    "rating": 1,
                    "scale": "thumbs",
                },
            ).json()["duplicate"]
            is False
        )
        wait_for_applied(client, 1)

        private_redis.stop()
        during = route(client)
        feedback = client.post(
            "/feedback",
            json={"decision_id": during["decision_id"], "rating": 1, "scale": "thumbs"},
        )
        ready = client.get("/readyz")

        assert during["degraded"] is True
        assert feedback.status_code == 503
        assert int(feedback.headers["Retry-After"]) >= 1
        assert ready.status_code == 503
        assert ready.json()["checks"]["store_reachable"] is False

        private_redis.start()
        wait_until(lambda: client.get("/readyz").status_code == 200)
        after = route(client)
        recovered = client.post(
            "/feedback",
            json={"decision_id": after["decision_id"], "rating": 0, "scale": "thumbs"},
        )
        degraded_feedback = client.post(
            "/feedback",
            json={"decision_id": during["decision_id"], "rating": 1, "scale": "thumbs"},
        )

        assert after["degraded"] is False
        assert recovered.status_code == 200
        assert recovered.json()["duplicate"] is False
        assert degraded_feedback.status_code == 404
        stats = wait_for_applied(client, 2)
        assert stats["posterior"]["last_event_id"] == recovered.json()["event_id"]


def test_lone_surrogate_in_prompt_is_422(client):
    raw = b'{"prompt": "hello \\ud800 world"}'

    response = client.post("/route", content=raw, headers=JSON)

    assert_error(response, 422, "prompt", None)
    assert "U+D800" in response.json()["message"]


def test_lone_surrogate_in_a_key_is_422(client):
    raw = b'{"decision_id": "x", "\\udfff": 1}'

    response = client.post("/feedback", content=raw, headers=JSON)

    assert_error(response, 422, "\\udfff", None)


def test_deeply_nested_body_is_400(client):
    # Deeper than Python's default recursion limit, within the body size limit.
    depth = 1500
    raw = '{"prompt": "hi", "metadata": {"a": ' + "[" * depth + "]" * depth + "}}"

    response = client.post(
        "/route", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["field"] == "body"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("output_tokens", 10**30),
        ("input_tokens", int("9" * 400)),
        ("cost_usd", 1e300),
        ("latency_ms", 1e300),
    ],
)
def test_implausible_usage_is_422(client, field, value):
    decision = route(client)

    response = client.post(
        "/feedback",
        json={
            "decision_id": decision["decision_id"],
            "rating": 1,
            "scale": "thumbs",
            field: value,
        },
    )

    assert response.status_code == 422
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/no-such-endpoint", 404, "not_found"),
        ("GET", "/route", 405, "method_not_allowed"),
    ],
)
def test_unknown_path_or_method_uses_the_error_format(
    client, method, path, status, error
):
    response = client.request(method, path)

    assert response.status_code == status
    assert response.json()["error"] == error
    assert path in response.json()["message"]


def test_rejected_feedback_is_counted_however_it_fails(client):
    decision = route(client)
    client.post("/feedback", content=b"{not json", headers=JSON)
    client.post("/feedback", json={"decision_id": 5})
    client.post(
        "/feedback",
        json={"decision_id": decision["decision_id"], "rating": 9, "scale": "thumbs"},
    )

    rejected = client.get("/stats").json()["feedback"]["rejected"]

    assert rejected == 3


def test_docs_requests_are_counted_under_their_path(client):
    client.get("/openapi.json")
    client.get("/no-such-endpoint")

    metrics = client.get("/metrics").text

    assert 'route="/openapi.json",status="200"' in metrics
    assert 'route="unmatched",status="404"' in metrics
