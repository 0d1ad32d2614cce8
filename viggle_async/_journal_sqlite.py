"""``SQLiteJournal``: the embedded, crash-safe journal store, and ``open_journal``.

One transaction per state change, WAL mode and ``synchronous=FULL``, so a process killed at
any point leaves every recorded step on disk. The state machine is ``_journal``'s; this
module only stores entries (the ``JournalStore`` contract) plus the asset index.

Threads: a ``sqlite3`` connection touched from more than one thread (anyio's worker pool
picks any), or after close, can corrupt its transaction state or crash the process (issue
11.12). So the connection lives on aiosqlite's one dedicated thread from open to close, every
transaction runs whole under a cancel shield (a cancel cannot leave it half done, nor let a
second transaction start inside it on the same connection), and ``close`` is shielded too.

Contention (issue 11.2): another program holding the write lock (a DB browser left open) makes
SQLite answer "database is locked". Each attempt waits at most ``_ATTEMPT_BUSY_MS`` inside
SQLite (shielded, so briefly); between attempts we back off, cancellably, up to the journal's
``busy_timeout``, calling ``on_busy`` so the wait is visible. Past it, or on any other
storage failure, the caller gets a ``JournalError`` naming the path, never a raw sqlite3 error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from typing import IO, Any, TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import aiosqlite
import anyio
import anyio.to_thread

from ._clock import Clock, SystemClock
from ._journal import (
    Journal,
    JournalBusyError,
    JournalClosedError,
    JournalEntry,
    JournalError,
    JournalFormatError,
    JournalInUseError,
    JournalWriteError,
    Transition,
)

__all__ = ["SCHEMA_VERSION", "JournalOpener", "SQLiteJournal", "SQLiteJournalStore", "open_journal"]

T = TypeVar("T")

# PRAGMA application_id marks the file as ours ("VGJ1"); PRAGMA user_version is its schema.
_APPLICATION_ID = 0x56474A31
SCHEMA_VERSION = 2
_SCHEMA_V1 = """
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
# MIGRATIONS[v] takes a file from schema v to v + 1, inside the open's one transaction, so a
# user who upgrades the library mid-run resumes the old journal (with everything in it).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("""
CREATE TABLE assets (
    account TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    PRIMARY KEY (account, content_hash)
)
""",),
}
_COLUMNS = ("key", "kind", "fingerprint", "state", "job_id", "final_status", "outputs", "error",
            "attempts", "created_at", "updated_at")
_UPSERT = (
    f"INSERT INTO entries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT(key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM entries"

# How long one attempt may wait inside SQLite for a lock. Short: the attempt runs shielded
# from cancellation, and the long wait happens in our own (cancellable) backoff instead.
_ATTEMPT_BUSY_MS = 50
_FIRST_DELAY = 0.05
_MAX_DELAY = 2.0
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_FORMAT_CODES = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def _to_row(e: JournalEntry) -> tuple[object, ...]:
    return (e.key, e.kind, e.fingerprint, e.state.value, e.job_id, e.final_status,
            json.dumps(list(e.outputs)), e.error, e.attempts, e.created_at, e.updated_at)


def _from_row(row: tuple[object, ...] | sqlite3.Row) -> JournalEntry:
    try:
        values = dict(zip(_COLUMNS, tuple(row), strict=True))
        values["outputs"] = json.loads(str(values["outputs"]))
        return JournalEntry(**values)
    except (ValueError, TypeError) as exc:
        raise JournalFormatError(f"unreadable journal entry {row[0]!r}: {exc}") from exc


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", -1)) & 0xFF


def _is_busy(exc: sqlite3.Error) -> bool:
    return _code(exc) in _BUSY_CODES or "database is locked" in str(exc)


def _storage_error(path: str, exc: sqlite3.Error, action: str) -> JournalError:
    if _code(exc) in _FORMAT_CODES:
        return JournalFormatError(f"{path!r} is not a readable journal: {exc}")
    return JournalWriteError(path, str(exc) or type(exc).__name__, action=action)


def _settled(inflight: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(fut: asyncio.Future[Any]) -> None:
        inflight.discard(fut)
        if not fut.cancelled():
            fut.exception()  # retrieved: its caller may be gone (cancelled), not an error

    return done


def _daemon(conn: aiosqlite.Connection) -> aiosqlite.Connection:
    """Let a journal the program forgot to close not hang interpreter exit: aiosqlite's
    thread is not a daemon, and Python waits for such threads before it exits. The thread is
    idle by then (every statement is awaited, shielded, before the loop ends), blocked on its
    queue, and every committed step is already on disk (synchronous=FULL), so nothing is lost
    by not joining it. (aiosqlite has no public switch for this; without ``_thread`` we keep
    its default.)"""
    thread = getattr(conn, "_thread", None)
    if isinstance(thread, threading.Thread) and not thread.is_alive():
        thread.daemon = True
    return conn


async def _rollback(conn: aiosqlite.Connection) -> None:
    # After a failed COMMIT SQLite may already have rolled back: nothing left to undo.
    with contextlib.suppress(sqlite3.Error):
        await conn.execute_fetchall("ROLLBACK")


class SQLiteJournalStore:
    """A ``JournalStore`` (and ``AssetIndex``) in one SQLite file; see ``SQLiteJournal.open``
    for the arguments. No ``LeaseStore``: one run holds the file at a time (the lock)."""

    def __init__(self, conn: aiosqlite.Connection, path: str, lock: IO[bytes] | None, *,
                 busy_timeout: float, on_busy: Callable[[float], object] | None,
                 busy_clock: Clock) -> None:
        self._conn: aiosqlite.Connection | None = conn
        self._lock = lock
        self.path = path
        self._busy_timeout = busy_timeout
        self._on_busy = on_busy
        self._busy_clock = busy_clock
        # One statement sequence at a time on the connection: a second BEGIN inside a first
        # one's transaction is "cannot start a transaction within a transaction".
        self._mutex = asyncio.Lock()
        self._inflight: set[asyncio.Future[Any]] = set()

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, busy_timeout: float = 60.0,
        on_busy: Callable[[float], object] | None = None, busy_clock: Clock | None = None,
    ) -> SQLiteJournalStore:
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        fspath = os.fspath(path)
        if not fspath:
            raise ValueError("the journal path is empty; pass a file path such as 'run.journal'")
        lock = await anyio.to_thread.run_sync(_lock, fspath)
        try:
            with anyio.CancelScope(shield=True):  # a half-made connection would leak its thread
                conn = await _daemon(aiosqlite.connect(fspath, isolation_level=None))
        except BaseException as exc:
            if lock is not None:
                _unlock(fspath, lock)
            if isinstance(exc, sqlite3.Error):
                raise _storage_error(fspath, exc, "open") from exc
            raise
        store = cls(conn, fspath, lock, busy_timeout=busy_timeout, on_busy=on_busy,
                    busy_clock=busy_clock or SystemClock())
        try:
            await store._prepare()
        except BaseException:
            await store.close()
            raise
        return store

    # --- the one way to touch the connection ------------------------------------------

    async def _attempt(self, work: Callable[[aiosqlite.Connection], Awaitable[T]], *,
                       transaction: bool) -> T:
        # The statements run in a task of their own. anyio's shield stops anyio cancels, but
        # not a plain ``task.cancel()`` (aiohttp cancels an upload's body writer that way, and
        # the "sending" step is written from inside it): cut between BEGIN and COMMIT, the
        # caller's next BEGIN would fail with "cannot start a transaction within a
        # transaction". The inner task always runs to commit or rollback, and releases the
        # mutex when done (an asyncio.Lock: any task may release it); ``close`` waits for it.
        # Waiting for the mutex stays cancellable: nothing has started yet.
        await self._mutex.acquire()
        try:
            inner = asyncio.ensure_future(self._attempt_whole(work, transaction))
        except BaseException:
            self._mutex.release()
            raise
        self._inflight.add(inner)
        inner.add_done_callback(_settled(self._inflight))
        with anyio.CancelScope(shield=True):
            return await asyncio.shield(inner)
        raise AssertionError("unreachable: a shielded scope does not swallow errors")

    async def _attempt_whole(self, work: Callable[[aiosqlite.Connection], Awaitable[T]],
                             transaction: bool) -> T:
        try:
            conn = self._conn
            if conn is None:
                raise JournalClosedError(f"the journal {self.path!r} is closed")
            if not transaction:
                return await work(conn)
            await conn.execute_fetchall("BEGIN IMMEDIATE")
            try:
                result = await work(conn)
                await conn.execute_fetchall("COMMIT")
                return result
            except BaseException:
                await _rollback(conn)
                raise
        finally:
            self._mutex.release()

    async def _retrying(self, work: Callable[[aiosqlite.Connection], Awaitable[T]], *,
                        action: str, transaction: bool = True) -> T:
        clock = self._busy_clock
        start = clock.now()
        delay = _FIRST_DELAY
        while True:
            try:
                return await self._attempt(work, transaction=transaction)
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    raise _storage_error(self.path, exc, action) from exc
                waited = clock.now() - start
                if waited >= self._busy_timeout:
                    raise JournalBusyError(
                        self.path, f"another connection held the database locked for "
                        f"{waited:.1f} s, past busy_timeout={self._busy_timeout:g} s; close the "
                        "other program (e.g. a database browser) or raise busy_timeout",
                        action=action) from exc
                if self._on_busy is not None:
                    self._on_busy(waited)
                await clock.sleep_until(clock.now() + min(delay, self._busy_timeout - waited))
                delay = min(delay * 2, _MAX_DELAY)

    async def _prepare(self) -> None:
        path = self.path

        async def pragmas(conn: aiosqlite.Connection) -> None:
            await conn.execute_fetchall(f"PRAGMA busy_timeout = {_ATTEMPT_BUSY_MS}")

        async def schema(conn: aiosqlite.Connection) -> None:
            async def one(sql: str) -> object:
                return (await conn.execute_fetchall(sql))[0][0]  # type: ignore[index]

            app_id = await one("PRAGMA application_id")
            version = await one("PRAGMA user_version")
            tables = await one("SELECT count(*) FROM sqlite_master")
            if app_id == 0 and version == 0 and tables == 0:
                await conn.execute_fetchall(_SCHEMA_V1)
                await conn.execute_fetchall(f"PRAGMA application_id = {_APPLICATION_ID}")
                version = 1
            elif app_id != _APPLICATION_ID:
                raise JournalFormatError(
                    f"{path!r} is an SQLite file but not a viggle-async journal")
            assert isinstance(version, int)
            if version > SCHEMA_VERSION or version < 1:
                raise JournalFormatError(
                    f"{path!r} is a journal of schema version {version}, written by a newer "
                    f"viggle-async; this version reads versions 1 to {SCHEMA_VERSION}: upgrade "
                    "viggle-async to resume it")
            for v in range(version, SCHEMA_VERSION):
                for sql in MIGRATIONS[v]:
                    await conn.execute_fetchall(sql)
            if version != SCHEMA_VERSION:
                await conn.execute_fetchall(f"PRAGMA user_version = {SCHEMA_VERSION}")

        async def wal(conn: aiosqlite.Connection) -> None:
            mode = (await conn.execute_fetchall("PRAGMA journal_mode = WAL"))[0][0]  # type: ignore[index]
            if mode != "wal":
                raise JournalFormatError(f"{path!r}: cannot use WAL mode (got {mode!r})")
            await conn.execute_fetchall("PRAGMA synchronous = FULL")

        await self._retrying(pragmas, action="open", transaction=False)
        await self._retrying(schema, action="open")
        await self._retrying(wal, action="open", transaction=False)

    # --- JournalStore ---------------------------------------------------------------------

    async def apply(self, key: str, transition: Transition) -> JournalEntry:
        async def work(conn: aiosqlite.Connection) -> JournalEntry:
            rows = await conn.execute_fetchall(f"{_SELECT} WHERE key = ?", (key,))
            old = _from_row(next(iter(rows))) if rows else None
            new = transition(old)
            if new is None:
                if old is None:
                    raise JournalError(f"{key!r}: a transition returned no change for no entry")
                return old
            await conn.execute_fetchall(_UPSERT, _to_row(new))
            return new

        return await self._retrying(work, action="write")

    async def get(self, key: str) -> JournalEntry | None:
        async def work(conn: aiosqlite.Connection) -> JournalEntry | None:
            rows = await conn.execute_fetchall(f"{_SELECT} WHERE key = ?", (key,))
            return _from_row(next(iter(rows))) if rows else None

        return await self._retrying(work, action="read", transaction=False)

    async def entries(self) -> list[JournalEntry]:
        async def work(conn: aiosqlite.Connection) -> list[JournalEntry]:
            return [_from_row(r) for r in await conn.execute_fetchall(f"{_SELECT} ORDER BY rowid")]

        return await self._retrying(work, action="read", transaction=False)

    async def close(self) -> None:
        try:
            # Shielded, and after any transaction in flight: the connection is always closed
            # on its own thread before the event loop ends (an unclosed one warns on 3.13).
            with anyio.CancelScope(shield=True):
                async with self._mutex:
                    conn, self._conn = self._conn, None
                    if conn is not None:
                        await conn.close()
        finally:
            lock, self._lock = self._lock, None
            if lock is not None:
                _unlock(self.path, lock)

    # --- AssetIndex -----------------------------------------------------------------------

    async def find_asset(self, account: str, content_hash: str) -> str | None:
        async def work(conn: aiosqlite.Connection) -> str | None:
            rows = list(await conn.execute_fetchall(
                "SELECT asset_id FROM assets WHERE account = ? AND content_hash = ?",
                (account, content_hash)))
            return str(rows[0][0]) if rows else None

        return await self._retrying(work, action="read", transaction=False)

    async def remember_asset(self, account: str, content_hash: str, asset_id: str) -> None:
        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute_fetchall(
                "INSERT INTO assets (account, content_hash, asset_id) VALUES (?, ?, ?) "
                "ON CONFLICT(account, content_hash) DO UPDATE SET asset_id = excluded.asset_id",
                (account, content_hash, asset_id))

        await self._retrying(work, action="write")

    async def forget_asset(self, account: str, content_hash: str) -> None:
        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute_fetchall(
                "DELETE FROM assets WHERE account = ? AND content_hash = ?",
                (account, content_hash))

        await self._retrying(work, action="write")


class SQLiteJournal(Journal):
    """A journal in one SQLite file; open with ``await SQLiteJournal.open(path)``.

    WAL with ``synchronous=FULL`` and one transaction per state change, so a process killed at
    any point leaves every entry in a state it really reached. The connection lives on one
    thread (aiosqlite's) from open to close. Opening refuses a file that is not a journal,
    or one written by a newer schema; an older schema is migrated in place.
    """

    def __init__(self, store: SQLiteJournalStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(store, clock=clock)
        self.path = store.path

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
        busy_timeout: float = 60.0, on_busy: Callable[[float], object] | None = None,
        busy_clock: Clock | None = None,
    ) -> SQLiteJournal:
        """Open (or create, or migrate) the journal at ``path``.

        ``clock``: entry timestamps, epoch seconds. ``busy_timeout``: how long, in seconds,
        one call keeps retrying while another connection holds the database locked (default
        a minute); ``on_busy(waited_s)`` is called before each retry with the seconds waited
        so far; ``busy_clock`` (default the event loop's) times those waits.

        Raises ``JournalInUseError`` if another open journal (this process or another) holds
        the file, ``JournalFormatError`` for a file that is not a journal or is of a newer
        schema, ``JournalBusyError`` / ``JournalWriteError`` when it cannot be written. Every
        later call raises the same kinds of ``JournalError`` (naming the path), never a raw
        ``sqlite3`` error.
        """
        store = await SQLiteJournalStore.open(path, busy_timeout=busy_timeout,
                                              on_busy=on_busy, busy_clock=busy_clock)
        return cls(store, clock=clock)


def open_journal(
    journal: Journal | str | os.PathLike[str], *, busy_timeout: float = 60.0,
    on_busy: Callable[[float], object] | None = None,
) -> JournalOpener:
    """A ``Journal`` from an argument that may be a path; use it either way:

    - ``async with open_journal(spec) as journal:`` a path (``str`` or ``os.PathLike``) opens
      an ``SQLiteJournal`` for the block and closes it after; a ``Journal`` is used as is (its
      owner closes it).
    - ``journal = await open_journal(spec)``: the opened (or given) journal; you close it.

    ``busy_timeout`` (seconds) and ``on_busy(waited_s)`` are passed to ``SQLiteJournal.open``.
    Raises ``TypeError`` (naming the argument) for any other type and ``ValueError`` for an
    empty path, before anything is opened; opening raises what ``SQLiteJournal.open`` does.
    """
    if isinstance(journal, Journal):
        return JournalOpener(journal, None)
    if isinstance(journal, str | os.PathLike):
        path = os.fspath(journal)
        if not isinstance(path, str):
            raise TypeError("journal: a bytes path is not supported; pass str or pathlib.Path")
        if not path:
            raise ValueError("journal: the path is empty; pass a file path such as "
                             "'run.journal', or a Journal")
        return JournalOpener(None, functools.partial(
            SQLiteJournal.open, path, busy_timeout=busy_timeout, on_busy=on_busy))
    raise TypeError(f"journal: expected a Journal or a file path (str or os.PathLike), got "
                    f"{type(journal).__name__}")


class JournalOpener:
    """What ``open_journal`` returns: awaitable (the journal) and an async context manager
    (the journal for the block, closed after if it was opened here)."""

    def __init__(self, given: Journal | None,
                 opener: Callable[[], Awaitable[SQLiteJournal]] | None) -> None:
        self._given = given
        self._opener = opener
        self._opened: Journal | None = None

    async def _open(self) -> Journal:
        if self._given is not None:
            return self._given
        assert self._opener is not None
        return await self._opener()

    def __await__(self) -> Generator[Any, None, Journal]:
        return self._open().__await__()

    async def __aenter__(self) -> Journal:
        journal = await self._open()
        if self._given is None:
            self._opened = journal
        return journal

    async def __aexit__(self, *exc_info: object) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            await opened.close()


def _lock(path: str) -> IO[bytes] | None:
    """An exclusive advisory lock on ``<path>.lock``: two runs resuming one journal at once
    could each find a key unsubmitted and both pay for it. (A sibling file, not the database
    itself: closing any descriptor of the database would drop SQLite's own POSIX locks.)

    The lock is ``flock`` on the file's inode, which the kernel drops when its holder exits:
    a lock file left by a crashed run is stale and simply locked again. ``_unlock`` removes
    the file on a clean close, which is safe only because a lock counts once it is held on
    the inode still at ``<path>.lock``: a run that opened the file just before its holder
    unlinked it would otherwise lock the orphaned inode while a third run creates and locks a
    new file, and both would go ahead. So after locking we check the path still names our
    inode, and if not, start again on the new file."""
    if fcntl is None:  # not POSIX: no lock, as before
        return None
    lock_path = path + ".lock"
    for _ in range(_LOCK_ATTEMPTS):
        try:
            f = open(lock_path, "ab")  # noqa: SIM115 - held open for the journal's life
        except OSError as exc:
            raise JournalWriteError(path, f"cannot create its lock file: {exc}",
                                    action="open") from exc
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(lock_path, f):
                return f
        except BlockingIOError:
            f.close()
            raise JournalInUseError(
                f"the journal {path!r} is open in another run; wait for it to finish (two "
                "runs on one journal could submit the same job twice)") from None
        except BaseException:
            f.close()
            raise
        f.close()  # its holder removed it as we locked it: lock the file there now
    raise JournalInUseError(
        f"the journal {path!r} is being opened and closed by other runs too fast to lock "
        f"({_LOCK_ATTEMPTS} tries); wait for them to finish")


# Tries at locking a lock file that keeps being removed under us (each removal is a run that
# held the journal closing it): more than a handful means something is churning it.
_LOCK_ATTEMPTS = 20


def _same_file(lock_path: str, f: IO[bytes]) -> bool:
    try:
        there = os.stat(lock_path)
    except FileNotFoundError:
        return False
    mine = os.fstat(f.fileno())
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def _unlock(path: str, f: IO[bytes]) -> None:
    """Remove the lock file, still holding its lock (see ``_lock`` for why that is safe),
    then release it. A lock file that cannot be removed (a read-only folder) stays: the next
    run locks it again."""
    try:
        if _same_file(path + ".lock", f):  # never another run's file, if ours was replaced
            os.unlink(path + ".lock")
    except OSError:
        pass
    finally:
        f.close()  # releases the flock
