"""``Supervisor(account=PostgresAccountState(...))``: several supervisors, each with its own
pool as a separate worker process would have, spend one account through the real
PostgreSQL: the run's budget holds across all of them, a 402 seen by one stops the others,
and reservations are keyed by the work's key (so a resumed row inherits its reservation).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import anyio
import psycopg
import pytest
from pghelp import LedgerFactory

from viggle_async import FastFallbackPolicy, PollPolicy, Supervisor, ViggleClient
from viggle_async.pg import PostgresAccountState, PostgresLedger
from viggle_async.testing import FakeViggle, Faults, RateLimit, make_png, write_mp4

FAST = PollPolicy(first_delay=0.05, min_interval=0.05, max_interval=0.05, jitter=0.0)
KW = {"poll_policy": FAST, "capacity_backoff": (0.05, 0.1), "asset_poll_interval": 0.05}


@pytest.fixture
def media(tmp_path: Path) -> tuple[Path, Path]:
    png, mp4 = tmp_path / "me.png", tmp_path / "dance3.mp4"
    png.write_bytes(make_png())
    write_mp4(mp4, 3.0)  # 3 credits a render (docs/api/credits.md#costs)
    return png, mp4


async def _run_workers(fake: FakeViggle, open_ledger: LedgerFactory, media: tuple[Path, Path],
                       *, workers: int, renders: int, tmp: Path,
                       budget: float | None = None, max_uploads: int = 4) -> list[str]:
    png, mp4 = media
    first = await open_ledger(api_key=fake.api_key)
    await first.set_account_budget(budget)
    states: list[str] = []

    async def worker(w: int) -> None:
        ledger = await open_ledger(api_key=fake.api_key)
        account = PostgresAccountState(ledger, worker_id=f"w{w}", retry_interval=0.01)
        async with (ViggleClient(fake.api_key, base_url=fake.base_url) as client,
                    Supervisor(client, account=account, max_uploads=max_uploads,
                               **KW) as sup):  # type: ignore[arg-type]
            handles = [sup.render(key=f"r{i}", ref_image=png, driving_video=mp4,
                                  output=tmp / f"r{i}.mp4")
                       for i in range(w, renders, workers)]
        states.extend(h.outcome.state for h in handles)

    async with anyio.create_task_group() as tg:
        for w in range(workers):
            tg.start_soon(worker, w)
    return states


async def test_the_run_budget_holds_across_supervisors(
        open_ledger: LedgerFactory, media: tuple[Path, Path], tmp_path: Path) -> None:
    async with FakeViggle(time_scale=200.0, output_bytes=256) as fake:
        states = await _run_workers(fake, open_ledger, media, workers=3, renders=12,
                                    budget=20, tmp=tmp_path)
        accepted = [c for c in fake.creates if c.kind == "render" and c.status == 200]
        assert len(accepted) == 6  # 6 x 3 = 18 <= 20; a 7th would overspend
        assert states.count("complete") == 6 and states.count("not_submitted") == 6
        assert 10_000 - fake.balance() == 18


async def test_a_402_seen_by_one_supervisor_stops_all(
        open_ledger: LedgerFactory, media: tuple[Path, Path], tmp_path: Path) -> None:
    async with FakeViggle(time_scale=200.0, output_bytes=256) as fake:
        # 7 credits left: two 3-credit renders fit, then the API answers 402.
        fake.store.ledger.charge(fake.api_key, 9_993, "render", "job_x", "2024-01-01T00:00:00Z")
        states = await _run_workers(fake, open_ledger, media, workers=3, renders=12,
                                    tmp=tmp_path, max_uploads=1)
        refused = [c for c in fake.creates if c.kind == "render" and c.status == 402]
        # At most one 402 per upload slot (3 workers x 1) in flight when the first came back;
        # every later create is held back by the shared stop.
        assert 1 <= len(refused) <= 3
        assert states.count("complete") == 2
        assert states.count("not_submitted") == 10


async def test_reservations_are_keyed_by_the_work(
        open_ledger: LedgerFactory, media: tuple[Path, Path], tmp_path: Path) -> None:
    async with FakeViggle(time_scale=200.0, output_bytes=256) as fake:
        await _run_workers(fake, open_ledger, media, workers=2, renders=4, tmp=tmp_path)
        ledger = await open_ledger(api_key=fake.api_key)
        async with ledger.pool.connection() as conn:
            cur = await conn.execute(ledger.q("SELECT owner, credits FROM {s}.reservations "
                                              "ORDER BY owner"))
            rows = await cur.fetchall()
        assert rows == [(f"r{i}", 3) for i in range(4)]
        # A worker resuming r0 (its first owner died) inherits the reservation: no charge.
        account = PostgresAccountState(ledger)
        before = await account.committed()
        assert await account.reserve(3, owner="r0") is None
        assert await account.committed() == before == 12
        assert account.committed_now == 12  # what Supervisor.credits_committed reads
        await account.refund(3, owner="r0")
        assert account.committed_now == 9 and await account.committed() == 9


# -- the fast-capacity gate and the 429 pause, across "processes" ---------------------------
async def _fast_outage(open_ledger: LedgerFactory, png: Path, mp4: Path, *, workers: int,
                       renders: int, outage_s: float) -> int:
    """Fast renders split over ``workers`` supervisors while the fake refuses fast mode for
    ``outage_s`` real seconds; returns the capacity refusals the fake answered."""
    faults = Faults(fast_unavailable_until=time.monotonic() + outage_s)
    async with FakeViggle(faults=faults, time_scale=200.0, output_bytes=256) as fake:
        never = FastFallbackPolicy(after_attempts=None, after_seconds=None)

        async def worker(w: int) -> None:
            ledger = await open_ledger(api_key=fake.api_key)
            account = PostgresAccountState(ledger, worker_id=f"w{w}", retry_interval=0.02)
            async with (ViggleClient(fake.api_key, base_url=fake.base_url) as client,
                        Supervisor(client, account=account, fast_fallback=never,
                                   **KW) as sup):  # type: ignore[arg-type]
                handles = [sup.render(key=f"r{i}", ref_image=png, driving_video=mp4,
                                      fast=True) for i in range(w, renders, workers)]
            assert all(h.outcome.state == "complete" for h in handles)

        async with anyio.create_task_group() as tg:
            for w in range(workers):
                tg.start_soon(worker, w)
        return sum(1 for c in fake.creates
                   if c.kind == "render" and c.error_code == "CS-UORC01-001")


async def _outage_in_schema(pg_dsn: str, png: Path, mp4: Path, workers: int) -> int:
    schema = f"t_{uuid.uuid4().hex[:12]}"  # a fresh ledger: the gate starts unknown
    opened: list[PostgresLedger] = []

    async def factory(**kw: object) -> PostgresLedger:
        ledger = PostgresLedger(pg_dsn, schema=schema, max_size=4, **kw)  # type: ignore[arg-type]
        opened.append(ledger)
        await ledger.open()
        return ledger

    try:
        return await _fast_outage(factory, png, mp4, workers=workers, renders=8,
                                  outage_s=1.0)
    finally:
        for ledger in opened:
            await ledger.aclose()
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as c:
            await c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_a_capacity_outage_seen_by_four_costs_what_one_sees(
        pg_dsn: str, media: tuple[Path, Path]) -> None:
    png, mp4 = media
    counts = [await _outage_in_schema(pg_dsn, png, mp4, workers) for workers in (1, 4)]
    one, four = counts
    assert one >= 1
    assert four <= 2 * one, counts  # one probe across all processes, not one per process


async def test_a_429_with_retry_after_pauses_every_supervisor(
        open_ledger: LedgerFactory, media: tuple[Path, Path], tmp_path: Path) -> None:
    # Creates only: a bucket of 1 refilled every 2 s. Without a shared pause, each of the
    # three would retry on its own after the same Retry-After and hit the bucket together.
    limit = RateLimit(rate=0.5, burst=1, routes=frozenset({"POST /api/render"}))
    async with FakeViggle(faults=Faults(rate_limit=limit), output_bytes=256) as fake:
        states = await _run_workers(fake, open_ledger, media, workers=3, renders=3,
                                    tmp=tmp_path)
        assert states == ["complete"] * 3
        ledger = await open_ledger(api_key=fake.api_key)
        # The pause was one deadline in the ledger, written by whoever got the 429.
        assert fake.observations.rate_limited >= 1
        assert fake.observations.rate_limited <= 3  # one per supervisor at most, then all wait
        assert (await ledger.summary()).creates_paused_for >= 0.0
