"""A faithful local fake of Customer.io (Track v1/v2 and App API) on loopback, with fault injection.

In-process (a uvicorn server in a background thread), or through the pytest fixture
`fake_customerio` (import it into your test module):

    with FakeCustomerIO() as fake:
        settings = Settings(**fake.settings_env(), DATABASE_URL="sqlite:///:memory:")
        ...
        fake.wait_for(lambda: fake.events, timeout=5)

Standalone, for chaos tests and benchmarks that drive it over HTTP (`FakeCustomerIOProcess`
starts one and controls it through the same methods):

    python -m tests.fakes.customerio --port 9001 [--state-file var/fake-cio.jsonl]

The same origin serves Track (`/api/v1/…`, `/api/v2/…`), App (`/v1/…`) and the inspection
API under `/_fake/`: GET health, requests[?since=SEQ&limit=N], people, events, sends,
triggers, segments, violations, stats, faults, config; POST reset, config, faults
(`{"add": [fault…], "outage": bool, "clear": bool}`); DELETE faults.
Behaviour follows the reference customerio-api.md §9.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from tests.fakes.customerio_app import (
    APP_API_KEY,
    SITE_ID,
    TRACK_API_KEY,
    FakeConfig,
    FakeCustomerIOApp,
    Fault,
)
from tests.fakes.customerio_state import person_kind

__all__ = [
    "APP_API_KEY",
    "SITE_ID",
    "TRACK_API_KEY",
    "FakeConfig",
    "FakeCustomerIO",
    "FakeCustomerIOProcess",
    "Fault",
    "fake_customerio",
    "fake_customerio_server",
]

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]


def workspace_env(config: FakeConfig, url: str, workspace: str) -> dict[str, str]:
    """Billbridge's environment pointing its `live` workspace, its `test` workspace
    (CUSTOMERIO_TEST_*) or `both` at a fake with these credentials at `url`."""
    live = {
        "CUSTOMERIO_SITE_ID": config.site_id,
        "CUSTOMERIO_TRACK_API_KEY": config.track_api_key,
        "CUSTOMERIO_APP_API_KEY": config.app_api_key,
        "CUSTOMERIO_TRACK_URL": url,
        "CUSTOMERIO_APP_URL": url,
    }
    test = {name.replace("CUSTOMERIO_", "CUSTOMERIO_TEST_", 1): v for name, v in live.items()}
    return {"live": live, "test": test, "both": {**live, **test}}[workspace]


class FakeCustomerIO:
    """The fake served by uvicorn in a background thread on 127.0.0.1 (a free port by default).

    `track_url` and `app_url` are the same origin; pass them as CUSTOMERIO_TRACK_URL and
    CUSTOMERIO_APP_URL (see `settings_env()`).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: Path | None = None,
        **config: Any,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.app = FakeCustomerIOApp(FakeConfig(**config), state_file)
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    track_url = url
    app_url = url

    @property
    def config(self) -> FakeConfig:
        return self.app.config

    def settings_env(self, workspace: str = "both") -> dict[str, str]:
        """The CUSTOMERIO_* environment names and values that point Billbridge here:
        as its live workspace (`live`), its test workspace (`test`: CUSTOMERIO_TEST_*),
        or both (the default: test-mode events are delivered here too)."""
        return workspace_env(self.app.config, self.url, workspace)

    def start(self) -> FakeCustomerIO:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-customerio", daemon=True
        )
        self._thread.start()
        _poll(lambda: self._server is not None and self._server.started, 10.0, "fake start")
        return self

    def stop(self) -> None:
        self.app.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.app.workspace.close()
        self._server, self._thread = None, None

    def __enter__(self) -> FakeCustomerIO:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Faults ------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 503,
        *,
        count: int | None = 1,
        path_prefix: str | None = None,
        method: str | None = None,
        retry_after: str | int | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next `count` matching requests with `status`, without acting on them."""
        self.app.add_fault(
            Fault(
                status=status,
                count=count,
                path_prefix=path_prefix,
                method=method,
                retry_after=None if retry_after is None else str(retry_after),
                headers=dict(headers or {}),
                body=body,
            )
        )

    def delay_next(
        self, seconds: float, *, count: int | None = 1, path_prefix: str | None = None
    ) -> None:
        """Act on the next matching requests, then answer only after `seconds`."""
        self.app.add_fault(Fault(delay=seconds, count=count, path_prefix=path_prefix))

    def drop_next(
        self, *, count: int | None = 1, path_prefix: str | None = None, apply: bool = False
    ) -> None:
        """Close the connection of the next matching requests without answering; with
        `apply=True` the request is acted on first (the answer is lost, not the request)."""
        self.app.add_fault(Fault(drop=True, apply=apply, count=count, path_prefix=path_prefix))

    def set_outage(self, on: bool) -> None:
        """While on, every API request is answered 503 and nothing is acted on."""
        with self.app.lock:
            self.app.outage = on

    def clear_faults(self) -> None:
        with self.app.lock:
            self.app.faults.clear()
            self.app.outage = False

    def configure(self, **changes: Any) -> None:
        """Change FakeConfig fields (known_broadcasts, app_rate_limit, limit_mode…)."""
        self.app.configure(**changes)

    def reset(self) -> None:
        self.app.reset()

    # Inspection --------------------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.app.lock:
            return list(self.app.requests)

    @property
    def people(self) -> dict[str, dict[str, Any]]:
        """People by their id (else email, else `cio_…`), each a copy of its attributes."""
        return self.app.workspace.snapshot_people()

    def person(self, identifier: str) -> dict[str, Any] | None:
        """A person looked up like a Track path identifier (id, email or `cio_…`)."""
        workspace = self.app.workspace
        with self.app.lock:
            cio_id = workspace.find(*person_kind(identifier))
            return None if cio_id is None else dict(workspace.people[cio_id])

    def is_suppressed(self, identifier: str) -> bool:
        with self.app.lock:
            return self.app.workspace.is_suppressed(*person_kind(identifier))

    @property
    def events(self) -> list[dict[str, Any]]:
        """Stored events (a repeated event `id` is stored once)."""
        with self.app.lock:
            return list(self.app.workspace.events)

    @property
    def sends(self) -> list[dict[str, Any]]:
        """Every accepted `/v1/send/email` call (not idempotent: each call is one message)."""
        with self.app.lock:
            return list(self.app.workspace.sends)

    @property
    def triggers(self) -> list[dict[str, Any]]:
        with self.app.lock:
            return list(self.app.workspace.triggers)

    @property
    def segments(self) -> dict[int, set[str]]:
        with self.app.lock:
            return {key: set(value) for key, value in self.app.workspace.segments.items()}

    @property
    def violations(self) -> list[str]:
        with self.app.lock:
            return list(self.app.workspace.violations)

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
        return _poll(predicate, timeout, "fake_customerio.wait_for")

    async def async_wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 5.0,  # noqa: ASYNC109 (a polling deadline, like wait_for's)
    ) -> T:
        """`wait_for` for async tests: yields to the event loop between polls."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.01)


def _poll(predicate: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: condition not met within {timeout} s")
        time.sleep(0.005)


class FakeCustomerIOProcess:
    """The fake as a separate process (`python -m tests.fakes.customerio`), driven over its
    `/_fake/` API. `kill()` is SIGKILL; with a `state_file` a restart keeps the workspace.

        with FakeCustomerIOProcess(state_file=tmp_path / "cio.jsonl") as fake:
            env = fake.settings_env()
            fake.kill(); fake.start()   # same port, same people and events
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        state_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = port or _free_port()
        self.state_file = state_file
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    track_url = url
    app_url = url

    def settings_env(self, workspace: str = "both") -> dict[str, str]:
        """The CUSTOMERIO_* environment (with the fake's default credentials); `workspace`
        as in `FakeCustomerIO.settings_env`."""
        return workspace_env(FakeConfig(), self.url, workspace)

    def start(self) -> FakeCustomerIOProcess:
        command = [sys.executable, "-m", "tests.fakes.customerio", "--port", str(self.port)]
        if self.state_file is not None:
            command += ["--state-file", str(self.state_file)]
        command += list(self.extra_args)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL)
        _poll(self._healthy, 15.0, "fake Customer.io process start")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"fake Customer.io exited with {self.process.returncode}")
        try:
            return self._http.get("/_fake/health").status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL, like a crash: in-flight requests get no answer."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        self._http.close()

    def __enter__(self) -> FakeCustomerIOProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # The same control and inspection methods as FakeCustomerIO, over HTTP --------------

    def _get(self, name: str, **params: Any) -> Any:
        response = self._http.get(f"/_fake/{name}", params=params)
        response.raise_for_status()
        return response.json()

    def _post(self, name: str, body: dict[str, Any]) -> Any:
        response = self._http.post(f"/_fake/{name}", json=body)
        response.raise_for_status()
        return response.json()

    def add_fault(self, fault: Fault) -> None:
        self._post("faults", {"add": [asdict(fault)]})

    def fail_next(self, status: int = 503, **options: Any) -> None:
        """Same arguments as `FakeCustomerIO.fail_next`."""
        if options.get("retry_after") is not None:
            options["retry_after"] = str(options["retry_after"])
        self.add_fault(Fault(status=status, **options))

    def delay_next(self, seconds: float, **options: Any) -> None:
        self.add_fault(Fault(delay=seconds, **options))

    def drop_next(self, **options: Any) -> None:
        self.add_fault(Fault(drop=True, **options))

    def set_outage(self, on: bool) -> None:
        self._post("faults", {"outage": on})

    def clear_faults(self) -> None:
        self._post("faults", {"clear": True})

    def configure(self, **changes: Any) -> None:
        self._post("config", changes)

    def reset(self) -> None:
        self._post("reset", {})

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self._get("requests")["requests"])

    def requests_since(self, seq: int) -> list[dict[str, Any]]:
        return list(self._get("requests", since=seq)["requests"])

    @property
    def people(self) -> dict[str, dict[str, Any]]:
        return dict(self._get("people")["people"])

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self._get("events")["events"])

    @property
    def sends(self) -> list[dict[str, Any]]:
        return list(self._get("sends")["sends"])

    @property
    def triggers(self) -> list[dict[str, Any]]:
        return list(self._get("triggers")["triggers"])

    @property
    def violations(self) -> list[str]:
        return list(self._get("violations")["violations"])

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self._get("stats"))

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
        return _poll(predicate, timeout, "fake_customerio.wait_for")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Pytest fixtures (import them into a test module or a conftest) ---------------------------


@pytest.fixture(scope="session")
def fake_customerio_server() -> Iterator[FakeCustomerIO]:
    """One fake for the whole session; prefer `fake_customerio`, which resets it per test."""
    with FakeCustomerIO() as fake:
        yield fake


@pytest.fixture
def fake_customerio(fake_customerio_server: FakeCustomerIO) -> Iterator[FakeCustomerIO]:
    """A clean fake: no data, no faults, default configuration."""
    fake_customerio_server.reset()
    yield fake_customerio_server
    fake_customerio_server.reset()


# Standalone process ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Customer.io (Track + App + /_fake/)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--state-file", type=Path, help="JSON-lines journal; replayed at start")
    parser.add_argument("--site-id", default=SITE_ID)
    parser.add_argument("--track-api-key", default=TRACK_API_KEY)
    parser.add_argument("--app-api-key", default=APP_API_KEY)
    parser.add_argument("--region", choices=("us", "eu"), default="us")
    parser.add_argument("--app-rate-limit", type=int, default=10, help="0 turns it off")
    parser.add_argument("--known-broadcasts", help="comma-separated ids; default: any")
    parser.add_argument("--limit-mode", choices=("record", "reject"), default="record")
    args = parser.parse_args(argv)
    config = FakeConfig(
        site_id=args.site_id,
        track_api_key=args.track_api_key,
        app_api_key=args.app_api_key,
        region=args.region,
        app_rate_limit=args.app_rate_limit or None,
        known_broadcasts=[int(x) for x in args.known_broadcasts.split(",")]
        if args.known_broadcasts
        else None,
        limit_mode=args.limit_mode,
    )
    app = FakeCustomerIOApp(config, args.state_file)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    print(f"fake Customer.io listening on http://{args.host}:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, backlog=2048)
    )
    try:
        server.run(sockets=[sock])
    finally:
        app.stopping.set()
        app.workspace.close()


if __name__ == "__main__":
    main()
