"""``PostgresJournalStore``: a journal store in PostgreSQL, for many workers on one ledger.

Behind the same ``JournalStore`` contract as the other stores (the state machine stays in
``Journal``), plus ``AssetIndex`` and ``LeaseStore``.

One round trip per transition (docs/scale-out.md, "Ledger round trips per row"). A
``Transition`` is an opaque pure function of the old entry, so ``apply`` is a
compare-and-swap: the store remembers the entry it last read or wrote for each key (none:
"no entry yet"), computes the new entry from that, and writes it in one statement (an
autocommit transaction) only if every column stored is still what it was computed from:
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for a new key, ``UPDATE ... WHERE <the old
columns> RETURNING`` otherwise. When the statement changed nothing (another worker moved the
entry), or the transition refuses or makes no change on a remembered entry, the store reads
the entry and decides on that: a refusal then raises the contract's error naming the state
found. After a few lost swaps on one key it falls back to a transaction holding the key's
advisory lock across read and write, so a writer is never starved. Every write takes that
lock (see ``_swap``), so applies on one key are serialised across every connection and
process, also with the stores of earlier releases: of 20 workers moving a key from intent
to sending at once, exactly one wins and the others see its state. A row's usual life
(read, intent, sending, submitted, final) is 5 statements and no BEGIN/COMMIT.

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
from collections import OrderedDict
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
# SQL types of ("ledger", *_COLUMNS), cast explicitly: an INSERT ... SELECT does not take a
# parameter's type from its target column, and None or [] alone carry no type.
_TYPES = ("text",) * 7 + ("text[]", "text", "integer", "double precision", "double precision")
_INSERT_COLS = ", ".join(("ledger", *_COLUMNS))
_INSERT_VALUES = ", ".join(f"%s::{t}" for t in _TYPES)
_SET_NEW = ", ".join(f"{c} = %s::{t}" for c, t in zip(_COLUMNS[1:], _TYPES[2:], strict=True))
# Every column but the key: a swap writes only over exactly the entry it was computed from.
# Floats go out as their repr and are read back in binary (``_select``): exact both ways,
# so equal means equal.
_WHERE_OLD = " AND ".join(f"{c} IS NOT DISTINCT FROM %s::{t}"
                          for c, t in zip(_COLUMNS[1:], _TYPES[2:], strict=True))
#: Swaps tried before ``apply`` waits for the key's lock instead (a key many writers race on).
_CAS_TRIES = 3
#: Entries a store remembers (its guesses for the next transition), most recent kept.
_KNOWN_MAX = 10_000


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
        self._known: OrderedDict[str, JournalEntry] = OrderedDict()

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
            # No transaction block: the pool's connections autocommit, so each statement is
            # one transaction and one round trip (BEGIN/COMMIT would be two more). The one
            # work that needs a block (_apply_locked) opens its own.
            async with pool.connection() as conn:
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
        """One transition in one statement when this store's last sight of ``key`` is still
        what the database holds; otherwise a read and another try (see the module doc)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> JournalEntry:
            # Absent from the cache: guess "no entry" (a first record_intent, the common case).
            expected, verified = self._known.get(key), False
            for _ in range(_CAS_TRIES):
                try:
                    new = transition(expected)
                except Exception:
                    if verified:
                        raise  # refused on what the database held: the contract's error
                    # Refused on a guess: decide on what is stored instead.
                    expected, verified = await self._select(conn, key), True
                    continue
                if new is None:
                    if not verified:
                        # "No change" on a guess: confirm it on what is stored.
                        expected, verified = await self._select(conn, key), True
                        continue
                    if expected is None:
                        raise JournalError(
                            f"{key!r}: a transition returned no change for no entry")
                    return expected
                if await self._swap(conn, key, expected, new):
                    self._remember(key, new)
                    return new
                # Changed nothing: the entry moved on (another worker) since we saw it.
                expected, verified = await self._select(conn, key), True
            # Still racing after a few tries (many writers on one key): wait our turn.
            return await self._apply_locked(conn, key, transition)

        return await self._run(work, action="write")

    async def _swap(self, conn: psycopg.AsyncConnection[Any], key: str,
                    expected: JournalEntry | None, new: JournalEntry) -> bool:
        """Write ``new`` if the stored entry is still ``expected`` (compare-and-swap), in one
        statement and so one autocommit transaction. True if it was written.

        Each statement also takes the key's transaction-scoped advisory lock, the lock
        ``_apply_locked`` (and the stores of earlier releases, which read then upsert under
        it) hold across their read and write: while one of those is between its read and its
        write, this statement waits, then finds the entry changed and writes nothing; and
        theirs cannot read until this one committed. The UPDATE itself re-checks its WHERE
        on the newest committed row (READ COMMITTED), so two swaps never both win."""
        lock = _lock_id(self.ledger, key)
        if expected is None:
            cur = await conn.execute(self._q(
                "WITH lk AS MATERIALIZED (SELECT pg_advisory_xact_lock(%s)) "
                f"INSERT INTO {{s}}.journal_entries ({_INSERT_COLS}) "
                f"SELECT {_INSERT_VALUES} FROM lk "
                "ON CONFLICT (ledger, key) DO NOTHING RETURNING 1"),
                (lock, *_to_params(self.ledger, new)))
        else:
            cur = await conn.execute(self._q(
                "WITH lk AS MATERIALIZED (SELECT pg_advisory_xact_lock(%s)) "
                f"UPDATE {{s}}.journal_entries SET {_SET_NEW} FROM lk "
                f"WHERE ledger = %s AND key = %s AND {_WHERE_OLD} RETURNING 1"),
                (lock, *_to_params(self.ledger, new)[2:], self.ledger, key,
                 *_to_params(self.ledger, expected)[2:]))
        return await cur.fetchone() is not None

    async def _apply_locked(self, conn: psycopg.AsyncConnection[Any], key: str,
                            transition: Transition) -> JournalEntry:
        # The bounded path: a transaction that holds the key's advisory lock across read and
        # write, so it cannot lose to another swap (they take the same lock).
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_id(self.ledger, key),))
            old = await self._select(conn, key)
            new = transition(old)
            if new is None:
                if old is None:
                    raise JournalError(f"{key!r}: a transition returned no change for no entry")
                return old
            await conn.execute(self._q(
                f"INSERT INTO {{s}}.journal_entries ({_INSERT_COLS}) "
                f"VALUES ({', '.join(['%s'] * 12)}) "
                "ON CONFLICT (ledger, key) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])),
                _to_params(self.ledger, new))
        self._remember(key, new)
        return new

    def _remember(self, key: str, entry: JournalEntry | None) -> None:
        # What this store last saw of a key: the next transition's guess. Bounded, oldest out;
        # a stale guess costs a read, never a wrong write (the swap compares every column).
        known = self._known
        if entry is None:  # the default guess: not worth a slot
            known.pop(key, None)
            return
        known[key] = entry
        known.move_to_end(key)
        if len(known) > _KNOWN_MAX:
            known.popitem(last=False)

    async def _select(self, conn: psycopg.AsyncConnection[Any], key: str) -> JournalEntry | None:
        # Binary results: a float8 read back exactly whatever the server's
        # extra_float_digits, so a swap built on this read compares equal to what is stored.
        cur = await conn.execute(self._q(
            f"SELECT {', '.join(_COLUMNS)} FROM {{s}}.journal_entries "
            "WHERE ledger = %s AND key = %s"),
            (self.ledger, key), binary=True)
        row = await cur.fetchone()
        entry = None if row is None else _from_row(tuple(row))
        self._remember(key, entry)
        return entry

    async def get(self, key: str) -> JournalEntry | None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> JournalEntry | None:
            return await self._select(conn, key)

        return await self._run(work, action="read")

    async def entries(self) -> list[JournalEntry]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[JournalEntry]:
            cur = await conn.execute(self._q(
                f"SELECT {', '.join(_COLUMNS)} FROM {{s}}.journal_entries WHERE ledger = %s "
                "ORDER BY seq"), (self.ledger,), binary=True)
            found = [_from_row(tuple(r)) for r in await cur.fetchall()]
            for entry in found[-_KNOWN_MAX:]:
                self._remember(entry.key, entry)
            return found

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
