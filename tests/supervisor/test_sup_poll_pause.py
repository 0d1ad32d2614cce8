"""A 5xx with Retry-After on a status poll pauses every poll of the supervisor, as a 429
does (issue 11.7): the API asked every client to wait, not just that job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from suphelp import RENDER_KW, serve_routes

from viggle_async import RetryPolicy, Supervisor, ViggleClient
from viggle_async.testing import ManualClock


class Api:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.base_url = ""
        self.jobs = 0
        self.polls: list[tuple[float, str]] = []
        self.refuse: dict[str, tuple[int, str]] = {}  # job -> (status, Retry-After), once

    async def create(self, request: web.Request) -> web.Response:
        await request.read()
        self.jobs += 1
        return web.json_response({"job_id": f"job_{self.jobs}", "status": "queued"})

    async def status(self, request: web.Request) -> web.Response:
        job = request.match_info["job_id"]
        self.polls.append((self.clock.now(), job))
        if job in self.refuse:
            code, after = self.refuse.pop(job)
            return web.Response(status=code, text="<html>Service Unavailable</html>",
                                headers={"Retry-After": after}, content_type="text/html")
        done = sum(1 for _, j in self.polls if j == job) >= 4
        return web.json_response({"job_id": job, "status": "complete" if done else "processing",
                                  **({"cdn_url": f"{self.base_url}/cdn/x.mp4"} if done else {})})


@pytest.fixture
async def api(clock: ManualClock) -> AsyncIterator[Api]:
    state = Api(clock)
    async with serve_routes(("POST", "/api/render", state.create),
                            ("GET", "/api/render/{job_id}", state.status)) as url:
        state.base_url = url
        yield state


@pytest.mark.parametrize("code", [
    503,
    502,
    429,
])
async def test_a_retry_after_on_one_poll_pauses_every_poll(
    api: Api, clock: ManualClock, png: Path, videos: dict[int, Path], code: int,
) -> None:
    api.refuse["job_1"] = (code, "30")
    # No client-side retries: the answer reaches the supervisor's scheduler at once.
    async with (ViggleClient("sk-test", base_url=api.base_url, clock=clock,
                             retry=RetryPolicy(max_attempts=1)) as client,
                clock.autojump(), Supervisor(client, **RENDER_KW) as sup):
        handles = [sup.render(key=f"r{i}", ref_image=png, driving_video=videos[1])
                   for i in range(3)]
    assert {h.outcome.state for h in handles} == {"complete"}
    refused_at = next(t for t, job in api.polls if job == "job_1")
    later = [(t, job) for t, job in api.polls if t > refused_at]
    assert later, "polling went on after the pause"
    # Nothing was polled, for any job, until the Retry-After had passed.
    assert min(t for t, _ in later) >= refused_at + 30
