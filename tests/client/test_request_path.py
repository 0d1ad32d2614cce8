"""The request path's rules (``_http``), on the in-memory ``MockTransport``: which answers
to a create prove that no job exists (issue 11.1), Retry-After on every retried status
(11.7), the connect deadline (14.1), the event-loop check (11.11)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from viggle_async import (
    APIError,
    ConfigurationError,
    ConnectError,
    FastModeUnavailableError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    RetryEvent,
    RetryPolicy,
    ServerError,
    ViggleClient,
)
from viggle_async._protocol import Request, Response, error_from_response, proves_no_job
from viggle_async.testing import ManualClock, MockTransport

# The wall clock the client is given: far from real time, so a test passing only because
# the wall clock was read instead would fail.
WALL = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
URLS = {"ref_image_url": "https://e.com/a.png", "driving_video_url": "https://e.com/b.mp4"}
JOB = {"job_id": "job_1", "status": "queued"}
KEY = "sk-request-path-secret"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, json.dumps(body).encode())


def _raw(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers or {}, body)


def _scripted(*answers: Response | BaseException) -> Callable[[Request], Response]:
    """A handler giving ``answers`` in order, then repeating the last one."""
    queue = list(answers)

    def handler(request: Request) -> Response:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return handler


def _client(handler: Callable[[Request], Any], *, clock: ManualClock | None = None,
            events: list[RetryEvent] | None = None, **kwargs: Any
            ) -> tuple[ViggleClient, MockTransport, ManualClock]:
    transport = MockTransport(handler)
    clock = clock or ManualClock()
    client = ViggleClient(KEY, base_url="https://api.test", transport=transport, clock=clock,
                          rand=lambda: 0.5, wall_clock=lambda: WALL,
                          on_retry=None if events is None else events.append, **kwargs)
    return client, transport, clock


GATEWAY_HTML = b"<html><body><h1>504 Gateway Time-out</h1></body></html>"

# Answers after which a job may exist (issue 11.1): never resent, flagged.
AMBIGUOUS = [
    pytest.param(_json(500, {"detail": "boom"}), ServerError, id="500-json"),
    pytest.param(_raw(502, b"Bad Gateway"), ServerError, id="502-text"),
    pytest.param(_raw(503, b""), ServerError, id="503-empty"),
    pytest.param(_raw(504, GATEWAY_HTML, {"content-type": "text/html"}), ServerError,
                 id="504-html"),
    pytest.param(_raw(200, b""), ResponseFormatError, id="200-empty"),
    pytest.param(_raw(200, b"{not json"), ResponseFormatError, id="200-invalid-json"),
    pytest.param(_raw(200, GATEWAY_HTML), ResponseFormatError, id="200-html"),
    pytest.param(_json(200, {"status": "queued"}), ResponseFormatError, id="200-no-id"),
    pytest.param(_json(201, {"job_id": None, "status": "queued"}), ResponseFormatError,
                 id="201-null-id"),
    pytest.param(_json(202, []), ResponseFormatError, id="202-list"),
    pytest.param(_raw(302, b"", {"location": "https://elsewhere"}), APIError, id="302"),
    pytest.param(_raw(408, b""), APIError, id="408"),
]


@pytest.mark.parametrize(("answer", "error"), AMBIGUOUS)
@pytest.mark.parametrize("create", ["render", "character", "scene_import"])
async def test_create_answer_that_is_no_refusal_may_have_made_a_job(
        answer: Response, error: type[Exception], create: str) -> None:
    events: list[RetryEvent] = []
    client, transport, _clock = _client(_scripted(answer), events=events)
    async with client:
        with pytest.raises(error) as info:
            if create == "render":
                await client.renders.create(**URLS)
            elif create == "character":
                await client.characters.create(name="A", image_url="https://e.com/a.png")
            else:
                await client.scenes.import_template("tpl_1")
    assert info.value.may_have_reached_server is True  # type: ignore[attr-defined]
    assert not proves_no_job(answer)
    assert len(transport.calls) == 1 and events == []  # never resent


REFUSALS = [
    pytest.param(_json(400, {"detail": {"error_code": "CS-ORIV-001", "message": "ref"}}),
                 id="400-validation"),
    pytest.param(_json(400, {"detail": {"error_code": "CS-UORC01-001", "message": "busy"}}),
                 id="400-fast-capacity"),
    pytest.param(_json(401, {"detail": {"error_code": "CS-UORC01-007"}}), id="401"),
    pytest.param(_json(402, {"detail": {"error_code": "CS-UORC01-008"}}), id="402"),
    pytest.param(_json(403, {"detail": "forbidden"}), id="403"),
    pytest.param(_json(404, {"detail": "nope"}), id="404"),
    pytest.param(_json(409, {"detail": "conflict"}), id="409"),
    pytest.param(_raw(413, b"<html>too large</html>"), id="413-html"),
    pytest.param(_json(422, {"detail": [{"loc": ["body", "x"], "msg": "bad"}]}), id="422"),
    pytest.param(_json(429, {"detail": "slow"}), id="429"),
]


@pytest.mark.parametrize("answer", REFUSALS)
async def test_documented_refusals_prove_no_job(answer: Response) -> None:
    assert proves_no_job(answer)
    client, transport, clock = _client(_scripted(answer), retry=RetryPolicy(max_attempts=2))
    async with client, clock.autojump():
        with pytest.raises(APIError) as info:
            await client.renders.create(**URLS)
    assert info.value.may_have_reached_server is False
    assert info.value.status == answer.status
    # Only a 429 is resent (it proves no job exists and asks to come back).
    assert len(transport.calls) == (2 if answer.status == 429 else 1)
    if answer.status == 400 and b"CS-UORC01-001" in answer.body:
        assert isinstance(info.value, FastModeUnavailableError)


async def test_ambiguous_create_answer_is_logged_without_the_key(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="viggle_async")
    client, _, _ = _client(_scripted(_raw(504, GATEWAY_HTML)))
    async with client:
        with pytest.raises(ServerError):
            await client.renders.create(**URLS)
    (record,) = [r for r in caplog.records if r.name == "viggle_async"]
    assert record.levelno == logging.WARNING and "HTTP 504" in record.getMessage()
    assert KEY not in caplog.text


async def test_create_timeout_after_last_bytes_is_ambiguous_and_not_resent() -> None:
    lost = RequestTimeoutError("no answer", may_have_reached_server=True)
    client, transport, _ = _client(_scripted(lost, _json(200, JOB)))
    async with client:
        with pytest.raises(RequestTimeoutError) as info:
            await client.renders.create(**URLS)
    assert info.value.may_have_reached_server is True and len(transport.calls) == 1


async def test_reads_are_retried_through_5xx_and_garbage_gateways() -> None:
    client, transport, clock = _client(_scripted(
        _raw(504, GATEWAY_HTML), _raw(502, b""), _json(200, {"job_id": "j", "status": "queued"})))
    async with client, clock.autojump():
        status = await client.renders.get("j")
    assert status.status == "queued" and len(transport.calls) == 3


# --- Retry-After (issue 11.7) -------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_honoured_on_every_retried_status(status: int, form: str) -> None:
    # The HTTP-date is read against the injected wall clock, never the machine's.
    header = "3" if form == "seconds" else format_datetime(WALL + timedelta(seconds=3),
                                                           usegmt=True)
    busy = _json(status, {"detail": "busy"}, {"retry-after": header})
    events: list[RetryEvent] = []
    client, transport, clock = _client(
        _scripted(busy, busy, _json(200, {"job_id": "j", "status": "processing"})),
        events=events)
    async with client, clock.autojump():
        got = await client.renders.get("j")
    assert got.status == "processing"
    assert [e.delay for e in events] == [3.0, 3.0]
    assert clock.now() == 6.0 and len(transport.calls) == 3
    assert all(isinstance(e.cause, APIError) and e.cause.retry_after == 3.0 for e in events)


async def test_retry_after_above_the_cap_raises_at_once_with_retry_after() -> None:
    busy = _json(503, {"detail": "maintenance"}, {"retry-after": "600"})
    client, transport, clock = _client(_scripted(busy), retry=RetryPolicy(max_retry_after=60))
    async with client:
        with pytest.raises(ServerError) as info:
            await client.characters.get("c1")
    assert info.value.retry_after == 600.0  # for a scheduler to pause everyone
    assert len(transport.calls) == 1 and clock.now() == 0


async def test_create_answered_503_is_not_resent_but_carries_retry_after() -> None:
    client, transport, _ = _client(_scripted(_raw(503, b"", {"retry-after": "5"})))
    async with client:
        with pytest.raises(ServerError) as info:
            await client.renders.create(**URLS)
    assert info.value.retry_after == 5.0 and info.value.may_have_reached_server
    assert len(transport.calls) == 1


async def test_without_retry_after_backoff_is_jittered() -> None:
    events: list[RetryEvent] = []
    client, _, clock = _client(_scripted(_raw(503, b""), _raw(503, b""), _json(200, JOB)),
                               events=events)
    async with client, clock.autojump():
        await client.renders.get("job_1")
    assert [e.delay for e in events] == [0.25, 0.5]  # rand=0.5 x base 0.5 x 2**n


# --- connect failures (issue 14.1) --------------------------------------------------------

async def test_connect_failures_stop_at_the_connect_deadline() -> None:
    events: list[RetryEvent] = []
    client, transport, clock = _client(
        _scripted(ConnectError("refused")), events=events,
        retry=RetryPolicy(max_attempts=10_000, cap=8.0, connect_deadline=60.0))
    async with client, clock.autojump():
        with pytest.raises(ConnectError):
            await client.renders.create(**URLS)
    assert clock.now() <= 60.0
    assert sum(e.delay for e in events) <= 60.0
    assert len(transport.calls) > 4  # it did keep trying within the minute
    assert len(transport.calls) == len(events) + 1


async def test_connect_failure_then_success_creates_once() -> None:
    client, transport, clock = _client(_scripted(ConnectError("refused"), _json(200, JOB)))
    async with client, clock.autojump():
        job = await client.renders.create(**URLS)
    assert job.job_id == "job_1" and len(transport.calls) == 2


def test_connect_deadline_defaults_to_a_minute() -> None:
    assert RetryPolicy().connect_deadline == 60.0
    with pytest.raises(ValueError, match="connect_deadline"):
        RetryPolicy(connect_deadline=0)


# --- one event loop per client (issue 11.11) ----------------------------------------------

def test_second_event_loop_is_refused_with_a_clear_error() -> None:
    client, transport, _ = _client(_scripted(_json(200, {"balance": 5})))
    assert asyncio.run(client.get_credits()).balance == 5
    with pytest.raises(ConfigurationError, match="event loop") as info:
        asyncio.run(client.get_credits())
    assert "async with" in str(info.value)
    assert len(transport.calls) == 1  # refused before anything was sent


def test_client_closed_in_its_loop_may_be_used_in_another() -> None:
    client, transport, _ = _client(_scripted(_json(200, {"balance": 5})))

    async def use() -> float:
        async with client:
            return (await client.get_credits()).balance

    assert asyncio.run(use()) == 5 and asyncio.run(use()) == 5
    assert len(transport.calls) == 2


# --- headers and the key -------------------------------------------------------------------

async def test_headers_carry_the_key_only_where_needed_and_never_in_reprs() -> None:
    client, transport, _ = _client(_scripted(
        _json(200, {"job_id": "j", "status": "queued"}), _json(200, {"balance": 1})))
    async with client:
        await client.renders.get("j")
        await client.get_credits()
    status_call, credits_call = transport.calls
    # docs/api/renders.md#render-status: the status needs no key
    assert "Authorization" not in status_call.headers
    assert credits_call.headers["Authorization"] == f"Bearer {KEY}"
    for text in (repr(client), repr(client._http), repr(status_call), repr(credits_call)):
        assert KEY not in text


async def test_no_key_fails_before_sending_and_names_the_fix() -> None:
    transport = MockTransport(_scripted(_json(200, {"balance": 1})))
    client = ViggleClient("", base_url="https://api.test", transport=transport)
    async with client:
        with pytest.raises(ConfigurationError, match="VIGGLE_API_KEY"):
            await client.get_credits()
    assert transport.calls == [] and transport.closed


async def test_rate_limited_create_is_resent_with_the_whole_upload() -> None:
    seen: list[int] = []
    client, transport, clock = _client(_scripted(
        _json(429, {"detail": "slow"}, {"retry-after": "2"}), _json(200, JOB)))
    async with client, clock.autojump():
        job = await client.renders.create(
            ref_image=b"\x89PNG\r\n\x1a\n" + bytes(64), driving_video_url=URLS[
                "driving_video_url"], on_upload=lambda sent, total: seen.append(sent))
    assert job.job_id == "job_1" and len(transport.calls) == 2
    assert isinstance(transport.calls[0].request, Request)
    assert clock.now() == 2.0
    assert seen == [72, 72]  # each attempt counts its bytes from zero


async def test_upload_progress_counts_every_part_up_to_the_total() -> None:
    from viggle_async.testing import make_mp4, make_png

    png, mp4 = make_png(), make_mp4(2.0, payload=300_000)
    seen: list[tuple[int, int | None]] = []
    client, _, _ = _client(_scripted(_json(200, JOB)))
    async with client:
        await client.renders.create(ref_image=png, driving_video=mp4,
                                    on_upload=lambda sent, total: seen.append((sent, total)))
    sent = [s for s, _ in seen]
    assert sent == sorted(sent) and sent[-1] == len(png) + len(mp4)
    assert {t for _, t in seen} == {len(png) + len(mp4)}


def test_rate_limit_error_keeps_its_constructor() -> None:
    error = RateLimitError(429, "slow", retry_after=1.5, error_code="X")
    assert error.retry_after == 1.5 and error.may_have_reached_server is False


@given(status=st.integers(100, 599), body=st.binary(max_size=30))
def test_the_error_flag_follows_the_one_rule(status: int, body: bytes) -> None:
    response = Response(status, {}, body)
    refusal = proves_no_job(response)
    assert refusal == (status in {400, 401, 402, 403, 404, 409, 413, 415, 422, 429})
    if status >= 300:
        error = error_from_response(response, now=WALL)
        assert error.may_have_reached_server is (not refusal)
        if status >= 500:
            assert isinstance(error, ServerError)


def test_hand_built_server_error_is_ambiguous_by_default() -> None:
    assert ServerError(503, "x").may_have_reached_server is True
    assert APIError(400, "x").may_have_reached_server is False
