"""Prometheus metrics of one server process.

Each app gets its own registry, so several apps in one process (tests) never share
counters. Every worker process reports only its own requests: a scrape through a port
shared by several uvicorn workers reaches one of them, so scrape each worker by its own
address to see them all.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS_SECONDS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServiceMetrics:
    """The counters, histograms and gauges that ``/metrics`` exposes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "banditroute_requests",
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "banditroute_request_duration_seconds",
            "Time from receiving a request to sending its response, in seconds.",
            ["route", "status"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.feedback = Counter(
            "banditroute_feedback",
            "Feedback by source and outcome (accepted, duplicate, not_found, "
            "expired, invalid, unavailable).",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.choices = Counter(
            "banditroute_route_choices",
            "Routing decisions by chosen model.",
            ["model"],
            registry=self.registry,
        )
        self.degraded_decisions = Counter(
            "banditroute_degraded_decisions",
            "Decisions whose record could not be stored because the store was "
            "unavailable.",
            registry=self.registry,
        )
        self.encoder_batch_size = Histogram(
            "banditroute_encoder_batch_size",
            "Prompts embedded per encoder call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.stream_lag = Gauge(
            "banditroute_stream_lag_events",
            "Feedback events in the shared stream that this process has not applied "
            "yet (an estimate).",
            registry=self.registry,
        )
        self.applied_events = Gauge(
            "banditroute_applied_events",
            "Feedback events applied to this process's posterior.",
            registry=self.registry,
        )
        self.store_available = Gauge(
            "banditroute_store_available",
            "1 while the store answered the last request, else 0.",
            registry=self.registry,
        )

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        labels = {"route": route, "status": str(status)}
        self.requests.labels(**labels).inc()
        self.request_latency.labels(**labels).observe(seconds)

    def render(self) -> bytes:
        """Return the registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
