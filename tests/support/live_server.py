"""Run an ASGI app or the `billbridge serve` command on a free loopback port for tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from billbridge.stripe.signature import sign_payload

REPO = Path(__file__).resolve().parents[2]
BILLBRIDGE = str(Path(sys.executable).with_name("billbridge"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {last!r})")


def post_signed(url: str, event: dict[str, Any], secret: str) -> httpx.Response:
    """POST `event` to `url`/webhooks/stripe as Stripe would: JSON, signed with `secret`."""
    body = json.dumps(event).encode()
    return httpx.post(
        url + "/webhooks/stripe",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": sign_payload(body, secret),
        },
        timeout=10,
    )


@contextmanager
def serve_app(app: Any, port: int | None = None, root_path: str = "") -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread (on `port`, or a free one, mounted under
    `root_path` as `--root-path` does); yields its base URL. Like `billbridge serve`,
    uvicorn itself believes no X-Forwarded-* header."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port or 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=False,
        root_path=root_path,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=20)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


class ServeProcess:
    """`billbridge serve` as a child process (for kill -9 and end-to-end tests)."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        cwd: Path,
        args: tuple[str, ...] = (),
        executable: str = BILLBRIDGE,
    ) -> None:
        self.port = port or free_port()
        self.executable = executable
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = cwd / f"serve-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [self.executable, "serve", "--port", str(self.port), *self.args],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout=30, interval=0.1)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
        try:
            return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
