"""Retry decisions (docs/api/client-rules.md#create-retries,
docs/api/client-rules.md#create-retries: never spend a credit twice), on a recording
loopback server and the fake, so they hold on every aiohttp version."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from viggle_async import (
    ConnectError,
    RateLimitError,
    ResponseFormatError,
    RetryEvent,
    RetryPolicy,
    ServerError,
    TransportError,
    ViggleClient,
)
from viggle_async._protocol import Request, Response
from viggle_async._transport import AiohttpTransport
from viggle_async.testing import FakeViggle, ManualClock, make_mp4, make_png, write_mp4

if TYPE_CHECKING:
    from loophelp import Scripted

JOB = {"job_id": "job_1", "status": "queued"}
URLS = {"ref_image_url": "https://e.com/a.png", "driving_video_url": "https://e.com/b.mp4"}


def _client(base_url: str, clock: ManualClock, events: list[RetryEvent],
            key: str = "sk-retry", **kwargs: Any) -> ViggleClient:
    return ViggleClient(key, base_url=base_url, clock=clock, on_retry=events.append,
                        rand=lambda: 0.5, **kwargs)


async def test_get_retried_through_503_then_succeeds(scripted: Scripted,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    scripted.queue((503, {"detail": "busy"}), (503, {"detail": "busy"}),
                   (200, {"job_id": "job_1", "status": "processing"}))
    clock, events = ManualClock(), []
    caplog.set_level(logging.INFO, logger="viggle_async")
    async with _client(scripted.base_url, clock, events) as client, clock.autojump():
        status = await client.renders.get("job_1")
    assert status.status == "processing"
    assert len(scripted.seen) == 3
    assert [(e.method, e.path, e.attempt) for e in events] == [
        ("GET", "/api/render/job_1", 1), ("GET", "/api/render/job_1", 2)]
    assert all(isinstance(e.cause, ServerError) for e in events)
    # Full jitter with rand=0.5: 0.5 * 0.5 * 2**attempt.
    assert [e.delay for e in events] == [0.25, 0.5]
    assert clock.now() == 0.75
    retries = [r for r in caplog.records if r.name == "viggle_async" and "retrying" in r.message]
    assert len(retries) == 2 and "ServerError" in retries[0].message


async def test_get_gives_up_after_max_attempts(scripted: Scripted) -> None:
    scripted.always(502, {"detail": "bad gateway"})
    clock, events = ManualClock(), []
    async with _client(scripted.base_url, clock, events,
                       retry=RetryPolicy(max_attempts=3)) as client, clock.autojump():
        with pytest.raises(ServerError):
            await client.characters.get("c1")
    assert len(scripted.seen) == 3 and len(events) == 2


async def test_post_not_retried_on_500(scripted: Scripted) -> None:
    scripted.queue((500, {"detail": "boom"}))
    clock, events = ManualClock(), []
    async with _client(scripted.base_url, clock, events) as client:
        with pytest.raises(ServerError) as info:
            await client.renders.create(**URLS)
    assert info.value.status == 500
    assert len(scripted.seen) == 1 and events == []


def _http_date(seconds: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_post_retried_on_429_honouring_retry_after(scripted: Scripted, form: str) -> None:
    # An HTTP-date has whole seconds and is read against the wall clock: 29-30 s.
    header, low, high = ("7", 7.0, 7.0) if form == "seconds" else (_http_date(30), 28.0, 30.0)
    scripted.queue((429, {"detail": "slow down"}, {"Retry-After": header}), (200, JOB))
    clock, events = ManualClock(), []
    async with _client(scripted.base_url, clock, events) as client, clock.autojump():
        job = await client.renders.create(ref_image=make_png(), driving_video=make_mp4(2.0))
    assert job.job_id == "job_1"
    (event,) = events
    assert isinstance(event.cause, RateLimitError) and low <= event.delay <= high
    assert clock.now() == event.delay
    first, second = scripted.seen
    # The resend rebuilt the whole multipart body (conventions: never reuse a payload).
    assert second.body.count(make_mp4(2.0)) == 1
    assert len(first.body) == len(second.body)
    assert first.headers["Content-Length"] == second.headers["Content-Length"]


async def test_retry_after_above_the_cap_fails_fast(scripted: Scripted) -> None:
    scripted.queue((429, {"detail": "later"}, {"Retry-After": "3600"}), (200, JOB))
    clock, events = ManualClock(), []
    async with _client(scripted.base_url, clock, events) as client:
        with pytest.raises(RateLimitError) as info:
            await client.renders.create(**URLS)
    assert info.value.retry_after == 3600
    assert len(scripted.seen) == 1 and events == [] and clock.now() == 0


async def test_one_shot_stream_is_not_resent(scripted: Scripted) -> None:
    scripted.queue((429, {"detail": "slow"}, {"Retry-After": "1"}), (200, JOB))

    async def stream() -> AsyncIterator[bytes]:
        yield make_mp4(2.0)

    clock, events = ManualClock(), []
    async with _client(scripted.base_url, clock, events) as client:
        with pytest.raises(RateLimitError):
            await client.renders.create(ref_image=make_png(), driving_video=stream())
    assert len(scripted.seen) == 1  # a resend would have sent an empty video


async def test_post_not_resent_after_mid_body_disconnect(client: ViggleClient,
                                                         fake: FakeViggle) -> None:
    fake.faults.drop_uploads = 1
    fake.faults.drop_after_bytes = 10**6  # the server reads the whole body, then hangs up
    start = fake.balance()
    with pytest.raises(TransportError) as info:
        await client.renders.create(ref_image=make_png(), driving_video=make_mp4(2.0))
    assert info.value.may_have_reached_server is True
    assert not isinstance(info.value, ConnectError)
    assert fake.count("POST", "/api/render") == 1 and fake.dropped_uploads == 1
    assert fake.balance() == start


async def test_big_upload_cut_short_is_not_resent(client: ViggleClient, fake: FakeViggle,
                                                  tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    write_mp4(video, 3.0, size=8 * 2**20)
    fake.faults.drop_uploads = 1
    fake.faults.drop_after_bytes = 64 * 1024
    with pytest.raises(TransportError):
        await client.renders.create(ref_image=make_png(), driving_video=video)
    assert fake.count("POST", "/api/render") == 1


class _FailFirstConnects(AiohttpTransport):
    """Connection refused for the first ``n`` sends, then the real thing."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    async def send(self, request: Request, *, url: str, headers: Mapping[str, str],
                   **kwargs: Any) -> Response:
        if self.left > 0:
            self.left -= 1
            raise ConnectError("cannot connect (test)")
        return await super().send(request, url=url, headers=headers, **kwargs)


async def test_post_resent_after_connect_failure(fake: FakeViggle) -> None:
    clock, events = ManualClock(), []
    transport = _FailFirstConnects(2)
    async with _client(fake.base_url, clock, events, fake.api_key,
                       transport=transport) as client, clock.autojump():
        job = await client.renders.create(ref_image=make_png(), driving_video=make_mp4(2.0))
    assert [type(e.cause) for e in events] == [ConnectError, ConnectError]
    assert len(fake.creates) == 1 and fake.creates[0].result_id == job.job_id


async def test_real_connect_refusal_is_retried_then_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: connections are refused
    clock, events = ManualClock(), []
    async with _client(f"http://127.0.0.1:{port}", clock, events) as client, clock.autojump():
        with pytest.raises(ConnectError) as info:
            await client.renders.create(**URLS)
    assert info.value.may_have_reached_server is False
    assert len(events) == 3  # max_attempts=4: every attempt was safe to resend


async def test_cancel_during_retry_sleep_stops_at_once(scripted: Scripted) -> None:
    scripted.always(503, {"detail": "busy"})
    clock, events = ManualClock(), []
    retrying = asyncio.Event()

    def on_retry(event: RetryEvent) -> None:
        events.append(event)
        retrying.set()

    async with ViggleClient("sk-retry", base_url=scripted.base_url, clock=clock,
                            on_retry=on_retry) as client:
        task = asyncio.create_task(client.renders.get("job_1"))
        await retrying.wait()
        await clock.run_until_idle()
        assert clock.sleepers == 1  # the retry is asleep on the clock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert clock.sleepers == 0
        await clock.advance(3600)
    assert len(scripted.seen) == 1 and len(events) == 1


@pytest.mark.parametrize(("status", "body"), [
    (504, b"<html><body>504 Gateway Time-out</body></html>"),
    (502, b""),
    (500, b'{"detail": "internal"}'),
    (200, b'{"status": "queued"}'),
    (200, b"<html>ok</html>"),
])
async def test_create_answered_without_a_refusal_over_the_wire_is_ambiguous(
        scripted: Scripted, status: int, body: bytes) -> None:
    # Issue 11.1: a gateway may answer this after the backend created (and billed) the job.
    scripted.queue((status, body))
    clock, events = ManualClock(), []
    async with _client(scripted.base_url, clock, events) as client:
        with pytest.raises((ServerError, ResponseFormatError)) as info:
            await client.renders.create(ref_image=make_png(), driving_video=make_mp4(2.0))
    assert info.value.may_have_reached_server is True
    assert len(scripted.seen) == 1 and events == []


async def test_status_503_retry_after_over_the_wire(scripted: Scripted) -> None:
    scripted.queue((503, {"detail": "busy"}, {"Retry-After": "3"}),
                   (200, {"job_id": "job_1", "status": "processing"}))
    clock, events = ManualClock(), []
    async with _client(scripted.base_url, clock, events) as client, clock.autojump():
        status = await client.renders.get("job_1")
    assert status.status == "processing" and [e.delay for e in events] == [3.0]
