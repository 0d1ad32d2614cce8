"""The shared ledger: one PostgreSQL schema that every worker of one account uses.

``PostgresLedger`` owns an async connection pool (psycopg 3 + psycopg_pool), creates and
migrates its schema, and binds the schema to the API key that created it. Account-wide
state (``PostgresAccountState``) and the asset-reuse index live in the same schema.

Layering: this is a store, beside the journal stores; it imports psycopg, never aiohttp,
and never the client.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import warnings
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, LiteralString, Self

import attrs
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from viggle_async._account import check_poll_cap
from viggle_async._journal import api_key_fingerprint

from ._dsn import redact_dsn, resolve_dsn, scrub
from ._errors import (
    LedgerConnectionError,
    LedgerError,
    LedgerKeyMismatchError,
    LedgerSchemaTooNewError,
)

__all__ = ["SCHEMA_VERSION", "AccountSummary", "AssetClaim", "PostgresLedger", "RunCredits"]

# Both halves of the two-int advisory lock that serialises migrations of one schema:
# a constant class ("Vigg") and hashtext(schema name).
_LOCK_CLASS: Final = 0x56696767

# Each migration is a list of statements run in one transaction; ``{s}`` is the schema.
# Append only: a released migration is never edited.
_MIGRATIONS: Final[tuple[tuple[LiteralString, ...], ...]] = (
    (  # 1: key binding, account state, keyed reservations, asset-reuse index
        """CREATE TABLE {s}.ledger (
               id int PRIMARY KEY CHECK (id = 1),
               salt bytea NOT NULL,
               key_fingerprint bytea NOT NULL,
               created_at timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE {s}.account (
               id int PRIMARY KEY CHECK (id = 1),
               budget double precision,
               committed bigint NOT NULL DEFAULT 0,
               stopped text,
               creates_paused_until timestamptz,
               polls_paused_until timestamptz,
               fast_state text NOT NULL DEFAULT 'unknown'
                   CHECK (fast_state IN ('unknown', 'open', 'closed')),
               failures integer NOT NULL DEFAULT 0,
               rejections bigint NOT NULL DEFAULT 0,
               probe_holder text,
               probe_expires timestamptz)""",
        "INSERT INTO {s}.account (id) VALUES (1)",
        """CREATE TABLE {s}.reservations (
               owner text PRIMARY KEY,
               credits bigint NOT NULL CHECK (credits >= 0),
               created_at timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE {s}.assets (
               content_hash text PRIMARY KEY,
               owner text NOT NULL,
               asset_id text,
               claimed_at timestamptz NOT NULL DEFAULT now(),
               ready_at timestamptz)""",
    ),
    (  # 2: the journal store (PostgresJournalStore) beside the account state
        """CREATE TABLE {s}.journal_entries (
               seq bigserial, ledger text NOT NULL, key text NOT NULL, kind text NOT NULL,
               fingerprint text NOT NULL,
               state text NOT NULL
                   CHECK (state IN ('intent', 'sending', 'submitted', 'final')),
               job_id text, final_status text, outputs text[] NOT NULL, error text,
               attempts integer NOT NULL, created_at double precision NOT NULL,
               updated_at double precision NOT NULL, PRIMARY KEY (ledger, key))""",
        """CREATE TABLE {s}.journal_assets (
               account text NOT NULL, content_hash text NOT NULL, asset_id text NOT NULL,
               PRIMARY KEY (account, content_hash))""",
        """CREATE TABLE {s}.journal_leases (
               ledger text NOT NULL, key text NOT NULL, owner text NOT NULL,
               expires_at double precision NOT NULL, PRIMARY KEY (ledger, key))""",
    ),
    (  # 3: the rows of distributed runs (bulk --enqueue, viggle-async worker)
        """CREATE TABLE {s}.dist_rows (
               run text NOT NULL, key text NOT NULL, seq integer NOT NULL,
               kind text NOT NULL, spec jsonb NOT NULL, deps text[] NOT NULL,
               state text NOT NULL DEFAULT 'waiting'
                   CHECK (state IN ('waiting', 'queued', 'done', 'failed')),
               asset_id text, outcome jsonb,
               updated_at timestamptz NOT NULL DEFAULT now(),
               PRIMARY KEY (run, key))""",
    ),
    (  # 4: the shared poll rate cap (PostgresAccountState.take_polls), a GCRA bucket
        # in a row of its own, so taking polls never queues behind a credit reserve on
        # the account row. ``rate`` NULL: no shared cap. ``tat``: when the next start
        # would be due at exactly ``rate``. 20/s with a burst of 3 (1 + 0.1 s worth), as
        # in one process by default.
        """CREATE TABLE {s}.poll_cap (
               id int PRIMARY KEY CHECK (id = 1),
               rate double precision CHECK (rate > 0),
               burst double precision NOT NULL CHECK (burst >= 1),
               tat timestamptz)""",
        "INSERT INTO {s}.poll_cap (id, rate, burst) VALUES (1, 20.0, 3.0)",
    ),
    (  # 5: each distributed run's own budget and committed credits (bulk --enqueue
        # --budget sets one run's). A reservation remembers its run, so a refund or a
        # fast fallback settles that run's total too. Reservations made before this
        # migration are attributed to the run of the row whose journal key (RUN/KEY)
        # they carry. account.budget stays: from now on it is the account-wide cap
        # (set_account_budget); a value an older --enqueue --budget left there is kept,
        # never loosened behind the user's back.
        """CREATE TABLE {s}.run_credits (
               run text PRIMARY KEY,
               budget double precision CHECK (budget >= 0),
               committed bigint NOT NULL DEFAULT 0)""",
        "ALTER TABLE {s}.reservations ADD COLUMN run text",
        """UPDATE {s}.reservations AS r SET run = d.run FROM {s}.dist_rows AS d
           WHERE r.owner = d.run || '/' || d.key""",
        """INSERT INTO {s}.run_credits (run, committed)
           SELECT run, sum(credits) FROM {s}.reservations WHERE run IS NOT NULL
           GROUP BY run""",
        """INSERT INTO {s}.run_credits (run) SELECT DISTINCT run FROM {s}.dist_rows
           ON CONFLICT (run) DO NOTHING""",
    ),
)

#: The schema version this library writes (and the newest it can read).
SCHEMA_VERSION: Final = len(_MIGRATIONS)

def _check_budget(credits: float | None) -> None:
    if credits is not None and not credits >= 0:
        raise ValueError(f"credit_budget: {credits!r} is negative. Fix: pass >= 0 or None")


_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@attrs.frozen
class AssetClaim:
    """The answer to ``claim_asset``.

    ``mine``: the caller's ``owner`` holds the claim (it just won it, or it won it before,
    e.g. a worker resuming the same manifest row): create the asset (or resume its
    journaled create) and call ``record_asset``. Otherwise ``asset_id`` is the ready asset
    to reuse, or None while ``owner`` (another row) is still creating it.
    """

    mine: bool
    owner: str
    asset_id: str | None


@attrs.frozen
class AccountSummary:
    """The shared account state as ``bulk --status`` shows it.

    ``budget`` and ``committed`` are account-wide credits, over every run and every
    supervisor on this ledger: the account-wide cap (``set_account_budget``; None: no
    cap) and what all of them reserved and did not get back. A run's own budget and
    total are ``PostgresLedger.run_credits(run)``. Pauses are the
    seconds left (0.0: none). ``fast_state`` is ``"unknown"``, ``"open"`` or ``"closed"``;
    ``probe_holder`` the worker holding an unexpired probe lease, or None.
    ``poll_rate``: the shared poll rate cap (polls per second), or None.
    """

    budget: float | None
    committed: int
    stopped: str | None
    creates_paused_for: float
    polls_paused_for: float
    fast_state: str
    capacity_rejections: int
    probe_holder: str | None
    #: The shared poll rate cap (polls per second, None: none).
    poll_rate: float | None = None


@attrs.frozen
class RunCredits:
    """One distributed run's credits (``PostgresLedger.run_credits``).

    ``budget``: the run's own budget in credits (``bulk --enqueue --budget``; None: the
    run has none). ``committed``: credits reserved by the run's rows and not refunded,
    by every worker (a fast render that went standard keeps half).
    """

    run: str
    budget: float | None
    committed: int


def fingerprint(account: str, salt: bytes) -> bytes:
    """HMAC-SHA256 of the account (``api_key_fingerprint(key)``) under the ledger's salt:
    proves "same key" without storing anything that leads back to it. Keyed on the
    account rather than the raw key so that a store given only the account (the journal
    store's ``open(account=...)``) binds the same way as a worker given the key."""
    return hmac.new(salt, account.encode(), hashlib.sha256).digest()


class PostgresLedger:
    """One account's shared ledger in one PostgreSQL schema.

    ``dsn``: a libpq URL or keyword string; None reads ``$VIGGLE_POSTGRES_DSN``, and an
    empty one leaves everything to libpq's ``PG*`` variables and ``.pgpass``.
    ``api_key``: the key of the account; the first ledger opened in ``schema`` binds it,
    later ones with another key raise ``LedgerKeyMismatchError``. ``account``: instead of
    ``api_key``, its ``api_key_fingerprint`` (for code that never holds the key).
    ``schema``: a lower-case identifier; one run (or one account) per schema.
    ``min_size``/``max_size``: pool connections. ``connect_timeout``: seconds to wait
    for the first connection.
    ``salt``: returns n random bytes (a parameter for tests).

    Use as ``async with PostgresLedger(...) as ledger:`` (or ``await open()`` /
    ``await aclose()``). Raises ``LedgerConnectionError``, ``LedgerSchemaTooNewError``,
    ``LedgerKeyMismatchError`` from ``open()``; ``ValueError`` for a bad schema name.
    """

    def __init__(self, dsn: str | None = None, *, api_key: str | None = None,
                 account: str | None = None, schema: str = "viggle",
                 min_size: int = 1, max_size: int = 10, connect_timeout: float = 30.0,
                 environ: Mapping[str, str] | None = None,
                 salt: Callable[[int], bytes] = secrets.token_bytes) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema: {schema!r} is not a lower-case SQL identifier. "
                             "Fix: use letters, digits and underscores, e.g. 'viggle_run1'")
        if not api_key and not account:
            raise ValueError("api_key: empty. Fix: pass the account's API key")
        if api_key and account and account != api_key_fingerprint(api_key):
            raise ValueError("account: not the fingerprint of api_key. Fix: pass only one")
        self._dsn = resolve_dsn(dsn, environ=environ)
        self._account = account or api_key_fingerprint(api_key or "")
        self.schema = schema
        self._min_size, self._max_size = min_size, max_size
        self._connect_timeout = connect_timeout
        self._salt = salt
        self._pool: AsyncConnectionPool[Any] | None = None
        self._secrets: list[str | None] = [api_key]

    @property
    def account(self) -> str:
        """The bound account: ``api_key_fingerprint`` of the key (never the key)."""
        return self._account

    # -- identity ---------------------------------------------------------------------
    @property
    def dsn(self) -> str:
        """The DSN with its password replaced by ``***``."""
        return redact_dsn(self._dsn)

    def __repr__(self) -> str:
        return f"PostgresLedger(dsn={self.dsn!r}, schema={self.schema!r})"

    __str__ = __repr__

    def __getstate__(self) -> None:
        raise TypeError("a PostgresLedger holds a password and an API key: not picklable")

    def q(self, template: LiteralString, **identifiers: str) -> sql.Composed:
        """``template`` with ``{s}`` bound to this ledger's schema and each other
        ``{name}`` to the identifier given for it (all quoted)."""
        names = {k: sql.Identifier(v) for k, v in identifiers.items()}
        return sql.SQL(template).format(s=sql.Identifier(self.schema), **names)

    # -- lifecycle --------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect, create or migrate the schema, check the key, open the pool."""
        if self._pool is not None:
            return
        try:
            params = conninfo_to_dict(self._dsn)
        except psycopg.Error as exc:
            raise self._connection_error("is not a valid PostgreSQL DSN", exc) from None
        self._secrets.append(str(params["password"]) if "password" in params else None)
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=max(1, int(self._connect_timeout)))
        except psycopg.Error as exc:
            raise self._connection_error("cannot connect", exc) from None
        try:
            await self._migrate(conn)
            await self._bind_key(conn)
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self._dsn, min_size=self._min_size, max_size=self._max_size,
            kwargs={"autocommit": True}, open=False, name=f"viggle-{self.schema}")
        try:
            await pool.open(wait=True, timeout=self._connect_timeout)
        except Exception as exc:
            await pool.close()
            raise self._connection_error("cannot open the connection pool", exc) from None
        self._pool = pool

    async def aclose(self) -> None:
        """Close the pool (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        """The open pool; raises ``LedgerError`` before ``open()`` or after ``aclose()``."""
        if self._pool is None:
            raise LedgerError(f"{self!r} is not open. Fix: use `async with` or await open()")
        return self._pool

    def _connection_error(self, what: str, exc: BaseException) -> LedgerConnectionError:
        # libpq may quote parts of the connection string back in its message.
        detail = scrub(str(exc).strip(), self._secrets)
        return LedgerConnectionError(
            f"PostgreSQL ledger {self.dsn!r}: {what}: {detail}", dsn=self.dsn)

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # The advisory lock makes concurrent first starts (N workers launched together)
        # run each migration exactly once: the others wait, then find it applied.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                               (_LOCK_CLASS, self.schema))
            await conn.execute(self.q("CREATE SCHEMA IF NOT EXISTS {s}"))
            await conn.execute(self.q(
                """CREATE TABLE IF NOT EXISTS {s}.schema_version (
                       version integer PRIMARY KEY,
                       applied_at timestamptz NOT NULL DEFAULT now())"""))
            cur = await conn.execute(
                self.q("SELECT coalesce(max(version), 0) FROM {s}.schema_version"))
            row = await cur.fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise LedgerSchemaTooNewError(
                    f"PostgreSQL ledger schema {self.schema!r} is at version {current}, "
                    f"newer than this viggle-async supports ({SCHEMA_VERSION}). Fix: "
                    "upgrade viggle-async on this worker (pip install -U viggle-async)",
                    found=current, supported=SCHEMA_VERSION)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version - 1]:
                    await conn.execute(self.q(statement))
                await conn.execute(
                    self.q("INSERT INTO {s}.schema_version (version) VALUES (%s)"), (version,))

    async def _bind_key(self, conn: psycopg.AsyncConnection[Any]) -> None:
        salt = self._salt(16)
        await conn.execute(
            self.q("""INSERT INTO {s}.ledger (id, salt, key_fingerprint) VALUES (1, %s, %s)
                      ON CONFLICT (id) DO NOTHING"""),
            (salt, fingerprint(self._account, salt)))
        cur = await conn.execute(self.q("SELECT salt, key_fingerprint FROM {s}.ledger"))
        row = await cur.fetchone()
        assert row is not None  # inserted above or by an earlier worker
        if not hmac.compare_digest(fingerprint(self._account, bytes(row[0])), bytes(row[1])):
            raise LedgerKeyMismatchError(
                f"PostgreSQL ledger {self.dsn!r} schema {self.schema!r} belongs to another "
                "API key. Fix: use the API key that created the ledger, or use "
                "another schema for this account")

    # -- budgets ------------------------------------------------------------------------
    async def set_run_budget(self, run: str, credits: float | None) -> float | None:
        """Set run ``run``'s own budget (credits; None: none) and return the one it had.

        Credits committed by the run's rows (reservations whose owner is the journal key
        ``RUN/KEY`` of a row recorded with ``RowBook(ledger, run)``, or made by a
        ``PostgresAccountState(ledger, run=run)``), reserved and not refunded, never
        exceed it, across all workers. Other runs' budgets are untouched.
        ``ValueError`` for a negative amount.
        """
        _check_budget(credits)
        async with self.pool.connection() as conn:
            cur = await conn.execute(self.q(
                """WITH old AS (SELECT budget FROM {s}.run_credits WHERE run = %(run)s),
                        new AS (INSERT INTO {s}.run_credits (run, budget)
                                VALUES (%(run)s, %(budget)s) ON CONFLICT (run)
                                DO UPDATE SET budget = EXCLUDED.budget RETURNING run)
                   SELECT (SELECT budget FROM old), (SELECT count(*) FROM new)"""),
                {"run": run, "budget": credits})
            row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def run_credits(self, run: str) -> RunCredits:
        """Run ``run``'s budget and committed credits (a run never seen: none and 0)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                self.q("SELECT budget, committed FROM {s}.run_credits WHERE run = %s"),
                (run,))
            row = await cur.fetchone()
        if row is None:
            return RunCredits(run, None, 0)
        return RunCredits(run, None if row[0] is None else float(row[0]), int(row[1]))

    async def set_account_budget(self, credits: float | None) -> None:
        """The account-wide cap (credits; None: none) on what every run and every
        supervisor of this ledger commits together, on top of each run's own budget
        (``set_run_budget``) and each worker's. ``ValueError`` for a negative amount."""
        _check_budget(credits)
        async with self.pool.connection() as conn:
            await conn.execute(self.q("UPDATE {s}.account SET budget = %s WHERE id = 1"),
                               (credits,))

    async def account_budget(self) -> float | None:
        """The account-wide cap as stored (credits), or None."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(self.q("SELECT budget FROM {s}.account WHERE id = 1"))
            row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def set_budget(self, credits: float | None) -> None:
        """Deprecated: the account-wide cap, now ``set_account_budget``; a run's own
        budget is ``set_run_budget``."""
        warnings.warn("PostgresLedger.set_budget is account-wide: call set_account_budget "
                      "(or set_run_budget for one run's)", DeprecationWarning, stacklevel=2)
        await self.set_account_budget(credits)

    async def budget(self) -> float | None:
        """Deprecated: ``account_budget()``."""
        warnings.warn("PostgresLedger.budget is account-wide: call account_budget "
                      "(or run_credits for one run's)", DeprecationWarning, stacklevel=2)
        return await self.account_budget()

    async def set_poll_rate(self, rate: float | None, burst: float | None = None) -> None:
        """The shared poll rate cap of every ``PostgresAccountState`` on this ledger:
        ``rate`` status polls started per second across all workers (None: no shared
        cap), of which ``burst`` may start back to back (default ``1 + 0.1 * rate``). A
        worker's own ``poll_rate`` (``Supervisor(poll_rate=...)``, ``worker --poll-rate``)
        can only lower it for that worker. ``ValueError`` for a rate <= 0 or a burst < 1.
        """
        burst = 1.0 if rate is None else check_poll_cap(rate, burst)
        stored = None if rate is None or math.isinf(rate) else float(rate)
        async with self.pool.connection() as conn:
            await conn.execute(self.q("UPDATE {s}.poll_cap SET rate = %s, burst = %s "
                                      "WHERE id = 1"), (stored, burst))

    async def poll_rate(self) -> tuple[float | None, float]:
        """The shared poll rate cap as stored: ``(rate, burst)``; rate None: no cap."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(self.q("SELECT rate, burst FROM {s}.poll_cap WHERE id = 1"))
            row = await cur.fetchone()
        assert row is not None
        return (None if row[0] is None else float(row[0])), float(row[1])

    async def summary(self) -> AccountSummary:
        """The shared account state, read in one statement."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(self.q(
                """SELECT budget, committed, stopped,
                          greatest(0, coalesce(extract(epoch FROM
                              creates_paused_until - now()), 0)),
                          greatest(0, coalesce(extract(epoch FROM
                              polls_paused_until - now()), 0)),
                          fast_state, rejections,
                          CASE WHEN probe_expires > now() THEN probe_holder END,
                          (SELECT rate FROM {s}.poll_cap WHERE id = 1)
                   FROM {s}.account WHERE id = 1"""))
            row = await cur.fetchone()
        assert row is not None
        return AccountSummary(
            budget=None if row[0] is None else float(row[0]), committed=int(row[1]),
            stopped=row[2], creates_paused_for=float(row[3]), polls_paused_for=float(row[4]),
            fast_state=str(row[5]), capacity_rejections=int(row[6]), probe_holder=row[7],
            poll_rate=None if row[8] is None else float(row[8]))

    # -- asset-reuse index --------------------------------------------------------------
    async def claim_asset(self, content_hash: str, owner: str) -> AssetClaim:
        """Claim the right to create the asset whose inputs hash to ``content_hash``.

        ``owner`` is the claiming manifest row's key (not a process), so the worker that
        resumes a dead worker's row inherits its claim and resumes from the journal
        instead of paying again. Atomic across processes: one owner per hash, ever,
        until ``release_asset``.
        """
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                self.q("""INSERT INTO {s}.assets (content_hash, owner) VALUES (%s, %s)
                          ON CONFLICT (content_hash) DO NOTHING RETURNING owner"""),
                (content_hash, owner))
            if await cur.fetchone() is not None:
                return AssetClaim(True, owner, None)
            cur = await conn.execute(
                self.q("SELECT owner, asset_id FROM {s}.assets WHERE content_hash = %s"),
                (content_hash,))
            row = await cur.fetchone()
        if row is None:  # released between our insert and select: try again
            return await self.claim_asset(content_hash, owner)
        return AssetClaim(row[0] == owner, row[0], row[1])

    async def record_asset(self, content_hash: str, owner: str, asset_id: str) -> None:
        """The claimed asset exists: every later claim reuses ``asset_id``. Raises
        ``LedgerError`` if ``owner`` does not hold the claim."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                self.q("""UPDATE {s}.assets SET asset_id = %s, ready_at = now()
                          WHERE content_hash = %s AND owner = %s"""),
                (asset_id, content_hash, owner))
        if cur.rowcount != 1:
            raise LedgerError(f"asset {content_hash!r}: {owner!r} does not hold its claim")

    async def release_asset(self, content_hash: str, owner: str) -> None:
        """Give up a claim whose create provably made nothing (a documented refusal) or
        whose asset failed, so another row may create it. No-op if not held."""
        async with self.pool.connection() as conn:
            await conn.execute(
                self.q("DELETE FROM {s}.assets WHERE content_hash = %s AND owner = %s"),
                (content_hash, owner))
