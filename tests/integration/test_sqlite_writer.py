"""The SQLite group-commit writer: a failing write is undone alone; its batch still commits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from billbridge.store.sqlite import SqliteStore


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(f"sqlite:///{tmp_path / 'writer.db'}")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def _poll(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_a_failing_job_is_undone_alone_and_the_rest_of_its_batch_commits(
    sqlite_store: SqliteStore,
) -> None:
    store = sqlite_store
    gate, running = threading.Event(), threading.Event()

    def blocker(conn: Connection) -> str:
        running.set()
        gate.wait(10)
        return "first"

    def failing(conn: Connection) -> None:
        conn.execute(sa.text("INSERT INTO meta (key, value) VALUES ('bad', 'half-written')"))
        raise ValueError("boom")

    with ThreadPoolExecutor(max_workers=8) as pool:
        first = pool.submit(store._write, blocker)
        _poll(running.is_set)  # the writer is busy: what follows queues up as ONE batch
        writes = [pool.submit(store.set_meta, f"key{i}", str(i)) for i in range(3)]
        bad = pool.submit(store._write, failing)
        writes += [pool.submit(store.set_meta, f"key{i}", str(i)) for i in range(3, 6)]
        _poll(lambda: store._jobs.qsize() == 7)
        gate.set()
        assert first.result(timeout=10) == "first"
        for future in writes:
            future.result(timeout=10)
        with pytest.raises(ValueError, match="boom"):
            bad.result(timeout=10)

    assert store.get_meta("bad") is None  # the failing job left nothing
    assert [store.get_meta(f"key{i}") for i in range(6)] == [str(i) for i in range(6)]
