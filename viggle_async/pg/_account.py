"""``AccountState`` shared by every process of one account, in the PostgreSQL ledger.

One row (``account``) holds what the in-process ``LocalAccountState`` keeps in fields:
the committed credits and the run's budget, the stop reason (402), one
``creates_paused_until`` and one ``polls_paused_until`` for everyone (429, 5xx with
Retry-After), and the fast-capacity gate (docs/api/client-rules.md#create-retries,
docs/api/errors.md, docs/api/credits.md#costs). Each method is one
short statement or transaction, so processes never keep a copy.

The poll rate cap is a GCRA bucket in its own row (``poll_cap``, see ``_account``): one
statement per batch of polls, holding nothing per worker, so a dead worker leaves no
tokens behind.

Time: the supervisor speaks its own clock's seconds (a monotonic clock, different in
every process), the ledger stores the database's ``now()``. Each call converts through
the offset between the two at that moment, so leases and pauses use one clock: the
database's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, LiteralString

import anyio
import psycopg

from viggle_async._clock import Clock, SystemClock

from ._ledger import PostgresLedger

__all__ = ["PostgresAccountState"]


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PostgresAccountState:
    """``AccountState`` across processes, stored in ``ledger``'s schema.

    ``budget``: this worker's own credit budget (credits, None: none); it can only lower
    the run's budget set with ``ledger.set_budget`` (the lower of the two applies).
    ``clock``: the supervisor's clock (default: the event loop's). ``lease``: seconds a
    fast-capacity probe slot stays held without renewal; the holder renews it every
    ``lease / 3`` seconds, so a worker that dies holding it blocks the others at most this
    long. ``retry_interval``: seconds between
    attempts to take a held probe slot. ``worker_id``: this process's name in the probe
    lease, unique per process (default: host:pid:random); use one instance per process.

    Reservations: ``reserve``/``refund``/``settle_fallback`` take an optional ``owner``
    (the manifest row's key). Keyed reservations are idempotent: the worker that resumes a
    dead worker's row inherits its reservation instead of reserving again, and a double
    refund gives back once. Unkeyed ones behave as in ``LocalAccountState``. A dead
    worker's reservation is never released by a timeout: its create may have reached the
    API, and only a documented refusal proves no job exists.

    Errors: psycopg's ``OperationalError`` when the database is unreachable mid-run.
    """

    def __init__(self, ledger: PostgresLedger, *, budget: float | None = None,
                 clock: Clock | None = None, lease: float = 120.0,
                 retry_interval: float = 0.25, worker_id: str | None = None) -> None:
        if lease <= 0 or retry_interval <= 0:
            raise ValueError("lease and retry_interval: seconds, > 0")
        self._ledger = ledger
        self._budget = budget
        self._clock: Clock = clock or SystemClock()
        self._lease = lease
        self._retry = retry_interval
        self.worker_id = worker_id or _default_worker_id()
        # The database slot is per worker_id, so the tasks of this process queue here
        # first: one probe per process, and one across processes by the lease.
        self._local_probe = anyio.Lock()
        # Set before the first await of stop(): the next create of this process, which
        # may take the upload slot while the stop is still on its way to the database,
        # sees it at once (with LocalAccountState that step never yields).
        self._stopped_here: str | None = None
        # The account-wide totals as last read or written by this process (no I/O to
        # read them: Supervisor.credits_committed and .capacity_rejections are sync).
        self._seen_committed = 0
        self._seen_rejections = 0

    def __repr__(self) -> str:
        return f"PostgresAccountState({self._ledger!r}, worker_id={self.worker_id!r})"

    async def _fetch(self, template: LiteralString,
                     params: tuple[Any, ...] | dict[str, Any] = (),
                     **identifiers: str) -> tuple[Any, ...]:
        async with self._ledger.pool.connection() as conn:
            cur = await conn.execute(self._ledger.q(template, **identifiers), params)
            row = await cur.fetchone()
        assert row is not None
        return tuple(row)

    # -- credits ------------------------------------------------------------------------
    async def reserve(self, credits: int | None, *, owner: str | None = None) -> str | None:
        """Reserve ``credits`` for one create, atomically against the committed total of
        every worker. Returns why not (stopped, over the budget, unknown cost while a
        budget is set), or None when reserved (or already reserved for ``owner``)."""
        if self._stopped_here is not None:
            return self._stopped_here
        # One statement, one round trip (it was a transaction of six: BEGIN, four
        # statements, COMMIT; benchmarks B7). FOR UPDATE on the account row queues
        # concurrent reserves, so the check and the increment are one step for all
        # processes. The reservation is inserted first with ON CONFLICT DO NOTHING and the
        # total moves only if that insert happened: a worker racing another for the same
        # owner (a redelivered row) inherits the winner's reservation, never adds twice.
        (stopped, committed, budget, ok, inserted, total) = await self._fetch(
            """WITH a AS (
                   SELECT stopped, committed, least(budget, %(own)s::float8) AS budget
                   FROM {s}.account WHERE id = 1 FOR UPDATE),
               d AS (
                   SELECT a.*, a.stopped IS NULL AND (a.budget IS NULL OR (
                       %(credits)s::bigint IS NOT NULL
                       AND a.committed + %(credits)s::bigint <= a.budget)) AS ok
                   FROM a),
               i AS (
                   INSERT INTO {s}.reservations (owner, credits)
                   SELECT %(owner)s::text, coalesce(%(credits)s::bigint, 0) FROM d
                   WHERE d.ok AND %(owner)s::text IS NOT NULL
                   ON CONFLICT (owner) DO NOTHING RETURNING owner),
               u AS (
                   UPDATE {s}.account AS acc SET committed = acc.committed
                       + coalesce(%(credits)s::bigint, 0)
                   FROM d WHERE acc.id = 1 AND d.ok
                       AND (%(owner)s::text IS NULL OR EXISTS (SELECT 1 FROM i))
                   RETURNING acc.committed)
               SELECT d.stopped, d.committed, d.budget, d.ok, EXISTS (SELECT 1 FROM i),
                      (SELECT committed FROM u)
               FROM d""",
            {"own": self._budget, "credits": credits, "owner": owner})
        if stopped:
            return str(stopped)
        if total is not None:
            self._seen_committed = int(total)
            return None
        if owner is not None and await self._holds(owner):
            return None  # inherited from the worker that held this row before
        if ok and owner is not None and not inserted:
            return None  # raced the same owner's reservation and lost: it holds it
        if credits is None:
            return ("credit_budget is set but this render's length is unknown (a "
                    "video URL, or a scene whose duration the API did not report); "
                    "pass estimated_seconds=")
        return f"over credit_budget: {committed} committed + {credits} > {budget:g}"

    async def _holds(self, owner: str) -> bool:
        async with self._ledger.pool.connection() as conn:
            cur = await conn.execute(
                self._ledger.q("SELECT 1 FROM {s}.reservations WHERE owner = %s"), (owner,))
            return await cur.fetchone() is not None

    async def refund(self, credits: int, *, owner: str | None = None) -> None:
        """Give back a reservation (the create provably made no job, or the API refunded
        a failed/cancelled job, docs/api/credits.md#costs). With ``owner``, gives back what that
        row holds, once."""
        if owner is None:
            (now,) = await self._fetch("UPDATE {s}.account SET committed = committed - %s "
                                       "WHERE id = 1 RETURNING committed", (credits,))
            self._seen_committed = int(now)
            return
        (now,) = await self._fetch(
            """WITH r AS (DELETE FROM {s}.reservations WHERE owner = %s RETURNING credits)
               UPDATE {s}.account SET committed = committed - coalesce(
                   (SELECT sum(credits) FROM r), 0) WHERE id = 1 RETURNING committed""",
            (owner,))
        self._seen_committed = int(now)

    async def settle_fallback(self, credits: int, *, owner: str | None = None) -> int:
        """A fast render reserved at ``credits`` went standard: keep half
        (docs/api/credits.md#costs); returns
        what is now committed for it. With ``owner``, settles that row's reservation once."""
        standard = credits // 2
        if owner is None:
            (now,) = await self._fetch("UPDATE {s}.account SET committed = committed - %s "
                                       "WHERE id = 1 RETURNING committed",
                                       (credits - standard,))
            self._seen_committed = int(now)
            return standard
        q = self._ledger.q
        async with self._ledger.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                q("SELECT credits FROM {s}.reservations WHERE owner = %s FOR UPDATE"), (owner,))
            row = await cur.fetchone()
            if row is None or row[0] <= standard:
                return standard if row is None else int(row[0])
            await conn.execute(
                q("UPDATE {s}.reservations SET credits = %s WHERE owner = %s"),
                (standard, owner))
            cur = await conn.execute(
                q("UPDATE {s}.account SET committed = committed - %s WHERE id = 1 "
                  "RETURNING committed"), (int(row[0]) - standard,))
            self._seen_committed = int((await cur.fetchone() or (0,))[0])
        return standard

    async def committed(self) -> int:
        """Credits reserved and not refunded, by all workers."""
        self._seen_committed = int(
            (await self._fetch("SELECT committed FROM {s}.account WHERE id = 1"))[0])
        return self._seen_committed

    @property
    def committed_now(self) -> int:
        """``committed()`` as this process last read or changed it (no I/O)."""
        return self._seen_committed

    @property
    def rejections_now(self) -> int:
        """``capacity_rejections()`` as this process last read or changed it (no I/O)."""
        return self._seen_rejections

    # -- stop and pauses ----------------------------------------------------------------
    async def stop(self, reason: str) -> None:
        """Stop new creates for every worker (a 402); the first reason stays."""
        if self._stopped_here is None:
            self._stopped_here = reason
        (first,) = await self._fetch("UPDATE {s}.account SET stopped = coalesce(stopped, %s) "
                          "WHERE id = 1 RETURNING stopped", (reason,))
        self._stopped_here = str(first)  # the first reason of all workers

    async def stopped(self) -> str | None:
        """Why new creates stopped, or None."""
        if self._stopped_here is not None:
            return self._stopped_here
        value = (await self._fetch("SELECT stopped FROM {s}.account WHERE id = 1"))[0]
        return None if value is None else str(value)

    async def _pause(self, column: str, until: float) -> None:
        if until == -math.inf:
            return
        delay = until - self._clock.now()
        if not math.isfinite(delay):
            raise ValueError(f"pause until {until!r}: clock seconds, finite")
        await self._fetch("UPDATE {s}.account SET {c} = greatest({c}, "
                          "now() + make_interval(secs => %s)) WHERE id = 1 RETURNING {c}",
                          (delay,), c=column)

    async def _paused_until(self, column: str) -> float:
        # One statement returns both ends, so the offset is exact at that instant.
        before = self._clock.now()
        (left,) = await self._fetch(
            "SELECT extract(epoch FROM ({c} - now())) FROM {s}.account WHERE id = 1", c=column)
        return -math.inf if left is None else before + float(left)

    async def pause_creates(self, until: float) -> None:
        """No create before ``until`` (clock seconds) in any worker; only ever extends."""
        await self._pause("creates_paused_until", until)

    async def creates_paused_until(self) -> float:
        """Clock seconds before which no create may go out (-inf: no pause ever)."""
        return await self._paused_until("creates_paused_until")

    async def pause_polls(self, until: float) -> None:
        """No status poll before ``until`` (clock seconds) in any worker; only extends."""
        await self._pause("polls_paused_until", until)

    async def polls_paused_until(self) -> float:
        """Clock seconds before which no poll may go out (-inf: no pause ever)."""
        return await self._paused_until("polls_paused_until")

    # -- fast-capacity gate -------------------------------------------------------------
    async def fast_open(self) -> bool:
        """True once a fast create was accepted and none refused since. False while the
        state is unknown (no fast create answered yet): the first fast create of the whole
        run goes through ``probe()``, so N workers starting in an outage send one probe."""
        return bool((await self._fetch(
            "SELECT fast_state = 'open' FROM {s}.account WHERE id = 1"))[0])

    async def _try_probe(self) -> tuple[bool, int] | None:
        """(open, failures) if the gate is open or the slot is now ours; None if held."""
        async with self._ledger.pool.connection() as conn:
            cur = await conn.execute(self._ledger.q(
                """UPDATE {s}.account SET
                       probe_holder = CASE WHEN fast_state = 'open' THEN probe_holder
                                      ELSE %(me)s END,
                       probe_expires = CASE WHEN fast_state = 'open' THEN probe_expires
                                       ELSE now() + make_interval(secs => %(lease)s) END
                   WHERE id = 1 AND (fast_state = 'open' OR probe_holder IS NULL
                                     OR probe_expires <= now())
                   RETURNING fast_state = 'open', failures"""),
                {"me": self.worker_id, "lease": self._lease})
            row = await cur.fetchone()
        return None if row is None else (bool(row[0]), int(row[1]))

    async def _release_probe(self) -> None:
        async with self._ledger.pool.connection() as conn:
            await conn.execute(self._ledger.q(
                """UPDATE {s}.account SET probe_holder = NULL, probe_expires = NULL
                   WHERE id = 1 AND probe_holder = %s"""), (self.worker_id,))

    async def _renew_probe(self) -> None:
        # Renew at a third of the lease, so a live holder keeps the slot through a long
        # upload; stop as soon as the slot is no longer ours (taken over after a stall).
        while True:
            await self._clock.sleep_until(self._clock.now() + self._lease / 3)
            try:
                async with self._ledger.pool.connection() as conn:
                    cur = await conn.execute(self._ledger.q(
                        """UPDATE {s}.account
                           SET probe_expires = now() + make_interval(secs => %s)
                           WHERE id = 1 AND probe_holder = %s"""),
                        (self._lease, self.worker_id))
            except psycopg.Error:
                continue  # the database is away: the lease may lapse, which is safe
            if cur.rowcount != 1:
                return

    @asynccontextmanager
    async def probe(self) -> AsyncIterator[int | None]:
        """Hold the one fast-capacity probe slot of all workers. Yields the refusals so
        far while the gate is closed or unknown, or None if it opened while we waited
        (then nothing is held). The slot is a lease of ``lease`` seconds, renewed while
        held; a slot whose holder died is taken over once its lease expires."""
        async with self._local_probe:
            while (got := await self._try_probe()) is None:
                await self._clock.sleep_until(self._clock.now() + self._retry)
            is_open, failures = got
            if is_open:
                yield None
                return
            # A plain asyncio task, not an anyio task group: a group would wrap the
            # caller's exceptions in an ExceptionGroup. psycopg's async API needs asyncio.
            renewal = asyncio.get_running_loop().create_task(self._renew_probe())
            try:
                yield failures
            finally:
                renewal.cancel()
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewal
                    await self._release_probe()

    async def fast_refused(self) -> None:
        """A fast create was refused for capacity: close the gate for every worker."""
        (seen,) = await self._fetch("""UPDATE {s}.account SET fast_state = 'closed',
                                 failures = failures + 1, rejections = rejections + 1
                             WHERE id = 1 RETURNING rejections""")
        self._seen_rejections = int(seen)

    async def fast_accepted(self) -> None:
        """A fast create was accepted: open the gate for every worker (waiters in
        ``probe()`` are released on their next attempt)."""
        await self._fetch("""UPDATE {s}.account SET fast_state = 'open', failures = 0
                             WHERE id = 1 RETURNING failures""")

    # -- poll rate cap ------------------------------------------------------------------
    async def take_polls(self, n: int, now: float) -> tuple[int, float]:
        """Take up to ``n`` poll starts from the shared cap (``ledger.set_poll_rate``;
        20/s with a burst of 3 by default), in one statement. Returns ``(granted,
        next_at)``, ``next_at`` in clock seconds; see ``AccountState.take_polls``."""
        if n < 1:
            raise ValueError(f"take_polls: n={n!r}. Fix: ask for at least 1 poll start")
        # One statement, so one round trip: lock the row, grant what fits before
        # now() + (burst - 1) / rate at even spacing from max(tat, now()), move tat past
        # the grant. now() of a statement that waited for the lock is older than the
        # winner's: that only grants less.
        (granted, wait) = await self._fetch(
            """WITH b AS (
                   SELECT rate, burst, greatest(coalesce(tat, now()), now()) AS base
                   FROM {s}.poll_cap WHERE id = 1 FOR UPDATE),
               g AS (
                   SELECT rate, burst, base, CASE WHEN rate IS NULL THEN %s::int
                       ELSE least(%s::int, greatest(0, floor(
                           extract(epoch FROM now() - base) * rate + burst + 1e-9)))::int
                       END AS granted
                   FROM b),
               u AS (
                   UPDATE {s}.poll_cap p SET tat = CASE WHEN g.rate IS NULL THEN p.tat
                       ELSE g.base + make_interval(secs => g.granted / g.rate) END
                   FROM g WHERE p.id = 1 RETURNING p.tat)
               SELECT g.granted, CASE WHEN g.rate IS NULL THEN 0.0 ELSE greatest(0.0,
                   extract(epoch FROM (SELECT tat FROM u) - now())::float8
                   - (g.burst - 1) / g.rate) END
               FROM g""", (n, n))
        # Converted after the answer, so next_at errs late (by the round trip), never early.
        return int(granted), self._clock.now() + float(wait)

    async def capacity_rejections(self) -> int:
        """Fast-capacity refusals seen by all workers."""
        self._seen_rejections = int((await self._fetch(
            "SELECT rejections FROM {s}.account WHERE id = 1"))[0])
        return self._seen_rejections


