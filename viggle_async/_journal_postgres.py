"""``PostgresJournalStore``: a journal store in PostgreSQL, for many workers on one ledger.

Behind the same ``JournalStore`` contract as the other stores (the state machine stays in
``Journal``), plus ``AssetIndex`` and ``LeaseStore``. Every ``apply`` is one transaction that
first takes a transaction-scoped advisory lock on (ledger, key), so applies on one key are
serialised across every connection and process: of 20 workers moving a key from intent to
sending at once, exactly one wins.

A ledger is bound to one API-key fingerprint when first opened; a worker with another key is
refused (``JournalAccountError``), so two accounts never mix jobs or assets. The DSN comes
from the argument (a URL or ``key=value`` string), else ``VIGGLE_JOURNAL_DSN``, else libpq's
own defaults (``PG*`` variables, ``~/.pgpass``). The password never appears in a repr, a log
line or an error: errors name the DSN without it.

Requires the ``postgres`` extra (psycopg 3 and psycopg_pool).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

import anyio
import psycopg
import psycopg.conninfo
import psycopg_pool
from psycopg import sql

from ._journal import (
    Journal,
    JournalAccountError,
    JournalClosedError,
    JournalEntry,
    JournalError,
    JournalFormatError,
    JournalWriteError,
    Transition,
)

__all__ = ["POSTGRES_SCHEMA_VERSION", "PostgresJournalStore"]

T = TypeVar("T")

POSTGRES_SCHEMA_VERSION = 1
# MIGRATIONS[v] takes a database from schema v to v + 1 (none yet; see _journal_sqlite).
MIGRATIONS: dict[int, tuple[str, ...]] = {}
_SCHEMA_LOCK = 0x56474A31  # advisory lock id held while creating or migrating the schema
_CREATE = (
    """CREATE TABLE IF NOT EXISTS {s}.meta (
        id INTEGER PRIMARY KEY CHECK (id = 1), schema_version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {s}.ledgers (
        ledger TEXT PRIMARY KEY, account TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {s}.entries (
        seq BIGSERIAL, ledger TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('intent', 'sending', 'submitted', 'final')),
        job_id TEXT, final_status TEXT, outputs TEXT[] NOT NULL, error TEXT,
        attempts INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (ledger, key))""",
    """CREATE TABLE IF NOT EXISTS {s}.assets (
        account TEXT NOT NULL, content_hash TEXT NOT NULL, asset_id TEXT NOT NULL,
        PRIMARY KEY (account, content_hash))""",
    """CREATE TABLE IF NOT EXISTS {s}.leases (
        ledger TEXT NOT NULL, key TEXT NOT NULL, owner TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (ledger, key))""",
)
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


def _display(dsn: str) -> tuple[str, list[str]]:
    """The DSN without its password (for messages), and the secrets to scrub from text."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable DSN>", [dsn]
    secret = params.pop("password", None)
    shown = " ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None)
    return shown or "<libpq defaults>", [str(secret)] if secret else []


def _settled(inflight: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(fut: asyncio.Future[Any]) -> None:
        inflight.discard(fut)
        if not fut.cancelled():
            fut.exception()  # retrieved: its caller may be gone (cancelled)

    return done


class PostgresJournalStore:
    """A ``JournalStore`` (with ``AssetIndex`` and ``LeaseStore``) in PostgreSQL; open with
    ``await PostgresJournalStore.open(dsn, account=api_key_fingerprint(key))`` and use it as
    ``Journal(store)``."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any], *, schema: str,
                 ledger: str, display: str, secrets: list[str],
                 clock: Callable[[], float]) -> None:
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = pool
        self._schema = sql.Identifier(schema)
        self.ledger = ledger
        self.dsn = display  # without the password
        self._secrets = secrets
        self._clock = clock
        self._inflight: set[asyncio.Future[Any]] = set()

    def __repr__(self) -> str:
        return f"PostgresJournalStore(dsn={self.dsn!r}, ledger={self.ledger!r})"

    @classmethod
    async def open(
        cls, dsn: str | None = None, *, account: str, ledger: str = "default",
        schema: str = "viggle_journal", clock: Callable[[], float] = time.time,
        max_connections: int = 4, connect_timeout: float = 10.0,
    ) -> Self:
        """Connect, create or check the schema, and bind ``ledger`` to ``account``.

        ``dsn``: a ``postgresql://`` URL or ``key=value`` string; default
        ``$VIGGLE_JOURNAL_DSN``, else libpq's defaults (``PG*`` variables, ``~/.pgpass``).
        ``account``: ``api_key_fingerprint(api_key)``. ``clock``: epoch seconds, for leases.
        ``connect_timeout`` in seconds.

        Raises ``JournalAccountError`` if the ledger belongs to another account,
        ``JournalFormatError`` for a schema newer than this library's, ``JournalWriteError``
        when the server cannot be reached or written (naming the DSN without its password).
        """
        if not account:
            raise ValueError("account: pass api_key_fingerprint(api_key), not an empty string")
        conninfo = os.environ.get("VIGGLE_JOURNAL_DSN", "") if dsn is None else dsn
        display, secrets = _display(conninfo)
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            conninfo, min_size=1, max_size=max_connections, open=False,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            name="viggle-journal")
        store = cls(pool, schema=schema, ledger=ledger, display=display, secrets=secrets,
                    clock=clock)
        try:
            with anyio.CancelScope(shield=True):
                try:
                    await pool.open(wait=True, timeout=connect_timeout)
                except psycopg_pool.PoolTimeout as exc:
                    raise JournalWriteError(
                        display, store._scrub(f"cannot connect within {connect_timeout:g} s "
                                              f"({exc})"), action="open") from None
            await store._prepare(account)
        except BaseException:
            await store.close()
            raise
        return store

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

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

    async def _prepare(self, account: str) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {s}").format(s=self._schema))
            for stmt in _CREATE:
                await conn.execute(self._q(stmt))
            cur = await conn.execute(self._q("SELECT schema_version FROM {s}.meta"))
            row = await cur.fetchone()
            version = POSTGRES_SCHEMA_VERSION if row is None else int(row[0])
            if version > POSTGRES_SCHEMA_VERSION:
                raise JournalFormatError(
                    f"the journal {self.dsn!r} has schema version {version}, written by a newer "
                    f"viggle-async; this version reads up to {POSTGRES_SCHEMA_VERSION}: upgrade "
                    "viggle-async")
            for v in range(version, POSTGRES_SCHEMA_VERSION):
                for stmt in MIGRATIONS[v]:
                    await conn.execute(self._q(stmt))
            await conn.execute(self._q(
                "INSERT INTO {s}.meta (id, schema_version) VALUES (1, %s) ON CONFLICT (id) "
                "DO UPDATE SET schema_version = excluded.schema_version"),
                (POSTGRES_SCHEMA_VERSION,))
            await conn.execute(self._q(
                "INSERT INTO {s}.ledgers (ledger, account) VALUES (%s, %s) "
                "ON CONFLICT (ledger) DO NOTHING"), (self.ledger, account))
            cur = await conn.execute(self._q("SELECT account FROM {s}.ledgers WHERE ledger = %s"),
                                     (self.ledger,))
            owner = await cur.fetchone()
            if owner is None or owner[0] != account:
                raise JournalAccountError(
                    f"the ledger {self.ledger!r} in {self.dsn!r} belongs to another API key; "
                    "use that key, or another ledger for this one")

        await self._run(work, action="open")

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
                f"INSERT INTO {{s}}.entries ({cols}) VALUES ({', '.join(['%s'] * 12)}) "
                "ON CONFLICT (ledger, key) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])),
                _to_params(self.ledger, new))
            return new

        return await self._run(work, action="write")

    async def _select(self, conn: psycopg.AsyncConnection[Any], key: str) -> JournalEntry | None:
        cur = await conn.execute(self._q(
            f"SELECT {', '.join(_COLUMNS)} FROM {{s}}.entries WHERE ledger = %s AND key = %s"),
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
                f"SELECT {', '.join(_COLUMNS)} FROM {{s}}.entries WHERE ledger = %s "
                "ORDER BY seq"), (self.ledger,))
            return [_from_row(tuple(r)) for r in await cur.fetchall()]

        return await self._run(work, action="read")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                if self._inflight:
                    await asyncio.wait(set(self._inflight))
                await pool.close()

    # --- AssetIndex -----------------------------------------------------------------------

    async def find_asset(self, account: str, content_hash: str) -> str | None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> str | None:
            cur = await conn.execute(self._q(
                "SELECT asset_id FROM {s}.assets WHERE account = %s AND content_hash = %s"),
                (account, content_hash))
            row = await cur.fetchone()
            return None if row is None else str(row[0])

        return await self._run(work, action="read")

    async def remember_asset(self, account: str, content_hash: str, asset_id: str) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(self._q(
                "INSERT INTO {s}.assets (account, content_hash, asset_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (account, content_hash) DO UPDATE SET asset_id = excluded.asset_id"),
                (account, content_hash, asset_id))

        await self._run(work, action="write")

    async def forget_asset(self, account: str, content_hash: str) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(self._q(
                "DELETE FROM {s}.assets WHERE account = %s AND content_hash = %s"),
                (account, content_hash))

        await self._run(work, action="write")

    # --- LeaseStore -----------------------------------------------------------------------

    async def acquire_lease(self, key: str, owner: str, ttl: float) -> bool:
        now = self._clock()

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(self._q(
                "INSERT INTO {s}.leases (ledger, key, owner, expires_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (ledger, key) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at "
                "WHERE {s}.leases.owner = excluded.owner OR {s}.leases.expires_at <= %s "
                "RETURNING owner"), (self.ledger, key, owner, now + ttl, now))
            return await cur.fetchone() is not None

        return await self._run(work, action="write")

    async def release_lease(self, key: str, owner: str) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(self._q(
                "DELETE FROM {s}.leases WHERE ledger = %s AND key = %s AND owner = %s"),
                (self.ledger, key, owner))

        await self._run(work, action="write")


async def open_postgres_journal(dsn: str | None = None, *, account: str,
                                ledger: str = "default", **options: Any) -> Journal:
    """``Journal(await PostgresJournalStore.open(...))``; see ``PostgresJournalStore.open``."""
    return Journal(await PostgresJournalStore.open(dsn, account=account, ledger=ledger,
                                                   **options))
