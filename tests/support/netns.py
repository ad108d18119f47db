"""Test hosts on one machine: Linux network namespaces joined by veth pairs to a hub, and
TCP relays between them and the root namespace's loopback services.

    with TestNetwork(["a", "b", "c"]) as net:
        pg = net.relay_into_hub("db", 5432, to=("127.0.0.1", 5432))   # hosts reach PostgreSQL
        net.run("b", ["billbridge", "worker"], env=...)                # a process on host b
        net.cut("c", "db")                                             # c loses PostgreSQL
        net.restore("c", "db")

Each host has two links: `db` (to PostgreSQL) and `app` (to the fake Customer.io and to
the other hosts), so cutting one leaves the other working. Every address lives in a
namespace this harness made (10.231.1.0/24 for `db`, 10.231.2.0/24 for `app`); the
relays are threads of the test process whose sockets are opened inside the namespace
they serve (`setns` on a short-lived thread), so no traffic leaves the machine and no
route to the root namespace is needed. Needs root (`ip netns add`); a missing capability
is a test failure, never a skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETS = {"db": "10.231.1", "app": "10.231.2"}  # /24 per link kind; the hub is .1
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _enter(name: str) -> None:
    """Move the calling thread (only it) into network namespace `name`."""
    with open(f"/var/run/netns/{name}", "rb") as handle:
        if _libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({name}): {os.strerror(errno)}")


def in_namespace(name: str | None, work: Callable[[], T]) -> T:
    """Run `work` on a fresh thread that has entered network namespace `name` (None: the
    root namespace, unchanged); sockets it creates stay in that namespace for good."""
    result: list[T] = []
    failure: list[BaseException] = []

    def enter_and_run() -> None:
        try:
            if name is not None:
                _enter(name)
            result.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=enter_and_run, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


class Relay:
    """Accepts TCP connections on an address in one namespace and pipes each to an address
    in another (both directions, until either side closes)."""

    def __init__(
        self,
        listen: tuple[str | None, str, int],
        target: tuple[str | None, str, int],
    ) -> None:
        self._target = target
        ns, host, port = listen

        def bind() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(512)
            return sock

        self._listener = in_namespace(ns, bind)
        self.port = int(self._listener.getsockname()[1])
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_loop, daemon=True, name="relay-accept").start()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        # A relay stands where the server's own socket would: it notices a vanished client
        # as PostgreSQL does with the session settings Billbridge gives it (keepalives
        # after 5 s, every 2 s, 3 tries; unacknowledged data dropped after 10 s), and then
        # closes the server side, so the server ends that session.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 10_000)
        ns, host, port = self._target
        try:
            upstream = in_namespace(ns, lambda: socket.create_connection((host, port), timeout=5))
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._connections.update((client, upstream))
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:  # one side is gone for good (timed out, reset): end both
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class TestNetwork:
    """A hub namespace with one bridge per link kind, and one namespace per host with a
    veth on each bridge. Host `i` (0-based) has address `.{10 + i}` on each link."""

    __test__ = False  # not a pytest test class

    def __init__(self, hosts: Sequence[str]) -> None:
        self.tag = secrets.token_hex(3)
        self.hosts = list(hosts)
        self.hub = f"bb{self.tag}-hub"
        self._relays: list[Relay] = []
        self._processes: dict[str, list[subprocess.Popen[bytes]]] = {}

    def namespace(self, host: str) -> str:
        return f"bb{self.tag}-{host}"

    def address(self, host: str, link: str) -> str:
        return f"{NETS[link]}.{10 + self.hosts.index(host)}"

    def hub_address(self, link: str) -> str:
        return f"{NETS[link]}.1"

    def _hub_end(self, host: str, link: str) -> str:
        return f"h{self.tag}{self.hosts.index(host)}{link[0]}"  # <= 15 characters

    def __enter__(self) -> TestNetwork:
        if os.geteuid() != 0:
            pytest.fail("the several-hosts test builds network namespaces: run it as root")
        try:
            self._build()
        except Exception:
            self.close()
            raise
        return self

    def _build(self) -> None:
        _ip("netns", "add", self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        for link, prefix in NETS.items():
            bridge = f"br{link}"
            _ip("-n", self.hub, "link", "add", bridge, "type", "bridge")
            _ip("-n", self.hub, "addr", "add", f"{prefix}.1/24", "dev", bridge)
            _ip("-n", self.hub, "link", "set", bridge, "up")
        for host in self.hosts:
            ns = self.namespace(host)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            for link in NETS:
                hub_end = self._hub_end(host, link)
                _ip("link", "add", hub_end, "type", "veth", "peer", "name", f"{hub_end}x")
                _ip("link", "set", hub_end, "netns", self.hub)
                _ip("link", "set", f"{hub_end}x", "netns", ns)
                _ip("-n", ns, "link", "set", f"{hub_end}x", "name", link)
                _ip("-n", ns, "addr", "add", f"{self.address(host, link)}/24", "dev", link)
                _ip("-n", ns, "link", "set", link, "up")
                _ip("-n", self.hub, "link", "set", hub_end, "master", f"br{link}")
                _ip("-n", self.hub, "link", "set", hub_end, "up")

    def relay_into_hub(self, link: str, port: int, *, to: tuple[str, int]) -> Relay:
        """Hosts reach `to` (an address in the root namespace) at hub_address(link):port."""
        relay = Relay((self.hub, self.hub_address(link), port), (None, *to))
        self._relays.append(relay)
        return relay

    def relay_to_host(self, host: str, port: int) -> Relay:
        """The test reaches host:port on its `app` link at 127.0.0.1:relay.port."""
        relay = Relay((None, "127.0.0.1", 0), (self.hub, self.address(host, "app"), port))
        self._relays.append(relay)
        return relay

    def run(
        self,
        host: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        output: IO[bytes] | int = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start `command` on `host` (its network namespace, and its own host name)."""
        launch = [
            "ip", "netns", "exec", self.namespace(host),
            "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', f"host-{host}",
            *command,
        ]  # fmt: skip
        process = subprocess.Popen(
            launch, env=dict(env), cwd=cwd, stdout=output, stderr=subprocess.STDOUT
        )
        self._processes.setdefault(host, []).append(process)
        return process

    def kill(self, host: str) -> None:
        """kill -9 every process started on `host` that still runs."""
        for process in self._processes.get(host, []):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)

    def cut(self, host: str, link: str) -> None:
        """Take `host`'s `link` down at the hub: its packets are dropped, connections hang."""
        _ip("-n", self.hub, "link", "set", self._hub_end(host, link), "down")

    def restore(self, host: str, link: str) -> None:
        _ip("-n", self.hub, "link", "set", self._hub_end(host, link), "up")

    def close(self) -> None:
        for host in self._processes:
            self.kill(host)
        for relay in self._relays:
            relay.close()
        for ns in [self.hub, *map(self.namespace, self.hosts)]:
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", ns)  # its veth ends go with it

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
