"""A request without a file has one deadline, connect + read, capped by ``request`` (issue
13: one aiohttp timer per poll). A server that accepts and never answers must still end
the request, whichever of the settings is left open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest
from aiohttp import web
from loophelp import serve

from viggle_async import RequestTimeoutError, RetryPolicy, Timeouts, ViggleClient
from viggle_async._transport import _Deadlines


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


# Polls share one loop timer for their deadlines (issue 13): each poll must still end at
# its own deadline, never at another's, and a cancel from the caller stays a cancel.
DEADLINE = Timeouts(connect=0.1, read=0.2, request=None)  # connect + read: 0.3 s
NO_RETRY = RetryPolicy(max_attempts=1)


async def _timed_poll(client: ViggleClient) -> float:
    """Seconds of the event loop's clock (the one the deadlines use) until the poll failed
    with RequestTimeoutError."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RequestTimeoutError):
        await client.renders.get("job_1")
    return loop.time() - started


async def test_a_poll_times_out_at_its_deadline_not_before(silent_url: str) -> None:
    async with ViggleClient(base_url=silent_url, timeouts=DEADLINE, retry=NO_RETRY) as client:
        elapsed = await _timed_poll(client)
    # Not before connect + read; the upper bound is loose (a loaded machine), not a timing.
    assert 0.3 <= elapsed < 5.0


async def test_polls_started_later_keep_their_own_deadlines(silent_url: str) -> None:
    async with ViggleClient(base_url=silent_url, timeouts=DEADLINE, retry=NO_RETRY) as client:
        first = asyncio.create_task(_timed_poll(client))
        await asyncio.sleep(0.15)
        later = [asyncio.create_task(_timed_poll(client)) for _ in range(3)]
        await asyncio.sleep(0.1)
        last = asyncio.create_task(_timed_poll(client))
        elapsed = await asyncio.gather(first, *later, last)
    # The timer armed for the first poll fires while the others still have time left:
    # each of them times out only at its own deadline, whatever the order.
    assert all(0.3 <= e < 5.0 for e in elapsed)


async def test_the_callers_cancel_is_a_cancel_and_the_next_poll_still_times_out(
        silent_url: str) -> None:
    async with ViggleClient(base_url=silent_url, timeouts=DEADLINE, retry=NO_RETRY) as client:
        poll = asyncio.create_task(client.renders.get("job_1"))
        await asyncio.sleep(0.05)
        poll.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poll
        assert await _timed_poll(client) >= 0.3


async def test_an_enclosing_timeout_that_ends_first_is_the_callers(silent_url: str) -> None:
    async with ViggleClient(base_url=silent_url, timeouts=DEADLINE, retry=NO_RETRY) as client:
        # The caller's own asyncio.timeout, shorter than ours: a TimeoutError of theirs.
        with pytest.raises(TimeoutError) as info:
            async with asyncio.timeout(0.1):
                await client.renders.get("job_1")
        assert not isinstance(info.value, RequestTimeoutError)
        # anyio's cancel scope around a poll: cancelled quietly, nothing leaks.
        with anyio.move_on_after(0.1) as scope:
            await client.renders.get("job_1")
        assert scope.cancelled_caught
        assert await _timed_poll(client) >= 0.3


async def test_an_answered_poll_leaves_no_deadline_behind() -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"job_id": "job_1", "status": "processing"})

    async with serve(answer, "GET") as base, \
            ViggleClient(base_url=base, timeouts=DEADLINE, retry=NO_RETRY) as client:
        for _ in range(3):
            assert (await client.renders.get("job_1")).status == "processing"
        # Past every deadline those polls had: nothing cancels this task afterwards.
        await asyncio.sleep(0.5)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        assert (await client.renders.get("job_1")).status == "processing"


async def test_a_cancel_of_the_callers_at_the_deadline_itself_stays_a_cancel() -> None:
    # Both cancels land in the same loop turn (same ``call_at`` time, before the task
    # runs again): the caller's wins, as with asyncio.timeout, and nothing is left over.
    deadlines = _Deadlines(0.05)
    loop = asyncio.get_running_loop()
    outcome: list[str] = []

    async def poll() -> None:
        entry = deadlines.enter()
        assert entry is not None
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("timeout" if deadlines.timed_out(entry) else "cancelled")
            raise
        finally:
            deadlines.leave(entry)

    task = asyncio.create_task(poll())
    await asyncio.sleep(0)
    loop.call_at(deadlines._waiting[task], task.cancel)  # at the deadline itself
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["cancelled"]
    deadlines.stop()
