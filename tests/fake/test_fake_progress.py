"""Realistic render progress knobs: per-job rate, stalls, uneven checkpoints, queue load."""

from __future__ import annotations

import aiohttp
from fakeapi import Api, ManualClock

from viggle_async.testing import FakeViggle, Faults

# FakeSettings defaults: queue 2 s, processing 5 + 2 x video seconds.
BASE_PROCESSING = 5.0 + 2.0 * 4.0
CHECKPOINTS = ["ref_done", "dri_done", "bg_done", "render_done"]


async def _jobs(clock: ManualClock, faults: Faults, n: int) -> list[tuple[float, float, float]]:
    """(queue delay, processing span, stall) of n renders made with ``faults``."""
    async with FakeViggle(clock=clock, faults=faults) as fake, aiohttp.ClientSession() as s:
        api = Api(fake, s)
        out = []
        for _ in range(n):
            _, created = await api.on_demand(4.0)
            job = fake.job(created["job_id"])
            out.append((job.started - job.created, job.finished - job.started, job.stall_s))
        return out


async def test_defaults_are_linear(clock: ManualClock) -> None:
    assert await _jobs(clock, Faults(), 3) == [(2.0, BASE_PROCESSING, 0.0)] * 3


async def test_rate_jitter_and_stalls_are_seeded_and_bounded(clock: ManualClock) -> None:
    def faults() -> Faults:
        return Faults(render_rate_jitter=0.3, stall_fraction=0.5, stall_max=0.1, seed=4)

    jobs = await _jobs(clock, faults(), 40)
    assert jobs == await _jobs(clock, faults(), 40)
    work = [span - stall for _, span, stall in jobs]
    assert all(0.7 * BASE_PROCESSING <= w <= 1.3 * BASE_PROCESSING for w in work)
    assert max(work) - min(work) > 0.2 * BASE_PROCESSING  # it really varies
    stalled = [(w, stall) for w, (_, _, stall) in zip(work, jobs, strict=True) if stall > 0]
    assert 10 <= len(stalled) <= 30  # about half
    assert all(stall <= 0.1 * w for w, stall in stalled)


async def test_progress_freezes_during_a_stall(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.stall_fraction = 1.0
    fake.faults.stall_max = 0.5
    _, created = await api.on_demand(4.0)
    job = fake.job(created["job_id"])
    assert job.stall_s > 0
    clock.advance(job.stall_start - fake.now() + job.stall_s / 4)
    first = await api.status(job.job_id)
    clock.advance(job.stall_s / 2)
    second = await api.status(job.job_id)
    assert first["status"] == second["status"] == "processing"
    assert first["progress_pct"] == second["progress_pct"]
    clock.advance(job.stall_s)
    third = await api.status(job.job_id)
    assert third["progress_pct"] > second["progress_pct"]
    clock.advance(job.finished - fake.now())
    assert (await api.status(job.job_id))["status"] == "complete"


async def test_uneven_checkpoints_stay_in_order(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.uneven_checkpoints = True
    spans = set()
    for _ in range(5):
        _, created = await api.on_demand(4.0)
        job = fake.job(created["job_id"])
        spans.add(job.marks)
        assert list(job.marks) == sorted(job.marks) and job.marks[0] > 0 and job.marks[-1] < 1
        seen = []
        clock.advance(job.started - fake.now())
        while (body := await api.status(job.job_id))["status"] != "complete":
            if body["checkpoint"] and body["checkpoint"] not in seen:
                seen.append(body["checkpoint"])
            clock.advance(0.1)
        assert seen == [c for c in CHECKPOINTS if c in seen] and len(seen) >= 3
    assert len(spans) == 5


async def test_queue_delay_jitters_and_grows_with_load(clock: ManualClock) -> None:
    jittered = await _jobs(clock, Faults(queue_jitter=0.5, seed=1), 30)
    queues = [q for q, _, _ in jittered]
    assert all(1.0 <= q <= 3.0 for q in queues) and max(queues) - min(queues) > 0.5
    loaded = await _jobs(clock, Faults(queue_s_per_active_job=1.5), 4)
    assert [q for q, _, _ in loaded] == [2.0, 3.5, 5.0, 6.5]
