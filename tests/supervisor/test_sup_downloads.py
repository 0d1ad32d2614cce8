"""A paid render's output is never lost (issue 11.4).

A download that fails asks the API for the job again (a signed CDN URL that expired comes
back fresh: 403/404/410) and retries with backoff. An output that still cannot be fetched
leaves the render ``complete`` with ``downloaded=False``, its job id and the reason, and
the journal at ``submitted``, so a rerun polls it and downloads it without a new create.
A ``complete`` status without ``cdn_url`` yet is polled again, not failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from suphelp import RENDER_KW, serve_routes

from viggle_async import MemoryJournal, Supervisor, ViggleClient
from viggle_async.testing import ManualClock

BODY = b"\x00\x00\x00\x18ftypisom" + bytes(200)


class Api:
    """One render job, complete from its first poll, served with signed CDN URLs.

    URLs signed up to ``expired_up_to`` answer ``expired_status`` (they expired before the
    client used them), as does every URL while ``down``. The first ``no_url_polls`` polls
    report ``complete`` with no ``cdn_url``.
    """

    def __init__(self) -> None:
        self.base_url = ""
        self.down = False
        self.expired_up_to = 0
        self.expired_status = 403
        self.no_url_polls = 0
        self.maintenance = False  # every status poll answers 200 with an HTML page
        self.signature = 0
        self.creates = 0
        self.polls = 0
        self.cdn_hits: list[int] = []

    async def create(self, request: web.Request) -> web.Response:
        await request.read()
        self.creates += 1
        return web.json_response({"job_id": "job_1", "status": "queued"})

    async def status(self, request: web.Request) -> web.Response:
        self.polls += 1
        if self.maintenance:
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if self.polls <= self.no_url_polls:
            return web.json_response({"job_id": "job_1", "status": "complete"})
        self.signature += 1
        return web.json_response({
            "job_id": "job_1", "status": "complete", "progress_pct": 100,
            "cdn_url": f"{self.base_url}/cdn/job_1.mp4?sig={self.signature}"})

    async def download(self, request: web.Request) -> web.Response:
        sig = int(request.query["sig"])
        self.cdn_hits.append(sig)
        if self.down or sig <= self.expired_up_to:
            return web.Response(status=self.expired_status, text="<Error>Expired</Error>")
        return web.Response(body=BODY, content_type="video/mp4")


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    state = Api()
    async with serve_routes(("POST", "/api/render", state.create),
                            ("GET", "/api/render/{job_id}", state.status),
                            ("GET", "/cdn/{name}", state.download)) as url:
        state.base_url = url
        yield state


@pytest.mark.parametrize("expired_status", [403, 404, 410])
async def test_an_expired_url_is_refreshed_from_the_job_and_downloaded(
    api: Api, clock: ManualClock, png: Path, videos: dict[int, Path], tmp_path: Path,
    expired_status: int,
) -> None:
    api.expired_status = expired_status
    api.expired_up_to = 1  # the URL of the final poll has expired by the time it is used
    async with (ViggleClient("sk-test", base_url=api.base_url, clock=clock) as client,
                clock.autojump(), Supervisor(client, **RENDER_KW) as sup):
        handle = sup.render(key="r", ref_image=png, driving_video=videos[1],
                            output=tmp_path / "r.mp4")
    assert handle.outcome.state == "complete"
    assert handle.outcome.downloaded and handle.outcome.ok
    assert (tmp_path / "r.mp4").read_bytes() == BODY
    assert api.cdn_hits == [1, 2]  # the stale URL once, then the fresh one
    assert api.creates == 1


async def test_an_output_that_cannot_be_fetched_stays_complete_and_a_rerun_downloads_it(
    api: Api, clock: ManualClock, png: Path, videos: dict[int, Path], tmp_path: Path,
) -> None:
    api.down = True
    journal = MemoryJournal()
    dest = tmp_path / "r.mp4"
    async with ViggleClient("sk-test", base_url=api.base_url, clock=clock) as client:
        async with clock.autojump(), Supervisor(client, journal=journal, **RENDER_KW) as sup:
            handle = sup.render(key="r", ref_image=png, driving_video=videos[1], output=dest)
        outcome = handle.outcome
        assert outcome.state == "complete"  # paid for and finished: never "failed"
        assert outcome.job_id == "job_1"
        assert not outcome.downloaded and not outcome.ok
        assert "HTTP 403" in (outcome.download_error or "")
        assert len(api.cdn_hits) > 1  # retried, each time with a fresh URL
        assert api.cdn_hits == sorted(set(api.cdn_hits))
        assert not dest.exists()
        entry = await journal.get("r")
        assert entry is not None and entry.job_id == "job_1"

        api.down = False
        async with clock.autojump(), Supervisor(client, journal=journal, **RENDER_KW) as sup:
            again = sup.render(key="r", ref_image=png, driving_video=videos[1], output=dest)
    assert again.outcome.state == "complete" and again.outcome.downloaded
    assert again.outcome.job_id == "job_1"
    assert dest.read_bytes() == BODY
    assert api.creates == 1  # resumed from the journal, not created again


async def test_complete_without_cdn_url_is_polled_again(
    api: Api, clock: ManualClock, png: Path, videos: dict[int, Path], tmp_path: Path,
) -> None:
    api.no_url_polls = 3
    async with (ViggleClient("sk-test", base_url=api.base_url, clock=clock) as client,
                clock.autojump(), Supervisor(client, **RENDER_KW) as sup):
        handle = sup.render(key="r", ref_image=png, driving_video=videos[1],
                            output=tmp_path / "r.mp4")
    assert handle.outcome.state == "complete" and handle.outcome.downloaded
    assert api.polls > 3


async def test_a_status_that_never_reads_ends_the_wait_as_unreadable_not_timed_out(
    api: Api, clock: ManualClock, png: Path, videos: dict[int, Path], tmp_path: Path,
) -> None:
    """Only the render_timeout reads as "gave up waiting"; an answer we cannot read is
    polled again a bounded number of times, and the job stays resumable."""
    api.maintenance = True
    journal = MemoryJournal()
    async with (ViggleClient("sk-test", base_url=api.base_url, clock=clock) as client,
                clock.autojump(), Supervisor(client, journal=journal, **RENDER_KW) as sup):
        handle = sup.render(key="r", ref_image=png, driving_video=videos[1],
                            output=tmp_path / "r.mp4")
    assert handle.outcome.state == "failed"
    assert handle.outcome.job_id == "job_1"
    assert "unreadable" in (handle.outcome.error or "")
    assert "gave up waiting" not in (handle.outcome.error or "")
    entry = await journal.get("r")
    assert entry is not None and entry.state == "submitted"  # a rerun resumes it
