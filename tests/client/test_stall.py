"""Uploads have no total timeout; a stall watchdog ends one that stops making progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from viggle_async import Timeouts, UploadStalledError, ViggleClient
from viggle_async.testing._samples import make_mp4, make_png

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def never_reads() -> AsyncIterator[str]:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()  # accept, then read nothing: the client's writes back up
        writer.close()

    async for url in _serve(handler):
        yield url
        release.set()


@pytest.fixture
async def reads_slowly() -> AsyncIterator[str]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while length > 0:  # steady progress, slower than the "request" timeout overall
            chunk = await reader.read(min(length, 256 * 1024))
            length -= len(chunk)
            await asyncio.sleep(0.02)
        body = b'{"job_id": "job_slow", "status": "queued"}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async for url in _serve(handler):
        yield url


async def test_stalled_upload_raises_upload_stalled_and_is_not_resent(never_reads: str) -> None:
    video = make_mp4(3.0, payload=48 * 1024 * 1024)  # more than the socket buffers hold
    async with ViggleClient("sk-test", base_url=never_reads,
                            timeouts=Timeouts(stall=0.5, read=30)) as client:
        with pytest.raises(UploadStalledError) as info:
            await client.renders.create(ref_image=make_png(), driving_video=video)
    # The last bytes never went out, so no job can exist: the error says so.
    assert info.value.may_have_reached_server is False
    assert "no progress for 0.5 s" in str(info.value)


async def test_slow_but_steady_upload_outlives_the_request_timeout(reads_slowly: str) -> None:
    video = make_mp4(3.0, payload=12 * 1024 * 1024)  # ~48 reads x 20 ms ≈ 1 s
    sent: list[int] = []
    async with ViggleClient("sk-test", base_url=reads_slowly,
                            timeouts=Timeouts(request=0.3, stall=5.0)) as client:
        job = await client.renders.create(ref_image=make_png(), driving_video=video,
                                          on_upload=lambda s, t: sent.append(s))
    assert job.job_id == "job_slow"
    assert sent[-1] == len(video) + len(make_png())
