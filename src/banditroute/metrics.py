"""Prometheus metrics of the routing service.

Each app gets its own registry, so several apps in one process (tests) never share
counters. When several worker processes share a port, a scrape reaches one of them.
``banditroute serve`` then sets ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
multiprocess mode), and every worker's ``/metrics`` reports the counters and histograms
summed over the workers, the highest stream lag and the lowest applied-event count
among live workers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""Environment variable naming the folder where worker processes write metrics."""

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
            "yet (an estimate); the highest among workers.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.applied_events = Gauge(
            "banditroute_applied_events",
            "Feedback events applied to the posterior; the lowest among workers.",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.store_available = Gauge(
            "banditroute_store_available",
            "1 while the store answered the last request, else 0; the lowest among "
            "workers.",
            registry=self.registry,
            multiprocess_mode="livemin",
        )

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        labels = {"route": route, "status": str(status)}
        self.requests.labels(**labels).inc()
        self.request_latency.labels(**labels).observe(seconds)

    def render(self) -> bytes:
        """Return the metrics in the Prometheus text exposition format.

        In multiprocess mode these are the metrics of every worker process.
        """
        if not multiprocess_mode():
            return generate_latest(self.registry)

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)


def multiprocess_mode() -> bool:
    """Return whether worker processes share their metrics through files."""
    return MULTIPROCESS_DIR_VARIABLE in os.environ


def mark_process_dead() -> None:
    """Drop this process's gauges from the merged metrics as it stops."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())
