"""The poll rate cap of ``LocalAccountState`` (``take_polls``), alone and behind the
``PollScheduler`` that asks it once per batch."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence

import anyio
import pytest

from viggle_async._account import LocalAccountState
from viggle_async._scheduler import PollPolicy, PollScheduler, PollView
from viggle_async.testing import ManualClock


def worst_window(times: Sequence[float], width: float) -> int:
    """The most ``times`` inside any closed window of ``width`` seconds."""
    ts = sorted(times)
    return max((bisect.bisect_right(ts, t + width + 1e-9) - i for i, t in enumerate(ts)),
               default=0)


async def test_a_fresh_cap_grants_its_burst_then_says_when_the_next_start_is_due() -> None:
    account = LocalAccountState()  # 20/s, burst 1 + 0.1 s worth = 3
    assert await account.take_polls(10, 100.0) == (3, pytest.approx(100.05))
    assert (await account.take_polls(1, 100.04))[0] == 0
    granted, next_at = await account.take_polls(1, 100.05)
    assert granted == 1 and next_at == pytest.approx(100.1)
    # Idle time refills up to the burst, never beyond it.
    assert (await account.take_polls(50, 1000.0))[0] == 3


@pytest.mark.parametrize(("rate", "burst"), [(20.0, None), (5.0, 1.0), (50.0, 8.0),
                                             (3.0, 2.5)])
async def test_grants_never_exceed_burst_plus_rate_times_any_window(
        rate: float, burst: float | None) -> None:
    account = LocalAccountState(poll_rate=rate, poll_burst=burst)
    cap_burst = 1 + 0.1 * rate if burst is None else burst
    rng = random.Random(7)
    now, grants = 0.0, []
    for _ in range(3000):  # greedy askers at random moments, asking for random batches
        now += rng.expovariate(4 * rate)
        granted, next_at = await account.take_polls(rng.randint(1, 6), now)
        grants += [now] * granted
        assert next_at >= now
    for width in (0.0, 0.05, 0.3, 1.0, 7.0):
        assert worst_window(grants, width) <= math.floor(cap_burst + rate * width + 1e-9)
    # ... and it is a cap, not a throttle: askers arriving at 4x the rate get most of it
    # (with a burst of 1, a start not asked for the moment it is due is lost: 0.8).
    assert len(grants) >= rate * now * 0.78


async def test_next_at_is_exact_asking_then_always_gets_a_start() -> None:
    account = LocalAccountState(poll_rate=7.0, poll_burst=2.0)
    now = 0.0
    starts = []
    for _ in range(50):
        granted, next_at = await account.take_polls(1, now)
        assert granted == 1
        starts.append(now)
        now = next_at
    assert worst_window(starts, 1.0) <= 2 + 7


async def test_no_cap_grants_every_start() -> None:
    account = LocalAccountState(poll_rate=math.inf)
    assert await account.take_polls(500, 3.0) == (500, 3.0)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"poll_rate": 0.0}, "poll_rate"), ({"poll_rate": -1.0}, "poll_rate"),
    ({"poll_rate": math.nan}, "poll_rate"), ({"poll_burst": 0.5}, "poll_burst"),
    ({"poll_burst": math.inf}, "poll_burst"), ({"poll_burst": math.nan}, "poll_burst")])
def test_a_bad_cap_is_refused_naming_the_field_and_the_fix(
        kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"{field}.*Fix"):
        LocalAccountState(**kwargs)


async def test_asking_for_no_start_is_refused() -> None:
    with pytest.raises(ValueError, match="n=0"):
        await LocalAccountState().take_polls(0, 0.0)


# -- behind the scheduler -------------------------------------------------------------------
class Jobs:
    """Jobs that stay ``processing`` until ``done``; records every poll start."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.starts: dict[str, list[float]] = {}
        self.done = False

    async def poll(self, job_id: str) -> str:
        self.starts.setdefault(job_id, []).append(self.clock.now())
        await self.clock.sleep(0.01)
        return "complete" if self.done else "processing"

    @property
    def all_starts(self) -> list[float]:
        return [t for v in self.starts.values() for t in v]


#: Every job wants a poll every 0.1 s: demand far above any cap below.
EAGER = PollPolicy(first_delay=0.1, min_interval=0.1, max_interval=0.1, jitter=0.0)


def read(status: str) -> PollView:
    return PollView(terminal=status == "complete", fingerprint=status, progress_pct=None)


class Counting:
    """A ``take_polls`` that counts its calls (the round trips a shared store would make)."""

    def __init__(self, account: LocalAccountState) -> None:
        self.account = account
        self.calls = 0
        self.asked: list[int] = []

    async def take_polls(self, n: int, now: float) -> tuple[int, float]:
        self.calls += 1
        self.asked.append(n)
        return await self.account.take_polls(n, now)


async def run(clock: ManualClock, scheds: Sequence[PollScheduler[str]], per: int,
              seconds: float) -> None:
    async with anyio.create_task_group() as tg:
        for k, s in enumerate(scheds):
            for i in range(per):
                tg.start_soon(s.wait, f"s{k}-j{i}")
        await clock.advance(seconds)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(("shared", "own"), [(10.0, math.inf), (10.0, 4.0), (40.0, 30.0)])
async def test_schedulers_sharing_one_account_stay_within_its_cap(
        shared: float, own: float) -> None:
    """Two schedulers (two supervisors of one process) share the account's cap; each one's
    own ``max_rate`` can only lower its share."""
    clock = ManualClock()
    account = Counting(LocalAccountState(poll_rate=shared))
    jobs = [Jobs(clock), Jobs(clock)]
    scheds = [PollScheduler(j.poll, read, clock=clock, rand=random.Random(i).random,
                            max_in_flight=16, max_rate=own, take_polls=account.take_polls,
                            policy=EAGER)
              for i, j in enumerate(jobs)]
    async with scheds[0], scheds[1]:
        await run(clock, scheds, per=60, seconds=30.0)
    starts = jobs[0].all_starts + jobs[1].all_starts
    burst = 1 + 0.1 * shared
    for width in (0.0, 0.5, 2.0, 10.0):
        assert worst_window(starts, width) <= math.floor(burst + shared * width + 1e-9)
        for j in jobs:
            if not math.isinf(own):
                assert worst_window(j.all_starts, width) <= math.floor(
                    1 + 0.1 * own + own * width + 1e-9)
    # Fair: each scheduler gets a share (neither wins every race for the next start).
    assert min(len(j.all_starts) for j in jobs) >= 0.3 * len(starts)
    # 120 jobs want far more than the cap: the account's rate is used, not wasted.
    assert len(starts) >= min(shared, 2 * own) * 30.0 * 0.9
    # Contended, a start costs its ask plus the refusals of the other scheduler, which
    # waits (jittered) until the account says the next start is due before asking again.
    assert account.calls <= 2.5 * len(starts)


async def test_one_ask_covers_a_batch_of_polls() -> None:
    clock = ManualClock()
    account = Counting(LocalAccountState(poll_rate=1000.0, poll_burst=100.0))
    jobs = Jobs(clock)
    s = PollScheduler(jobs.poll, read, clock=clock, rand=random.Random(1).random,
                      max_in_flight=32, max_rate=math.inf, take_polls=account.take_polls,
                      policy=PollPolicy(first_delay=1.0, min_interval=1.0, max_interval=1.0,
                                        jitter=0.0))
    async with s:
        await run(clock, [s], per=30, seconds=10.0)
    # 30 jobs polled together each round: one ask per round, not one per poll.
    assert len(jobs.all_starts) >= 270
    assert account.calls * 10 <= len(jobs.all_starts)
    assert max(account.asked) == 30


async def test_a_failing_account_stops_polls_until_it_answers() -> None:
    clock = ManualClock()
    jobs = Jobs(clock)
    account = LocalAccountState(poll_rate=100.0)
    down = True

    async def take_polls(n: int, now: float) -> tuple[int, float]:
        if down:
            raise ConnectionError("ledger away")
        return await account.take_polls(n, now)

    s = PollScheduler(jobs.poll, read, clock=clock, rand=random.Random(1).random,
                      take_polls=take_polls)
    async with s, anyio.create_task_group() as tg:
        tg.start_soon(s.wait, "j")
        await clock.advance(30.0)
        assert jobs.all_starts == [] and s.rate_errors >= 10  # asked about once a second
        down = False
        await clock.advance(10.0)
        assert jobs.all_starts  # polls resume, the waiter never saw the outage
        jobs.done = True
        await clock.advance(30.0)
        assert s.stats.jobs == 0

