"""Two real `banditroute serve` processes sharing one Redis learn the same posterior."""

import asyncio
import itertools
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from redis_server import free_port

HOST = "127.0.0.1"
CONCURRENCY = 16
START_TIMEOUT_SECONDS = 120.0
CONVERGE_TIMEOUT_SECONDS = 30.0
CATALOG = [
    {"name": "frontier", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0},
    {"name": "open-small", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.1},
]
TOPICS = ["tax law", "python loops", "french poetry", "protein folding", "jazz"]

SERVE_EXECUTABLE = Path(sys.executable).with_name("banditroute")


class ServerProcess:
    """One `banditroute serve` process on its own port, with its log in a file."""

    def __init__(self, config: Path, log_path: Path, workers: int = 1) -> None:
        self.config = config
        self.log_path = log_path
        self.workers = workers
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SERVE_EXECUTABLE), "serve", "--config", str(self.config)]
                + ["--host", HOST, "--port", str(self.port)]
                + ["--workers", str(self.workers)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.url} exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.url} not ready in time:\n{self.log_tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


@pytest.fixture(scope="module")
def namespace(redis_url) -> Iterator[str]:
    """A key namespace of this module; its keys are deleted afterwards."""
    name = f"banditroute-test:{uuid.uuid4().hex}"
    yield name

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def servers(redis_url, namespace, tmp_path_factory) -> Iterator[list[ServerProcess]]:
    """Two server processes on their own ports, shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("servers")
    config = folder / "service.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": CATALOG,
                "redis_url": redis_url,
                "redis_namespace": namespace,
                "snapshot_every": 40,
                "torch_threads": 1,
                "seed": 0,
            }
        )
    )
    started = [
        ServerProcess(config, folder / f"server-{index}.log") for index in range(2)
    ]
    for server in started:
        server.start()
    try:
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


class Traffic:
    """Routes prompts and sends feedback, counting the feedback the servers accepted."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.accepted_event_ids: set[str] = set()
        """Events of every feedback that a server acknowledged with 200."""
        self.failed_requests = 0
        self.counter = itertools.count()

    async def one_round(self, route_url: str, feedback_urls: list[str]) -> None:
        """Route on one server, then send the same feedback to each of the others."""
        index = next(self.counter)
        prompt = f"Question {index} about {TOPICS[index % len(TOPICS)]}?"
        try:
            routed = await self.client.post(
                f"{route_url}/route", json={"prompt": prompt}
            )
            decision = routed.json()
            body = {
                "decision_id": decision["decision_id"],
                "rating": 1 + index % 5,
                "scale": "stars_5",
                "output_tokens": 50 + index % 200,
            }
            answers = await asyncio.gather(
                *(
                    self.client.post(f"{url}/feedback", json=body)
                    for url in feedback_urls
                ),
                return_exceptions=True,
            )
        except httpx.HTTPError:
            self.failed_requests += 1
            return

        for answer in answers:
            if isinstance(answer, BaseException):
                self.failed_requests += 1
                continue
            assert answer.status_code == 200, answer.text
            # A duplicate names the event of the first feedback, which another
            # server may have appended just before it was killed.
            self.accepted_event_ids.add(answer.json()["event_id"])

    async def run(self, rounds: int, route_urls: list[str], feedback_urls: list[str]):
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def limited(index: int) -> None:
            async with semaphore:
                await self.one_round(route_urls[index % len(route_urls)], feedback_urls)

        await asyncio.gather(*(limited(index) for index in range(rounds)))


def stream_position(event_id: str) -> tuple[int, int]:
    milliseconds, sequence = event_id.split("-")
    return int(milliseconds), int(sequence)


async def stats(client: httpx.AsyncClient, url: str) -> dict:
    return (await client.get(f"{url}/stats")).json()


async def wait_converged(
    client: httpx.AsyncClient, urls: list[str], expected_events: int
) -> list[dict]:
    deadline = time.monotonic() + CONVERGE_TIMEOUT_SECONDS
    while True:
        reports = [await stats(client, url) for url in urls]
        applied = [report["posterior"]["applied_events"] for report in reports]
        if all(count >= expected_events for count in applied):
            return reports
        if time.monotonic() > deadline:
            raise AssertionError(f"applied {applied}, expected {expected_events}")
        await asyncio.sleep(0.1)


def test_two_processes_share_posterior(servers):
    urls = [server.url for server in servers]

    async def exercise() -> tuple[Traffic, list[dict], list[dict]]:
        async with httpx.AsyncClient(timeout=30.0) as client:
            before = [await stats(client, url) for url in urls]
            applied_before = before[0]["posterior"]["applied_events"]
            traffic = Traffic(client)
            await traffic.run(120, route_urls=urls, feedback_urls=urls)
            reports = await wait_converged(
                client, urls, applied_before + len(traffic.accepted_event_ids)
            )
            return traffic, before, reports

    traffic, before, reports = asyncio.run(exercise())

    accepted = len(traffic.accepted_event_ids)
    expected = before[0]["posterior"]["applied_events"] + accepted
    assert traffic.failed_requests == 0
    assert accepted == 120
    assert [r["posterior"]["applied_events"] for r in reports] == [expected] * 2
    assert reports[0]["posterior"]["digest"] == reports[1]["posterior"]["digest"]
    newest = max(traffic.accepted_event_ids, key=stream_position)
    assert reports[0]["posterior"]["last_event_id"] == newest
    duplicates = [
        r["feedback"]["duplicates"] - b["feedback"]["duplicates"]
        for r, b in zip(reports, before, strict=True)
    ]
    assert sum(duplicates) == 120


def test_killed_process_catches_up(servers):
    survivor, victim = servers
    urls = [survivor.url, victim.url]

    async def exercise() -> tuple[Traffic, int, list[dict]]:
        async with httpx.AsyncClient(timeout=30.0) as client:
            before = await stats(client, survivor.url)
            applied_before = before["posterior"]["applied_events"]
            traffic = Traffic(client)
            await traffic.run(60, route_urls=urls, feedback_urls=urls)

            # Kill the victim while requests to both servers are in flight.
            before_kill = len(traffic.accepted_event_ids) + 40
            running = asyncio.create_task(
                traffic.run(300, route_urls=urls, feedback_urls=urls)
            )
            while len(traffic.accepted_event_ids) < before_kill:
                await asyncio.sleep(0.005)
            victim.kill()
            await running

            # Feedback acknowledged while the victim is down must reach it later.
            await traffic.run(
                60, route_urls=[survivor.url], feedback_urls=[survivor.url]
            )
            victim.start()
            await asyncio.to_thread(victim.wait_ready)
            await traffic.run(40, route_urls=urls, feedback_urls=urls)

            reports = await wait_converged(
                client, urls, applied_before + len(traffic.accepted_event_ids)
            )
            return traffic, applied_before, reports

    traffic, applied_before, reports = asyncio.run(exercise())

    expected = applied_before + len(traffic.accepted_event_ids)
    assert traffic.failed_requests > 0
    assert [r["posterior"]["applied_events"] for r in reports] == [expected] * 2
    assert reports[0]["posterior"]["digest"] == reports[1]["posterior"]["digest"]


def test_metrics_sum_over_workers_sharing_a_port(redis_url, namespace, tmp_path):
    config = tmp_path / "service.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "catalog": CATALOG,
                "redis_url": redis_url,
                "redis_namespace": f"{namespace}:metrics",
                "torch_threads": 1,
            }
        )
    )
    server = ServerProcess(config, tmp_path / "server.log", workers=2)
    server.start()
    try:
        server.wait_ready()
        # /readyz returns 200 once one worker is ready; the other may still be loading.
        # The kernel hands each new connection to one worker, so batches are sent
        # until both have routed some.
        routes = 0
        for _ in range(30):
            asyncio.run(route_on_new_connections(server.url, 32))
            routes += 32
            decisions, scrapes = asyncio.run(read_every_worker(server.url))
            if len(decisions) == 2 and min(decisions.values()) > 0:
                break
            time.sleep(1.0)
    finally:
        server.stop()

    # Both workers routed, so a scrape that reported only its own worker's
    # decisions would count fewer than all of them.
    assert len(decisions) == 2
    assert sum(decisions.values()) == routes
    assert min(decisions.values()) > 0
    for metrics in scrapes:
        choices = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("banditroute_route_choices_total{")
        ]
        assert sum(choices) == routes


async def route_on_new_connections(url: str, count: int) -> None:
    """Route ``count`` prompts at once, each on its own connection.

    Workers that share a port accept connections, not requests, so only new
    connections are spread over them.
    """
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        responses = await asyncio.gather(
            *(
                client.post("/route", json={"prompt": f"{TOPICS[i % 5]} {i}"})
                for i in range(count)
            )
        )
    assert all(response.status_code == 200 for response in responses)


async def read_every_worker(url: str) -> tuple[dict[int, int], list[str]]:
    """Return each worker's decision count and ten /metrics scrapes."""
    decisions: dict[int, int] = {}
    scrapes: list[str] = []
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:
        for _ in range(200):
            stats, metrics = await asyncio.gather(
                client.get("/stats"), client.get("/metrics")
            )
            decisions[stats.json()["process_id"]] = stats.json()["decisions"]
            scrapes.append(metrics.text)
            if len(decisions) == 2 and len(scrapes) >= 10:
                break
    return decisions, scrapes
