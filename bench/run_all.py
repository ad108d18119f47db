"""Billbridge benchmark: ingest, the bare reference, end to end, memory. Run by hand:

    make bench                       # = .venv/bin/python bench/run_all.py
    .venv/bin/python bench/run_all.py --quick          # smaller counts, a smoke run
    .venv/bin/python bench/run_all.py --help

Every server is a subprocess on 127.0.0.1 with its own SQLite file in a temporary
directory (or, with `--database postgres`, its own PostgreSQL database); every process
started here is stopped and the directory (and databases) removed at the end, also on an
error or Ctrl-C. See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from loadgen import build_post, write_requests
from psycopg import sql

from billbridge.store import open_store
from billbridge.stripe.samples import sample_event
from billbridge.stripe.signature import sign_payload

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
BILLBRIDGE = str(Path(PYTHON).with_name("billbridge"))
SECRET = "whsec_bench" + base64.b32encode(os.urandom(20)).decode().lower().rstrip("=")
BENCH_SECRET_KEY = "billbridge-bench-secret-key"  # noqa: S105 - a passphrase for the bench
WEBHOOK_PATH = "/webhooks/stripe"
# Fake Customer.io credentials (any value works with the bench sink).
CIO_SITE_ID = "bench-site-id"
CIO_TRACK_KEY = "bench-track-key"

# Event types whose default workflows make Track calls (SPEC §4).
INGEST_TYPES = (
    "charge.succeeded",
    "customer.subscription.updated",
    "invoice.paid",
    "customer.created",
)
E2E_TYPES = ("charge.succeeded", "customer.subscription.updated")

TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
TARGET_CALLS_PER_S = 1000.0
TARGET_RSS_MB = 150.0
PG_STATS_FLUSH = 11.0  # seconds: an idle PostgreSQL backend flushes its statistics within 10 s
MB = 1024 * 1024


# Processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment without any Billbridge, Stripe or Customer.io setting, plus `extra`."""
    prefixes = ("BILLBRIDGE_", "CUSTOMERIO_", "STRIPE_")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


class Proc:
    """A child process with its output in a log file; `stop()` is safe to call twice."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.cwd = cwd
        self.log = cwd / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.port = 0  # where it listens
        self.database_url = ""  # the server's database (billbridge's DATABASE_URL)

    def start(self) -> Proc:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Procs:
    """Every process started by the run, stopped in reverse order at the end."""

    def __init__(self) -> None:
        self.started: list[Proc] = []

    def start(self, proc: Proc) -> Proc:
        self.started.append(proc)
        return proc.start()

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            with contextlib.suppress(Exception):
                proc.stop()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)  # noqa: S310 - a loopback http URL built here
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"{}", method="POST")  # noqa: S310
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
        return answer.status, answer.read()


def wait_ready(proc: Proc, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited at start:\n{proc.tail()}")
        with contextlib.suppress(OSError):
            if http_get(url, timeout=1.0)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready within {timeout} s:\n{proc.tail()}")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children."""
    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
    except psutil.Error:
        return 0
    return total


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (those running, and those it
    has reaped: PostgreSQL's backends come and go), in seconds."""
    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
    except psutil.Error:
        return 0.0
    return total


def postgres_server_pid() -> int | None:
    """The PostgreSQL postmaster on this machine (its backends are its children)."""
    for process in psutil.process_iter(["name", "ppid"]):
        with contextlib.suppress(psutil.Error):
            if process.info["name"] == "postgres":
                parent = psutil.Process(process.info["ppid"])
                if parent.name() != "postgres":
                    return int(process.pid)
    return None


class CpuMeter:
    """Where the machine's CPU went during a phase, in % of one core: the named processes,
    the load generator (a reaped child of this process), everything else, and idle. The
    numbers only mean something on an otherwise quiet machine: "everything else" says."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}
        self.seconds: dict[str, float] = {}  # CPU seconds of each named process

    @staticmethod
    def _children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self) -> CpuMeter:
        self._wall = time.monotonic()
        self._machine = psutil.cpu_times()
        self._reaped = self._children()
        self._procs = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(1e-9, time.monotonic() - self._wall)
        machine = psutil.cpu_times()
        idle = (machine.idle + machine.iowait) - (self._machine.idle + self._machine.iowait)
        busy = (sum(machine) - sum(self._machine)) - idle
        for name, pid in self.pids.items():
            self.seconds[name] = cpu_seconds(pid) - self._procs[name]
            self.used[name] = self.seconds[name] / wall * 100
        self.used["load generator"] = (self._children() - self._reaped) / wall * 100
        known = sum(self.used.values())
        self.used["everything else"] = max(0.0, busy / wall * 100 - known)
        self.used["idle"] = idle / wall * 100

    def line(self) -> str:
        parts = ", ".join(f"{name} {value:.0f}%" for name, value in self.used.items())
        return f"CPU (% of one core, {os.cpu_count()} cores): {parts}"

    @property
    def contended(self) -> bool:
        return self.used.get("everything else", 0.0) > 25.0


# Events and load ------------------------------------------------------------------------


def make_events(types: Sequence[str], count: int, tag: str) -> list[tuple[str, bytes]]:
    """`count` unique events cycling through `types`, each with its own customer and email,
    serialised like Stripe does (2-space indented JSON)."""
    stamp = f"{int(time.time()):x}"
    events = []
    for i in range(count):
        event_id = f"evt_bench{tag}{stamp}x{i:07d}"
        event = sample_event(
            types[i % len(types)],
            event_id=event_id,
            customer_id=f"cus_b{tag}{stamp}x{i:07d}",
            email=f"bench.{tag}.{stamp}.{i}@example.com",
        )
        events.append((event_id, json.dumps(event, indent=2).encode()))
    return events


def signed_requests(port: int, events: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """Complete HTTP/1.1 requests, signed now (Stripe's tolerance is 300 s)."""
    host = f"127.0.0.1:{port}"
    return [
        build_post(
            host,
            WEBHOOK_PATH,
            body,
            {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": sign_payload(body, SECRET),
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            },
        )
        for _event_id, body in events
    ]


@dataclass
class LoadResult:
    data: dict[str, Any]
    acked_ids: list[str] = field(default_factory=list)
    commits_per_1000: float | None = None  # PostgreSQL transactions per 1,000 requests
    server_cpu_ms: float = 0.0  # the server process's CPU per request

    @property
    def rps(self) -> float:
        return float(self.data["rps"])

    @property
    def p50(self) -> float:
        return float(self.data["latency_ms"]["p50"])

    @property
    def p99(self) -> float:
        return float(self.data["latency_ms"]["p99"])

    def line(self) -> str:
        lat = self.data["latency_ms"]
        statuses = self.data["status_counts"]
        answered = "all 200" if list(statuses) == ["200"] else f"statuses {statuses}"
        extra = f", {self.data['errors']} connection errors" if self.data["errors"] else ""
        extra += ", TIMED OUT" if self.data.get("timed_out") else ""
        return (
            f"{self.rps:8.1f} req/s   p50 {lat['p50']:6.2f} ms   p99 {lat['p99']:6.2f} ms"
            f"   max {lat['max']:7.2f} ms   ({self.data['requests']} requests"
            f" + {self.data['warmup']} warm-up, {answered}{extra})"
        )


def start_loadgen(
    workdir: Path,
    port: int,
    events: Sequence[tuple[str, bytes]],
    concurrency: int,
    *,
    warmup: int,
    timeout: float,
    sum_field: str | None = None,
) -> tuple[subprocess.Popen[bytes], Callable[[], LoadResult]]:
    """Write the signed requests and start the load generator; returns (process, collect)."""
    stem = workdir / f"load-{port}-{concurrency}-{time.monotonic_ns()}"
    requests_file = stem.with_suffix(".bin")
    acked_file = stem.with_suffix(".acked")
    write_requests(requests_file, signed_requests(port, events))
    args = [
        PYTHON,
        str(BENCH / "loadgen.py"),
        "--port",
        str(port),
        "--concurrency",
        str(concurrency),
        "--requests-file",
        str(requests_file),
        "--warmup",
        str(warmup),
        "--timeout",
        str(timeout),
        "--acked-out",
        str(acked_file),
    ]
    if sum_field:
        args += ["--sum-field", sum_field]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def collect() -> LoadResult:
        try:
            out, err = proc.communicate(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError("the load generator did not finish") from None
        if proc.returncode != 0:
            raise RuntimeError(f"the load generator failed:\n{err.decode(errors='replace')}")
        data = json.loads(out.decode().strip().splitlines()[-1])
        indexes = [int(x) for x in acked_file.read_text().split()]
        requests_file.unlink(missing_ok=True)
        return LoadResult(data, [events[i][0] for i in indexes])

    return proc, collect


def run_load(
    workdir: Path,
    port: int,
    events: Sequence[tuple[str, bytes]],
    concurrency: int,
    *,
    warmup: int,
    timeout: float,
) -> LoadResult:
    proc, collect = start_loadgen(
        workdir, port, events, concurrency, warmup=warmup, timeout=timeout
    )
    try:
        return collect()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# Checks on the stored data --------------------------------------------------------------


def query(database: str, statement: Any) -> list[tuple[Any, ...]]:
    """Rows of `statement` read straight from a `sqlite:///FILE` (read-only) or PostgreSQL URL."""
    if database.startswith("sqlite:///"):
        path = database.removeprefix("sqlite:///")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return list(conn.execute(statement))
        finally:
            conn.close()
    with psycopg.connect(database.replace("postgresql+psycopg://", "postgresql://")) as pg:
        return list(pg.execute(statement))


def stored_ids(database: str, table: str) -> set[str]:
    return {row[0] for row in query(database, f"SELECT stripe_event_id FROM {table}")}  # noqa: S608


def check_stored(acked: Sequence[str], database: str, table: str, *, via_store: bool) -> str:
    """Every 200-acknowledged event id must be in the database."""
    present = stored_ids(database, table)
    missing = [event_id for event_id in acked if event_id not in present]
    total = f"{len(present)} rows in {table}"
    if via_store:
        store = open_store(database)
        try:
            total += f", store.stats().events_total = {store.stats().events_total}"
        finally:
            store.close()
    verdict = "OK" if not missing else f"FAILED, e.g. {missing[:3]}"
    return (
        f"stored check: {len(acked)} events acknowledged with 200, {len(missing)} of them "
        f"missing ({total}) -> {verdict}"
    )


def delivery_counts(database: str) -> tuple[int, int, dict[str, int]]:
    """(deliveries, not yet final, by status) read straight from the database."""
    by_status = {
        str(status): int(count)
        for status, count in query(
            database, "SELECT status, count(*) FROM deliveries GROUP BY status"
        )
    }
    ((open_count,),) = query(
        database, "SELECT count(*) FROM deliveries WHERE next_attempt_at IS NOT NULL"
    )
    return sum(by_status.values()), int(open_count), by_status


# Customer.io side -----------------------------------------------------------------------


class CioReceiver:
    """The fake Customer.io (tests/fakes/customerio.py) or the bench sink, as a process."""

    def __init__(self, kind: str, procs: Procs, workdir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        if kind == "fake":
            args = [
                PYTHON,
                "-m",
                "tests.fakes.customerio",
                "--port",
                str(self.port),
                "--site-id",
                CIO_SITE_ID,
                "--track-api-key",
                CIO_TRACK_KEY,
            ]
            health = "/_fake/health"
        else:
            args = [PYTHON, str(BENCH / "sink.py"), "--port", str(self.port)]
            health = "/_sink/stats"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = procs.start(Proc(f"cio-{kind}-{self.port}", args, env, workdir))
        wait_ready(self.proc, self.url + health, timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        http_post(self.url + ("/_fake/reset" if self.kind == "fake" else "/_sink/reset"))

    def summary(self) -> dict[str, Any]:
        """requests, by status, events, duplicates, violations, and the last request time."""
        if self.kind == "fake":
            stats = json.loads(http_get(self.url + "/_fake/stats", 10)[1])
            count = int(stats["requests"])
            # Sequence numbers go on across resets: find the first one, then read the last few.
            first = json.loads(http_get(f"{self.url}/_fake/requests?since=0&limit=1", 10)[1])
            base = first["requests"][0]["seq"] if first["requests"] else 1
            since = max(0, base + count - 6)
            last = json.loads(http_get(f"{self.url}/_fake/requests?since={since}&limit=10", 10)[1])[
                "requests"
            ]
            violations = json.loads(http_get(self.url + "/_fake/violations", 10)[1])
            return {
                "requests": count,
                "by_status": stats["by_status"],
                "events": stats["events"],
                "people": stats["people"],
                "duplicate_events": stats["duplicate_events"],
                "violations": len(violations["violations"]),
                "first_at": first["requests"][0]["time"] if first["requests"] else None,
                "last_at": max((r["time"] for r in last), default=None),
            }
        stats = json.loads(http_get(self.url + "/_sink/stats", 10)[1])
        return {
            "requests": stats["requests"],
            "by_kind": stats["by_kind"],
            "operations": stats["operations"],
            "duplicate_events": stats["duplicate_event_ids"],
            "first_at": stats["first_at"],
            "last_at": stats["last_at"],
        }


# The benchmark --------------------------------------------------------------------------


@dataclass
class Options:
    requests: int
    warmup: int
    concurrencies: list[int]
    e2e_events: int
    e2e_connections: int
    split_workers: list[int]
    worker_concurrencies: list[int]
    cio: str
    track_batching: str
    database: str
    postgres_admin: str
    phase_timeout: float
    skip: set[str]
    keep: bool


class Bench:
    def __init__(self, options: Options, workdir: Path, procs: Procs) -> None:
        self.o = options
        self.workdir = workdir
        self.procs = procs
        self.summary: list[tuple[str, str, str]] = []  # (what, value, verdict)
        self.databases: list[str] = []  # PostgreSQL databases created, dropped at the end
        self.contended = False  # another process took CPU during a phase

    def cpu_meter(self, pids: dict[str, int]) -> CpuMeter:
        """A CpuMeter of these processes, and of PostgreSQL when billbridge stores there."""
        if self.o.database == "postgres":
            server = postgres_server_pid()
            if server is not None:
                pids = {**pids, "PostgreSQL": server}
        return CpuMeter(pids)

    def note_cpu(self, cpu: CpuMeter, indent: str = "       ") -> None:
        print(f"{indent}{cpu.line()}", flush=True)
        if cpu.contended:
            self.contended = True
            print(f"{indent}WARNING: other processes used the CPU during this phase", flush=True)

    def cio_env(self, cio: CioReceiver, worker_concurrency: int) -> dict[str, str]:
        """Billbridge's settings for sending to this receiver."""
        return {
            "BILLBRIDGE_TRACK_BATCHING": self.o.track_batching,
            # The sample events are test-mode; with no test workspace they would be
            # dry_run (recorded, not sent): send them to this receiver instead.
            "BILLBRIDGE_TEST_MODE_EVENTS": "deliver",
            "CUSTOMERIO_SITE_ID": CIO_SITE_ID,
            "CUSTOMERIO_TRACK_API_KEY": CIO_TRACK_KEY,
            "CUSTOMERIO_TRACK_URL": cio.url,
            "CUSTOMERIO_APP_URL": cio.url,
            "BILLBRIDGE_WORKER_CONCURRENCY": str(worker_concurrency),
        }

    def start_worker(self, name: str, serve: Proc, cio_env: dict[str, str]) -> Proc:
        """`billbridge worker` on the database of a `serve` started by start_billbridge."""
        env = clean_env(
            {
                "DATABASE_URL": serve.database_url,
                "STRIPE_WEBHOOK_SECRET": SECRET,
                "BILLBRIDGE_SECRET_KEY": BENCH_SECRET_KEY,  # required on PostgreSQL
                "BILLBRIDGE_VAR_DIR": str(serve.cwd / "var"),
                **cio_env,
            }
        )
        return self.procs.start(Proc(name, [BILLBRIDGE, "worker"], env, serve.cwd))

    def new_database(self, name: str, home: Path) -> str:
        """A DATABASE_URL of its own for one billbridge server: a SQLite file in `home`, or a
        new PostgreSQL database (dropped at the end of the run)."""
        if self.o.database == "sqlite":
            return f"sqlite:///{home / 'billbridge.db'}"
        database = f"billbridge_bench_{os.getpid()}_{name.replace('-', '_')}"
        with psycopg.connect(self.o.postgres_admin, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        self.databases.append(database)
        base = self.o.postgres_admin.rsplit("/", 1)[0].replace("postgresql://", "")
        return f"postgresql+psycopg://{base}/{database}"

    def drop_databases(self) -> None:
        if not self.databases:
            return
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        with psycopg.connect(self.o.postgres_admin, autocommit=True) as admin:
            for database in self.databases:
                admin.execute(drop.format(sql.Identifier(database)))
        self.databases.clear()

    # -- servers --

    def start_billbridge(self, name: str, extra_env: dict[str, str], args: list[str]) -> Proc:
        home = self.workdir / name
        home.mkdir()
        port = free_port()
        database_url = self.new_database(name, home)
        env = clean_env(
            {
                "DATABASE_URL": database_url,
                "STRIPE_WEBHOOK_SECRET": SECRET,
                "BILLBRIDGE_SECRET_KEY": BENCH_SECRET_KEY,  # required on PostgreSQL
                "BILLBRIDGE_VAR_DIR": str(home / "var"),
                **extra_env,
            }
        )
        proc = Proc(name, [BILLBRIDGE, "serve", "--port", str(port), *args], env, home)
        self.procs.start(proc)
        wait_ready(proc, f"http://127.0.0.1:{port}/readyz")
        proc.port, proc.database_url = port, database_url
        return proc

    def start_reference(self) -> Proc:
        home = self.workdir / "reference"
        home.mkdir()
        port = free_port()
        env = clean_env({"STRIPE_WEBHOOK_SECRET": SECRET})
        args = [PYTHON, str(BENCH / "bare_reference.py"), "--port", str(port)]
        if self.o.database == "postgres":
            database_url = self.new_database("reference", home)
            args += ["--database-url", database_url.replace("+psycopg", "", 1)]
        else:
            database_url = f"sqlite:///{home / 'reference.db'}"
            args += ["--db", str(home / "reference.db")]
        proc = Proc("reference", args, env, home)
        self.procs.start(proc)
        wait_ready(proc, f"http://127.0.0.1:{port}/readyz")
        proc.port, proc.database_url = port, database_url
        return proc

    def commits(self, database_url: str) -> int | None:
        """PostgreSQL only: transactions committed in the server's database so far
        (`pg_stat_database.xact_commit`, read from the admin database)."""
        if self.o.database != "postgres":
            return None
        time.sleep(PG_STATS_FLUSH)
        database = database_url.rsplit("/", 1)[1]
        with psycopg.connect(self.o.postgres_admin, autocommit=True) as admin:
            row = admin.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
            ).fetchone()
        return int(row[0]) if row else None

    # -- phases --

    def ingest_phases(self, proc: Proc, tag: str) -> tuple[dict[int, LoadResult], list[str]]:
        results: dict[int, LoadResult] = {}
        acked: list[str] = []
        for concurrency in self.o.concurrencies:
            events = make_events(
                INGEST_TYPES, self.o.warmup + self.o.requests, f"{tag}{concurrency}"
            )
            before = self.commits(proc.database_url)
            with self.cpu_meter({"server": proc.pid}) as cpu:
                result = run_load(
                    self.workdir,
                    proc.port,
                    events,
                    concurrency,
                    warmup=self.o.warmup,
                    timeout=self.o.phase_timeout,
                )
            results[concurrency] = result
            acked += result.acked_ids
            print(f"  {concurrency:3d} connections: {result.line()}", flush=True)
            per_request = cpu.seconds["server"] / len(events) * 1000
            result.server_cpu_ms = per_request
            print(f"       server CPU per request: {per_request:.2f} ms", flush=True)
            after = self.commits(proc.database_url)
            if before is not None and after is not None:
                result.commits_per_1000 = (after - before) / len(events) * 1000
                print(
                    f"       PostgreSQL transactions per 1,000 webhooks: "
                    f"{result.commits_per_1000:.0f} (pg_stat_database.xact_commit)",
                    flush=True,
                )
            self.note_cpu(cpu)
        return results, acked

    def billbridge_ingest(self, *, worker: bool) -> dict[int, LoadResult]:
        name = "bb-worker" if worker else "bb-noworker"
        proc = self.start_billbridge(name, {}, [] if worker else ["--no-worker"])
        results, acked = self.ingest_phases(proc, "w" if worker else "n")
        rss = rss_bytes(proc.pid) / MB
        proc.stop()
        print(f"  serve RSS after the phases: {rss:.1f} MB", flush=True)
        print("  " + check_stored(acked, proc.database_url, "events", via_store=True), flush=True)
        if worker:
            _total, _open, by_status = delivery_counts(proc.database_url)
            print(f"  deliveries by status at stop (dry-run worker): {by_status}", flush=True)
        return results

    def reference_ingest(self) -> dict[int, LoadResult]:
        proc = self.start_reference()
        results, acked = self.ingest_phases(proc, "r")
        proc.stop()
        stored = check_stored(acked, proc.database_url, "ref_events", via_store=False)
        print("  " + stored, flush=True)
        return results

    def end_to_end(
        self, cio: CioReceiver, worker_concurrency: int, *, workers: int = 0
    ) -> tuple[float, float, float]:
        """Returns (calls/s, RSS after MB, peak RSS MB). With `workers`, the documented
        scale-out shape: `serve --no-worker` takes the webhooks and that many
        `billbridge worker` processes deliver."""
        split = workers > 0
        cio.reset()
        name = f"bb-e2e-{worker_concurrency}" + (f"-split{workers}" if split else "")
        cio_env = self.cio_env(cio, worker_concurrency)
        proc = self.start_billbridge(name, cio_env, ["--no-worker"] if split else [])
        db = proc.database_url
        worker_procs = [
            self.start_worker(f"{name}-worker{n}", proc, cio_env) for n in range(workers)
        ]
        rss_start = rss_bytes(proc.pid) / MB
        events = make_events(E2E_TYPES, self.o.e2e_events, f"e{worker_concurrency}w{workers}")
        deadline_s = self.o.phase_timeout + self.o.e2e_events / 100
        pids = {"serve": proc.pid, f"Customer.io {cio.kind}": cio.proc.pid}
        for n, worker in enumerate(worker_procs):
            pids[f"worker{n}"] = worker.pid
        with RssSampler(proc.pid) as sampler, self.cpu_meter(pids) as cpu:
            loader, collect = start_loadgen(
                self.workdir,
                proc.port,
                events,
                self.o.e2e_connections,
                warmup=0,
                timeout=self.o.phase_timeout,
                sum_field="deliveries",
            )
            try:
                load: LoadResult | None = None
                deadline = time.monotonic() + deadline_s
                done = False
                while time.monotonic() < deadline:
                    time.sleep(0.2)
                    if load is None and loader.poll() is not None:
                        load = collect()
                    if load is None:
                        continue
                    expected = int(load.data["field_sum"])
                    total, open_count, _by = delivery_counts(db)
                    if total >= expected and open_count == 0:
                        done = True
                        break
                if load is None:
                    load = collect()
            finally:
                if loader.poll() is None:
                    loader.kill()
                    loader.wait()
            time.sleep(1.0)  # let the last calls finish and memory settle
            rss_after = rss_bytes(proc.pid) / MB
        summary = cio.summary()
        total, open_count, by_status = delivery_counts(db)
        first_post = float(load.data["started_at"])
        last_call = summary["last_at"] or time.time()
        span = max(1e-9, last_call - first_post)
        calls = int(summary["requests"])
        sent = by_status.get("succeeded", 0)
        calls_per_s = calls / span if done else 0.0
        sent_per_s = sent / span if done else 0.0
        posted = load.data
        shape = (
            f"serve --no-worker + {workers} billbridge worker(s)"
            if split
            else "serve (in-process worker)"
        )
        print(
            f"  {shape}, worker concurrency {worker_concurrency}: posted "
            f"{posted['requests']} events over {self.o.e2e_connections} connections "
            f"in {posted['elapsed_s']:.2f} s "
            f"({posted['rps']:.0f} ev/s, p99 {posted['latency_ms']['p99']:.1f} ms, "
            f"statuses {posted['status_counts']})",
            flush=True,
        )
        print(
            f"    {calls} Customer.io HTTP calls received, {span:.2f} s from the first post to "
            f"the last call -> {calls_per_s:.0f} calls/s end to end"
            + ("" if done else f"  (NOT FINISHED within {deadline_s:.0f} s)"),
            flush=True,
        )
        if sent != calls:
            print(
                f"    {sent} deliveries succeeded (batched calls) -> {sent_per_s:.0f} deliveries/s",
                flush=True,
            )
        detail = {k: v for k, v in summary.items() if k not in ("requests", "last_at")}
        print(f"    receiver ({cio.kind}): {detail}", flush=True)
        print(
            f"    deliveries: {total} created (sum of ingest answers {posted['field_sum']}), "
            f"{open_count} not final, by status {by_status}",
            flush=True,
        )
        self.note_cpu(cpu, indent="    ")
        # What each event cost the machine (Billbridge's processes and PostgreSQL, not the
        # load generator or the receiver), and what the machine's cores could carry at that.
        per_event = {
            name: seconds / len(events) * 1000
            for name, seconds in cpu.seconds.items()
            if not name.startswith("Customer.io")
        }
        cost = sum(per_event.values())
        if cost > 0:
            cores = os.cpu_count() or 1
            ceiling = cores * 1000 / cost
            print(
                "    CPU per event: "
                + ", ".join(f"{name} {ms:.2f} ms" for name, ms in per_event.items())
                + f" = {cost:.2f} ms; {cores} cores carry at most {ceiling:.0f}"
                f" events/s ({ceiling * sent / len(events):.0f} deliveries/s) at that cost",
                flush=True,
            )
        print(
            f"    serve RSS: {rss_start:.1f} MB at start, peak {sampler.peak / MB:.1f} MB "
            f"({sampler.samples} samples every 100 ms), {rss_after:.1f} MB after the run",
            flush=True,
        )
        for worker in worker_procs:
            print(f"    worker RSS after the run: {rss_bytes(worker.pid) / MB:.1f} MB", flush=True)
            worker.stop()
        proc.stop()
        return max(calls_per_s, sent_per_s), rss_after, sampler.peak / MB

    def drain(self, cio: CioReceiver, worker_concurrency: int) -> float:
        """The worker alone: `serve --no-worker` stores the events and stops, then one
        `billbridge worker` delivers the whole queue. Returns deliveries/s from the first
        Customer.io call to the last (the worker's start-up is not counted)."""
        cio.reset()
        name = f"bb-drain-{worker_concurrency}"
        cio_env = self.cio_env(cio, worker_concurrency)
        proc = self.start_billbridge(name, cio_env, ["--no-worker"])
        db = proc.database_url
        events = make_events(E2E_TYPES, self.o.e2e_events, f"d{worker_concurrency}")
        loader, collect = start_loadgen(
            self.workdir,
            proc.port,
            events,
            self.o.e2e_connections,
            warmup=0,
            timeout=self.o.phase_timeout,
            sum_field="deliveries",
        )
        loader.wait(timeout=self.o.phase_timeout + 30)
        load = collect()
        proc.stop()
        expected = int(load.data["field_sum"])
        _total, queued, _by = delivery_counts(db)
        worker = self.start_worker(f"{name}-worker", proc, cio_env)
        deadline = time.monotonic() + self.o.phase_timeout + self.o.e2e_events / 100
        done = False
        with self.cpu_meter({"worker": worker.pid, f"Customer.io {cio.kind}": cio.proc.pid}) as cpu:
            while time.monotonic() < deadline:
                time.sleep(0.2)
                total, open_count, _by = delivery_counts(db)
                if total >= expected and open_count == 0:
                    done = True
                    break
        summary = cio.summary()
        _total, _open, by_status = delivery_counts(db)
        worker.stop()
        sent = by_status.get("succeeded", 0)
        first, last = summary.get("first_at"), summary.get("last_at")
        span = max(1e-9, (last or 0.0) - (first or 0.0))
        per_s = sent / span if done and first and last else 0.0
        worker_cpu = cpu.seconds.get("worker", 0.0)
        print(
            f"  worker alone, concurrency {worker_concurrency}: {queued} deliveries queued by "
            f"{load.data['requests']} events; {sent} succeeded in {span:.2f} s (first to last "
            f"Customer.io call) -> {per_s:.0f} deliveries/s" + ("" if done else "  (NOT FINISHED)"),
            flush=True,
        )
        if sent:
            print(
                f"    worker CPU per delivery: {worker_cpu / sent * 1000:.2f} ms "
                f"({int(summary['requests'])} HTTP calls); deliveries by status {by_status}",
                flush=True,
            )
        self.note_cpu(cpu, indent="    ")
        return per_s

    # -- the whole run --

    def run(self) -> None:
        cores = os.cpu_count()
        load1, load5, _ = os.getloadavg()
        print(
            f"Billbridge benchmark - {time.strftime('%Y-%m-%d %H:%M:%S')}, Python "
            f"{platform.python_version()}, {cores} CPUs, {platform.platform()}, "
            f"load average {load1:.2f} (1 min) {load5:.2f} (5 min)"
        )
        print(
            f"ingest phases: {self.o.requests} requests + {self.o.warmup} warm-up per "
            f"concurrency, unique signed events ({', '.join(INGEST_TYPES)}), "
            f"temp dir {self.workdir}\n",
            flush=True,
        )
        bb: dict[int, LoadResult] = {}
        if "ingest" not in self.o.skip:
            print(
                f"== 1. Ingest: billbridge serve --no-worker ({self.o.database}, dry-run) ==",
                flush=True,
            )
            bb = self.billbridge_ingest(worker=False)
            for concurrency, result in bb.items():
                ok = result.p99 < TARGET_P99_MS
                self.summary.append(
                    (
                        f"ingest p99 @ {concurrency} conns",
                        f"{result.p99:.1f} ms",
                        f"{'PASS' if ok else 'MISS'} (< {TARGET_P99_MS:.0f} ms)",
                    )
                )
            print(flush=True)
        if "worker" not in self.o.skip:
            print("== 1b. Ingest with the in-process worker on: billbridge serve ==", flush=True)
            self.billbridge_ingest(worker=True)
            print(flush=True)
        if "reference" not in self.o.skip:
            print(
                f"== 2. Reference: bare Starlette + stdlib HMAC + one {self.o.database} insert ==",
                flush=True,
            )
            ref = self.reference_ingest()
            for concurrency, result in ref.items():
                if concurrency not in bb:
                    continue
                ratio = bb[concurrency].rps / result.rps if result.rps else 0.0
                verdict = f"{'PASS' if ratio >= TARGET_RATIO else 'MISS'} (>= {TARGET_RATIO})"
                print(
                    f"  ratio billbridge/reference @ {concurrency:3d} connections: "
                    f"{bb[concurrency].rps:.0f} / {result.rps:.0f} = {ratio:.2f}  {verdict}",
                    flush=True,
                )
                self.summary.append(
                    (f"ingest ratio @ {concurrency} conns", f"{ratio:.2f}", verdict)
                )
                if bb[concurrency].server_cpu_ms and result.rps:
                    # One process's Python runs one thread at a time (the GIL): a serve
                    # process cannot ingest faster than one core over its CPU per request.
                    ceiling = 1000 / bb[concurrency].server_cpu_ms
                    print(
                        f"    one billbridge process's ceiling here: 1 core / "
                        f"{bb[concurrency].server_cpu_ms:.2f} ms of CPU per request = "
                        f"{ceiling:.0f} req/s = {ceiling / result.rps:.2f}x the reference",
                        flush=True,
                    )
            for concurrency, result in bb.items():
                reference_p99 = ref[concurrency].p99 if concurrency in ref else float("nan")
                print(
                    f"  billbridge p99 @ {concurrency:3d} connections: {result.p99:.1f} ms "
                    f"(< {TARGET_P99_MS:.0f} ms: {'yes' if result.p99 < TARGET_P99_MS else 'NO'}; "
                    f"the reference's: {reference_p99:.1f} ms)",
                    flush=True,
                )
                self.summary.append(
                    (
                        f"reference p99 @ {concurrency} conns",
                        f"{reference_p99:.1f} ms",
                        "(information)",
                    )
                )
            print(flush=True)
        memory: list[tuple[int, float, float]] = []  # (worker concurrency, RSS after, peak)
        if "e2e" not in self.o.skip:
            print(
                f"== 3. End to end: {self.o.e2e_events} events ({' / '.join(E2E_TYPES)}) -> "
                f"billbridge serve -> {self.o.cio} Customer.io ==",
                flush=True,
            )
            shapes = [(c, 0) for c in self.o.worker_concurrencies]
            shapes += [(max(self.o.worker_concurrencies), n) for n in self.o.split_workers]
            for worker_concurrency, workers in shapes:
                cio = CioReceiver(self.o.cio, self.procs, self.workdir)  # a fresh one each time
                try:
                    calls, after, peak = self.end_to_end(cio, worker_concurrency, workers=workers)
                finally:
                    cio.proc.stop()
                if not workers:
                    memory.append((worker_concurrency, after, peak))
                ok = calls >= TARGET_CALLS_PER_S
                label = f"serve --no-worker + {workers} worker(s)" if workers else "serve"
                self.summary.append(
                    (
                        f"e2e deliveries/s, {label}, worker concurrency {worker_concurrency}",
                        f"{calls:.0f}",
                        f"{'PASS' if ok else 'MISS'} (>= {TARGET_CALLS_PER_S:.0f})",
                    )
                )
            print(flush=True)
        if "drain" not in self.o.skip:
            concurrency = max(self.o.worker_concurrencies)
            print(
                f"== 3b. Queue drain: {self.o.e2e_events} events stored first, then "
                "billbridge worker alone ==",
                flush=True,
            )
            cio = CioReceiver(self.o.cio, self.procs, self.workdir)
            try:
                per_s = self.drain(cio, concurrency)
            finally:
                cio.proc.stop()
            self.summary.append(
                (
                    f"queue drain, worker alone, concurrency {concurrency}",
                    f"{per_s:.0f}/s",
                    "(information)",
                )
            )
            print(flush=True)
        if memory:
            print("== 4. Memory: serve RSS (process and children) ==", flush=True)
            for worker_concurrency, after, peak in memory:
                ok = after < TARGET_RSS_MB and peak < TARGET_RSS_MB
                verdict = f"{'PASS' if ok else 'MISS'} (< {TARGET_RSS_MB:.0f} MB)"
                print(
                    f"  worker concurrency {worker_concurrency}: {after:.1f} MB after the "
                    f"end-to-end run, peak {peak:.1f} MB during it  {verdict}",
                    flush=True,
                )
                self.summary.append(
                    (
                        f"RSS after / peak, worker concurrency {worker_concurrency}",
                        f"{after:.0f} / {peak:.0f} MB",
                        verdict,
                    )
                )
            print(flush=True)
        if self.summary:
            print("== Summary ==")
            if self.contended:
                print("  (other processes competed for the CPU: numbers are low; run again)")
            width = max(len(what) for what, _, _ in self.summary)
            for what, value, verdict in self.summary:
                print(f"  {what:<{width}}  {value:>14}  {verdict}")


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description="Billbridge benchmark (see bench/README.md)")
    parser.add_argument("--requests", type=int, default=5000, help="measured per ingest phase")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up requests per phase")
    parser.add_argument("--concurrency", default="16,64", help="ingest connections, a list")
    parser.add_argument("--e2e-events", type=int, default=5000)
    parser.add_argument("--e2e-connections", type=int, default=16)
    parser.add_argument("--worker-concurrency", default="64,512", help="a list")
    parser.add_argument(
        "--split-workers",
        default="1,2",
        help="end to end: `serve --no-worker` plus this many `billbridge worker`s, a list",
    )
    parser.add_argument(
        "--cio",
        choices=("fake", "sink"),
        default="fake",
        help="receiver: tests/fakes/customerio.py, or the minimal bench/sink.py",
    )
    parser.add_argument(
        "--track-batching",
        choices=("auto", "off"),
        default="auto",
        help="BILLBRIDGE_TRACK_BATCHING: off sends one Track v1 HTTP call per delivery",
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="billbridge's store: a SQLite file, or a PostgreSQL database per server",
    )
    parser.add_argument(
        "--postgres-admin",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="with --database postgres: where to CREATE and DROP the bench's databases",
    )
    parser.add_argument("--phase-timeout", type=float, default=120.0, help="seconds per phase")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated phases to leave out: ingest, worker, reference, e2e, drain",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, DBs)")
    parser.add_argument(
        "--backfill", action="store_true", help="also run bench/backfill.py (10,000 customers)"
    )
    args = parser.parse_args(argv)
    if args.backfill:  # standalone script, run after the other phases
        atexit.register(subprocess.run, [PYTHON, str(BENCH / "backfill.py")], check=False)
    if args.quick:
        args.requests, args.warmup, args.e2e_events = 1000, 100, 1000
    return Options(
        requests=args.requests,
        warmup=args.warmup,
        concurrencies=[int(x) for x in args.concurrency.split(",") if x],
        e2e_events=args.e2e_events,
        e2e_connections=args.e2e_connections,
        worker_concurrencies=[int(x) for x in args.worker_concurrency.split(",") if x],
        split_workers=[int(x) for x in args.split_workers.split(",") if x],
        cio=args.cio,
        track_batching=args.track_batching,
        database=args.database,
        postgres_admin=args.postgres_admin,
        phase_timeout=args.phase_timeout,
        skip={x.strip() for x in args.skip.split(",") if x.strip()},
        keep=args.keep,
    )


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit so that the clean-up below runs."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="billbridge-bench-"))
    procs = Procs()
    bench = Bench(options, workdir, procs)
    try:
        with sigterm_as_exit():
            bench.run()
    except Exception:
        print("\nbenchmark failed; last lines of each process log:", file=sys.stderr)
        for proc in procs.started:
            print(f"--- {proc.name} ---\n{proc.tail()}", file=sys.stderr)
        raise
    finally:
        procs.stop_all()
        bench.drop_databases()
        if options.keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
