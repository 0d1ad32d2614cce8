"""A request without a file has one deadline, connect + read, capped by ``request`` (issue
13: one aiohttp timer per poll). A server that accepts and never answers must still end
the request, whichever of the settings is left open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from viggle_async import RequestTimeoutError, RetryPolicy, Timeouts, ViggleClient


@pytest.fixture
async def silent_url() -> AsyncIterator[str]:
    """A loopback server that reads requests and never answers them."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("timeouts", [
    Timeouts(connect=0.1, read=0.2, request=None),  # no cap: connect + read still ends it
    Timeouts(connect=5.0, read=5.0, request=0.3),  # the cap, below connect + read
], ids=["no-request-cap", "request-cap"])
async def test_a_poll_nobody_answers_times_out(silent_url: str, timeouts: Timeouts) -> None:
    async with ViggleClient(base_url=silent_url, timeouts=timeouts,
                            retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(RequestTimeoutError) as info:
            await client.renders.get("job_1")
    assert info.value.may_have_reached_server  # a read: sent whole before the wait
