"""A 429 storm on the create route: everyone pauses, nothing is created twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
from suphelp import RENDER_KW

from viggle_async import Backoff, MemoryJournal, Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, Faults, ManualClock, RateLimit


async def test_429_storm_completes_every_job_once(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    fake.faults = Faults(rate_limit=RateLimit(rate=1.0, burst=2,
                                              routes=frozenset({"POST /api/render"})))
    backoffs: list[Backoff] = []
    sup = Supervisor(client, **RENDER_KW)
    async with clock.autojump(), anyio.create_task_group() as tg, sup:
        events = sup.events()

        async def collect() -> None:
            async for event in events:
                if isinstance(event, Backoff):
                    backoffs.append(event)

        tg.start_soon(collect)  # ends when the supervisor closes its streams
        # Bytes, not paths: a 429 answered before the body is read leaks the open
        # upload file (reported: _uploads.Upload.chunks opens it in a cancellable thread).
        image = await anyio.Path(png).read_bytes()
        video = await anyio.Path(videos[1]).read_bytes()
        handles = [sup.render(key=f"r{i}", ref_image=image, driving_video=video)
                   for i in range(20)]
    assert {h.outcome.state for h in handles} == {"complete"}
    assert fake.observations.rate_limited > 0
    assert any(b.cause == "rate_limit" and b.delay > 0 for b in backoffs)
    accepted = [c for c in fake.creates if c.kind == "render" and c.status == 200]
    assert len(accepted) == 20
    # One job per key: every outcome names a distinct accepted job.
    assert Counter(c.result_id for c in accepted).most_common(1)[0][1] == 1
    assert {h.outcome.job_id for h in handles} == {c.result_id for c in accepted}


async def test_429_on_journaled_creates_resends_and_records_one_job_each(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    """The client resends a create answered 429 (no job was made); the journal, already at
    "sending" from the first attempt, must take the resend and then the one job id."""
    fake.faults = Faults(rate_limit=RateLimit(rate=0.5, burst=1,
                                              routes=frozenset({"POST /api/render"})))
    journal = MemoryJournal()
    async with clock.autojump(), Supervisor(client, journal=journal, **RENDER_KW) as sup:
        handles = [sup.render(key=f"r{i}", ref_image=png, driving_video=videos[1])
                   for i in range(6)]
    assert fake.observations.rate_limited > 0
    assert {h.outcome.state for h in handles} == {"complete"}
    accepted = {c.result_id for c in fake.creates if c.kind == "render" and c.status == 200}
    entries = {e.key: e for e in await journal.entries()}
    assert {e.job_id for e in entries.values()} == accepted
    assert {(e.state, e.final_status) for e in entries.values()} == {("final", "complete")}
