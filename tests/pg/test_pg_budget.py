"""Budgets in the shared ledger: each distributed run has its own (``bulk --enqueue
--budget``), a worker's own caps what that process commits, and an account-wide cap (set
through the library) applies on top of both. All against a real PostgreSQL; the last
tests run real ``bulk --enqueue`` and ``viggle-async worker`` processes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from pghelp import (
    LedgerFactory,
    cli_async,
    finish,
    read_logs,
    renders_manifest,
    worker,
)

from viggle_async.pg import PostgresAccountState, PostgresLedger, RowBook, RunCredits
from viggle_async.testing import FakeViggle, Faults


async def _rows(ledger: PostgresLedger, run: str, n: int) -> list[str]:
    """Record ``n`` rows of run ``run`` as ``bulk --enqueue`` does; returns their journal
    keys (``RUN/KEY``), the owners a worker reserves for."""
    await RowBook(ledger, run).add([(f"r{i}", "render", {"n": i}, ()) for i in range(n)])
    return [f"{run}/r{i}" for i in range(n)]


# -- each run its own budget ----------------------------------------------------------------
async def test_two_runs_in_one_schema_each_keep_their_own_budget_across_workers(
        open_ledger: LedgerFactory) -> None:
    ledgers = [await open_ledger() for _ in range(4)]
    states = [PostgresAccountState(lg, worker_id=f"w{i}") for i, lg in enumerate(ledgers)]
    a, b = await _rows(ledgers[0], "a", 12), await _rows(ledgers[0], "b", 12)
    assert await ledgers[0].set_run_budget("a", 50) is None
    assert await ledgers[0].set_run_budget("b", 100) is None
    answers: dict[str, str | None] = {}

    async def reserve(i: int, owner: str) -> None:
        answers[owner] = await states[i % 4].reserve(10, owner=owner)

    async with anyio.create_task_group() as tg:  # 24 creates from 4 workers at once
        for i, owner in enumerate(a + b):
            tg.start_soon(reserve, i, owner)
    assert [answers[o] for o in a].count(None) == 5  # 50 of a's 50
    assert [answers[o] for o in b].count(None) == 10  # 100 of b's 100, a's refusals no help
    refused = [answers[o] for o in a if answers[o] is not None]
    assert all(r and r.startswith("over run 'a''s budget: 50 committed + 10 > 50")
               for r in refused)
    assert await ledgers[1].run_credits("a") == RunCredits("a", 50.0, 50)
    assert await ledgers[2].run_credits("b") == RunCredits("b", 100.0, 100)
    assert await states[3].committed() == 150  # account-wide: both runs
    summary = await ledgers[3].summary()
    assert (summary.budget, summary.committed) == (None, 150)  # no account-wide cap


async def test_setting_one_runs_budget_never_changes_anothers(
        open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    state = PostgresAccountState(ledger)
    (a0, a1), (b0,) = await _rows(ledger, "a", 2), await _rows(ledger, "b", 1)
    await ledger.set_run_budget("a", 1000)
    assert await state.reserve(600, owner=a0) is None
    assert await ledger.set_run_budget("b", 100) is None  # b's enqueue: a keeps 1000
    assert await ledger.run_credits("a") == RunCredits("a", 1000.0, 600)
    assert await state.reserve(300, owner=a1) is None
    assert "over run 'b''s budget: 0 committed + 120 > 100" in (
        await state.reserve(120, owner=b0) or "")
    # Enqueueing a again with another budget changes a's (and says what it was).
    assert await ledger.set_run_budget("a", 800) == 1000.0
    assert await ledger.run_credits("b") == RunCredits("b", 100.0, 0)
    with pytest.raises(ValueError, match="negative"):
        await ledger.set_run_budget("a", -1)


async def test_a_run_without_a_budget_is_not_limited_by_other_runs(
        open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    state = PostgresAccountState(ledger)
    first, later = await _rows(ledger, "first", 1), await _rows(ledger, "later", 3)
    await ledger.set_run_budget("first", 1000)
    assert await state.reserve(890, owner=first[0]) is None
    # The newcomer's case: 890 committed by the first run, 3 x 120 for the next.
    assert [await state.reserve(120, owner=o) for o in later] == [None] * 3
    assert await ledger.run_credits("later") == RunCredits("later", None, 360)
    assert await state.reserve(None, owner="later/unknown-length") is None  # no budget


async def test_run_names_and_keys_with_slashes_find_their_run(
        open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    state = PostgresAccountState(ledger)
    await RowBook(ledger, "proj2/shots.jsonl").add([("x/1", "render", {}, ())])
    await RowBook(ledger, "proj2").add([("shots.jsonl/x/2", "render", {}, ())])
    await ledger.set_run_budget("proj2/shots.jsonl", 10)
    await ledger.set_run_budget("proj2", 100)
    assert await state.reserve(20, owner="proj2/shots.jsonl/x/1") is not None  # 20 > 10
    assert await state.reserve(20, owner="proj2/shots.jsonl/x/2") is None
    assert (await ledger.run_credits("proj2")).committed == 20
    assert (await ledger.run_credits("proj2/shots.jsonl")).committed == 0
    # A key that is no row of any run counts only account-wide.
    assert await state.reserve(5, owner="nobody/r1") is None
    assert await state.committed() == 25


async def test_refunds_and_fast_fallback_settle_the_runs_total(
        open_ledger: LedgerFactory) -> None:
    dead_ledger, heir_ledger = await open_ledger(), await open_ledger()
    dead, heir = PostgresAccountState(dead_ledger), PostgresAccountState(heir_ledger)
    r0, r1, r2 = await _rows(dead_ledger, "a", 3)
    await dead_ledger.set_run_budget("a", 100)
    assert await dead.reserve(40, owner=r0) is None
    assert await dead.reserve(40, owner=r1) is None
    assert await heir.reserve(40, owner=r2) is not None  # 120 > 100
    await heir.refund(40, owner=r0)  # failed (refunded by the API)
    await dead.refund(40, owner=r0)  # seen twice: given back once
    assert await heir_ledger.run_credits("a") == RunCredits("a", 100.0, 40)
    assert await heir.settle_fallback(40, owner=r1) == 20  # fast went standard
    assert await dead.settle_fallback(40, owner=r1) == 20  # settled once
    assert await heir_ledger.run_credits("a") == RunCredits("a", 100.0, 20)
    assert await heir.reserve(80, owner=r2) is None  # 20 + 80 <= 100
    await heir.refund(80, owner=r2)  # cancelled
    assert await heir_ledger.run_credits("a") == RunCredits("a", 100.0, 20)
    assert await heir.committed() == 20


async def test_an_explicit_run_counts_unkeyed_reservations_too(
        open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    await ledger.set_run_budget("web", 30)
    state = PostgresAccountState(ledger, run="web")
    assert await state.reserve(20) is None
    assert "over run 'web''s budget: 20 committed + 20 > 30" in (await state.reserve(20) or "")
    assert await state.settle_fallback(20) == 10
    assert await ledger.run_credits("web") == RunCredits("web", 30.0, 10)
    await state.refund(10)
    assert await ledger.run_credits("web") == RunCredits("web", 30.0, 0)
    # A run recorded nowhere yet gets its row on the first reserve.
    fresh = PostgresAccountState(ledger, run="new")
    assert await fresh.reserve(7) is None
    assert await ledger.run_credits("new") == RunCredits("new", None, 7)


async def test_the_account_wide_cap_and_run_budgets_apply_together(
        open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    state = PostgresAccountState(ledger)
    a, b = await _rows(ledger, "a", 3), await _rows(ledger, "b", 3)
    await ledger.set_account_budget(100)
    await ledger.set_run_budget("a", 50)
    assert await state.reserve(40, owner=a[0]) is None
    assert "over run 'a''s budget" in (await state.reserve(20, owner=a[1]) or "")
    assert await state.reserve(50, owner=b[0]) is None  # b has no budget of its own
    assert "over the account-wide budget: 90 committed + 20 > 100" in (
        await state.reserve(20, owner=b[1]) or "")
    assert await state.reserve(10, owner=a[1]) is None  # fits both: 50 of a's, 100 of all
    assert await ledger.account_budget() == 100.0
    with pytest.warns(DeprecationWarning, match="set_account_budget"):
        await ledger.set_budget(None)
    with pytest.warns(DeprecationWarning, match="account_budget"):
        assert await ledger.budget() is None
    assert await state.reserve(20, owner=b[1]) is None  # the cap is lifted


async def test_a_worker_budget_lowers_a_runs_and_never_refuses_an_inherited_row(
        open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    rows = await _rows(ledger, "a", 6)
    await ledger.set_run_budget("a", 100)
    dead = PostgresAccountState(ledger)
    small = PostgresAccountState(ledger, budget=25)
    assert await dead.reserve(30, owner=rows[0]) is None
    # The dead worker's row comes back to the small worker: already committed, so it
    # goes on (refusing it would strand a reservation), and is not the small one's own.
    assert await small.reserve(30, owner=rows[0]) is None
    answers = [await small.reserve(10, owner=o) for o in rows[1:]]
    assert answers[:2] == [None, None]
    assert all("over this worker's budget: 20 committed + 10 > 25" in (x or "")
               for x in answers[2:])
    assert await ledger.run_credits("a") == RunCredits("a", 100.0, 50)
    await small.refund(10, owner=rows[1])
    assert await small.reserve(10, owner=rows[3]) is None  # its own room is back


async def test_concurrent_reserves_refunds_and_fallbacks_keep_every_total_exact(
        open_ledger: LedgerFactory) -> None:
    """Workers reserving, refunding and settling rows of two runs at once: no deadlock
    (every statement locks the account row before a run's), and each run's total is the
    sum of its reservations, the account's the sum of all."""
    ledgers = [await open_ledger() for _ in range(4)]
    states = [PostgresAccountState(lg, budget=1000) for lg in ledgers]
    owners = await _rows(ledgers[0], "a", 15) + await _rows(ledgers[0], "b", 15)
    await ledgers[0].set_run_budget("a", 60)

    async def row(i: int, owner: str) -> None:
        state = states[i % 4]
        if await state.reserve(8, owner=owner) is not None:
            return
        if i % 3 == 0:
            await states[(i + 1) % 4].refund(8, owner=owner)  # another worker saw it fail
        elif i % 3 == 1:
            await state.settle_fallback(8, owner=owner)

    async with anyio.create_task_group() as tg:
        for i, owner in enumerate(owners):
            tg.start_soon(row, i, owner)
    async with ledgers[0].pool.connection() as conn:
        cur = await conn.execute(ledgers[0].q(
            "SELECT run, sum(credits) FROM {s}.reservations GROUP BY run ORDER BY run"))
        held = {str(run): int(total) for run, total in await cur.fetchall()}
    assert (await ledgers[1].run_credits("a")).committed == held["a"] <= 60
    assert (await ledgers[1].run_credits("b")).committed == held["b"]
    assert await states[2].committed() == held["a"] + held["b"]


async def test_a_ledger_from_before_run_budgets_is_migrated_with_its_totals(
        open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    await _rows(ledger, "a", 2)
    async with ledger.pool.connection() as conn:  # back to schema version 4, in use
        for statement in (
                "DROP TABLE {s}.run_credits", "ALTER TABLE {s}.reservations DROP COLUMN run",
                "DELETE FROM {s}.schema_version WHERE version = 5",
                "INSERT INTO {s}.reservations (owner, credits) VALUES ('a/r0', 30), "
                "('a/r1', 20), ('local-key', 5)",
                "UPDATE {s}.account SET committed = 55, budget = 70"):
            await conn.execute(ledger.q(statement))  # type: ignore[arg-type]
    await ledger.aclose()
    again = await open_ledger()
    assert await again.run_credits("a") == RunCredits("a", None, 50)
    assert await again.account_budget() == 70.0  # an older --budget: kept, never loosened
    state = PostgresAccountState(again)
    await state.refund(30, owner="a/r0")
    assert await again.run_credits("a") == RunCredits("a", None, 20)
    assert await state.committed() == 25


# -- bulk --enqueue, worker processes, bulk --status ----------------------------------------
async def _enqueue(fake: FakeViggle, dsn: str, schema: str, m: Path, run: str,
                   *extra: str) -> str:
    done = await cli_async(fake, "bulk", str(m), "--journal", dsn, "--schema", schema,
                           "--enqueue", "--run", run, *extra)
    return (done.stdout + done.stderr).decode()


async def _work(fake: FakeViggle, dsn: str, schema: str, logs: Path,
                *options: tuple[str, ...]) -> None:
    """One ``worker --exit-when-empty`` process per ``options`` tuple, until all exit."""
    await anyio.Path(logs).mkdir(exist_ok=True)
    files = [(logs / f"worker{i}.log").open("w") for i in range(len(options))]
    procs = [worker(fake, dsn, schema, "--exit-when-empty", "--max-uploads", "1", *extra,
                    log=f) for f, extra in zip(files, options, strict=True)]
    try:
        # 1: a row a worker ran was refused by a budget (not sent: not a success).
        await finish(procs, logs, code=(0, 1))
    finally:
        for f in files:
            f.close()


async def _status(fake: FakeViggle, dsn: str, schema: str, m: Path, run: str,
                  report: Path) -> tuple[dict[str, Any], str]:
    """``bulk --status --run RUN --report``: the report and the human output."""
    human = await cli_async(fake, "bulk", str(m), "--journal", dsn, "--schema", schema,
                            "--status", "--run", run, "--report", str(report), check=False)
    data: dict[str, Any] = json.loads(await anyio.Path(report).read_text())
    return data, (human.stdout + human.stderr).decode()


def _manifests(tmp: Path, *runs: tuple[str, int], **columns: object) -> list[Path]:
    """One folder and manifest of ``n`` renders per ``(name, n)``."""
    made = []
    for name, n in runs:
        (tmp / name).mkdir()
        made.append(renders_manifest(tmp / name, n, **columns))
    return made


def _accepted(fake: FakeViggle) -> int:
    return sum(1 for c in fake.creates if c.kind == "render" and c.status == 200)


async def test_two_runs_with_their_own_budgets_across_worker_processes(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    ma, mb = _manifests(tmp_path, ("a", 6), ("b", 6))
    async with FakeViggle(time_scale=200.0, output_bytes=4096) as fake:
        start = fake.balance()
        said = await _enqueue(fake, pg_dsn, pg_schema, ma, "a", "--budget", "4")
        # 6 renders of 1 credit against 4: one warning line, and the enqueue succeeds.
        assert ("warning: run 'a': estimated at 6 credits, its budget of 4 is 2 credits "
                "short") in said
        said = await _enqueue(fake, pg_dsn, pg_schema, mb, "b", "--budget", "3")
        assert "warning: run 'b'" in said and "run 'a'" not in said
        # Two workers, one with a budget of its own bigger than either run's.
        await _work(fake, pg_dsn, pg_schema, tmp_path / "logs", (), ("--budget", "50"))
        a, a_text = await _status(fake, pg_dsn, pg_schema, ma, "a", tmp_path / "a.json")
        b, _ = await _status(fake, pg_dsn, pg_schema, mb, "b", tmp_path / "b.json")
        assert start - fake.balance() == _accepted(fake) == 4 + 3
        for data, budget in ((a, 4), (b, 3)):
            summary = data["summary"]
            assert (summary["budget"], summary["credits_committed"],
                    summary["credits_spent"]) == (budget, budget, budget)
            assert summary["account_credits_committed"] == 7  # labelled account-wide
            assert summary["stopped"] is None  # a budget is not a stop
            refused = [o for o in data["outcomes"] if o["state"] == "not_submitted"]
            assert sorted(summary["not_sent_for_budget"]) == sorted(o["key"] for o in refused)
            assert len(refused) == 6 - budget
            assert all(f"over run '{data['summary']['run']}''s budget" in o["error"]
                       for o in refused)
        assert "credits committed 4, spent 4 of a 4 budget" in a_text
        assert "account-wide, all runs: committed 7" in a_text
        assert "2 rows not sent, over a budget" in a_text
        # Enqueueing a again with another budget changes a's, and says so; b keeps 3.
        said = await _enqueue(fake, pg_dsn, pg_schema, ma, "a", "--budget", "10")
        assert "run 'a': budget changed from 4 to 10 credits" in said
        assert "warning" not in said
        b, _ = await _status(fake, pg_dsn, pg_schema, mb, "b", tmp_path / "b.json")
        assert b["summary"]["budget"] == 3


async def test_a_run_without_budget_is_not_held_by_another_runs_spending(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    m1, m2 = _manifests(tmp_path, ("first", 3), ("next", 4))
    async with FakeViggle(time_scale=200.0, output_bytes=4096) as fake:
        await _enqueue(fake, pg_dsn, pg_schema, m1, "first", "--budget", "3")
        await _work(fake, pg_dsn, pg_schema, tmp_path / "logs1", ())
        said = await _enqueue(fake, pg_dsn, pg_schema, m2, "next")
        assert "warning" not in said and "budget" not in said
        # A worker's own budget of 2 caps what that process commits, in any run.
        await _work(fake, pg_dsn, pg_schema, tmp_path / "logs2", ("--budget", "2"))
        data, text = await _status(fake, pg_dsn, pg_schema, m2, "next", tmp_path / "n.json")
        summary = data["summary"]
        assert (summary["budget"], summary["credits_committed"]) == (None, 2)
        refused = [o for o in data["outcomes"] if o["state"] == "not_submitted"]
        assert len(refused) == 2, read_logs(tmp_path / "logs2")
        assert all("over this worker's budget: 2 committed + 1 > 2" in o["error"]
                   for o in refused)
        assert "(no budget)" in text
        first, _ = await _status(fake, pg_dsn, pg_schema, m1, "first", tmp_path / "f.json")
        assert first["summary"]["budget"] == 3  # untouched by next's enqueue


async def test_failed_and_fast_fallback_renders_settle_the_runs_total(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    (mf,) = _manifests(tmp_path, ("failing", 4))
    (mq,) = _manifests(tmp_path, ("fast", 4), fast=True)
    faults = Faults(render_failure_rate=1.0, fast_unavailable=True)
    async with FakeViggle(faults=faults, time_scale=200.0, output_bytes=4096) as fake:
        # Every render fails (refunded by the API): a budget of 1 lets all four through
        # one at a time (one row at a time), each refund making room for the next.
        await _enqueue(fake, pg_dsn, pg_schema, mf, "failing", "--budget", "1")
        await _work(fake, pg_dsn, pg_schema, tmp_path / "logs1", ("--concurrency", "1"))
        data, _ = await _status(fake, pg_dsn, pg_schema, mf, "failing", tmp_path / "f.json")
        assert [o["state"] for o in data["outcomes"]] == ["failed"] * 4
        assert data["summary"]["credits_committed"] == 0
        fake.faults.render_failure_rate = 0.0
        # Fast refused: each reserves the fast price, goes standard and keeps half.
        said = await _enqueue(fake, pg_dsn, pg_schema, mq, "fast", "--budget", "8")
        assert "warning" not in said
        await _work(fake, pg_dsn, pg_schema, tmp_path / "logs2",
                    ("--fast-fallback", "attempts:1"))
        data, _ = await _status(fake, pg_dsn, pg_schema, mq, "fast", tmp_path / "q.json")
        outcomes = data["outcomes"]
        assert [o["state"] for o in outcomes] == ["complete"] * 4, read_logs(
            tmp_path / "logs2")
        assert all(o["fallback_used"] for o in outcomes)
        summary = data["summary"]
        assert summary["credits_committed"] == summary["credits_spent"] == 4
        assert summary["account_credits_committed"] == 4
