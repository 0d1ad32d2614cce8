"""``PostgresJournalStore``: a journal store in PostgreSQL, for many workers on one ledger.

Behind the same ``JournalStore`` contract as the other stores (the state machine stays in
``Journal``), plus ``AssetIndex`` and ``LeaseStore``. Every ``apply`` is one transaction that
first takes a transaction-scoped advisory lock on (ledger, key), so applies on one key are
serialised across every connection and process: of 20 workers moving a key from intent to
sending at once, exactly one wins.

It sits on ``PostgresLedger``: the same pool, schema (its tables are one of the ledger's
migrations), DSN resolution (``resolve_dsn``: the argument, ``$VIGGLE_POSTGRES_DSN``, its
alias ``$VIGGLE_JOURNAL_DSN``, else libpq's ``PG*`` variables and ``~/.pgpass``), password
redaction (``redact_dsn``) and API-key binding (the schema belongs to one account; another
key is refused with ``JournalAccountError``). ``ledger`` names a set of entries inside that
one account's schema (e.g. one run).

Requires the ``postgres`` extra (psycopg 3 and psycopg_pool).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

import anyio
import psycopg
import psycopg_pool
from psycopg import sql

from viggle_async._journal import (
    Journal,
    JournalAccountError,
    JournalClosedError,
    JournalEntry,
    JournalError,
    JournalFormatError,
    JournalWriteError,
    Transition,
)

from ._dsn import scrub
from ._errors import LedgerConnectionError, LedgerKeyMismatchError, LedgerSchemaTooNewError
from ._ledger import SCHEMA_VERSION, PostgresLedger

__all__ = ["POSTGRES_SCHEMA_VERSION", "PostgresJournalStore"]

T = TypeVar("T")

#: Kept for callers of the first release; the journal's tables are migration 2 of the
#: ledger's schema (``viggle_async.pg.SCHEMA_VERSION``).
POSTGRES_SCHEMA_VERSION = SCHEMA_VERSION
_COLUMNS = ("key", "kind", "fingerprint", "state", "job_id", "final_status", "outputs", "error",
            "attempts", "created_at", "updated_at")


def _from_row(row: tuple[Any, ...]) -> JournalEntry:
    try:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["outputs"] = tuple(values["outputs"])
        return JournalEntry(**values)
    except (ValueError, TypeError) as exc:
        raise JournalFormatError(f"unreadable journal entry {row[0]!r}: {exc}") from exc


def _to_params(ledger: str, e: JournalEntry) -> tuple[Any, ...]:
    return (ledger, e.key, e.kind, e.fingerprint, e.state.value, e.job_id, e.final_status,
            list(e.outputs), e.error, e.attempts, e.created_at, e.updated_at)


def _lock_id(ledger: str, key: str) -> int:
    """A signed 64-bit advisory lock id for (ledger, key) (a collision only serialises two
    keys, never merges them)."""
    digest = hashlib.sha256(f"{ledger}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _settled(inflight: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(fut: asyncio.Future[Any]) -> None:
        inflight.discard(fut)
        if not fut.cancelled():
            fut.exception()  # retrieved: its caller may be gone (cancelled)

    return done


class PostgresJournalStore:
    """A ``JournalStore`` (with ``AssetIndex`` and ``LeaseStore``) in PostgreSQL; open with
    ``await PostgresJournalStore.open(dsn, account=api_key_fingerprint(key))``, or on an
    open ledger with ``PostgresJournalStore.on_ledger(ledger)``, and use it as
    ``Journal(store)``."""

    def __init__(self, ledger: PostgresLedger, *, name: str = "default",
                 clock: Callable[[], float] = time.time, owns_ledger: bool = False) -> None:
        self._ledger_db: PostgresLedger | None = ledger
        self._owns = owns_ledger
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = (
            ledger.pool if not owns_ledger else None)
        self._schema = sql.Identifier(ledger.schema)
        self.ledger = name
        self.dsn = ledger.dsn  # redact_dsn: without the password
        self._secrets: list[str | None] = []
        self._clock = clock
        self._inflight: set[asyncio.Future[Any]] = set()

    def __repr__(self) -> str:
        return f"PostgresJournalStore(dsn={self.dsn!r}, ledger={self.ledger!r})"

    @classmethod
    def on_ledger(cls, ledger: PostgresLedger, *, name: str = "default",
                  clock: Callable[[], float] = time.time) -> Self:
        """A store on an open ``PostgresLedger``: shares its pool and key binding; closing
        the store leaves the ledger open. ``name``: the entries' namespace (e.g. a run)."""
        return cls(ledger, name=name, clock=clock)

    @classmethod
    async def open(
        cls, dsn: str | None = None, *, account: str, ledger: str = "default",
        schema: str = "viggle", clock: Callable[[], float] = time.time,
        max_connections: int = 4, connect_timeout: float = 10.0,
    ) -> Self:
        """Connect, create or migrate the schema (a ``PostgresLedger``'s), check its key.

        ``dsn``: a ``postgresql://`` URL or ``key=value`` string; default
        ``$VIGGLE_POSTGRES_DSN`` (or its alias ``$VIGGLE_JOURNAL_DSN``), else libpq's
        defaults (``PG*`` variables, ``~/.pgpass``). ``account``:
        ``api_key_fingerprint(api_key)``. ``ledger``: the entries' namespace. ``schema``:
        the ledger's schema (one account). ``clock``: epoch seconds, for leases.
        ``connect_timeout`` in seconds.

        Raises ``JournalAccountError`` if the schema belongs to another account,
        ``JournalFormatError`` for a schema newer than this library's, ``JournalWriteError``
        when the server cannot be reached or written (naming the DSN without its password).
        """
        if not account:
            raise ValueError("account: pass api_key_fingerprint(api_key), not an empty string")
        db = PostgresLedger(dsn, account=account, schema=schema, min_size=1,
                            max_size=max_connections, connect_timeout=connect_timeout)
        try:
            with anyio.CancelScope(shield=True):
                await db.open()
        except LedgerKeyMismatchError as exc:
            raise JournalAccountError(str(exc)) from None
        except LedgerSchemaTooNewError as exc:
            raise JournalFormatError(
                f"the journal {db.dsn!r} has schema version {exc.found}, written by a newer "
                f"viggle-async; this version reads up to {exc.supported}: upgrade "
                "viggle-async") from None
        except LedgerConnectionError as exc:
            # from None: the cause's text could hold the DSN; the ledger's is scrubbed
            raise JournalWriteError(db.dsn, str(exc), action="open") from None
        store = cls(db, name=ledger, clock=clock, owns_ledger=True)
        store._pool = db.pool
        return store

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *,
                   action: str) -> T:
        # As in the SQLite store: the transaction runs in a task of its own, so neither an
        # anyio cancel (shielded) nor a plain task.cancel() can cut it in two.
        if self._pool is None:
            raise JournalClosedError(f"the journal {self.dsn!r} is closed")
        inner = asyncio.ensure_future(self._whole(work, action))
        self._inflight.add(inner)
        inner.add_done_callback(_settled(self._inflight))
        with anyio.CancelScope(shield=True):
            return await asyncio.shield(inner)
        raise AssertionError("unreachable: a shielded scope does not swallow errors")

    async def _whole(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
                     action: str) -> T:
        pool = self._pool
        if pool is None:
            raise JournalClosedError(f"the journal {self.dsn!r} is closed")
        try:
            async with pool.connection() as conn, conn.transaction():
                return await work(conn)
        except psycopg_pool.PoolClosed:
            raise JournalClosedError(f"the journal {self.dsn!r} is closed") from None
        except psycopg.Error as exc:
            # from None: the cause's text could hold the DSN; ours is scrubbed
            raise JournalWriteError(self.dsn, self._scrub(str(exc).strip()),
                                    action=action) from None

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self._schema)

    # --- JournalStore ---------------------------------------------------------------------

    async def apply(self, key: str, transition: Transition) -> JournalEntry:
        async def work(conn: psycopg.AsyncConnection[Any]) -> JournalEntry:
            # Serialises applies on (ledger, key) across every connection, including the
            # first insert of a key (no row yet for SELECT ... FOR UPDATE to lock).
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(self.ledger, key),))
            old = await self._select(conn, key)
            new = transition(old)
            if new is None:
                if old is None:
                    raise JournalError(f"{key!r}: a transition returned no change for no entry")
                return old
            cols = ", ".join(("ledger", *_COLUMNS))
            await conn.execute(self._q(
                f"INSERT INTO {{s}}.journal_entries ({cols}) VALUES ({', '.join(['%s'] * 12)}) "
                "ON CONFLICT (ledger, key) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])),
                _to_params(self.ledger, new))
            return new

        return await self._run(work, action="write")

    async def _select(self, conn: psycopg.AsyncConnection[Any], key: str) -> JournalEntry | None:
        cur = await conn.execute(self._q(
            f"SELECT {', '.join(_COLUMNS)} FROM {{s}}.journal_entries "
            "WHERE ledger = %s AND key = %s"),
            (self.ledger, key))
        row = await cur.fetchone()
        return None if row is None else _from_row(tuple(row))

    async def get(self, key: str) -> JournalEntry | None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> JournalEntry | None:
            return await self._select(conn, key)

        return await self._run(work, action="read")

    async def entries(self) -> list[JournalEntry]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[JournalEntry]:
            cur = await conn.execute(self._q(
                f"SELECT {', '.join(_COLUMNS)} FROM {{s}}.journal_entries WHERE ledger = %s "
                "ORDER BY seq"), (self.ledger,))
            return [_from_row(tuple(r)) for r in await cur.fetchall()]

        return await self._run(work, action="read")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        db, self._ledger_db = self._ledger_db, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                if self._inflight:
                    await asyncio.wait(set(self._inflight))
                if self._owns and db is not None:
                    await db.aclose()

    # --- AssetIndex -----------------------------------------------------------------------

    async def find_asset(self, account: str, content_hash: str) -> str | None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> str | None:
            cur = await conn.execute(self._q(
                "SELECT asset_id FROM {s}.journal_assets WHERE account = %s AND content_hash = %s"),
                (account, content_hash))
            row = await cur.fetchone()
            return None if row is None else str(row[0])

        return await self._run(work, action="read")

    async def remember_asset(self, account: str, content_hash: str, asset_id: str) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(self._q(
                "INSERT INTO {s}.journal_assets (account, content_hash, asset_id) "
                "VALUES (%s, %s, %s) "
                "ON CONFLICT (account, content_hash) DO UPDATE SET asset_id = excluded.asset_id"),
                (account, content_hash, asset_id))

        await self._run(work, action="write")

    async def forget_asset(self, account: str, content_hash: str) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(self._q(
                "DELETE FROM {s}.journal_assets WHERE account = %s AND content_hash = %s"),
                (account, content_hash))

        await self._run(work, action="write")

    # --- LeaseStore -----------------------------------------------------------------------

    async def acquire_lease(self, key: str, owner: str, ttl: float) -> bool:
        now = self._clock()

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(self._q(
                "INSERT INTO {s}.journal_leases (ledger, key, owner, expires_at) "
                "VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (ledger, key) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE {s}.journal_leases.owner = excluded.owner "
                "OR {s}.journal_leases.expires_at <= %s "
                "RETURNING owner"), (self.ledger, key, owner, now + ttl, now))
            return await cur.fetchone() is not None

        return await self._run(work, action="write")

    async def release_lease(self, key: str, owner: str) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(self._q(
                "DELETE FROM {s}.journal_leases WHERE ledger = %s AND key = %s AND owner = %s"),
                (self.ledger, key, owner))

        await self._run(work, action="write")


async def open_postgres_journal(dsn: str | None = None, *, account: str,
                                ledger: str = "default", **options: Any) -> Journal:
    """``Journal(await PostgresJournalStore.open(...))``; see ``PostgresJournalStore.open``."""
    return Journal(await PostgresJournalStore.open(dsn, account=account, ledger=ledger,
                                                   **options))
