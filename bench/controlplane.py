"""The control plane under load: device list / show latency, and model upload / download.

Each database (SQLite, PostgreSQL) gets its own ``edgefleet serve`` subprocess on a free loopback
port with its own data directory; PostgreSQL is a throwaway cluster (``tests/pgserver.py``).

- ``latency``: an open-loop load generator (asyncio, 16 keep-alive connections) sends requests
  at a fixed rate; each request's latency is measured from the time it was *scheduled*, so a
  server that falls behind shows it in the figures instead of slowing the generator down (no
  coordinated omission). Endpoints: ``GET /api/v1/devices?limit=50`` (a random page of the
  fleet) and ``GET /api/v1/devices/{random id}``. Baseline: the same load against
  ``GET /healthz`` of the same server (no auth, no database), in the same run; the three phases
  alternate in rounds so that drift on a noisy machine hits all of them. The generator speaks
  HTTP/1.1 on plain asyncio streams (``--client httpx`` uses ``httpx.AsyncClient`` instead,
  which costs ~3 ms of client CPU a request: on 2 cores that competes with the server).
  ``--sweep`` also steps each endpoint through rising rates to find the highest one served
  within the target. Targets (issue 4): 200 requests/s with p99 ≤ 25 ms.
- ``transfer``: a valid ONNX model of ``--model-mb`` MB (one float32 initializer added to the
  input), uploaded streamed from disk in 1 MiB chunks with ``Content-Length``, then downloaded
  in full to a file (not fsynced; the download is checked against the sha256 once, untimed).
  Baseline: a plain copy of the same file (read, write, fsync) on the same disk, alternated with
  the transfers. The server's resident memory (RSS, sampled every 50 ms) before and at its peak
  during each transfer gives its growth. Targets: ≥ 150 MB/s each way with the server growing
  < 50 MB.

The fleet is seeded through the API (an enrollment token, then ``POST /api/v1/enroll``, per
device) and a few label-selector groups are created, as in a real fleet.

Every phase also records the CPU the machine spent, split into ours (this script, the server,
PostgreSQL) and other work (``others_cores``, in cores), and the server's CPU time per request:
on a shared machine that tells a slow server from a busy neighbour.

MB = 10^6 bytes throughout. Results: a table on stdout, everything in
``bench/results/controlplane-<timestamp>.json``.

Run: ``.venv/bin/python bench/controlplane.py [--db sqlite|postgresql|both] [--devices 1000]
[--rate 200] [--duration 20] [--model-mb 500] [--sweep] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np
import onnx
import psutil
from onnx import TensorProto, helper
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MB = 1_000_000
CHUNK = 1 << 20
RSS_INTERVAL_S = 0.05
READY_TIMEOUT_S = 60.0
WARMUP_S = 2.0
LIST_LIMIT = 50
SITES = 8
GROUPS = 10
CLIENT_TIMEOUT_S = 30.0
P99_TARGET_MS = 25.0
SWEEP_RATES = (25, 50, 75, 100, 125, 150, 175, 200, 250, 300)

# a log file gets the full table, not one wrapped at 80 columns
console = Console(width=None if sys.stdout.isatty() else 160)


# ---- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def edgefleet_executable() -> str:
    """The ``edgefleet`` console script next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "edgefleet"
    if beside.exists():
        return str(beside)
    found = shutil.which("edgefleet")
    if found is None:
        raise SystemExit("edgefleet: console script not found (install the project: pip install -e .)")
    return found


class ControlPlaneProcess:
    """``edgefleet serve`` as a subprocess on a free loopback port with its own data directory."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
        self.env["EDGEFLEET_WORKERS"] = os.environ.get("EDGEFLEET_WORKERS", "1")
        self.env.update(
            EDGEFLEET_DATA_DIR=str(data_dir / "cp"),
            EDGEFLEET_HOST="127.0.0.1",
            EDGEFLEET_PORT=str(self.port),
            EDGEFLEET_LOG_JSON="false",
        )
        if database_url is not None:
            self.env["EDGEFLEET_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        # its own session: a Ctrl-C reaches this script only, which then stops the server in order
        self.process = subprocess.Popen(
            [edgefleet_executable(), "serve"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(timeout=5) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the control plane exited ({self.process.returncode}):\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the control plane was not ready in {READY_TIMEOUT_S:.0f} s")
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def create_admin_token(self) -> str:
        result = subprocess.run(
            [edgefleet_executable(), "admin", "create-token", "--name", "bench", "--role", "admin"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return result.stdout.strip().splitlines()[-1]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


class Postgres:
    """A throwaway PostgreSQL cluster (``tests/pgserver.py``) with one database."""

    def __init__(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="edgefleet-bench-pg-"))
        self.base_dir.chmod(0o755)  # as root the server runs as the postgres user
        self.server: Any = None
        self.version = ""

    def start(self) -> str:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tests.pgserver import PostgresServer

        self.server = PostgresServer.start(self.base_dir)
        url: str = self.server.create_database()
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.server.port, user="postgres", dbname="postgres"
        ) as c:
            row = c.execute("SELECT version()").fetchone()
            self.version = str(row[0]) if row else ""
        return url

    def pids(self) -> list[int]:
        """The postmaster's pid (its backends are its children)."""
        pid_file = self.server.data_dir / "postmaster.pid"
        return [int(pid_file.read_text().split()[0])]

    def stop(self) -> None:
        try:
            if self.server is not None:
                self.server.stop()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


class CpuAccount:
    """Busy CPU (in cores) over an interval: the whole machine's, ours (this script, the server,
    PostgreSQL) and everybody else's: the noise of a shared machine, measured."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start()

    def _ours(self) -> float:
        total = 0.0
        procs: list[psutil.Process] = [psutil.Process()]
        for pid in self.pids:
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(pid)
                procs += [parent, *parent.children(recursive=True)]
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                self._seen[proc.pid] = times.user + times.system
        for used in self._seen.values():
            total += used
        return total

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))

    def _server(self) -> float:
        """CPU seconds of the first pid (the control plane) and its worker processes."""
        if not self.pids:
            return 0.0
        total = 0.0
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(self.pids[0])
            for proc in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
        return total

    def start(self) -> None:
        self._server0 = self._server()
        self._seen: dict[int, float] = {}
        self._wall = time.monotonic()
        self._busy0 = self._busy()
        self._ours0 = self._ours()
        self._seen_at_start = dict(self._seen)

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._wall
        busy = self._busy() - self._busy0
        ours = self._ours() - sum(self._seen_at_start.values())
        return {
            "machine_busy_cores": round(busy / wall, 2),
            "ours_cores": round(ours / wall, 2),
            "others_cores": round(max(0.0, busy - ours) / wall, 2),
            "server_cpu_s": round(self._server() - self._server0, 3),
        }


class RssSampler:
    """The resident memory of a process and its children, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_S) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return int(total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.before = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.after = self.rss()

    @property
    def peak(self) -> int:
        return max([self.before, *self.samples])


# ---- statistics ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, int(np.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class LoadResult:
    endpoint: str
    target_rate: float
    sent: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    achieved_rate: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    # the control plane's CPU time (all its threads) per request answered
    server_cpu_ms_per_request: float = 0.0
    round_p50_ms: list[float] = field(default_factory=list)
    round_p99_ms: list[float] = field(default_factory=list)
    round_cpu: list[dict[str, float]] = field(default_factory=list)


@dataclass
class LatencySamples:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    busy_s: float = 0.0
    round_p50_ms: list[float] = field(default_factory=list)
    round_p99_ms: list[float] = field(default_factory=list)
    round_cpu: list[dict[str, float]] = field(default_factory=list)

    def summary(self, endpoint: str, rate: float) -> LoadResult:
        ms = [x * 1000 for x in self.latencies]
        errors = sum(n for status, n in self.statuses.items() if status != "200")
        return LoadResult(
            endpoint=endpoint,
            target_rate=rate,
            sent=self.sent,
            errors=errors,
            statuses=dict(self.statuses),
            achieved_rate=len(ms) / self.busy_s if self.busy_s else 0.0,
            p50_ms=percentile(ms, 50),
            p90_ms=percentile(ms, 90),
            p99_ms=percentile(ms, 99),
            max_ms=max(ms),
            mean_ms=statistics.fmean(ms),
            server_cpu_ms_per_request=round(
                1000 * sum(c["server_cpu_s"] for c in self.round_cpu) / len(ms), 3
            ),
            round_p50_ms=self.round_p50_ms,
            round_p99_ms=self.round_p99_ms,
            round_cpu=self.round_cpu,
        )


# ---- load generator --------------------------------------------------------------------------


class RawHttpPool:
    """Keep-alive HTTP/1.1 GETs on plain asyncio streams: ~0.5 ms of client CPU a request where
    ``httpx.AsyncClient`` spends ~3 ms, which on a 2-core machine would compete with the server.
    Handles what the control plane answers to a GET: ``Content-Length`` bodies."""

    def __init__(self, host: str, port: int, headers: dict[str, str], connections: int) -> None:
        self.host = host
        self.port = port
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._head = f"Host: {host}:{port}\r\n{extra}\r\n".encode()
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(connections):
            self._idle.put_nowait(None)  # a slot; the connection opens on first use

    async def get(self, path: str) -> str:
        """The response's status code, or the exception's name."""
        slot = await self._idle.get()
        try:
            if slot is None:
                slot = await asyncio.open_connection(self.host, self.port)
            reader, writer = slot
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._head)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = lines[0].split(b" ", 2)[1].decode()
            length = None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length is None:
                raise ValueError("response without Content-Length")
            await reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            if slot is not None:
                slot[1].close()
            self._idle.put_nowait(None)
            return type(exc).__name__
        self._idle.put_nowait(slot)
        return status

    async def aclose(self) -> None:
        while not self._idle.empty():
            slot = self._idle.get_nowait()
            if slot is not None:
                slot[1].close()
                with contextlib.suppress(OSError):
                    await slot[1].wait_closed()


def httpx_getter(client: httpx.AsyncClient) -> Callable[[str], Awaitable[str]]:
    async def get(path: str) -> str:
        try:
            response = await client.get(path)
            await response.aread()
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return str(response.status_code)

    return get


async def open_loop(
    get: Callable[[str], Awaitable[str]], next_path: Callable[[], str], rate: float, duration: float
) -> tuple[list[float], Counter[str], int, float]:
    """Send ``rate`` requests/s for ``duration`` s on a fixed schedule, whatever the answers.

    Returns the latencies (s, from each request's scheduled time to the end of its response),
    the status counts, the number sent, and the time from the first scheduled send to the last
    answer."""
    loop = asyncio.get_running_loop()
    count = max(1, round(rate * duration))
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    last_done = 0.0

    async def one(scheduled: float, path: str) -> None:
        nonlocal last_done
        status = await get(path)
        done = loop.time()
        latencies.append(done - scheduled)
        statuses[status] += 1
        last_done = max(last_done, done)

    start = loop.time() + 0.05
    tasks: list[asyncio.Task[None]] = []
    for index in range(count):
        scheduled = start + index / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, next_path())))
    await asyncio.gather(*tasks)
    return latencies, statuses, count, last_done - start


async def run_latency(
    url: str,
    token: str,
    device_ids: list[str],
    cursors: list[str | None],
    pids: list[int],
    args: argparse.Namespace,
) -> tuple[dict[str, LoadResult], dict[str, list[dict[str, float]]]]:
    rng = random.Random(42)

    def healthz() -> str:
        return "/healthz"

    def device_list() -> str:
        cursor = rng.choice(cursors)
        return f"/api/v1/devices?limit={LIST_LIMIT}" + (f"&cursor={cursor}" if cursor else "")

    def device_show() -> str:
        return f"/api/v1/devices/{rng.choice(device_ids)}"

    phases: dict[str, Callable[[], str]] = {
        "GET /healthz (baseline)": healthz,
        f"GET /api/v1/devices?limit={LIST_LIMIT}": device_list,
        "GET /api/v1/devices/{id}": device_show,
    }
    samples = {name: LatencySamples() for name in phases}
    sweep: dict[str, list[dict[str, float]]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with contextlib.AsyncExitStack() as stack:
        if args.client == "httpx":
            limits = httpx.Limits(
                max_connections=args.connections, max_keepalive_connections=args.connections
            )
            client = httpx.AsyncClient(
                base_url=url, headers=headers, limits=limits, timeout=httpx.Timeout(CLIENT_TIMEOUT_S)
            )
            await stack.enter_async_context(client)
            get = httpx_getter(client)
        else:
            parsed = httpx.URL(url)
            pool = RawHttpPool(parsed.host, parsed.port or 80, headers, args.connections)
            stack.push_async_callback(pool.aclose)
            get = pool.get
        # open the connections and warm every route up; not counted
        for make in phases.values():
            await open_loop(get, make, args.rate, WARMUP_S / len(phases))
        per_round = args.duration / args.rounds
        for round_no in range(args.rounds):
            for name, make in phases.items():
                account = CpuAccount(pids)
                latencies, statuses, sent, busy = await open_loop(get, make, args.rate, per_round)
                cpu = account.stop()
                sample = samples[name]
                sample.round_cpu.append(cpu)
                sample.latencies += latencies
                sample.statuses.update(statuses)
                sample.sent += sent
                sample.busy_s += busy
                ms = [x * 1000 for x in latencies]
                sample.round_p50_ms.append(round(percentile(ms, 50), 3))
                sample.round_p99_ms.append(round(percentile(ms, 99), 3))
                console.log(
                    f"  round {round_no + 1}/{args.rounds} {name}: p50 {percentile(ms, 50):.2f} ms, "
                    f"p99 {percentile(ms, 99):.2f} ms, {sent - statuses.get('200', 0)} errors; "
                    f"server CPU {1000 * cpu['server_cpu_s'] / len(ms):.2f} ms/request; "
                    f"busy CPU {cpu['machine_busy_cores']:.2f} cores, other work {cpu['others_cores']:.2f}"
                )
        if args.sweep:
            sweep = await capacity_sweep(get, dict(list(phases.items())[1:]), args.sweep_s, pids)
    return {name: sample.summary(name, args.rate) for name, sample in samples.items()}, sweep


async def capacity_sweep(
    get: Callable[[str], Awaitable[str]],
    phases: dict[str, Callable[[], str]],
    seconds: float,
    pids: list[int],
) -> dict[str, list[dict[str, float]]]:
    """Each endpoint at rising rates, until its p99 is far past the target: the highest rate the
    server sustains within the target, and how latency grows past it."""
    sweep: dict[str, list[dict[str, float]]] = {}
    for name, make in phases.items():
        steps = sweep.setdefault(name, [])
        for rate in SWEEP_RATES:
            account = CpuAccount(pids)
            latencies, statuses, sent, busy = await open_loop(get, make, rate, seconds)
            others = account.stop()["others_cores"]
            ms = [x * 1000 for x in latencies]
            step = {
                "rate": rate,
                "achieved_rate": round(len(ms) / busy, 1),
                "p50_ms": round(percentile(ms, 50), 3),
                "p99_ms": round(percentile(ms, 99), 3),
                "errors": sent - statuses.get("200", 0),
                "others_cores": others,
            }
            steps.append(step)
            console.log(
                f"  sweep {name} at {rate} req/s: p50 {step['p50_ms']:.2f} ms, p99 {step['p99_ms']:.2f} ms"
            )
            if step["p99_ms"] > 4 * P99_TARGET_MS:
                break
    return sweep


# ---- fleet -----------------------------------------------------------------------------------


async def seed_fleet(url: str, token: str, count: int, concurrency: int = 4) -> tuple[list[str], float]:
    """Enroll ``count`` devices through the API (token, then enroll) and create label groups.
    Returns the device ids and the enrollments per second."""
    headers = {"Authorization": f"Bearer {token}"}
    ids: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            labels = {"site": f"site-{index % SITES}", "line": f"line-{index % 5}", "fleet": "bench"}
            created = await client.post(
                "/api/v1/enrollment-tokens", json={"labels": labels, "note": "bench"}, headers=headers
            )
            created.raise_for_status()
            enrolled = await client.post(
                "/api/v1/enroll",
                json={
                    "token": created.json()["token"],
                    "device_id": f"bench-{index:06d}",
                    "hostname": f"edge-{index:06d}.local",
                    "profile": "cpu",
                },
            )
            enrolled.raise_for_status()
            ids.append(enrolled.json()["device_id"])

    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=CLIENT_TIMEOUT_S) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        for number in range(GROUPS):
            selector = {"site": f"site-{number % SITES}"} if number < SITES else {"fleet": "bench"}
            response = await client.post(
                "/api/v1/groups",
                json={"name": f"group-{number}", "description": "bench", "selector": selector},
                headers=headers,
            )
            response.raise_for_status()
    return sorted(ids), count / elapsed


def list_cursors(url: str, token: str) -> list[str | None]:
    """Every page's cursor of ``GET /api/v1/devices?limit=50`` (``None``: the first page)."""
    cursors: list[str | None] = [None]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        while True:
            params: dict[str, Any] = {"limit": LIST_LIMIT}
            if cursors[-1] is not None:
                params["cursor"] = cursors[-1]
            page = client.get("/api/v1/devices", params=params)
            page.raise_for_status()
            next_cursor = page.json().get("next_cursor")
            if next_cursor is None:
                return cursors
            cursors.append(next_cursor)


# ---- transfers -------------------------------------------------------------------------------


def model_file(megabytes: int) -> Path:
    """A valid ONNX model of about ``megabytes`` MB: ``y = x + w`` with ``w`` one float32
    initializer. Generated once and cached in ``bench/results/``."""
    path = RESULTS / f"controlplane-model-{megabytes}mb.onnx"
    if path.exists():
        return path
    RESULTS.mkdir(parents=True, exist_ok=True)
    elements = megabytes * MB // 4
    console.log(f"generating a {megabytes} MB ONNX model ({elements} float32 weights) in {path}")
    weights = np.random.default_rng(0).standard_normal(elements, dtype=np.float32)
    initializer = helper.make_tensor("w", TensorProto.FLOAT, [elements], weights.tobytes(), raw=True)
    del weights
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "bench_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [elements])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [elements])],
        [initializer],
    )
    model = helper.make_model(
        graph, producer_name="edgefleet-bench", opset_imports=[helper.make_opsetid("", 17)]
    )
    partial = path.with_suffix(".part")
    partial.write_bytes(model.SerializeToString())
    partial.replace(path)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_file(source: Path, target: Path) -> float:
    """Baseline: read + write + fsync in 1 MiB chunks. Returns the seconds it took."""
    started = time.perf_counter()
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return time.perf_counter() - started


def file_chunks(path: Path, sent: list[float]) -> Iterator[bytes]:
    """The file in 1 MiB chunks; appends the time the last one was handed over to ``sent``."""
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk
    sent.append(time.perf_counter())


@dataclass
class Transfer:
    seconds: float
    mb_per_s: float
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    rss_growth_mb: float = 0.0
    # upload only: time from the last byte sent to the response (the server's fsync, metadata and
    # database work, plus whatever it had not yet read from the socket)
    finish_s: float | None = None
    # CPU (cores) used meanwhile by other work on the machine
    others_cores: float | None = None


def rss_fields(sampler: RssSampler) -> dict[str, float]:
    return {
        "rss_before_mb": round(sampler.before / MB, 1),
        "rss_peak_mb": round(sampler.peak / MB, 1),
        "rss_after_mb": round(sampler.after / MB, 1),
        "rss_growth_mb": round((sampler.peak - sampler.before) / MB, 1),
    }


def upload(
    client: httpx.Client, pids: list[int], model: Path, digest: str, size: int
) -> tuple[Transfer, int]:
    headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    sent: list[float] = []
    account = CpuAccount(pids)
    with RssSampler(pids[0]) as sampler:
        started = time.perf_counter()
        response = client.post(
            "/api/v1/models/bench-model/versions",
            params={"sha256": digest, "description": "bench"},
            content=file_chunks(model, sent),
            headers=headers,
        )
        finished = time.perf_counter()
    seconds = finished - started
    if response.status_code != 201:
        raise RuntimeError(f"upload failed: {response.status_code} {response.text[:500]}")
    body = response.json()
    if body["sha256"] != digest or body["size"] != size:
        raise RuntimeError(f"upload stored {body['sha256']} / {body['size']} B")
    version: int = body["version"]
    finish = round(finished - sent[0], 3) if sent else None
    others = account.stop()["others_cores"]
    return Transfer(
        seconds, size / MB / seconds, **rss_fields(sampler), finish_s=finish, others_cores=others
    ), version


def download(client: httpx.Client, pids: list[int], version: int, target: Path, size: int) -> Transfer:
    account = CpuAccount(pids)
    with RssSampler(pids[0]) as sampler, target.open("wb") as sink:
        started = time.perf_counter()
        with client.stream("GET", f"/api/v1/models/bench-model/versions/{version}/content") as response:
            if response.status_code != 200:
                raise RuntimeError(f"download failed: {response.status_code}")
            for chunk in response.iter_raw(CHUNK):
                sink.write(chunk)
        sink.flush()
        seconds = time.perf_counter() - started
    if target.stat().st_size != size:
        raise RuntimeError(f"downloaded {target.stat().st_size} of {size} B")
    others = account.stop()["others_cores"]
    return Transfer(seconds, size / MB / seconds, **rss_fields(sampler), others_cores=others)


def run_transfers(
    cp: ControlPlaneProcess, pids: list[int], token: str, model: Path, digest: str, reps: int
) -> dict[str, Any]:
    size = model.stat().st_size
    scratch = cp.data_dir / "scratch"
    scratch.mkdir(exist_ok=True)
    copies: list[float] = []
    uploads: list[Transfer] = []
    downloads: list[Transfer] = []
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx.Timeout(600.0)
    with httpx.Client(base_url=cp.url, headers=headers, timeout=timeout) as client:
        for rep in range(reps):
            target = scratch / "copy.onnx"
            copies.append(size / MB / copy_file(model, target))
            target.unlink()
            up, version = upload(client, pids, model, digest, size)
            uploads.append(up)
            target = scratch / "download.onnx"
            down = download(client, pids, version, target, size)
            downloads.append(down)
            if rep == 0 and sha256_file(target) != digest:
                raise RuntimeError("the downloaded model differs from the uploaded one")
            target.unlink()
            console.log(
                f"  transfer {rep + 1}/{reps}: copy {copies[-1]:.0f} MB/s, upload {up.mb_per_s:.0f} MB/s "
                f"(last byte to response {up.finish_s} s, RSS +{up.rss_growth_mb:.1f} MB), "
                f"download {down.mb_per_s:.0f} MB/s (RSS +{down.rss_growth_mb:.1f} MB); "
                f"other work {up.others_cores} / {down.others_cores} cores"
            )
    copy_median = statistics.median(copies)
    up_median = statistics.median(t.mb_per_s for t in uploads)
    down_median = statistics.median(t.mb_per_s for t in downloads)
    return {
        "size_bytes": size,
        "copy_mb_per_s": [round(x, 1) for x in copies],
        "upload": [asdict(t) for t in uploads],
        "download": [asdict(t) for t in downloads],
        "copy_median_mb_per_s": round(copy_median, 1),
        "upload_median_mb_per_s": round(up_median, 1),
        "download_median_mb_per_s": round(down_median, 1),
        "upload_ratio_vs_copy": round(up_median / copy_median, 3),
        "download_ratio_vs_copy": round(down_median / copy_median, 3),
        "upload_finish_median_s": statistics.median(t.finish_s or 0.0 for t in uploads),
        "upload_rss_growth_max_mb": max(t.rss_growth_mb for t in uploads),
        "download_rss_growth_max_mb": max(t.rss_growth_mb for t in downloads),
    }


# ---- one database ----------------------------------------------------------------------------


def bench_database(
    name: str,
    database_url: str | None,
    database_pids: list[int],
    model: Path,
    digest: str,
    args: argparse.Namespace,
    stack: Any,
) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"edgefleet-bench-{name}-"))
    stack.callback(shutil.rmtree, data_dir, True)
    cp = ControlPlaneProcess(data_dir, database_url)
    stack.callback(cp.stop)
    console.rule(f"[bold]{name}")
    cp.start()
    token = cp.create_admin_token()
    console.log(f"control plane pid {cp.pid} at {cp.url}; enrolling {args.devices} devices")
    device_ids, enroll_rate = asyncio.run(seed_fleet(cp.url, token, args.devices))
    cursors = list_cursors(cp.url, token)
    console.log(f"  {len(device_ids)} devices ({enroll_rate:.0f} enrollments/s), {len(cursors)} pages of 50")
    rss_start = psutil.Process(cp.pid).memory_info().rss
    load_before = os.getloadavg()
    pids = [cp.pid, *database_pids]
    latency, sweep = asyncio.run(run_latency(cp.url, token, device_ids, cursors, pids, args))
    baseline = next(iter(latency.values()))
    ratios = {
        endpoint: {
            "p50_ratio": round(result.p50_ms / baseline.p50_ms, 3),
            "p99_ratio": round(result.p99_ms / baseline.p99_ms, 3),
        }
        for endpoint, result in latency.items()
    }
    load_after_latency = os.getloadavg()
    transfers = run_transfers(cp, pids, token, model, digest, args.reps)
    cp.stop()
    if "Traceback" in cp.log_path.read_text(errors="replace"):
        console.log(f"[yellow]the {name} server logged a traceback:\n{cp.log_tail()}")
    return {
        "devices": len(device_ids),
        "groups": GROUPS,
        "enrollments_per_s": round(enroll_rate, 1),
        "server_rss_before_load_mb": round(rss_start / MB, 1),
        # the 1-minute load average before and after the latency phases: other work on the machine
        "loadavg_1min": {"before_latency": load_before[0], "after_latency": load_after_latency[0]},
        "latency": {endpoint: asdict(result) for endpoint, result in latency.items()},
        "latency_ratio_vs_healthz": ratios,
        "capacity_sweep": sweep,
        "transfer": transfers,
    }


# ---- machine and report ----------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(postgres_version: str) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version or None,
        "httpx": httpx.__version__,
        "onnx": onnx.__version__,
    }


def sustained_rate(steps: list[dict[str, float]]) -> float:
    """The highest rate of a sweep served in full with p99 within the target (0: none)."""
    ok = [s["rate"] for s in steps if s["p99_ms"] <= P99_TARGET_MS and s["achieved_rate"] >= 0.95 * s["rate"]]
    return max(ok, default=0.0)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    names = list(results)
    title = (
        f"control plane: {args.rate:g} req/s for {args.duration:g} s per endpoint, {args.model_mb} MB model"
    )
    table = Table(title=title)
    table.add_column("measure")
    for name in names:
        table.add_column(name, justify="right")
    rows: dict[str, list[str]] = {}
    for name in names:
        result = results[name]
        for endpoint, x in result["latency"].items():
            rows.setdefault(f"{endpoint}\np50 / p99 / max; rate, errors", []).append(
                f"{x['p50_ms']:.2f} / {x['p99_ms']:.2f} / {x['max_ms']:.1f} ms\n"
                f"{x['achieved_rate']:.0f} req/s, {x['errors']} errors"
            )
            rows.setdefault(f"  {endpoint.split()[1]}: server CPU per request", []).append(
                f"{x['server_cpu_ms_per_request']:.2f} ms"
            )
            if "baseline" not in endpoint:
                ratio = result["latency_ratio_vs_healthz"][endpoint]
                rows.setdefault(f"  {endpoint.split()[1]}: ratio vs /healthz (p50, p99)", []).append(
                    f"{ratio['p50_ratio']:.2f} ×, {ratio['p99_ratio']:.2f} ×"
                )
        for endpoint, steps in result.get("capacity_sweep", {}).items():
            rows.setdefault(f"  {endpoint.split()[1]}: highest swept rate with p99 ≤ 25 ms", []).append(
                f"{sustained_rate(steps):g} req/s"
            )
        transfer = result["transfer"]
        rows.setdefault("file copy, read + write + fsync (baseline)", []).append(
            f"{transfer['copy_median_mb_per_s']:.0f} MB/s"
        )
        for kind in ("upload", "download"):
            rows.setdefault(f"{kind} (median)", []).append(
                f"{transfer[f'{kind}_median_mb_per_s']:.0f} MB/s "
                f"({transfer[f'{kind}_ratio_vs_copy']:.2f} × copy)"
            )
            rows.setdefault(f"  server RSS growth during {kind} (max)", []).append(
                f"{transfer[f'{kind}_rss_growth_max_mb']:.1f} MB"
            )
    for label, cells in rows.items():
        table.add_row(label, *cells)
    console.print(table)


# ---- main ------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--devices", type=int, default=1000, help="devices enrolled before the load")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s per endpoint")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per endpoint")
    parser.add_argument("--rounds", type=int, default=2, help="the endpoints alternate in this many rounds")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections of the generator")
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator's HTTP client: lean asyncio streams, or httpx.AsyncClient (~3 ms CPU a request)",
    )
    parser.add_argument("--model-mb", type=int, default=500, help="size of the model uploaded and downloaded")
    parser.add_argument("--reps", type=int, default=3, help="upload/download/copy repetitions")
    parser.add_argument(
        "--sweep", action="store_true", help="also step each endpoint through rising rates (capacity)"
    )
    parser.add_argument("--sweep-s", type=float, default=5.0, help="seconds per step of the sweep")
    parser.add_argument("--quick", action="store_true", help="a small, short run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.devices, args.duration, args.rounds, args.model_mb, args.reps = 100, 4.0, 1, 20, 1
        args.sweep_s = 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    databases = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    started = datetime.now(UTC)
    out = RESULTS / f"controlplane-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    results: dict[str, dict[str, Any]] = {}
    document: dict[str, Any] = {"started_at": started.isoformat(), "args": vars(args), "results": results}
    postgres: Postgres | None = None
    status = 0
    try:
        with contextlib.ExitStack() as stack:
            model = model_file(args.model_mb)
            digest = sha256_file(model)
            document["model"] = {"path": str(model.relative_to(ROOT)), "bytes": model.stat().st_size}
            for name in databases:
                url = None
                database_pids: list[int] = []
                if name == "postgresql":
                    postgres = Postgres()
                    stack.callback(postgres.stop)
                    url = postgres.start()
                    database_pids = postgres.pids()
                with contextlib.ExitStack() as per_db:
                    results[name] = bench_database(name, url, database_pids, model, digest, args, per_db)
    except KeyboardInterrupt:
        console.log("[red]interrupted; the servers are stopped")
        document["error"] = "interrupted"
        status = 130
    except BaseException as exc:
        document["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        document["machine"] = machine(postgres.version if postgres else "")
        document["finished_at"] = datetime.now(UTC).isoformat()
        RESULTS.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n")
        if results:
            report(results, args)
        console.log(f"results in {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
