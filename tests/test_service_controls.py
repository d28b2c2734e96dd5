"""Budget pacing, failing models, rollout and run-time catalog changes in the service.

Each test runs two apps on one Redis namespace, as two server processes would, and
checks that a change made through one of them reaches the other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from banditroute.api import create_app
from banditroute.catalog import Catalog, ModelSpec
from banditroute.control_state import ControlState
from banditroute.health import HealthSettings
from banditroute.settings import load_settings

CATALOG = [
    {"name": "frontier", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0},
    {"name": "mid", "input_usd_per_mtok": 0.4, "output_usd_per_mtok": 1.6},
    {"name": "open-small", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.1},
]
ADMIN_KEY = "test-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
PROMPTS = [
    "Write a Python function that merges two sorted lists.",
    "Summarize the causes of the French Revolution.",
    "Translate 'good morning' into Italian.",
    "Prove that the square root of two is irrational.",
]
NEW_MODEL = {
    "name": "new-cheap",
    "input_usd_per_mtok": 0.05,
    "output_usd_per_mtok": 0.05,
}
NEGATIVE_PRICE = {**NEW_MODEL, "input_usd_per_mtok": -1}
HUGE_PRICE = {**NEW_MODEL, "input_usd_per_mtok": 1e308}
WAIT_SECONDS = 10.0
COOLDOWN_SECONDS = 30.0


class Clock:
    """A clock the test moves forward, read by both apps."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def write_settings(folder: Path, redis_url: str, namespace: str, **values) -> Path:
    content = {
        "catalog": CATALOG,
        "redis_url": redis_url,
        "redis_namespace": namespace,
        "admin_key": ADMIN_KEY,
        "cost_weight": 0.0,
        "seed": 0,
        **values,
    }
    path = folder / "service.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config(tmp_path, redis_url, redis_namespace) -> Path:
    return write_settings(
        tmp_path,
        redis_url,
        redis_namespace,
        budget={"warmup_requests": 4, "learning_rate": 0.3},
        snapshot_every=5,
    )


@pytest.fixture
def apps(config, encoder, clock, monkeypatch) -> Iterator[list[TestClient]]:
    """Two apps sharing the namespace, as two server processes would."""
    monkeypatch.setenv("BANDITROUTE_CONFIG", str(config))
    settings = load_settings(config)
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                TestClient(create_app(settings, encoder=encoder, clock=clock))
            )
            for _ in range(2)
        ]


def route(client: TestClient, index: int = 0, **body: object) -> dict:
    prompt = PROMPTS[index % len(PROMPTS)] + f" (request {index})"
    response = client.post("/route", json={"prompt": prompt, **body})
    assert response.status_code == 200, response.text
    return response.json()


def feedback(client: TestClient, decision_id: str, **body: object) -> dict:
    response = client.post("/feedback", json={"decision_id": decision_id, **body})
    assert response.status_code == 200, response.text
    return response.json()


def wait_applied(clients: list[TestClient], event_id: str) -> None:
    """Wait until every app's posterior includes the stream entry ``event_id``."""
    target = tuple(int(part) for part in event_id.split("-"))
    deadline = time.monotonic() + WAIT_SECONDS
    for client in clients:
        while True:
            last = client.get("/stats").json()["posterior"]["last_event_id"]
            if last and tuple(int(part) for part in last.split("-")) >= target:
                break
            assert time.monotonic() < deadline, f"{event_id} not applied"
            time.sleep(0.02)


def controls(client: TestClient) -> dict:
    return client.get("/stats").json()["controls"]


# Admin access


def test_admin_endpoints_reject_a_wrong_key(apps):
    response = apps[0].put(
        "/admin/budget",
        json={"target_cost_usd": 0.001},
        headers={"Authorization": "Bearer wrong"},
    )

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"name": ""}', {"content-type": "application/json"}),
        (b"{not json", {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
        (b'{"name": "x"}', {"content-type": "text/plain"}),
        (b"x" * 200_000, {"content-type": "application/json"}),
    ],
)
def test_admin_key_is_checked_before_the_body(apps, content, headers):
    response = apps[0].post("/admin/models", content=content, headers=headers)

    assert response.status_code == 401
    assert response.json()["field"] == "Authorization"


def test_admin_endpoints_are_off_without_a_key(tmp_path, redis_url, redis_namespace):
    config = write_settings(tmp_path, redis_url, redis_namespace, admin_key=None)
    with TestClient(create_app(load_settings(config))) as client:
        response = client.put(
            "/admin/budget", json={"target_cost_usd": 0.001}, headers=AUTH
        )

    assert response.status_code == 403
    assert "admin_key" in response.json()["message"]


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/admin/budget", {"target_cost_usd": -1}, 422, "target_cost_usd"),
        ("/admin/rollout", {"share": 1.5, "default_model": "mid"}, 422, "share"),
        ("/admin/rollout", {"share": 0.5, "default_model": "x"}, 422, "default_model"),
        ("/admin/rollout", {"share": 0.5}, 422, "default_model"),
        ("/admin/models", {**NEW_MODEL, "name": "mid"}, 422, "name"),
        ("/admin/models", NEGATIVE_PRICE, 422, "input_usd_per_mtok"),
        ("/admin/models/gpt-9/disable", None, 404, "name"),
        ("/admin/budget", {"target_cost_usd": 1e-300}, 422, "target_cost_usd"),
        ("/admin/models", HUGE_PRICE, 422, "input_usd_per_mtok"),
        ("/admin/models", {**NEW_MODEL, "name": " mid"}, 422, "name"),
        ("/admin/models", {**NEW_MODEL, "name": "a\nb"}, 422, "name"),
        ("/admin/models", {**NEW_MODEL, "name": "zero\u200bwidth"}, 422, "name"),
    ],
)  # fmt: skip
def test_invalid_admin_change_names_the_field(apps, path, body, status, field):
    method = (
        apps[0].put if path in ("/admin/budget", "/admin/rollout") else apps[0].post
    )

    response = method(path, json=body, headers=AUTH)

    assert response.status_code == status, response.text
    assert response.json()["field"] == field


# Budget pacing


def test_budget_moves_every_worker_weight(apps):
    first, second = apps
    change = first.put("/admin/budget", json={"target_cost_usd": 1e-5}, headers=AUTH)
    assert change.status_code == 200, change.text
    initial = change.json()["controls"]["cost_weight"]

    # Every call costs far more than the target, so the weight must rise.
    last_event = ""
    for index in range(12):
        decision = route(first, index)
        last_event = feedback(
            first, decision["decision_id"], rating=1, scale="thumbs", cost_usd=0.01
        )["event_id"]
    wait_applied(apps, last_event)
    weights = [controls(client)["cost_weight"] for client in apps]

    assert weights[0] > initial
    assert weights[0] == weights[1]
    assert controls(second)["budget"]["target_cost_usd"] == 1e-5
    assert route(second, 99)["cost_weight"] == weights[1]


# Failing models


def test_failing_model_is_cooled_down_then_probed(
    tmp_path, redis_url, redis_namespace, encoder
):
    # Breakers run on the store's clock, so this test runs on real time.
    config = write_settings(
        tmp_path, redis_url, redis_namespace, health={"cooldown_seconds": 3.0}
    )
    settings = load_settings(config)
    with ExitStack() as stack:
        first, second = (
            stack.enter_context(TestClient(create_app(settings, encoder=encoder)))
            for _ in range(2)
        )
        last_event = ""
        for index in range(5):
            decision = route(first, index, allowed_models=["frontier"])
            last_event = feedback(first, decision["decision_id"], error=True)[
                "event_id"
            ]
        wait_applied([first, second], last_event)

        breakers = controls(second)["breakers"]
        chosen = {route(second, index)["model"] for index in range(10)}
        time.sleep(max(0.0, breakers["frontier"]["cooldown_ends_at"] - time.time()))
        probing = controls(second)["breakers"]["frontier"]["state"]
        probe = route(second, 50, allowed_models=["frontier", "mid"])
        answer = feedback(second, probe["decision_id"], rating=1, scale="thumbs")
        wait_applied([first, second], answer["event_id"])
        after_probe = controls(first)["breakers"]["frontier"]["state"]

    assert breakers["frontier"]["state"] == "open"
    assert breakers["frontier"]["times_opened"] == 1
    assert "frontier" not in chosen
    assert probing == "half_open"
    assert probe["model"] in ("frontier", "mid")
    if probe["model"] == "frontier":
        assert after_probe == "closed"


# Gradual rollout


def test_rollout_sends_the_rest_to_the_default_model(apps):
    first, second = apps
    change = first.put(
        "/admin/rollout", json={"share": 0.0, "default_model": "mid"}, headers=AUTH
    )
    assert change.status_code == 200, change.text

    decisions = [route(second, index) for index in range(8)]
    first.put(
        "/admin/rollout", json={"share": 1.0, "default_model": "mid"}, headers=AUTH
    )
    decisions += [route(second, index) for index in range(8, 16)]
    last_event = ""
    for decision in decisions:
        last_event = feedback(
            second,
            decision["decision_id"],
            rating=4,
            scale="stars_5",
            output_tokens=100,
        )["event_id"]
    wait_applied(apps, last_event)
    rollout = controls(first)["rollout"]
    quality = next(row for row in rollout["comparison"] if row["outcome"] == "quality")

    assert {d["model"] for d in decisions[:8]} == {"mid"}
    assert {d["rollout_group"] for d in decisions[:8]} == {"default"}
    assert {d["propensity"] for d in decisions[:8]} == {1.0}
    assert {d["rollout_group"] for d in decisions[8:]} == {"bandit"}
    assert rollout["requests"] == {"default": 8, "bandit": 8}
    assert quality["default"]["estimate"] == pytest.approx(0.75)
    assert quality["bandit_minus_default"]["estimate"] == pytest.approx(0.0)


# Models added and disabled at run time


def test_added_and_disabled_models_reach_every_worker(apps, config, encoder, clock):
    first, second = apps
    pending = route(first, 0, allowed_models=["frontier"])
    added = first.post("/admin/models", json=NEW_MODEL, headers=AUTH)
    disabled = first.post("/admin/models/frontier/disable", headers=AUTH)
    assert added.status_code == 200, added.text
    assert disabled.status_code == 200, disabled.text
    wait_applied(apps, disabled.json()["event_id"])

    models = {model["name"]: model for model in second.get("/models").json()["models"]}
    on_new = route(second, 1, allowed_models=["new-cheap"])
    chosen = {route(second, index)["model"] for index in range(2, 14)}
    late = feedback(second, pending["decision_id"], rating=1, scale="thumbs")
    rejected = second.post(
        "/route", json={"prompt": PROMPTS[0], "allowed_models": ["frontier"]}
    )

    assert models["new-cheap"]["enabled"] is True
    assert models["frontier"]["enabled"] is False
    assert on_new["model"] == "new-cheap"
    assert "frontier" not in chosen
    assert late["duplicate"] is False
    assert rejected.status_code == 422
    assert rejected.json()["field"] == "allowed_models"

    # A process started later from the same settings file restores the change.
    wait_applied(apps, late["event_id"])
    with TestClient(
        create_app(load_settings(config), encoder=encoder, clock=clock)
    ) as third:
        wait_applied([third], late["event_id"])
        restarted = {m["name"]: m for m in third.get("/models").json()["models"]}
        digests = {
            client.get("/stats").json()["posterior"]["digest"]
            for client in (first, second, third)
        }

    assert restarted["new-cheap"]["enabled"] is True
    assert restarted["frontier"]["enabled"] is False
    assert len(digests) == 1


def test_reload_applies_the_settings_file(apps, config):
    content = yaml.safe_load(config.read_text())
    dearer_mid = {**CATALOG[1], "output_usd_per_mtok": 3.2}
    content["catalog"] = [dearer_mid, CATALOG[2], {**NEW_MODEL, "name": "added"}]
    content["rollout"] = {"share": 0.5, "default_model": "mid"}
    config.write_text(yaml.safe_dump(content))

    response = apps[0].post("/admin/reload", headers=AUTH)
    wait_applied(apps, response.json()["event_id"])
    models = {m["name"]: m["enabled"] for m in apps[1].get("/models").json()["models"]}
    with apps[1].app.state.service.replica.reading() as policy:
        mid = policy.catalog.models[policy.catalog.index("mid")]

    assert response.status_code == 200, response.text
    assert sorted(response.json()["changes"]) == [
        "add_model",
        "disable_model",
        "set_prices",
        "set_rollout",
    ]
    assert models == {"frontier": False, "mid": True, "open-small": True, "added": True}
    assert controls(apps[1])["rollout"]["share"] == 0.5
    assert mid.output_usd_per_mtok == 3.2


# Drift


def learned_quality(client: TestClient, model: str, context) -> float:
    service = client.app.state.service
    with service.replica.reading() as policy:
        index = policy.catalog.index(model)
        return float(policy.posteriors.posterior_mean(index) @ context)


def test_forgetting_follows_a_quality_drop(
    tmp_path, redis_url, redis_namespace, encoder
):
    # Discounts are applied when a model's covariance is refreshed, at least every
    # d = 385 of its feedback events, so the drop must last longer than that.
    config = write_settings(tmp_path, redis_url, redis_namespace, half_life=100)
    with TestClient(create_app(load_settings(config), encoder=encoder)) as client:
        last_event = ""
        for index in range(800):
            decision = route(client, index, allowed_models=["mid"])
            rating = 1 if index < 400 else 0
            last_event = feedback(
                client, decision["decision_id"], rating=rating, scale="thumbs"
            )["event_id"]
        wait_applied([client], last_event)
        service = client.app.state.service
        context = service.features.build_one(encoder.encode([PROMPTS[0]]).vectors[0])
        estimate = learned_quality(client, "mid", context)

    # Without forgetting, the estimate would stay near the mean rating of 0.5.
    assert estimate < 0.25


def test_snapshot_restores_across_health_settings():
    catalog = Catalog([ModelSpec("a", 1.0, 1.0), ModelSpec("b", 1.0, 1.0)])
    without_health = ControlState(catalog).snapshot()
    small_window = HealthSettings(window=5, min_window_requests=5)
    other_window = ControlState(catalog, health=small_window).snapshot()

    restored = ControlState(catalog, health=HealthSettings())
    restored.restore(without_health)
    restored.restore(other_window)

    assert restored.healthy(0.0).all()


def test_budget_of_a_new_stream_reaches_every_process(
    tmp_path, redis_url, redis_namespace, encoder
):
    budget = {"target_cost_usd": 2e-5, "warmup_requests": 4, "learning_rate": 0.3}
    with_budget = load_settings(
        write_settings(
            tmp_path, redis_url, redis_namespace, budget=budget, snapshot_every=5
        )
    )
    other = tmp_path / "other"
    other.mkdir()
    without_budget = load_settings(
        write_settings(other, redis_url, redis_namespace, snapshot_every=5)
    )
    with ExitStack() as stack:
        first = stack.enter_context(
            TestClient(create_app(with_budget, encoder=encoder))
        )
        second = stack.enter_context(
            TestClient(create_app(without_budget, encoder=encoder))
        )
        last_event = ""
        for index in range(12):
            decision = route(second, index)
            last_event = feedback(
                second, decision["decision_id"], rating=1, scale="thumbs", cost_usd=0.01
            )["event_id"]
        wait_applied([first, second], last_event)
        digests = {
            c.get("/stats").json()["posterior"]["digest"] for c in (first, second)
        }
        weights = {controls(c)["cost_weight"] for c in (first, second)}

        # A process without a budget in its file restores the snapshot's budget.
        with TestClient(create_app(without_budget, encoder=encoder)) as third:
            wait_applied([third], last_event)
            restored = controls(third)

    assert len(digests) == 1
    assert len(weights) == 1
    assert restored["budget"]["target_cost_usd"] == 2e-5
    assert restored["cost_weight"] in weights


def test_rollout_default_model_stays_enabled(apps):
    first, _ = apps
    first.put(
        "/admin/rollout", json={"share": 0.5, "default_model": "mid"}, headers=AUTH
    )
    disable_default = first.post("/admin/models/mid/disable", headers=AUTH)
    first.post("/admin/models/open-small/disable", headers=AUTH)
    to_disabled = first.put(
        "/admin/rollout",
        json={"share": 0.5, "default_model": "open-small"},
        headers=AUTH,
    )

    assert disable_default.status_code == 422
    assert disable_default.json()["field"] == "name"
    assert to_disabled.status_code == 422
    assert "disabled" in to_disabled.json()["message"]


def test_reload_new_model_as_default(apps, config):
    content = yaml.safe_load(config.read_text())
    content["catalog"] = [*CATALOG, NEW_MODEL]
    content["rollout"] = {"share": 0.3, "default_model": NEW_MODEL["name"]}
    config.write_text(yaml.safe_dump(content))

    response = apps[0].post("/admin/reload", headers=AUTH)

    assert response.status_code == 200, response.text
    assert controls(apps[0])["rollout"]["default_model"] == NEW_MODEL["name"]


def model_names(client: TestClient) -> list[str]:
    return [model["name"] for model in client.get("/models").json()["models"]]


def test_model_name_with_a_slash_can_be_disabled(apps):
    vendor_model = {**NEW_MODEL, "name": "vendor/model-1"}
    added = apps[0].post("/admin/models", json=vendor_model, headers=AUTH)
    disabled = apps[0].post("/admin/models/vendor/model-1/disable", headers=AUTH)

    assert added.status_code == 200, added.text
    assert disabled.status_code == 200, disabled.text
    assert {"name": "vendor/model-1", "enabled": False} in disabled.json()["models"]


def test_edited_catalog_keeps_the_learned_state(
    tmp_path, redis_url, redis_namespace, encoder, caplog
):
    config = write_settings(tmp_path, redis_url, redis_namespace)
    with TestClient(create_app(load_settings(config), encoder=encoder)) as client:
        decision = route(client)
        sent = feedback(client, decision["decision_id"], rating=1, scale="thumbs")
        wait_applied([client], sent["event_id"])
        learned = client.get("/stats").json()["posterior"]["observations"]

    # The file lists the models in another order and adds one.
    edited = yaml.safe_load(config.read_text())
    edited["catalog"] = [NEW_MODEL, *reversed(CATALOG)]
    config.write_text(yaml.safe_dump(edited))
    with TestClient(create_app(load_settings(config), encoder=encoder)) as client:
        restored = client.get("/stats").json()["posterior"]["observations"]
        names = model_names(client)
        on_new = route(client, 1, allowed_models=[NEW_MODEL["name"]])

    started_over = [r for r in caplog.records if "new shared state" in r.getMessage()]
    assert restored == learned == 1
    assert names == [entry["name"] for entry in CATALOG] + [NEW_MODEL["name"]]
    assert on_new["model"] == NEW_MODEL["name"]
    assert started_over == []


@contextmanager
def two_catalogs(
    folder: Path, redis_url: str, namespace: str, encoder, second_catalog: list
) -> Iterator[tuple[TestClient, TestClient]]:
    """Two apps on one namespace: the first with CATALOG, then one with another."""
    first_config = write_settings(folder, redis_url, namespace)
    other = folder / "other"
    other.mkdir()
    second_config = write_settings(other, redis_url, namespace)
    edited = yaml.safe_load(second_config.read_text())
    edited["catalog"] = second_catalog
    second_config.write_text(yaml.safe_dump(edited))

    with ExitStack() as stack:
        first = stack.enter_context(
            TestClient(create_app(load_settings(first_config), encoder=encoder))
        )
        second = stack.enter_context(
            TestClient(create_app(load_settings(second_config), encoder=encoder))
        )
        yield first, second


def test_processes_agree_whatever_order_their_files_list(
    tmp_path, redis_url, redis_namespace, encoder
):
    catalog = [*reversed(CATALOG), NEW_MODEL]
    with two_catalogs(tmp_path, redis_url, redis_namespace, encoder, catalog) as (
        first,
        second,
    ):
        last_event = ""
        for index in range(6):
            client = (first, second)[index % 2]
            decision = route(client, index)
            last_event = feedback(
                client, decision["decision_id"], rating=index % 2, scale="thumbs"
            )["event_id"]
        wait_applied([first, second], last_event)
        names = [model_names(client) for client in (first, second)]
        digests = {
            c.get("/stats").json()["posterior"]["digest"] for c in (first, second)
        }

    assert names[0] == names[1] == [e["name"] for e in CATALOG] + [NEW_MODEL["name"]]
    assert len(digests) == 1


def frontier_cost(client: TestClient) -> float:
    response = client.post(
        "/route", json={"prompt": PROMPTS[0], "allowed_models": ["frontier"]}
    )
    return response.json()["expected_cost_usd"]


def test_prices_are_shared_and_changed_for_every_process(
    tmp_path, redis_url, redis_namespace, encoder, caplog
):
    dearer = [{**CATALOG[0], "input_usd_per_mtok": 30.0}, *CATALOG[1:]]
    with two_catalogs(tmp_path, redis_url, redis_namespace, encoder, dearer) as (
        first,
        second,
    ):
        before = {frontier_cost(client) for client in (first, second)}
        changed = first.put(
            "/admin/models/frontier/prices",
            json={"input_usd_per_mtok": 30.0, "output_usd_per_mtok": 15.0},
            headers=AUTH,
        )
        wait_applied([first, second], changed.json()["event_id"])
        after = {frontier_cost(client) for client in (first, second)}
        digests = {
            c.get("/stats").json()["posterior"]["digest"] for c in (first, second)
        }

    repriced = [r for r in caplog.records if "prices" in r.getMessage()]
    assert len(before) == 1
    assert len(after) == 1
    assert after.pop() > before.pop()
    assert len(digests) == 1
    assert any("frontier" in r.getMessage() for r in repriced)


def test_file_models_join_once_the_store_answers(tmp_path, private_redis, encoder):
    config = write_settings(tmp_path, private_redis.url, "late-start")
    with TestClient(create_app(load_settings(config), encoder=encoder)) as client:
        route(client)

    edited = yaml.safe_load(config.read_text())
    edited["catalog"] = [*reversed(CATALOG), NEW_MODEL]
    config.write_text(yaml.safe_dump(edited))
    private_redis.stop()
    shared = [entry["name"] for entry in CATALOG] + [NEW_MODEL["name"]]
    with TestClient(create_app(load_settings(config), encoder=encoder)) as client:
        while_down = model_names(client)
        private_redis.start()
        deadline = time.monotonic() + WAIT_SECONDS
        while model_names(client) != shared:
            assert time.monotonic() < deadline, model_names(client)
            time.sleep(0.1)
        on_new = route(client, 1, allowed_models=[NEW_MODEL["name"]])

    assert while_down == [entry["name"] for entry in reversed(CATALOG)] + [
        NEW_MODEL["name"]
    ]
    assert on_new["model"] == NEW_MODEL["name"]


def test_changed_prior_warns_of_the_earlier_state(
    tmp_path, redis_url, redis_namespace, encoder, caplog
):
    config = write_settings(tmp_path, redis_url, redis_namespace)
    with TestClient(create_app(load_settings(config), encoder=encoder)) as client:
        decision = route(client)
        feedback(client, decision["decision_id"], rating=1, scale="thumbs")

    edited = yaml.safe_load(config.read_text())
    edited["prior"] = {"weight_precision": 10.0}
    config.write_text(yaml.safe_dump(edited))
    with TestClient(create_app(load_settings(config), encoder=encoder)):
        pass

    warnings = [
        r.getMessage() for r in caplog.records if "new shared state" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert redis_namespace in warnings[0]
