"""The account's gates shared by 4 ``viggle-async worker`` processes on one ledger and one
fake (in this process, its request log timestamped): a fast-capacity outage costs about
what one process pays, a 429 with Retry-After pauses every process, a 402 stops every
process, and a credit budget set at enqueue is never exceeded across them (a worker's own
smaller budget only lowers it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pghelp import (
    TimedObservations,
    cli_async,
    finish,
    read_logs,
    renders_manifest,
    status_async,
    timed,
    wait_until,
    worker,
)

from viggle_async.testing import FakeViggle, RateLimit

API_KEY = "sk-test-fake"
OUTAGE_S = 3.0
CREATE = "POST /api/render"


async def run(fake: FakeViggle, dsn: str, schema: str, folder: Path, m: Path, *,
              workers: int, budgets: list[str | None] | None = None,
              enqueue: tuple[str, ...] = (), stagger: float = 0.0,
              options: tuple[str, ...] = ()) -> tuple[dict[str, Any], int]:
    """Enqueue ``m``, run ``workers`` worker processes (started ``stagger`` seconds apart,
    each with ``options``) until the ledger is empty; returns ``--status``'s report and
    exit code."""
    await cli_async(fake, "bulk", str(m), "--journal", dsn, "--schema", schema, "--enqueue",
                    *enqueue)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    files = []
    try:
        for i in range(workers):
            files.append((logs / f"worker{i}.log").open("w"))
            if i:
                await anyio.sleep(stagger)
            own = (budgets or [None] * workers)[i]
            extra = (*options, "--budget", own) if own else options
            procs.append(worker(fake, dsn, schema, "--exit-when-empty", "--max-uploads", "1",
                                *extra, log=files[-1]))
        await finish(procs, logs, code=(0, 1))  # 1: a row it ran was refused (402, budget)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()
    data, done = await status_async(fake, dsn, schema, m, folder / "report.json")
    return data, done.returncode


def accepted(fake: FakeViggle) -> list[str | None]:
    return [c.result_id for c in fake.creates if c.kind == "render" and c.status == 200]


@pytest.fixture
def other_schema(pg_dsn: str, pg_schema: str) -> Iterator[str]:
    """A second schema, for a second run in the same test; dropped afterwards."""
    yield pg_schema + "_b"
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{pg_schema}_b" CASCADE')


async def outage_rejections(dsn: str, schema: str, folder: Path, workers: int) -> int:
    async with FakeViggle(time_scale=200.0, output_bytes=4096) as fake:
        m = renders_manifest(folder, 12, fast=True)
        # Fast capacity is out from the first create on, for 3 s.
        fake.faults.fast_unavailable = True

        async def lift() -> None:
            await wait_until("a create", lambda: bool(fake.creates))
            await anyio.sleep(OUTAGE_S)
            fake.faults.fast_unavailable = False

        async with anyio.create_task_group() as tg:
            tg.start_soon(lift)
            # Short probe backoffs: many probes in the outage, so the count is steady
            # enough to compare; no fallback, so every rejection is a probe's.
            data, code = await run(fake, dsn, schema, folder, m, workers=workers, options=(
                "--capacity-backoff", "0.1:0.4", "--fast-fallback", "never"))
        assert all(c.fields.get("fast") in ("true", "True") for c in fake.creates), \
            fake.creates[0].fields
        assert code == 0 and data["summary"]["rows"] == {"done": 12}, read_logs(folder / "logs")
        assert len(accepted(fake)) == len(set(accepted(fake))) == 12
        assert data["summary"]["capacity_rejections"] == fake.capacity_rejections
        return fake.capacity_rejections


async def test_a_capacity_outage_seen_by_4_processes_costs_at_most_twice_one_process(
        pg_dsn: str, pg_schema: str, other_schema: str, tmp_path: Path) -> None:
    for name in ("one", "four"):
        (tmp_path / name).mkdir()
    one = await outage_rejections(pg_dsn, pg_schema, tmp_path / "one", 1)
    four = await outage_rejections(pg_dsn, other_schema, tmp_path / "four", 4)
    assert one >= 1  # the outage was seen
    # One probe in flight across all processes: the outage costs about what one process
    # pays, not four times as much.
    assert four <= 2 * one, (one, four)


def creates_in(obs: TimedObservations, start: float, end: float) -> list[float]:
    return [t for t, route in obs.log if route == CREATE and start < t < end]


async def test_a_429_with_retry_after_on_a_create_pauses_every_process(
        pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    async with FakeViggle(time_scale=200.0, output_bytes=4096) as fake:
        obs = timed(fake)
        m = renders_manifest(tmp_path, 10)
        # 4 creates go through, then the bucket refills one a second: each 429 asks for
        # 1 s (Retry-After), and every process must honour it, not only the one answered.
        fake.faults.rate_limit = RateLimit(rate=1.0, burst=4, routes=frozenset({CREATE}))
        # Started apart, so their creates come out of step with the first 429's pause.
        data, code = await run(fake, pg_dsn, pg_schema, tmp_path, m, workers=4, stagger=0.4)
        assert code == 0 and data["summary"]["rows"] == {"done": 10}, (
            [(o["key"], o["state"], o.get("error")) for o in data["outcomes"]],
            read_logs(tmp_path / "logs"))
        assert len(accepted(fake)) == len(set(accepted(fake))) == 10
        assert fake.observations.rate_limited > 0
        refused = obs.rate_limited_at
        assert refused
        # A 429 answered at t asks for 1 s: no create from any process arrives before
        # t + 1 (after a margin for the creates already on the wire, for the pause to
        # reach the ledger, and for a process that read the ledger just before it did:
        # 0.5 s, as a loaded 2-core CI machine runs 4 workers, the fake and PostgreSQL).
        arrivals = sorted(t for t, route in obs.log if route == CREATE)
        for t in refused:
            early = creates_in(obs, t + 0.5, t + 0.95)
            assert not early, ([round(a - t, 3) for a in early], len(refused), len(arrivals))


async def test_a_402_stops_every_process(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    # Each render costs 1 credit (a 1 s video, standard): the balance pays for 5 of 16.
    async with FakeViggle(time_scale=200.0, output_bytes=4096, api_keys={API_KEY: 5}) as fake:
        obs = timed(fake)
        m = renders_manifest(tmp_path, 16)
        data, code = await run(fake, pg_dsn, pg_schema, tmp_path, m, workers=4)
        refused = [i for i, c in enumerate(fake.creates) if c.status == 402]
        assert refused and len(accepted(fake)) == 5
        # Every process stops: at most the creates already on their way when the first
        # 402 came back (one per other process: --max-uploads 1), none after.
        assert len(refused) <= 4, [c.status for c in fake.creates]
        first = obs.creates.times[refused[0]]
        assert not creates_in(obs, first + 0.5, float("inf"))
        summary = data["summary"]
        assert "402" in (summary["stopped"] or "")
        by_state = summary["states"]
        assert by_state.get("complete") == 5
        not_sent = [o for o in data["outcomes"] if o["state"] == "not_submitted"]
        assert len(not_sent) == 11 and all("402" in o["error"] for o in not_sent)
        assert code != 0  # --status: rows failed and nothing is left to run


async def test_a_budget_set_at_enqueue_holds_across_processes_and_a_worker_can_only_lower_it(
        pg_dsn: str, pg_schema: str, other_schema: str, tmp_path: Path) -> None:
    runs = tmp_path / "shared", tmp_path / "lowered"
    for folder in runs:
        folder.mkdir()
    async with FakeViggle(time_scale=200.0, output_bytes=4096) as fake:
        start = fake.balance()
        # 16 renders of 1 credit, a run budget of 7: two workers claim a bigger budget of
        # their own, which must not raise the run's.
        m = renders_manifest(runs[0], 16)
        data, _ = await run(fake, pg_dsn, pg_schema, runs[0], m, workers=4,
                            budgets=[None, None, "50", "50"], enqueue=("--budget", "7"))
        billed = start - fake.balance()
        assert billed == len(accepted(fake)) == 7
        assert data["summary"]["credits_committed"] <= 7
        over = [o for o in data["outcomes"] if o["state"] == "not_submitted"]
        assert len(over) == 9 and all("budget" in o["error"] for o in over)
    async with FakeViggle(time_scale=200.0, output_bytes=4096) as fake:
        start = fake.balance()
        # A worker's own budget of 3 lowers the run's 7 for what it sends.
        m = renders_manifest(runs[1], 8)
        data, _ = await run(fake, pg_dsn, other_schema, runs[1], m, workers=1,
                            budgets=["3"], enqueue=("--budget", "7"))
        assert start - fake.balance() == len(accepted(fake)) == 3
