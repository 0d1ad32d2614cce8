"""The shared poll rate cap (``PostgresAccountState.take_polls``) on a real PostgreSQL:
connections and processes taking poll starts together never exceed it over any window.

Times are this machine's wall clock (``time.time``, one clock for every process here);
each grant is counted when its answer arrived, so windows are widened by the slowest round
trip seen: a grant may be answered up to that long after the database made it.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import sys
import time
from collections.abc import Sequence

import anyio
import pytest
from pghelp import API_KEY, LedgerFactory

from viggle_async._clock import SystemClock
from viggle_async._polling import PollPolicy, PollView
from viggle_async._scheduler import PollScheduler
from viggle_async.pg import PostgresAccountState, PostgresLedger


def worst_window(times: Sequence[float], width: float) -> int:
    """The most ``times`` inside any closed window of ``width`` seconds."""
    ts = sorted(times)
    return max((bisect.bisect_right(ts, t + width) - i for i, t in enumerate(ts)), default=0)


def assert_within_cap(grants: Sequence[float], rate: float, burst: float, slack: float) -> None:
    for width in (0.0, 0.1, 0.25, 0.5, 1.0):
        cap = burst + rate * (width + slack)
        assert worst_window(grants, width) <= math.floor(cap + 1e-9), (width, cap)


class Taker:
    """Takes poll starts as greedily as a saturated scheduler would; records each grant."""

    def __init__(self, state: PostgresAccountState, seed: int) -> None:
        self.state = state
        self.rng = random.Random(seed)
        self.grants: list[float] = []
        self.rtt = 0.0
        self.calls = 0

    async def run(self, until: float) -> None:
        while time.time() < until:
            sent = time.time()
            granted, next_at = await self.state.take_polls(self.rng.randint(1, 4),
                                                           self.state_clock_now())
            got = time.time()
            self.calls += 1
            self.rtt = max(self.rtt, got - sent)
            self.grants += [got] * granted
            if granted == 0:
                await anyio.sleep(max(0.0, next_at - self.state_clock_now()))

    def state_clock_now(self) -> float:
        return SystemClock().now()


async def test_connections_taking_polls_together_never_exceed_the_rate(
        open_ledger: LedgerFactory) -> None:
    rate, burst = 40.0, 4.0
    ledgers = [await open_ledger() for _ in range(4)]
    await ledgers[0].set_poll_rate(rate, burst)
    takers = [Taker(PostgresAccountState(ledger, worker_id=f"w{i}"), seed=i * 2 + k)
              for i, ledger in enumerate(ledgers) for k in range(2)]
    start = time.time()
    async with anyio.create_task_group() as tg:
        for t in takers:
            tg.start_soon(t.run, start + 1.5)
    grants = [g for t in takers for g in t.grants]
    rtt = max(t.rtt for t in takers)
    assert_within_cap(grants, rate, burst, slack=rtt)
    # A cap, not a throttle: eight greedy takers get (nearly) the whole rate between them.
    assert len(grants) >= rate * (max(grants) - start) * 0.8
    assert all(t.grants for t in takers)  # and nobody starves


_PROCESS = """
import anyio, json, random, sys, time
from viggle_async.pg import PostgresAccountState, PostgresLedger

async def main(dsn, schema, key, until, seed):
    rng = random.Random(int(seed))
    grants, rtt = [], 0.0
    async with PostgresLedger(dsn, api_key=key, schema=schema, max_size=1) as ledger:
        state = PostgresAccountState(ledger)
        while time.time() < float(until):
            sent = time.time()
            granted, next_at = await state.take_polls(rng.randint(1, 4), anyio.current_time())
            got = time.time()
            rtt = max(rtt, got - sent)
            grants += [got] * granted
            if not granted:
                await anyio.sleep(max(0.0, next_at - anyio.current_time()))
    print(json.dumps({"grants": grants, "rtt": rtt}))

anyio.run(main, *sys.argv[1:])
"""


async def test_processes_taking_polls_together_never_exceed_the_rate(
        pg_dsn: str, open_ledger: LedgerFactory) -> None:
    rate, burst = 30.0, 3.0
    ledger = await open_ledger()
    await ledger.set_poll_rate(rate, burst)
    results: list[dict[str, object]] = []
    # Every process starts taking at the same wall-clock moment, after its imports.
    start, until = time.time() + 3.0, time.time() + 4.5

    async def process(seed: int) -> None:
        done = await anyio.run_process(
            [sys.executable, "-c", _PROCESS, pg_dsn, ledger.schema, API_KEY, str(until),
             str(seed)], check=False)
        assert done.returncode == 0, done.stderr.decode()
        results.append(json.loads(done.stdout))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for seed in range(3):
                tg.start_soon(process, seed)
    grants = [float(g) for r in results for g in r["grants"]]  # type: ignore[attr-defined]
    rtt = max(float(r["rtt"]) for r in results)  # type: ignore[arg-type]
    assert_within_cap(grants, rate, burst, slack=rtt)
    assert len(grants) >= rate * (until - max(start, min(grants))) * 0.7


async def test_one_statement_grants_a_whole_batch_and_says_when_the_next_is_due(
        open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    await ledger.set_poll_rate(10.0, 5.0)
    state = PostgresAccountState(ledger)
    clock = SystemClock()
    start = clock.now()
    assert (await state.take_polls(5, clock.now()))[0] == 5  # the burst, in one round trip
    granted, next_at = await state.take_polls(3, clock.now())
    elapsed = clock.now() - start
    # After the burst, only what 10/s refilled since: none unless the machine stalled.
    assert granted <= math.floor(elapsed * 10.0 + 1e-9)
    if granted < 3:
        # The burst ran 4 starts ahead of 10/s: the next is due 0.1 s after the first.
        assert 0.0 < next_at - clock.now() <= 0.1 + 0.01
    await anyio.sleep(max(0.0, next_at - clock.now()))
    assert (await state.take_polls(3, clock.now()))[0] >= 1


async def test_the_default_cap_is_one_processes_default_and_none_lifts_it(
        open_ledger: LedgerFactory) -> None:
    ledger = await open_ledger()
    assert await ledger.poll_rate() == (20.0, 3.0)
    assert (await ledger.summary()).poll_rate == 20.0
    state = PostgresAccountState(ledger)
    assert (await state.take_polls(50, 0.0))[0] == 3
    await ledger.set_poll_rate(None)
    assert await ledger.poll_rate() == (None, 1.0)
    assert (await ledger.summary()).poll_rate is None
    assert (await state.take_polls(500, 0.0))[0] == 500
    await ledger.set_poll_rate(math.inf)  # no cap, said another way
    assert (await state.take_polls(500, 0.0))[0] == 500
    await ledger.set_poll_rate(50.0)
    assert await ledger.poll_rate() == (50.0, 6.0)  # the burst follows the rate: 0.1 s + 1


@pytest.mark.parametrize(("rate", "burst", "field"), [
    (0.0, None, "poll_rate"), (-5.0, None, "poll_rate"), (math.nan, None, "poll_rate"),
    (10.0, 0.5, "poll_burst"), (10.0, math.inf, "poll_burst")])
async def test_a_bad_shared_cap_is_refused_before_it_is_stored(
        open_ledger: LedgerFactory, rate: float, burst: float | None, field: str) -> None:
    ledger = await open_ledger()
    with pytest.raises(ValueError, match=f"{field}.*Fix"):
        await ledger.set_poll_rate(rate, burst)
    assert await ledger.poll_rate() == (20.0, 3.0)
    with pytest.raises(ValueError, match="n=0"):
        await PostgresAccountState(ledger).take_polls(0, 0.0)


async def test_a_dead_workers_unused_starts_block_nobody(open_ledger: LedgerFactory) -> None:
    rate = 20.0
    dead_ledger, live_ledger = await open_ledger(), await open_ledger()
    await dead_ledger.set_poll_rate(rate, 2.0)
    clock = SystemClock()
    dead = PostgresAccountState(dead_ledger, worker_id="dead")
    assert (await dead.take_polls(2, clock.now()))[0] == 2
    await dead_ledger.aclose()  # dies holding two starts it never used
    live = PostgresAccountState(live_ledger, worker_id="live")
    granted, next_at = await live.take_polls(1, clock.now())
    # Nothing is held for the dead worker: the next start is due within one spacing.
    assert granted == 1 or next_at - clock.now() <= 1 / rate + 0.05


# -- behind real schedulers ----------------------------------------------------------------
class Jobs:
    def __init__(self) -> None:
        self.starts: list[float] = []
        self.rtt = 0.0  # the slowest take_polls answer

    async def poll(self, job_id: str) -> str:
        self.starts.append(time.time())
        await anyio.sleep(0.005)
        return "processing"


def read(status: str) -> PollView:
    return PollView(terminal=False, fingerprint=status)


EAGER = PollPolicy(first_delay=0.05, min_interval=0.05, max_interval=0.05, jitter=0.0)


async def _run_schedulers(ledgers: Sequence[PostgresLedger], own_rate: float,
                          seconds: float) -> list[Jobs]:
    jobs = [Jobs() for _ in ledgers]
    async with anyio.create_task_group() as tg:
        for i, (ledger, j) in enumerate(zip(ledgers, jobs, strict=True)):
            tg.start_soon(_one_scheduler, ledger, j, own_rate, i)
        await anyio.sleep(seconds)
        tg.cancel_scope.cancel()
    return jobs


async def _one_scheduler(ledger: PostgresLedger, jobs: Jobs, own_rate: float, i: int) -> None:
    state = PostgresAccountState(ledger, worker_id=f"s{i}")

    async def take_polls(n: int, now: float) -> tuple[int, float]:
        sent = time.time()
        try:
            return await state.take_polls(n, now)
        finally:
            jobs.rtt = max(jobs.rtt, time.time() - sent)

    s: PollScheduler[str] = PollScheduler(
        jobs.poll, read, clock=SystemClock(), rand=random.Random(i).random, max_in_flight=8,
        max_rate=own_rate, policy=EAGER, take_polls=take_polls)
    async with s, anyio.create_task_group() as tg:
        for k in range(30):
            tg.start_soon(s.wait, f"j{k}")


async def test_schedulers_in_two_workers_share_the_cap(open_ledger: LedgerFactory) -> None:
    ledgers = [await open_ledger(), await open_ledger()]
    await ledgers[0].set_poll_rate(20.0, 2.0)
    jobs = await _run_schedulers(ledgers, math.inf, 1.5)
    starts = jobs[0].starts + jobs[1].starts
    # Slack: a batch may be started up to the scheduler's hold (0.1 s) after its grant,
    # plus the round trip the grant took.
    assert_within_cap(starts, 20.0, 2.0, slack=0.1 + max(j.rtt for j in jobs))
    # Fair: neither worker starves (asking at exactly next_at, one once won every race).
    assert min(len(j.starts) for j in jobs) >= 0.25 * len(starts)


async def test_a_workers_own_rate_only_lowers_the_shared_cap(
        open_ledger: LedgerFactory) -> None:
    ledgers = [await open_ledger()]
    await ledgers[0].set_poll_rate(1000.0, 100.0)
    (jobs,) = await _run_schedulers(ledgers, 10.0, 1.2)
    assert_within_cap(jobs.starts, 10.0, 1.0 + 1.0, slack=0.02)  # its own 10/s binds
