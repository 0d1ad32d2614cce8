"""``SQLiteJournal``: the embedded, crash-safe journal store (standard library only).

One transaction per state change, WAL mode and ``synchronous=FULL``, so a process killed at
any point leaves every recorded step on disk. The state machine is ``_journal``'s.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Self, TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import anyio
import anyio.to_thread

from ._journal import (
    JournalClosedError,
    JournalEntry,
    JournalFormatError,
    JournalInUseError,
    Transition,
    _JournalBase,
)

__all__ = ["SCHEMA_VERSION", "SQLiteJournal"]

T = TypeVar("T")


# PRAGMA application_id marks the file as ours ("VGJ1"); PRAGMA user_version is its schema.
_APPLICATION_ID = 0x56474A31
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE entries (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('intent', 'sending', 'submitted', 'final')),
    job_id TEXT,
    final_status TEXT,
    outputs TEXT NOT NULL,
    error TEXT,
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""
_COLUMNS = ("key", "kind", "fingerprint", "state", "job_id", "final_status", "outputs", "error",
            "attempts", "created_at", "updated_at")
_UPSERT = (
    f"INSERT INTO entries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT(key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM entries"


def _to_row(e: JournalEntry) -> tuple[object, ...]:
    return (e.key, e.kind, e.fingerprint, e.state.value, e.job_id, e.final_status,
            json.dumps(list(e.outputs)), e.error, e.attempts, e.created_at, e.updated_at)


def _from_row(row: tuple[object, ...]) -> JournalEntry:
    try:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["outputs"] = json.loads(str(values["outputs"]))
        return JournalEntry(**values)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise JournalFormatError(f"unreadable journal entry {row[0]!r}: {exc}") from exc


class SQLiteJournal(_JournalBase):
    """A journal in one SQLite file; open with ``await SQLiteJournal.open(path)``.

    WAL with ``synchronous=FULL`` and one transaction per state change, so a process killed at
    any point leaves every entry in a state it really reached. Calls run on a worker thread,
    one at a time. Opening refuses a file that is not a journal of this schema version.
    """

    def __init__(self, conn: sqlite3.Connection, path: str, clock: Callable[[], float],
                 lock: IO[bytes] | None = None) -> None:
        super().__init__(clock)
        self._conn: sqlite3.Connection | None = conn
        self._lock = lock
        self.path = path
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> SQLiteJournal:
        """Open (or create) the journal at ``path``; ``JournalInUseError`` if another open
        journal (this process or another) holds it."""
        fspath = os.fspath(path)
        lock = await anyio.to_thread.run_sync(_lock, fspath)
        try:
            conn = await anyio.to_thread.run_sync(_connect, fspath)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        return cls(conn, fspath, clock, lock)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise JournalClosedError(f"the journal {self.path!r} is closed")
        # Not abandoned on cancel: a transaction always finishes (commit or rollback) first.
        return await anyio.to_thread.run_sync(fn, conn, limiter=self._limiter)

    async def _apply(self, key: str, transition: Transition) -> JournalEntry:
        def work(conn: sqlite3.Connection) -> JournalEntry:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(f"{_SELECT} WHERE key = ?", (key,)).fetchone()
                old = None if row is None else _from_row(row)
                new = transition(old)
                if new is None:
                    conn.execute("ROLLBACK")
                    assert old is not None
                    return old
                conn.execute(_UPSERT, _to_row(new))
                conn.execute("COMMIT")
                return new
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        return await self._run(work)

    async def get(self, key: str) -> JournalEntry | None:
        def work(conn: sqlite3.Connection) -> JournalEntry | None:
            row = conn.execute(f"{_SELECT} WHERE key = ?", (key,)).fetchone()
            return None if row is None else _from_row(row)

        return await self._run(work)

    async def entries(self) -> list[JournalEntry]:
        def work(conn: sqlite3.Connection) -> list[JournalEntry]:
            return [_from_row(r) for r in conn.execute(f"{_SELECT} ORDER BY rowid")]

        return await self._run(work)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # releases the flock


def _lock(path: str) -> IO[bytes] | None:
    """An exclusive advisory lock on ``<path>.lock``: two runs resuming one journal at once
    could each find a key unsubmitted and both pay for it. (A sibling file, not the database
    itself: closing any descriptor of the database would drop SQLite's own POSIX locks.)"""
    if fcntl is None:  # not POSIX: no lock, as before
        return None
    f = open(path + ".lock", "ab")  # noqa: SIM115 - held open for the journal's life
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise JournalInUseError(
            f"the journal {path!r} is open in another run; wait for it to finish (two runs "
            "on one journal could submit the same job twice)") from None
    except BaseException:
        f.close()
        raise
    return f


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per change.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and version == 0 and tables == 0:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        elif app_id != _APPLICATION_ID:
            raise JournalFormatError(f"{path!r} is an SQLite file but not a viggle-async journal")
        elif version != SCHEMA_VERSION:
            raise JournalFormatError(
                f"{path!r} is a journal of schema version {version}; this version of "
                f"viggle-async reads version {SCHEMA_VERSION} only")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise JournalFormatError(f"{path!r}: cannot use WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        return conn
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise JournalFormatError(f"{path!r} is not a readable journal: {exc}") from exc
    except BaseException:
        conn.close()
        raise
