"""The resumable journal: what was asked for, what reached the server, how it ended.

Each entry walks ``intent -> sending -> submitted -> final``; ``final`` may also follow
``intent`` or ``sending`` (a create refused outright) and may be recorded again. ``sending`` is
recorded just before the last bytes of a create body are written: an entry left in ``intent``
was never seen by the server and is safe to resubmit; one left in ``sending`` is *ambiguous*
(the job may exist), so ``record_intent`` refuses it unless the caller passes
``replace=True``. /api has no idempotency keys (viggle-api.md §4), so this is the only
guard against submitting a job twice.

``Journal`` is the interface; ``MemoryJournal`` and ``SQLiteJournal`` implement it. Entries
hold no secrets: request inputs are kept only as a hash, and error text is scrubbed of bearer
tokens and ``sk-`` keys.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Protocol, Self, TypeVar

import anyio
import anyio.to_thread
import attrs

__all__ = [
    "EntryState",
    "Journal",
    "JournalClosedError",
    "JournalEntry",
    "JournalError",
    "JournalFormatError",
    "JournalMismatchError",
    "JournalTransitionError",
    "MemoryJournal",
    "SQLiteJournal",
    "request_fingerprint",
]


T = TypeVar("T")


def _paths(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


class JournalError(Exception):
    """Base of the journal's errors."""


class JournalTransitionError(JournalError):
    """The requested state change is not allowed from the entry's current state."""


class JournalMismatchError(JournalError):
    """A key already in the journal was recorded with other inputs (kind or fingerprint)."""


class JournalFormatError(JournalError):
    """The journal file is not one this version can read."""


class JournalClosedError(JournalError):
    """The journal was used after ``close()``."""


class EntryState(enum.StrEnum):
    INTENT = "intent"
    SENDING = "sending"
    SUBMITTED = "submitted"
    FINAL = "final"


@attrs.frozen
class JournalEntry:
    """One unit of work. ``ambiguous`` means it may have reached the server unanswered."""

    key: str
    kind: str
    fingerprint: str
    state: EntryState = attrs.field(converter=EntryState)
    job_id: str | None = None
    final_status: str | None = None
    outputs: tuple[str, ...] = attrs.field(default=(), converter=_paths)
    error: str | None = None
    attempts: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0

    def __attrs_post_init__(self) -> None:
        # Illegal states are unrepresentable: a job id only once submitted, an outcome only
        # when final.
        early = self.state in (EntryState.INTENT, EntryState.SENDING)
        if early and (self.job_id is not None or self.final_status is not None or self.outputs
                      or self.error is not None):
            raise ValueError(f"{self.key!r}: a {self.state} entry has no job id or outcome")
        submitted = self.state is EntryState.SUBMITTED
        if submitted and (self.job_id is None or self.final_status is not None):
            raise ValueError(f"{self.key!r}: a submitted entry has a job id and no status")
        if self.state is EntryState.FINAL and self.final_status is None:
            raise ValueError(f"{self.key!r}: a final entry has a final_status")
        if self.attempts < 1:
            raise ValueError(f"{self.key!r}: attempts must be >= 1")

    @property
    def ambiguous(self) -> bool:
        return self.state is EntryState.SENDING


def request_fingerprint(inputs: Mapping[str, object]) -> str:
    """A stable hash of a request's inputs (JSON with sorted keys; other values via ``str``)."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


_SECRET_PATTERNS = (
    (re.compile(r"(?i)(bearer\s+)\S+"), r"\1<redacted>"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]+"), "sk-<redacted>"),
)
_MAX_ERROR_CHARS = 4000


def _scrub(text: str | None) -> str | None:
    if text is None:
        return None
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text[:_MAX_ERROR_CHARS]


class Journal(Protocol):
    """Where a supervisor records its work so a rerun can resume it."""

    async def record_intent(
        self, key: str, kind: str, fingerprint: str, *, replace: bool = False
    ) -> JournalEntry:
        """Before a create. Allowed for a new key, or one still in ``intent``; with
        ``replace=True`` also from ``sending`` (ambiguous) or ``final`` (a retry)."""
        ...

    async def mark_sending(self, key: str) -> JournalEntry:
        """Just before the last bytes of the create body go out (``intent`` only)."""
        ...

    async def record_submitted(self, key: str, job_id: str) -> JournalEntry:
        """The server answered with ``job_id`` (from ``sending``; repeating it is a no-op)."""
        ...

    async def record_final(
        self, key: str, status: str, outputs: Sequence[str | os.PathLike[str]] = (),
        error: str | None = None,
    ) -> JournalEntry:
        """The work ended (complete, failed, cancelled, rejected...). Recording it again
        later (e.g. after re-downloading outputs) replaces the outcome, keeping the job id."""
        ...

    async def get(self, key: str) -> JournalEntry | None: ...

    async def entries(self) -> list[JournalEntry]:
        """Every entry, oldest first."""
        ...

    async def close(self) -> None: ...


Transition = Callable[[JournalEntry | None], JournalEntry | None]  # None: no change


def _need(key: str, old: JournalEntry | None, *allowed: EntryState) -> JournalEntry:
    if old is None:
        raise JournalTransitionError(f"{key!r} has no intent recorded")
    if old.state not in allowed:
        wanted = "/".join(allowed)
        raise JournalTransitionError(f"{key!r} is {old.state}, expected {wanted}")
    return old


class _JournalBase:
    """The state machine, shared by every store; a store only implements ``_apply``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    async def _apply(self, key: str, transition: Transition) -> JournalEntry:
        raise NotImplementedError

    async def record_intent(
        self, key: str, kind: str, fingerprint: str, *, replace: bool = False
    ) -> JournalEntry:
        if not key:
            raise ValueError("journal keys must be non-empty")
        now = self._clock()

        def step(old: JournalEntry | None) -> JournalEntry:
            if old is None:
                return JournalEntry(key, kind, fingerprint, EntryState.INTENT,
                                    created_at=now, updated_at=now)
            if (old.kind, old.fingerprint) != (kind, fingerprint):
                raise JournalMismatchError(
                    f"{key!r} was recorded for other inputs; use a new key for new inputs")
            if old.state is EntryState.SUBMITTED:
                raise JournalTransitionError(
                    f"{key!r} is already submitted as {old.job_id}; resume polling it instead")
            if old.state is not EntryState.INTENT and not replace:
                why = "may have reached the server" if old.ambiguous else "is already final"
                raise JournalTransitionError(f"{key!r} {why}; pass replace=True to resubmit")
            return JournalEntry(key, kind, fingerprint, EntryState.INTENT,
                                attempts=old.attempts + 1, created_at=old.created_at,
                                updated_at=now)

        return await self._apply(key, step)

    async def mark_sending(self, key: str) -> JournalEntry:
        now = self._clock()

        def step(old: JournalEntry | None) -> JournalEntry:
            old = _need(key, old, EntryState.INTENT)
            return attrs.evolve(old, state=EntryState.SENDING, updated_at=now)

        return await self._apply(key, step)

    async def record_submitted(self, key: str, job_id: str) -> JournalEntry:
        if not job_id:
            raise ValueError("job_id must be non-empty")
        now = self._clock()

        def step(old: JournalEntry | None) -> JournalEntry | None:
            if old is not None and old.state is EntryState.SUBMITTED and old.job_id == job_id:
                return None
            old = _need(key, old, EntryState.SENDING)
            return attrs.evolve(old, state=EntryState.SUBMITTED, job_id=job_id, updated_at=now)

        return await self._apply(key, step)

    async def record_final(
        self, key: str, status: str, outputs: Sequence[str | os.PathLike[str]] = (),
        error: str | None = None,
    ) -> JournalEntry:
        if not status:
            raise ValueError("status must be non-empty")
        now = self._clock()
        paths = tuple(os.fspath(p) for p in outputs)
        error = _scrub(error)

        def step(old: JournalEntry | None) -> JournalEntry | None:
            if (old is not None and old.state is EntryState.FINAL
                    and (old.final_status, old.outputs, old.error) == (status, paths, error)):
                return None
            old = _need(key, old, *EntryState)  # any state may end; no submission risk here
            return attrs.evolve(old, state=EntryState.FINAL, final_status=status,
                                outputs=paths, error=error, updated_at=now)

        return await self._apply(key, step)


class MemoryJournal(_JournalBase):
    """An in-process journal (tests, or runs that need no resume)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._entries: dict[str, JournalEntry] = {}
        self._closed = False

    async def _apply(self, key: str, transition: Transition) -> JournalEntry:
        if self._closed:
            raise JournalClosedError("the journal is closed")
        old = self._entries.get(key)
        new = transition(old)
        if new is None:
            assert old is not None
            return old
        self._entries[key] = new
        await anyio.lowlevel.checkpoint()
        return new

    async def get(self, key: str) -> JournalEntry | None:
        if self._closed:
            raise JournalClosedError("the journal is closed")
        return self._entries.get(key)

    async def entries(self) -> list[JournalEntry]:
        if self._closed:
            raise JournalClosedError("the journal is closed")
        return list(self._entries.values())

    async def close(self) -> None:
        self._closed = True


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

    def __init__(self, conn: sqlite3.Connection, path: str, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> SQLiteJournal:
        fspath = os.fspath(path)
        conn = await anyio.to_thread.run_sync(_connect, fspath)
        return cls(conn, fspath, clock)

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
