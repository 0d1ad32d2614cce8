"""``PostgresAccountState``: one account's limits shared by several processes.

Each "process" is a ledger with its own connection pool, as a separate worker would have;
everything they share goes through the real PostgreSQL.
"""

from __future__ import annotations

import math

import anyio
import pytest
from pghelp import LedgerFactory

from viggle_async.pg import PostgresAccountState, PostgresLedger
from viggle_async.testing import ManualClock


async def _states(open_ledger: LedgerFactory, n: int, **kwargs: object
                  ) -> tuple[list[PostgresLedger], list[PostgresAccountState]]:
    ledgers = [await open_ledger() for _ in range(n)]
    kwargs.setdefault("retry_interval", 0.01)
    states = [PostgresAccountState(ledger, worker_id=f"w{i}", **kwargs)  # type: ignore[arg-type]
              for i, ledger in enumerate(ledgers)]
    return ledgers, states


# -- credits ----------------------------------------------------------------------------
async def test_twenty_concurrent_reserves_never_exceed_the_run_budget(
        open_ledger: LedgerFactory) -> None:
    ledgers, states = await _states(open_ledger, 4)
    await ledgers[0].set_account_budget(100)
    answers: list[str | None] = []

    async def reserve(i: int) -> None:
        answers.append(await states[i % 4].reserve(10))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(reserve, i)
    assert answers.count(None) == 10
    assert all("over the account-wide budget" in a for a in answers if a is not None)
    assert [await s.committed() for s in states] == [100] * 4


async def test_a_workers_own_budget_caps_what_that_worker_commits(
        open_ledger: LedgerFactory) -> None:
    """``budget=`` is this process's own, as ``Supervisor(credit_budget=)`` is: it counts
    what this worker reserved, not the account's total, and only ever lowers what goes
    out (the account-wide cap still applies to it)."""
    ledger = await open_ledger()
    await ledger.set_account_budget(100)
    low = PostgresAccountState(ledger, budget=30)
    high = PostgresAccountState(ledger, budget=10_000)
    other = PostgresAccountState(ledger)
    assert await other.reserve(50) is None  # someone else's 50 do not count against low
    assert "over this worker's budget: 0 committed + 40 > 30" in (await low.reserve(40) or "")
    assert await low.reserve(25) is None
    assert "25 committed + 10 > 30" in (await low.reserve(10) or "")
    assert await low.reserve(5) is None  # 30 of its 30
    assert "over the account-wide budget: 80 committed + 30 > 100" in (
        await high.reserve(30) or "")  # its own 10 000 does not raise the cap
    await low.refund(25)
    assert await low.reserve(20) is None  # given back: room again
    assert await low.committed() == 75  # 50 + 5 + 20, account-wide


async def test_unknown_cost_is_refused_only_under_a_budget(open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    state = PostgresAccountState(ledger)
    assert await state.reserve(None) is None and await state.committed() == 0
    await ledger.set_account_budget(50)
    assert "estimated_seconds" in (await state.reserve(None) or "")


async def test_refunds_and_fast_fallback_settle_the_shared_total(
        open_ledger: LedgerFactory) -> None:
    _, (a, b) = await _states(open_ledger, 2)
    assert await a.reserve(40) is None and await b.reserve(30) is None
    await b.refund(30)  # a documented refusal: no job
    assert await a.committed() == 40
    # went standard: half is kept (docs/api/credits.md#costs)
    assert await a.settle_fallback(40) == 20
    assert await b.committed() == 20


async def test_a_rows_reservation_is_inherited_and_refunded_once(
        open_ledger: LedgerFactory) -> None:
    ledgers, (dead, heir) = await _states(open_ledger, 2)
    await ledgers[0].set_account_budget(100)
    assert await dead.reserve(60, owner="row-7") is None
    # The worker that resumes row-7 does not reserve it a second time.
    assert await heir.reserve(60, owner="row-7") is None
    assert await heir.committed() == 60
    assert await heir.reserve(60, owner="row-8") is not None  # 120 > 100
    assert await heir.settle_fallback(60, owner="row-7") == 30
    assert await heir.settle_fallback(60, owner="row-7") == 30  # settled once
    assert await dead.committed() == 30
    await heir.refund(30, owner="row-7")
    await dead.refund(30, owner="row-7")  # both saw the failure: refunded once
    assert await heir.committed() == 0


async def test_workers_racing_to_reserve_one_row_commit_it_once(
        open_ledger: LedgerFactory) -> None:
    """A row delivered to several workers at once (a redelivery racing a slow worker):
    each reserve is one statement, and only one of them adds to the total."""
    ledgers, states = await _states(open_ledger, 4)
    await ledgers[0].set_account_budget(100)
    answers: list[str | None] = []

    async def reserve(i: int, row: str) -> None:
        answers.append(await states[i % 4].reserve(30, owner=row))

    async with anyio.create_task_group() as tg:
        for i in range(12):  # three rows, four workers each
            tg.start_soon(reserve, i, f"row-{i % 3}")
    assert answers == [None] * 12  # 90 of 100: every worker may go on with its row
    assert await states[0].committed() == 90
    assert await states[1].reserve(30, owner="row-9") is not None  # 120 > 100
    # Over the budget, a row that already holds its reservation still inherits it.
    assert await states[2].reserve(30, owner="row-1") is None


# -- stop and pauses --------------------------------------------------------------------
async def test_a_402_stop_is_seen_by_every_worker_and_the_first_reason_stays(
        open_ledger: LedgerFactory) -> None:
    _, states = await _states(open_ledger, 3)
    await states[0].stop("402 insufficient credits")
    await states[1].stop("journal not writable")
    for state in states:
        assert await state.stopped() == "402 insufficient credits"
        assert await state.reserve(1) == "402 insufficient credits"
    assert await states[2].committed() == 0


async def test_pauses_are_one_deadline_for_all_in_each_workers_clock(
        open_ledger: LedgerFactory) -> None:
    # Two processes whose monotonic clocks disagree by 5000 s: each sees the pause at
    # the same moment in its own clock's seconds.
    clock_a, clock_b = ManualClock(0.0), ManualClock(5000.0)
    ledger_a, ledger_b = await open_ledger(), await open_ledger()
    a = PostgresAccountState(ledger_a, clock=clock_a)
    b = PostgresAccountState(ledger_b, clock=clock_b)
    assert await b.creates_paused_until() == -math.inf
    await a.pause_creates(30.0)  # a 429 with Retry-After: 30
    assert await b.creates_paused_until() == pytest.approx(5030.0, abs=2)
    await b.pause_creates(5010.0)  # a shorter pause never shortens it
    assert await a.creates_paused_until() == pytest.approx(30.0, abs=2)
    assert await a.polls_paused_until() == -math.inf  # polls are paused separately
    await b.pause_polls(5060.0)
    assert await a.polls_paused_until() == pytest.approx(60.0, abs=2)


# -- fast-capacity gate ------------------------------------------------------------------
async def test_while_unknown_one_probe_at_a_time_and_the_first_success_releases_all(
        open_ledger: LedgerFactory) -> None:
    _, states = await _states(open_ledger, 4)
    assert not any([await s.fast_open() for s in states])  # nothing answered yet
    seen: list[int | None] = []
    holding = 0
    most = 0

    async def worker(state: PostgresAccountState) -> None:
        nonlocal holding, most
        async with state.probe() as failures:
            seen.append(failures)
            if failures is None:
                return  # the gate opened while we waited: create freely
            holding += 1
            most = max(most, holding)
            await anyio.sleep(0.02)  # the probe request in flight
            if failures == 0:
                await state.fast_refused()  # outage: the first probe is refused
            else:
                await state.fast_accepted()
            holding -= 1

    async with anyio.create_task_group() as tg:
        for state in states * 2:  # two tasks in each process
            tg.start_soon(worker, state)
    assert most == 1
    assert seen == [0, 1] + [None] * 6  # two probes across four processes, then open
    assert all([await s.fast_open() for s in states])
    assert await states[3].capacity_rejections() == 1


async def test_refusals_close_the_gate_for_all_and_count_across_workers(
        open_ledger: LedgerFactory) -> None:
    _, (a, b) = await _states(open_ledger, 2)
    await a.fast_accepted()
    assert await b.fast_open()
    async with b.probe() as failures:
        assert failures is None  # open: nothing held
    await a.fast_refused()
    await b.fast_refused()
    assert not await a.fast_open()
    assert await a.capacity_rejections() == 2
    async with a.probe() as failures:
        assert failures == 2  # for the backoff


async def _set_probe(ledger: PostgresLedger, holder: str | None, expires: str) -> None:
    async with ledger.pool.connection() as conn:
        await conn.execute(ledger.q(
            "UPDATE {s}.account SET probe_holder = %s, probe_expires = now() + %s::interval"),
            (holder, expires))


async def _probe_expires_in(ledger: PostgresLedger) -> float:
    async with ledger.pool.connection() as conn:
        cur = await conn.execute(ledger.q(
            "SELECT extract(epoch FROM probe_expires - now()) FROM {s}.account"))
        row = await cur.fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


async def test_a_dead_workers_probe_is_taken_over_when_its_lease_expires(
        open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    clock = ManualClock()
    alive = PostgresAccountState(ledger, clock=clock, retry_interval=1.0, worker_id="alive")
    # A worker took the slot (gate unknown), then its process was killed.
    await _set_probe(ledger, "dead-host:4242", "1 hour")
    got = anyio.Event()

    async def take() -> None:
        async with alive.probe() as failures:
            assert failures == 0
            got.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            # refused while the lease is valid (ManualClock has no "someone sleeps" event)
            while clock.sleepers == 0 and not got.is_set():  # noqa: ASYNC110
                await anyio.sleep(0.01)
            assert not got.is_set()
            await _set_probe(ledger, "dead-host:4242", "-1 second")  # the lease ran out
            while not got.is_set():
                await clock.advance(1.0)
                await anyio.sleep(0.01)
    async with alive.probe() as failures:
        assert failures == 0  # released after use: free again


async def test_a_live_holder_renews_its_probe_lease(open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    clock = ManualClock()
    holder = PostgresAccountState(ledger, clock=clock, lease=60.0, worker_id="holder")
    other = PostgresAccountState(ledger, worker_id="other")
    async with holder.probe() as failures:
        assert failures == 0
        await _set_probe(ledger, "holder", "1 second")  # about to lapse...
        with anyio.fail_after(30):
            while await _probe_expires_in(ledger) < 30:
                await clock.advance(20.0)  # ...the renewal (every lease/3) extends it
                await anyio.sleep(0.01)
        assert await other._try_probe() is None  # still held by the live worker
    assert await other._try_probe() == (False, 0)  # released on exit


async def test_the_probe_slot_is_released_when_the_holder_fails_or_is_cancelled(
        open_ledger: LedgerFactory) -> None:
    _, (a, b) = await _states(open_ledger, 2)
    with pytest.raises(RuntimeError):
        async with a.probe():
            raise RuntimeError("the probe's upload broke")
    with anyio.move_on_after(0.05):
        async with b.probe():
            await anyio.sleep_forever()
    with anyio.fail_after(10):
        async with a.probe() as failures:
            assert failures == 0


async def test_the_summary_shows_what_every_worker_shares(open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    clock = ManualClock(100.0)
    state = PostgresAccountState(ledger, clock=clock, worker_id="w-summary")
    fresh = await ledger.summary()
    assert (fresh.budget, fresh.committed, fresh.stopped, fresh.fast_state) == (
        None, 0, None, "unknown")
    assert fresh.creates_paused_for == fresh.polls_paused_for == 0.0
    await ledger.set_account_budget(500)
    await state.reserve(120)
    await state.pause_creates(160.0)
    await state.fast_refused()
    async with state.probe():
        summary = await ledger.summary()
    assert (summary.budget, summary.committed, summary.fast_state) == (500.0, 120, "closed")
    assert summary.creates_paused_for == pytest.approx(60, abs=2)
    assert (summary.capacity_rejections, summary.probe_holder) == (1, "w-summary")
    await state.stop("402: out of credits")
    assert (await ledger.summary()).stopped == "402: out of credits"
