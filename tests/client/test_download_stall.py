"""A CDN that goes quiet does not hang a download: ``Timeouts.read`` seconds without a byte
end the attempt, which resumes (issue 13 moved this from aiohttp's per-chunk ``sock_read``
timer to one watchdog per response). A body that is slow but steady is never cut. Against
loopback servers with short real timeouts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from loophelp import names, serve

from viggle_async import DownloadError, RetryPolicy, Timeouts, ViggleClient

BODY = random.Random(13).randbytes(2 * 2**20 + 99)
HALF = len(BODY) // 2
ETAG = '"q1"'
FAST = RetryPolicy(max_attempts=3, base=0.001, cap=0.002)
READ = 0.25  # seconds without a byte that end an attempt


class QuietCDN:
    """Serves ``BODY`` (Range with If-Range). ``plan`` shapes each answer in turn:
    "quiet" (half the body, then nothing), "dribble" (eight pieces, READ * 0.4 s apart),
    "mute" (no headers at all), "chunked" (no length: chunked transfer encoding, in
    uneven pieces); then whole answers."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.ranges: list[str | None] = []
        self.release = asyncio.Event()  # set when the test ends: quiet handlers return
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        step = self.plan.pop(0) if self.plan else "ok"
        wanted = request.headers.get("Range")
        self.ranges.append(wanted)
        if step == "mute":
            await self.release.wait()
            return web.Response(status=503)
        start, status = 0, 200
        headers = {"ETag": ETAG}
        if wanted and request.headers.get("If-Range") == ETAG:
            start, status = int(wanted.removeprefix("bytes=").rstrip("-")), 206
            headers["Content-Range"] = f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"
        data = BODY[start:]
        resp = web.StreamResponse(status=status, headers=headers)
        if step == "chunked":
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(data)
        await resp.prepare(request)
        if step == "quiet":
            await resp.write(data[:HALF])
            await self.release.wait()
            return resp
        if step == "chunked":
            pos = 0
            for size in (1, 70_000, 300_000, 5, 1_000_000):
                await resp.write(data[pos:pos + size])
                pos += size
            await resp.write(data[pos:])
        elif step == "dribble":
            piece = -(-len(data) // 8)
            for pos in range(0, len(data), piece):
                await resp.write(data[pos:pos + piece])
                await asyncio.sleep(READ * 0.4)
        else:
            await resp.write(data)
        await resp.write_eof()
        return resp


@pytest.fixture
async def cdn() -> AsyncIterator[QuietCDN]:
    server = QuietCDN()
    async with serve(server.handle, "GET") as server.base_url:
        try:
            yield server
        finally:
            server.release.set()


@pytest.fixture
async def client(cdn: QuietCDN) -> AsyncIterator[ViggleClient]:
    async with ViggleClient("k", base_url=cdn.base_url, trust_env=False,
                            timeouts=Timeouts(connect=READ, read=READ),
                            rand=random.Random(4).random) as c:
        yield c


@pytest.mark.timeout(20)  # a watchdog that never fires would hang here
async def test_a_body_that_goes_quiet_resumes_where_it_stopped(
        client: ViggleClient, cdn: QuietCDN, tmp_path: Path) -> None:
    cdn.plan = ["quiet"]
    dest = await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4", retry=FAST)
    assert dest.read_bytes() == BODY
    assert cdn.ranges == [None, f"bytes={HALF}-"]


async def test_a_cdn_that_never_answers_gives_up_with_a_hint(
        client: ViggleClient, cdn: QuietCDN, tmp_path: Path) -> None:
    # No headers within connect + read: each attempt ends, then the download gives up.
    cdn.plan = ["mute", "mute"]
    with pytest.raises(DownloadError, match="no answer in time") as info:
        await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4",
                              retry=RetryPolicy(max_attempts=2, base=0.001, cap=0.002))
    assert "still on the server" in str(info.value)
    assert len(cdn.ranges) == 2
    assert names(tmp_path) == []


async def test_a_slow_but_steady_body_is_not_cut(client: ViggleClient, cdn: QuietCDN,
                                                 tmp_path: Path) -> None:
    # Eight pieces, each within READ of the last, over about 3 x READ in all.
    cdn.plan = ["dribble"]
    dest = await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4", retry=FAST)
    assert dest.read_bytes() == BODY
    assert cdn.ranges == [None]


async def test_a_chunked_body_without_a_length_arrives_whole(
        client: ViggleClient, cdn: QuietCDN, tmp_path: Path) -> None:
    cdn.plan = ["chunked"]
    progress: list[tuple[int, int | None]] = []
    dest = await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4", retry=FAST,
                                 on_progress=lambda n, t: progress.append((n, t)))
    assert dest.read_bytes() == BODY
    assert progress[-1] == (len(BODY), None)  # no length announced


async def test_a_read_timeout_of_zero_means_no_limit(cdn: QuietCDN, tmp_path: Path) -> None:
    # As with aiohttp's own sock_read: 0 switches the read timeout off, not on at once.
    cdn.plan = ["dribble"]
    async with ViggleClient("k", base_url=cdn.base_url, trust_env=False,
                            timeouts=Timeouts(connect=READ, read=0)) as client:
        dest = await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4",
                                     retry=FAST)
    assert dest.read_bytes() == BODY
    assert cdn.ranges == [None]
