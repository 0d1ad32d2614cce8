"""A 429 storm on the create route: everyone pauses, nothing is created twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import anyio
from aiohttp import web
from suphelp import RENDER_KW, serve_routes

from viggle_async import Backoff, MemoryJournal, PollPolicy, Supervisor, ViggleClient
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


async def test_a_429_the_client_retries_pauses_every_other_create_at_once(
    png: Path, videos: dict[int, Path],
) -> None:
    """The client resends a create refused with 429 by itself; the other creates must not
    go out meanwhile (the supervisor hears of the 429 at the client's first retry, not once
    its retries are spent), with the in-process account state as with a shared one.

    Real time (1 s): a manual clock jumps whenever the loop waits on a socket, which
    would hide when each create really left."""
    loop = asyncio.get_running_loop()
    arrivals: list[tuple[float, int]] = []  # (loop time, create number)

    async def create(request: web.Request) -> web.Response:
        await request.read()
        n = len(arrivals)
        arrivals.append((loop.time(), n))
        if n == 0:
            return web.json_response({"detail": "Too many requests"}, status=429,
                                     headers={"Retry-After": "1"})
        if n == 1:
            await asyncio.sleep(0.1)  # answered after the 429: its slot frees after it
        return web.json_response({"job_id": f"job_{n}", "status": "queued"})

    async def status(request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]  # no output= asked: the URL is not fetched
        return web.json_response({"job_id": job_id, "status": "complete", "progress_pct": 100,
                                  "cdn_url": f"http://127.0.0.1:9/{job_id}.mp4"})

    image = await anyio.Path(png).read_bytes()
    video = await anyio.Path(videos[1]).read_bytes()
    async with (serve_routes(("POST", "/api/render", create),
                             ("GET", "/api/render/{job_id}", status)) as url,
                ViggleClient("sk-test", base_url=url) as client,
                Supervisor(client, max_uploads=2, poll_policy=PollPolicy.fixed(0.2)) as sup):
        handles = [sup.render(key=f"r{i}", ref_image=image, driving_video=video)
                   for i in range(4)]
    assert [h.outcome.state for h in handles] == ["complete"] * 4
    (refused_at, _), (_, second) = arrivals[:2]
    assert second == 1
    # Creates 0 and 1 left together; every later one waited out the Retry-After (the
    # resend of 0 included), though only create 0's own call was told.
    later = [t for t, n in arrivals if n >= 2]
    assert len(later) == 3 and min(later) >= refused_at + 1 - 0.05, arrivals
