"""Benchmark of `banditroute serve` against a real Redis and the real encoder.

Measures, with 1 and with 2 server processes:
- /route latency (p50, p99) and throughput under 16 concurrent clients that each send
  their next request when the answer comes (closed loop, the server saturated),
- /route latency at a fixed arrival rate of half the encoder's batched throughput, on
  up to 16 connections (open loop, the load the throughput target names),
- /feedback latency (p99) and accepted events per second under 16 closed-loop clients,
- the time from an accepted feedback to every server's posterior including it (p99),
  found by polling each server's /stats,
and, in the same run, the encoder's own time for one prompt and its batched throughput.
Prompts are about 20 words.

The closed-loop load comes from wrk (https://github.com/wg/wrk, Debian package
``wrk``) with experiments/wrk/load.lua, because a Python client would need about as
much CPU per request as the server and would share the same cores. The open-loop
phase and the propagation probe use httpx at rates where its cost does not matter.

Each server process listens on its own port (``--workers 1``), so that the propagation
probe can poll every process; closed-loop clients are split evenly between the ports.
A private redis-server is started on a free port unless ``--redis-url`` is given. All
traffic stays on 127.0.0.1.

Servers run with the service's default torch threads (the CPUs divided by the server
processes) unless ``--torch-threads`` sets them. The encoder alone is measured with
every available CPU.
Latencies depend on the rest of the machine's load, so the table also prints the load
average and the server CPU time per request, which depends less on it.

Usage: python experiments/bench_service.py [--route-seconds 45] [--feedback-seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HOST = "127.0.0.1"
CONCURRENCY = 16
PROMPT_WORDS = 20
WARMUP_ROUTES = 64
BATCH_SIZE = 32
ROUTE_BODIES = 20_000
"""Distinct prompts per server process in the closed-loop phase, so none repeats."""
WRK_SCRIPT = Path(__file__).with_name("wrk") / "load.lua"
SERVER_START_TIMEOUT_SECONDS = 120.0
PROPAGATION_TIMEOUT_SECONDS = 5.0
LOAD_BEFORE: list[float] = [0.0, 0.0, 0.0]
"""Load averages when the benchmark started: other work on the machine skews it."""

CATALOG = [
    {"name": "claude-sonnet-4", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0},
    {"name": "gpt-4.1-mini", "input_usd_per_mtok": 0.4, "output_usd_per_mtok": 1.6},
    {
        "name": "llama-3.1-8b-instruct",
        "input_usd_per_mtok": 0.18,
        "output_usd_per_mtok": 0.18,
    },
    {
        "name": "qwen2.5-7b-instruct",
        "input_usd_per_mtok": 0.3,
        "output_usd_per_mtok": 0.3,
    },
]

_VOCABULARY_TEXT = (
    "explain write summarize translate compare list describe prove compute sort python "
    "function recursion database index query latency cache network theorem integral "
    "matrix vector poem story email letter recipe travel history war economy climate "
    "energy battery solar market price contract court patient symptom diet exercise "
    "sleep memory neuron galaxy planet quantum particle chemistry reaction acid enzyme "
    "protein gene cell river"
)
VOCABULARY = tuple(_VOCABULARY_TEXT.split())


# Measurements


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def process_cpu_seconds(pids: list[int]) -> float:
    """Return the user plus system CPU time of processes, all threads, from /proc."""
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks_per_second


def make_prompts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = rng.choice(VOCABULARY, size=(count, PROMPT_WORDS))
    return [" ".join(row) + f" #{i}" for i, row in enumerate(words)]


def measure_encoder(samples: int) -> dict[str, float]:
    """Return the encoder's median time for one prompt and its batched throughput."""
    from banditroute.encoder import Encoder

    encoder = Encoder()
    prompts = make_prompts(samples + 512, seed=1)
    encoder.encode(prompts[:BATCH_SIZE])

    single = []
    for prompt in prompts[:samples]:
        started = time.perf_counter()
        encoder.encode([prompt])
        single.append(time.perf_counter() - started)

    batched = prompts[samples:]
    started = time.perf_counter()
    for start in range(0, len(batched), BATCH_SIZE):
        encoder.encode(batched[start : start + BATCH_SIZE])
    elapsed = time.perf_counter() - started
    return {
        "single_ms": percentile(single, 50) * 1000,
        "batched_per_second": len(batched) / elapsed,
    }


# Closed-loop load with wrk


@dataclass
class WrkResult:
    """Merged result of one wrk run per server process."""

    requests: int
    seconds: float
    failures: int
    accepted: int
    duplicates: int
    latencies_ms: np.ndarray
    """Latency quantiles of every run, each repeated in proportion to its requests."""

    def percentile(self, q: float) -> float:
        return percentile(list(self.latencies_ms), q)


def run_wrk(
    mode: str, urls: list[str], body_files: list[Path], seconds: float, folder: Path
) -> tuple[WrkResult, list[Path]]:
    """Run wrk against every url at once, CONCURRENCY connections in all.

    Returns the merged result and, for /route, the files of decision ids.
    """
    connections = max(1, CONCURRENCY // len(urls))
    id_files = [folder / f"ids-{index}.txt" for index in range(len(urls))]
    processes = []
    for url, bodies, ids in zip(urls, body_files, id_files, strict=True):
        arguments = [mode, str(bodies)] + ([str(ids)] if mode == "route" else [])
        processes.append(
            subprocess.Popen(
                ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s"]
                + ["--timeout", "10s", "-s", str(WRK_SCRIPT), url, "--", *arguments],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )

    reports = []
    for process in processes:
        stdout, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(
                f"wrk failed ({process.returncode}):\n{stdout}\n{stderr}"
            )
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    return _merge_wrk_reports(reports), id_files


def _merge_wrk_reports(reports: list[dict[str, Any]]) -> WrkResult:
    # Each report has 1,000 evenly spaced quantiles. Repeating each run's quantiles in
    # proportion to its request count pools them into one distribution.
    total = sum(report["requests"] for report in reports)
    pooled = []
    for report in reports:
        repeats = max(1, round(10 * report["requests"] / max(total, 1) * len(reports)))
        pooled.append(np.repeat(np.asarray(report["latency_us"]) / 1000, repeats))
    return WrkResult(
        requests=total,
        seconds=max(report["duration_us"] for report in reports) / 1e6,
        failures=sum(report["non_2xx"] + report["socket_errors"] for report in reports),
        accepted=sum(report["accepted"] for report in reports),
        duplicates=sum(report["duplicates"] for report in reports),
        latencies_ms=np.concatenate(pooled),
    )


def write_route_bodies(path: Path, count: int, seed: int) -> None:
    lines = [json.dumps({"prompt": prompt}) for prompt in make_prompts(count, seed)]
    path.write_text("\n".join(lines) + "\n")


def write_feedback_bodies(path: Path, decision_ids: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    ratings = rng.integers(1, 6, size=len(decision_ids))
    lines = [
        json.dumps(
            {
                "decision_id": decision_id,
                "rating": int(rating),
                "scale": "stars_5",
                "output_tokens": 200,
            }
        )
        for decision_id, rating in zip(decision_ids, ratings, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


# Open-loop load and probes with httpx


async def _route_burst(
    client: httpx.AsyncClient, urls: list[str], prompts: list[str]
) -> list[str]:
    """Route prompts on CONCURRENCY connections; return the decision ids."""
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in enumerate(prompts):
        queue.put_nowait(item)
    decision_ids: list[str] = [""] * len(prompts)

    async def worker() -> None:
        while not queue.empty():
            index, prompt = queue.get_nowait()
            url = urls[index % len(urls)]
            response = await client.post(f"{url}/route", json={"prompt": prompt})
            response.raise_for_status()
            decision_ids[index] = response.json()["decision_id"]

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return decision_ids


async def _open_loop_routes(
    client: httpx.AsyncClient, urls: list[str], prompts: list[str], rate: float
) -> tuple[list[float], list[str], float]:
    """Send one /route every 1/rate seconds, at most CONCURRENCY at a time.

    A latency runs from the request's scheduled time, so a request that waited for a
    free connection counts its wait.
    """
    connections = asyncio.Semaphore(CONCURRENCY)
    latencies: list[float] = []
    decision_ids: list[str] = [""] * len(prompts)
    started = time.perf_counter()

    async def send(index: int, prompt: str) -> None:
        scheduled = started + index / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        async with connections:
            url = urls[index % len(urls)]
            response = await client.post(f"{url}/route", json={"prompt": prompt})
        latencies.append(time.perf_counter() - scheduled)
        response.raise_for_status()
        decision_ids[index] = response.json()["decision_id"]

    await asyncio.gather(*(send(i, prompt) for i, prompt in enumerate(prompts)))
    return latencies, decision_ids, time.perf_counter() - started


def stream_position(event_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = event_id.partition("-")
    return int(milliseconds), int(sequence or 0)


async def _propagation_phase(
    client: httpx.AsyncClient, urls: list[str], decision_ids: list[str]
) -> list[float]:
    """Send feedback one at a time and time until every server has applied it."""
    delays = []
    for index, decision_id in enumerate(decision_ids):
        body = {"decision_id": decision_id, "rating": 1, "scale": "thumbs"}
        started = time.perf_counter()
        response = await client.post(f"{urls[index % len(urls)]}/feedback", json=body)
        response.raise_for_status()
        target = stream_position(response.json()["event_id"])

        pending = set(urls)
        while pending and time.perf_counter() - started < PROPAGATION_TIMEOUT_SECONDS:
            for url in list(pending):
                stats = await client.get(f"{url}/stats", params={"digest": "false"})
                last = stats.json()["posterior"]["last_event_id"]
                if last and stream_position(last) >= target:
                    pending.discard(url)
        if pending:
            raise RuntimeError(
                f"Event {response.json()['event_id']} did not reach {sorted(pending)} "
                f"within {PROPAGATION_TIMEOUT_SECONDS} s."
            )
        delays.append(time.perf_counter() - started)
    return delays


async def _wait_applied(client: httpx.AsyncClient, urls: list[str], count: int) -> None:
    """Wait until every server has applied ``count`` events, for at most 120 s."""
    deadline = time.perf_counter() + 120.0
    for url in urls:
        while time.perf_counter() < deadline:
            stats = await client.get(f"{url}/stats", params={"digest": "false"})
            if stats.json()["posterior"]["applied_events"] >= count:
                break
            await asyncio.sleep(0.05)


async def run_load(
    urls: list[str],
    pids: list[int],
    folder: Path,
    arguments: argparse.Namespace,
    open_loop_rate: float,
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        await _route_burst(client, urls, make_prompts(WARMUP_ROUTES, seed=2))

        route_bodies = [folder / f"route-{i}.jsonl" for i in range(len(urls))]
        for index, path in enumerate(route_bodies):
            write_route_bodies(path, ROUTE_BODIES, seed=10 + index)
        cpu_before = process_cpu_seconds(pids)
        routes, id_files = run_wrk(
            "route", urls, route_bodies, arguments.route_seconds, folder
        )
        route_cpu = process_cpu_seconds(pids) - cpu_before

        open_count = max(1, round(open_loop_rate * arguments.open_loop_seconds))
        open_latencies, open_ids, open_seconds = await _open_loop_routes(
            client, urls, make_prompts(open_count, seed=3), open_loop_rate
        )

        feedback_bodies = [folder / f"feedback-{i}.jsonl" for i in range(len(urls))]
        decisions = 0
        for index, (ids, path) in enumerate(
            zip(id_files, feedback_bodies, strict=True)
        ):
            decision_ids = ids.read_text().split()
            decisions += len(decision_ids)
            write_feedback_bodies(path, decision_ids, seed=20 + index)
        # Enough decisions must be left for the whole phase, even at twice the target;
        # wrk takes whole seconds.
        feedback_seconds = max(1, min(arguments.feedback_seconds, decisions // 2000))
        applied_before = await _applied_events(client, urls[0])
        cpu_before = process_cpu_seconds(pids)
        feedback, _ = run_wrk(
            "feedback", urls, feedback_bodies, feedback_seconds, folder
        )
        await _wait_applied(client, urls, applied_before + feedback.accepted)
        feedback_cpu = process_cpu_seconds(pids) - cpu_before
        propagation = await _propagation_phase(
            client, urls, open_ids[: arguments.probes]
        )

    if feedback.duplicates:
        print(
            f"WARNING: {feedback.duplicates} feedback requests found no fresh "
            "decision; the feedback rate is a lower bound. Raise --route-seconds.",
            file=sys.stderr,
        )
    return {
        "route_p50_ms": routes.percentile(50),
        "route_p99_ms": routes.percentile(99),
        "route_per_second": routes.requests / routes.seconds,
        "route_failures": routes.failures,
        "open_rate": open_loop_rate,
        "open_achieved_rate": open_count / open_seconds,
        "open_p50_ms": percentile(open_latencies, 50) * 1000,
        "open_p99_ms": percentile(open_latencies, 99) * 1000,
        "feedback_p50_ms": feedback.percentile(50),
        "feedback_p99_ms": feedback.percentile(99),
        "feedback_per_second": feedback.accepted / feedback.seconds,
        "feedback_accepted": feedback.accepted,
        "feedback_seconds": feedback.seconds,
        "feedback_failures": feedback.failures,
        "route_cpu_ms": route_cpu / max(routes.requests, 1) * 1000,
        "feedback_cpu_ms": feedback_cpu / max(feedback.accepted, 1) * 1000,
        "propagation_p50_ms": percentile(propagation, 50) * 1000,
        "propagation_p99_ms": percentile(propagation, 99) * 1000,
        "propagation_samples": len(propagation),
    }


async def _applied_events(client: httpx.AsyncClient, url: str) -> int:
    stats = await client.get(f"{url}/stats", params={"digest": "false"})
    return int(stats.json()["posterior"]["applied_events"])


# Servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s.")


@dataclass
class RedisProcess:
    process: subprocess.Popen[bytes]
    url: str

    @classmethod
    def start(cls, folder: Path) -> RedisProcess:
        executable = shutil.which("redis-server")
        if executable is None:
            raise SystemExit("redis-server not found; install it or pass --redis-url.")
        port = free_port()
        process = subprocess.Popen(
            [executable, "--port", str(port), "--bind", HOST, "--save", ""]
            + ["--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        redis = cls(process, f"redis://{HOST}:{port}/0")

        def answers() -> bool:
            try:
                with socket.create_connection((HOST, port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_until(answers, 10.0, "redis-server")
        return redis

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_servers(
    count: int,
    redis_url: str,
    namespace: str,
    folder: Path,
    torch_threads: int | None,
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    if torch_threads is None:
        # Like `banditroute serve --workers count`, which divides the CPUs.
        torch_threads = max(1, (os.cpu_count() or 1) // count)
    config = folder / f"service-{namespace}.yaml"
    config.write_text(
        json.dumps(
            {
                "catalog": CATALOG,
                "redis_url": redis_url,
                "redis_namespace": namespace,
                "cost_weight": 10.0,
                # Like `banditroute serve --workers count`, which divides the CPUs.
                "torch_threads": torch_threads
                or max(1, (os.cpu_count() or 1) // count),
            }
        )
    )
    executable = Path(sys.executable).with_name("banditroute")
    processes, urls = [], []
    for index in range(count):
        port = free_port()
        log = (folder / f"{namespace}-{index}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [str(executable), "serve", "--config", str(config)]
                + ["--port", str(port), "--workers", "1", "--log-level", "WARNING"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        urls.append(f"http://{HOST}:{port}")

    for url, process in zip(urls, processes, strict=True):
        wait_until(
            lambda url=url, process=process: _is_ready(url, process),
            SERVER_START_TIMEOUT_SECONDS,
            f"Server {url}",
        )
    return processes, urls


def _is_ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"Server {url} exited with status {process.returncode}.")
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def stop_servers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_with_servers(
    workers: int,
    redis_url: str,
    folder: Path,
    arguments: argparse.Namespace,
    open_loop_rate: float,
) -> dict[str, Any]:
    namespace = f"bench-{workers}-{os.getpid()}-{time.time_ns()}"
    processes, urls = start_servers(
        workers, redis_url, namespace, folder, arguments.torch_threads
    )
    run_folder = folder / namespace
    run_folder.mkdir()
    try:
        pids = [process.pid for process in processes]
        return asyncio.run(run_load(urls, pids, run_folder, arguments, open_loop_rate))
    finally:
        stop_servers(processes)


# Report


def print_table(encoder: dict[str, float], results: dict[int, dict[str, Any]]) -> None:
    single = encoder["single_ms"]
    batched = encoder["batched_per_second"]
    print(
        f"\nEncoder alone: {single:.2f} ms for one prompt (median), "
        f"{batched:.0f} prompts/s in batches of {BATCH_SIZE}"
    )
    print(
        f"CPUs: {os.cpu_count()}; {CONCURRENCY} concurrent clients; load average "
        f"before {LOAD_BEFORE[0]:.2f}, after {os.getloadavg()[0]:.2f} (1 min)\n"
    )

    route_p50_target = f"<= {3 * single:.1f} (3x encoder)"
    route_rate_target = f">= {batched / 2:.0f} (encoder/2)"
    rows = [
        ("/route p50 ms", "route_p50_ms", route_p50_target, 3 * single, "max"),
        ("/route p99 ms", "route_p99_ms", "< 100", 100.0, "max"),
        ("/route per s", "route_per_second", route_rate_target, batched / 2, "min"),
        (
            f"/route p50 ms @{batched / 2:.0f}/s",
            "open_p50_ms",
            route_p50_target,
            3 * single,
            "max",
        ),
        (f"/route p99 ms @{batched / 2:.0f}/s", "open_p99_ms", "< 100", 100.0, "max"),
        ("/feedback per s", "feedback_per_second", ">= 1000", 1000.0, "min"),
        ("/feedback p99 ms", "feedback_p99_ms", "< 20", 20.0, "max"),
        ("propagation p99 ms", "propagation_p99_ms", "< 100", 100.0, "max"),
    ]
    columns = sorted(results)
    header = f"{'metric':<24}" + "".join(f"{f'{w} worker(s)':>14}" for w in columns)
    print(header + f"  {'target':<24}")
    for label, key, target_text, bound, kind in rows:
        cells = ""
        for workers in columns:
            value = results[workers][key]
            met = value <= bound if kind == "max" else value >= bound
            cells += f"{value:>12.1f} {'✓' if met else '✗'}"
        print(f"{label:<24}{cells}  {target_text:<24}")

    floor = CONCURRENCY / batched * 1000
    print(
        f"\nThe first three rows are closed loop: {CONCURRENCY} clients keep the "
        f"servers saturated, so a /route waits for the requests ahead of it. No "
        f"server can answer them faster on average than {CONCURRENCY} / (encoder "
        f"batched rate) = {floor:.0f} ms (Little's law). The two @ rows send "
        f"{batched / 2:.0f} requests/s (the throughput target) on up to "
        f"{CONCURRENCY} connections."
    )
    print("\nOther figures:")
    for workers in columns:
        result = results[workers]
        print(
            f"  {workers} worker(s): open loop achieved "
            f"{result['open_achieved_rate']:.0f}/s; /feedback p50 "
            f"{result['feedback_p50_ms']:.1f} ms, {result['feedback_accepted']} "
            f"events accepted in {result['feedback_seconds']:.1f} s; failed "
            f"requests: route {result['route_failures']}, feedback "
            f"{result['feedback_failures']}; propagation p50 "
            f"{result['propagation_p50_ms']:.1f} ms over "
            f"{result['propagation_samples']} samples; server CPU time per /route "
            f"{result['route_cpu_ms']:.1f} ms, per accepted feedback (request and "
            f"applying the event in every server) {result['feedback_cpu_ms']:.2f} ms"
        )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--route-seconds",
        type=int,
        default=45,
        help="Duration of the closed-loop /route phase; its decisions get feedback.",
    )
    parser.add_argument(
        "--open-loop-seconds",
        type=float,
        default=15.0,
        help="Duration of the /route phase at a fixed rate.",
    )
    parser.add_argument(
        "--feedback-seconds",
        type=int,
        default=3,
        help="Duration of the /feedback phase (shorter when decisions run short).",
    )
    parser.add_argument(
        "--probes", type=int, default=200, help="Feedback timed until propagated."
    )
    parser.add_argument(
        "--encoder-samples", type=int, default=100, help="Single-prompt encodings."
    )
    parser.add_argument(
        "--workers", default="1,2", help="Comma-separated server process counts."
    )
    parser.add_argument(
        "--redis-url", help="Use this Redis instead of a private redis-server."
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="Torch threads of each server process. Default: the service's, the "
        "CPUs divided by the server processes.",
    )
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk not found; install it (Debian: apt-get install wrk) and run again."
        )

    LOAD_BEFORE[:] = os.getloadavg()
    encoder = measure_encoder(arguments.encoder_samples)
    open_loop_rate = encoder["batched_per_second"] / 2
    worker_counts = [int(item) for item in arguments.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-service-") as folder_name:
        folder = Path(folder_name)
        redis = None if arguments.redis_url else RedisProcess.start(folder)
        redis_url = arguments.redis_url or redis.url
        try:
            results = {
                workers: run_with_servers(
                    workers, redis_url, folder, arguments, open_loop_rate
                )
                for workers in worker_counts
            }
        finally:
            if redis is not None:
                redis.stop()
    print_table(encoder, results)


if __name__ == "__main__":
    main()
