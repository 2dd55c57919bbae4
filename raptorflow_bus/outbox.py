"""The local outbox: where accepted events wait while the broker is unreachable.

An event is accepted when ``emit`` returns (DESIGN.md section 8), so during an
outage the validated envelope must reach the disk before ``emit`` returns: one
SQLite file per host in ``RAPTORBUS_HOME``, in WAL mode with
``synchronous=FULL`` (the WAL is fsynced on every commit), shared by every bus
process of that host through SQLite's own locking. A batch is one transaction,
so ``emit_many`` stays all-or-nothing.

Each row holds the envelope JSON exactly as it is published, the producer that
spooled it (host, pid and a random tag, one per ``Outbox`` and process) and the
broker it was meant for, so a bus only drains what was sent to its own broker.

Draining publishes rows in insertion order, which keeps every producer's order,
and deletes them only after the publish returned. A drainer killed between the
two republishes the batch it had in flight: the envelope id is the same, so the
handler task ids (uuid5 of event id and handler) are too, and the workers' done
records turn the copy into a counted duplicate. One drainer per host at a time
(an ``flock`` beside the database); another one gives up at once."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from raptorflow_bus.envelope import Envelope
from raptorflow_bus.errors import Backpressure, OutboxUnavailable
from raptorflow_bus.logs import log

if TYPE_CHECKING:
    from raptorflow_bus.publisher import Prepared

DB_NAME = "outbox.sqlite3"
LOCK_NAME = "outbox.lock"
EMBEDDED_TARGET = "embedded"
BUSY_TIMEOUT_SECONDS = 30.0
DRAIN_BATCH = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    producer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    spooled_at REAL NOT NULL,
    deferrals INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_by_target ON outbox (target, id);
CREATE INDEX IF NOT EXISTS outbox_by_producer ON outbox (producer, deferrals);
CREATE TABLE IF NOT EXISTS counters (
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (target, name)
);
"""
_COLUMNS = "target, producer, event_id, event_type, body, spooled_at"

PublishFunc = Callable[[list["Prepared"]], None]


def target_for(broker_url: str | None) -> str:
    """The name rows are kept under: the broker URL without its password."""
    from raptorflow_bus.settings import mask_url

    return EMBEDDED_TARGET if broker_url is None else mask_url(broker_url)


class Outbox:
    def __init__(self, home: Path, target: str) -> None:
        self.home = home
        self.path = home / DB_NAME
        self.lock_path = home / LOCK_NAME
        self.target = target
        self._producer = ("", 0)
        self._ready_pid = 0
        self._reported: set[int] = set()

    @property
    def producer(self) -> str:
        """This process's producer id (a forked child gets its own)."""
        pid = os.getpid()
        if self._producer[1] != pid:
            self._producer = (f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}", pid)
        return self._producer[0]

    # storage --------------------------------------------------------------

    @contextlib.contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """A connection per operation: safe across threads and forks, and cheap
        next to the fsync every commit pays."""
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            if self._ready_pid != os.getpid():
                _use_wal(conn)
                conn.executescript(_SCHEMA)
                self._ready_pid = os.getpid()
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            # Spooled events are the user's data: private, like the broker's
            # AOF (SQLite gives its -wal and -shm files the same mode).
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self._open() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        with self._open() as conn:
            return list(conn.execute(sql, args))

    def _count(self, conn: sqlite3.Connection, name: str, n: int) -> None:
        conn.execute(
            "INSERT INTO counters (target, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (target, name) DO UPDATE SET value = value + excluded.value",
            (self.target, name, n),
        )

    def spool(self, prepared: Sequence[Prepared]) -> None:
        """Store the envelopes durably, all or none, in this order."""
        now = time.time()
        producer = self.producer
        rows = [(self.target, producer, e.id, e.type, body, now) for e, body in prepared]
        try:
            with self._write() as conn:
                conn.executemany(f"INSERT INTO outbox ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._count(conn, "spooled", len(rows))
        except (sqlite3.Error, OSError) as exc:
            raise OutboxUnavailable(
                f"broker unreachable and the outbox {self.path} cannot store the event: {exc}"
            ) from exc

    # reading --------------------------------------------------------------

    def depth(self) -> int:
        """Rows waiting for this outbox's broker."""
        rows = self._query("SELECT COUNT(*) FROM outbox WHERE target = ?", self.target)
        return int(rows[0][0]) if rows else 0

    def own_depth(self) -> int:
        """Rows of this producer that hold their place in line (not deferred)."""
        rows = self._query(
            "SELECT COUNT(*) FROM outbox WHERE producer = ? AND deferrals = 0", self.producer
        )
        return int(rows[0][0]) if rows else 0

    def oldest_age_seconds(self) -> float | None:
        rows = self._query("SELECT MIN(spooled_at) FROM outbox WHERE target = ?", self.target)
        if not rows or rows[0][0] is None:
            return None
        return max(0.0, time.time() - float(rows[0][0]))

    def stats(self) -> dict[str, Any]:
        """Depth and oldest age of what waits for this broker, and this host's totals."""
        counters = dict(
            self._query("SELECT name, value FROM counters WHERE target = ?", self.target)
        )
        return {
            "depth": self.depth(),
            "oldest_age_seconds": self.oldest_age_seconds(),
            "spooled": int(counters.get("spooled", 0)),
            "drained": int(counters.get("drained", 0)),
        }

    def other_targets(self) -> dict[str, int]:
        """Rows kept for other brokers (a bus drains only its own broker's rows)."""
        rows = self._query(
            "SELECT target, COUNT(*) FROM outbox WHERE target != ? GROUP BY target", self.target
        )
        return {str(t): int(n) for t, n in rows}

    # draining -------------------------------------------------------------

    @contextlib.contextmanager
    def _drain_lock(self) -> Iterator[bool]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def drain(self, publish: PublishFunc, batch: int = DRAIN_BATCH) -> int:
        """Publish what waits for this broker, oldest first; return how many left.

        Returns 0 at once if another process is draining. Stops at the first
        failed publish and keeps that batch and the rest, in order. An event
        refused with ``Backpressure`` (a full queue) is moved to the back of
        the outbox and retried on a later drain: a queue that stays full then
        costs that event its place in its producer's order, but it neither
        blocks the events behind it nor gets lost. A row that no longer reads
        as an envelope (written by another version) is skipped and kept."""
        if not self.path.exists():
            return 0
        with self._drain_lock() as held:
            if not held:
                return 0
            last = self._query("SELECT MAX(id) FROM outbox WHERE target = ?", self.target)
            high = last[0][0] if last else None
            after, drained = 0, 0
            while high is not None:
                rows = self._query(
                    "SELECT id, body FROM outbox WHERE target = ? AND id > ? AND id <= ? "
                    "ORDER BY id LIMIT ?",
                    self.target,
                    after,
                    high,
                    batch,
                )
                if not rows:
                    break
                after = int(rows[-1][0])
                done, deferred, failed = _publish(self._readable(rows), publish)
                self._settle(done, deferred)
                drained += len(done)
                if failed:
                    break
        if drained:
            log(logging.INFO, f"drained {drained} events from the outbox to {self.target}")
        return drained

    def _readable(self, rows: list[tuple[Any, ...]]) -> list[tuple[int, Prepared]]:
        items = []
        for row_id, body in rows:
            try:
                items.append((int(row_id), (Envelope.model_validate_json(body), str(body))))
            except ValidationError as exc:
                if row_id not in self._reported:
                    self._reported.add(row_id)
                    log(logging.ERROR, f"outbox row {row_id} is not an envelope, kept: {exc}")
        return items

    def _settle(self, done: list[int], deferred: list[int]) -> None:
        """Forget what was published and move deferred rows to the back, atomically."""
        if not done and not deferred:
            return
        with self._write() as conn:
            if deferred:
                marks = ",".join("?" * len(deferred))
                conn.execute(
                    f"INSERT INTO outbox ({_COLUMNS}, deferrals) SELECT {_COLUMNS}, "
                    f"deferrals + 1 FROM outbox WHERE id IN ({marks}) ORDER BY id",
                    deferred,
                )
            gone = done + deferred
            conn.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(gone))})", gone)
            self._count(conn, "drained", len(done))


def _publish(
    items: list[tuple[int, Prepared]], publish: PublishFunc
) -> tuple[list[int], list[int], bool]:
    """Publish a batch; return (published row ids, deferred row ids, failed)."""
    if not items:
        return [], [], False
    try:
        publish([p for _, p in items])
        return [i for i, _ in items], [], False
    except Backpressure:
        pass
    except Exception as exc:
        log(logging.WARNING, f"outbox drain stopped, {len(items)}+ events kept: {exc}")
        return [], [], True
    done: list[int] = []
    deferred: list[int] = []
    for row_id, item in items:
        try:
            publish([item])
        except Backpressure as exc:
            log(logging.WARNING, f"outbox event deferred: {exc}", envelope=item[0])
            deferred.append(row_id)
        except Exception as exc:
            log(logging.WARNING, f"outbox drain stopped: {exc}", envelope=item[0])
            return done, deferred, True
        else:
            done.append(row_id)
    return done, deferred, False


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL once. Setting the mode takes a lock without
    SQLite's busy handler ("database is locked" at once while another process
    writes), so the mode is read first (it is WAL after the first switch) and
    the switch itself retried until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)
