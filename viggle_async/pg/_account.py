"""``AccountState`` shared by every process of one account, in the PostgreSQL ledger.

One row (``account``) holds what the in-process ``LocalAccountState`` keeps in fields:
the committed credits and the account-wide budget (each run's own are rows of
``run_credits``), the stop reason (402), one
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
from typing import Any, Final, LiteralString

import anyio
import psycopg

from viggle_async._clock import Clock, SystemClock

from ._ledger import PostgresLedger

__all__ = ["PostgresAccountState"]


# The tail of a statement giving credits back: ``a`` has locked the account row and
# ``changed`` returns the (run, credits) given back by reservations of ``%(owner)s``;
# unkeyed (owner NULL), ``%(back)s`` credits of run ``%(run)s`` are. Moves the run's and
# the account's totals; ``u`` returns the account's.
_GIVE_BACK: Final = """
    back AS (
        SELECT %(run)s::text AS run, %(back)s::bigint AS credits
        WHERE %(owner)s::text IS NULL AND EXISTS (SELECT 1 FROM a)
        UNION ALL SELECT run, credits FROM changed),
    ur AS (
        UPDATE {s}.run_credits AS rc SET committed = rc.committed - b.credits
        FROM (SELECT run, sum(credits) AS credits FROM back GROUP BY run) AS b
        WHERE rc.run = b.run RETURNING 1),
    u AS (
        UPDATE {s}.account SET committed = committed - coalesce(
            (SELECT sum(credits) FROM back), 0) WHERE id = 1 RETURNING committed)"""


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PostgresAccountState:
    """``AccountState`` across processes, stored in ``ledger``'s schema.

    Credits, three budgets, all checked atomically by each ``reserve`` (a create goes out
    only if it fits all that apply): the run's own (``ledger.set_run_budget``, what ``bulk
    --enqueue --budget`` sets), the account-wide cap (``ledger.set_account_budget``,
    usually none), and ``budget``: this worker process's own (credits, None: none), on
    what this process reserved and did not get back (as ``Supervisor(credit_budget=)``
    in one process), so it can only lower what goes out. A reservation's run is ``run``
    if given, else the distributed run whose row's journal key ``RUN/KEY`` is the
    reservation's ``owner`` (the worker's keys); neither: it counts only account-wide.
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
                 run: str | None = None, clock: Clock | None = None, lease: float = 120.0,
                 retry_interval: float = 0.25, worker_id: str | None = None) -> None:
        if lease <= 0 or retry_interval <= 0:
            raise ValueError("lease and retry_interval: seconds, > 0")
        if budget is not None and not budget >= 0:
            raise ValueError(f"budget: {budget!r} is negative. Fix: pass >= 0 or None")
        self._ledger = ledger
        self._budget = budget
        self._run = run
        # This process's own reservations (owner -> credits) and their total, for
        # ``budget``; a reservation inherited from another worker is not among them.
        self._own: dict[str, int] = {}
        self._own_total = 0
        self._own_lock = anyio.Lock()
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
    def _run_candidates(self, owner: str | None) -> tuple[list[str], list[str]]:
        # A distributed row's journal key is RUN/KEY, and either part may hold a "/":
        # every split is a candidate, and the ledger's rows (dist_rows) say which one is
        # real (a primary-key lookup each).
        if self._run is not None or owner is None:
            return [], []
        cuts = [i for i, c in enumerate(owner) if c == "/"]
        return [owner[:i] for i in cuts], [owner[i + 1:] for i in cuts]

    async def reserve(self, credits: int | None, *, owner: str | None = None) -> str | None:
        """Reserve ``credits`` for one create, atomically against every worker's totals:
        the run's budget (``ledger.set_run_budget``; the run is ``run=``, or the one whose
        row's journal key ``RUN/KEY`` is ``owner``), the account-wide cap
        (``ledger.set_account_budget``) and this process's own ``budget``. Returns why
        not (stopped, over which budget, unknown cost while a budget applies), or None
        when reserved (or already reserved for ``owner``, even over a budget)."""
        if self._stopped_here is not None:
            return self._stopped_here
        if self._budget is None:
            return await self._reserve(credits, owner, None)
        # This process's own total is checked and moved in one step per process.
        async with self._own_lock:
            return await self._reserve(credits, owner, self._budget - self._own_total)

    async def _reserve(self, credits: int | None, owner: str | None,
                       own_left: float | None) -> str | None:
        runs, keys = self._run_candidates(owner)
        # One statement, one round trip (it was a transaction of six: BEGIN, four
        # statements, COMMIT; benchmarks B7). FOR UPDATE on the account row queues
        # concurrent reserves, so the checks and the increments are one step for all
        # processes; the run's row is locked only after it (its lock waits on the
        # account's), so two statements never lock the two rows in opposite orders.
        # The reservation is inserted first with ON CONFLICT DO NOTHING and the totals
        # move only if that insert happened: a worker racing another for the same owner
        # (a redelivered row) inherits the winner's reservation, never adds twice.
        (stopped, committed, budget, run, run_known, run_budget, run_committed, ok,
         inserted, total) = await self._fetch(
            """WITH a AS (
                   SELECT stopped, committed, budget
                   FROM {s}.account WHERE id = 1 FOR UPDATE),
               r AS (
                   SELECT coalesce(%(run)s::text, (
                       SELECT d.run FROM {s}.dist_rows AS d
                       JOIN unnest(%(runs)s::text[], %(keys)s::text[]) AS c(run, key)
                           ON d.run = c.run AND d.key = c.key
                       ORDER BY length(d.run) DESC LIMIT 1)) AS run),
               rb AS (
                   SELECT rc.run, rc.budget, rc.committed
                   FROM {s}.run_credits AS rc JOIN a ON true
                   WHERE rc.run = (SELECT run FROM r) FOR UPDATE OF rc),
               d AS (
                   SELECT a.stopped, a.committed, a.budget, (SELECT run FROM r) AS run,
                          rb.run IS NOT NULL AS run_known, rb.budget AS run_budget,
                          rb.committed AS run_committed,
                          a.stopped IS NULL
                          AND ((SELECT run FROM r) IS NULL OR rb.run IS NOT NULL)
                          AND (a.budget IS NULL OR (%(credits)s::bigint IS NOT NULL
                               AND a.committed + %(credits)s::bigint <= a.budget))
                          AND (rb.budget IS NULL OR (%(credits)s::bigint IS NOT NULL
                               AND rb.committed + %(credits)s::bigint <= rb.budget))
                          AND (%(own)s::float8 IS NULL OR (%(credits)s::bigint IS NOT NULL
                               AND %(credits)s::bigint <= %(own)s::float8)) AS ok
                   FROM a LEFT JOIN rb ON true),
               i AS (
                   INSERT INTO {s}.reservations (owner, credits, run)
                   SELECT %(owner)s::text, coalesce(%(credits)s::bigint, 0), d.run FROM d
                   WHERE d.ok AND %(owner)s::text IS NOT NULL
                   ON CONFLICT (owner) DO NOTHING RETURNING owner),
               go AS (
                   SELECT d.run FROM d WHERE d.ok
                       AND (%(owner)s::text IS NULL OR EXISTS (SELECT 1 FROM i))),
               ur AS (
                   UPDATE {s}.run_credits AS rc SET committed = rc.committed
                       + coalesce(%(credits)s::bigint, 0)
                   FROM go WHERE rc.run = go.run RETURNING rc.committed),
               u AS (
                   UPDATE {s}.account AS acc SET committed = acc.committed
                       + coalesce(%(credits)s::bigint, 0)
                   FROM go WHERE acc.id = 1 RETURNING acc.committed)
               SELECT d.stopped, d.committed, d.budget, d.run, d.run_known, d.run_budget,
                      d.run_committed, d.ok, EXISTS (SELECT 1 FROM i),
                      (SELECT committed FROM u)
               FROM d""",
            {"own": own_left, "credits": credits, "owner": owner, "run": self._run,
             "runs": runs, "keys": keys})
        if stopped:
            return str(stopped)
        if total is not None:
            self._seen_committed = int(total)
            if own_left is not None:
                self._own_total += credits or 0
                if owner is not None:
                    self._own[owner] = credits or 0
            return None
        if run is not None and not run_known:
            # A run seen for the first time (recorded without set_run_budget): give it
            # its row, then reserve again.
            async with self._ledger.pool.connection() as conn:
                await conn.execute(self._ledger.q(
                    "INSERT INTO {s}.run_credits (run) VALUES (%s) ON CONFLICT DO NOTHING"),
                    (run,))
            return await self._reserve(credits, owner, own_left)
        if owner is not None and await self._holds(owner):
            return None  # inherited from the worker that held this row before
        if ok and owner is not None and not inserted:
            return None  # raced the same owner's reservation and lost: it holds it
        if credits is None:
            return ("credit_budget is set but this render's length is unknown (a "
                    "video URL, or a scene whose duration the API did not report); "
                    "pass estimated_seconds=")
        if run_budget is not None and run_committed + credits > run_budget:
            return (f"over run {run!r}'s budget: {run_committed} committed + {credits} "
                    f"> {run_budget:g} credits (bulk --enqueue --budget)")
        if budget is not None and committed + credits > budget:
            return (f"over the account-wide budget: {committed} committed + {credits} "
                    f"> {budget:g} credits (PostgresLedger.set_account_budget)")
        assert self._budget is not None
        return (f"over this worker's budget: {self._own_total} committed + {credits} "
                f"> {self._budget:g} credits (worker --budget)")

    async def _holds(self, owner: str) -> bool:
        async with self._ledger.pool.connection() as conn:
            cur = await conn.execute(
                self._ledger.q("SELECT 1 FROM {s}.reservations WHERE owner = %s"), (owner,))
            return await cur.fetchone() is not None

    def _own_back(self, owner: str | None, credits: int) -> None:
        # Only what this process reserved counts against its own budget.
        if owner is None:
            self._own_total -= credits
        elif owner in self._own:
            self._own_total -= self._own.pop(owner)

    async def refund(self, credits: int, *, owner: str | None = None) -> None:
        """Give back a reservation (the create provably made no job, or the API refunded
        a failed/cancelled job, docs/api/credits.md#costs), from the account's, the
        run's and this worker's totals. With ``owner``, gives back what that row holds,
        once, whichever worker reserved it."""
        # The account row is locked first, as in reserve (see there).
        (now,) = await self._fetch(
            """WITH a AS (SELECT 1 FROM {s}.account WHERE id = 1 FOR UPDATE),
               changed AS (
                   DELETE FROM {s}.reservations
                   WHERE %(owner)s::text IS NOT NULL AND owner = %(owner)s
                       AND EXISTS (SELECT 1 FROM a)
                   RETURNING run, credits), """ + _GIVE_BACK + """
               SELECT (SELECT committed FROM u)""",
            {"owner": owner, "run": self._run, "back": credits})
        self._seen_committed = int(now)
        self._own_back(owner, credits)

    async def settle_fallback(self, credits: int, *, owner: str | None = None) -> int:
        """A fast render reserved at ``credits`` went standard: keep half
        (docs/api/credits.md#costs), in the account's, the run's and this worker's
        totals; returns what is now committed for it. With ``owner``, settles that row's
        reservation once."""
        standard = credits // 2
        (held, now) = await self._fetch(
            """WITH a AS (SELECT 1 FROM {s}.account WHERE id = 1 FOR UPDATE),
               old AS (
                   SELECT res.owner, res.credits, res.run
                   FROM {s}.reservations AS res JOIN a ON true
                   WHERE %(owner)s::text IS NOT NULL AND res.owner = %(owner)s
                   FOR UPDATE OF res),
               changed AS (
                   UPDATE {s}.reservations AS res SET credits = %(standard)s::bigint
                   FROM old WHERE res.owner = old.owner AND old.credits > %(standard)s
                   RETURNING old.run, old.credits - %(standard)s::bigint AS credits), """
            + _GIVE_BACK + """
               SELECT (SELECT credits FROM old), (SELECT committed FROM u)""",
            {"owner": owner, "run": self._run, "standard": standard,
             "back": credits - standard})
        self._seen_committed = int(now)
        kept = standard if held is None or held > standard else int(held)
        if owner is None:
            self._own_total -= credits - standard
        elif owner in self._own and self._own[owner] > kept:
            self._own_total -= self._own[owner] - kept
            self._own[owner] = kept
        return kept

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


