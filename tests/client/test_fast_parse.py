"""The render-status fast path (msgspec) against the converter (issue 13).

A poll's status body is decoded by ``fast_render_status`` when it has the plain shape and
by the converter otherwise. The two must never disagree: whatever body the API sends, the
caller gets the same ``RenderStatus`` (or the same error) either way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from viggle_async import NotFoundError, RenderStatus, ResponseFormatError
from viggle_async._backoff import RetryPolicy
from viggle_async._converter import fast_render_status, get_converter, make_converter
from viggle_async._http import RequestPath
from viggle_async._protocol import Response, parse_model
from viggle_async.testing import ManualClock

JOB = "job_requested"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
STRING_FIELDS = ("job_id", "status", "mode", "checkpoint", "cdn_url", "mask_cdn_url", "error",
                 "error_code", "error_message", "download_url")
TIME_FIELDS = ("created_at", "completed_at", "enqueued_at")


GENERAL = make_converter()  # behaves as the shared converter, but is not it: no fast path
DEFAULTS: list[dict[str, str] | None] = [
    {"job_id": JOB},  # renders.get
    {"job_id": JOB, "status": "cancelled"},  # renders.cancel
    None,
]


def _general(body: bytes, defaults: dict[str, str] | None = None) -> RenderStatus:
    return parse_model(Response(200, {}, body), RenderStatus, GENERAL, now=NOW,
                       defaults={"job_id": JOB} if defaults is None else defaults)


def _path(converter: Any = None) -> RequestPath:
    return RequestPath(
        transport=None,  # type: ignore[arg-type]  # only the parsers are used here
        base_url="http://127.0.0.1:1", api_key=None, retry=RetryPolicy(), clock=ManualClock(),
        wall_clock=lambda: NOW, rand=lambda: 0.5, on_retry=None,
        converter=converter or get_converter())


def _poll(body: bytes, status: int = 200) -> RenderStatus:
    """What ``renders.get`` does with an answer (the request path's parser)."""
    return _path().parser(RenderStatus, job_id=JOB)(Response(status, {}, body))


def _outcome(converter: Any, body: bytes, defaults: dict[str, str] | None) -> tuple[str, str]:
    """What a caller sees: the status (by repr, so NaN equals NaN) or the error."""
    try:
        return "ok", repr(parse_model(Response(200, {}, body), RenderStatus, converter,
                                      now=NOW, defaults=defaults))
    except Exception as exc:  # the error kind and message are what a caller sees
        return type(exc).__name__, str(exc)


# --- arbitrary JSON-like status bodies -----------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70,
                                                                         max_value=2**70)
                | st.floats() | st.text(max_size=8))
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
datetimes = st.datetimes(min_value=datetime(1971, 1, 1), timezones=st.none() | st.just(UTC))
time_strings = (datetimes.map(lambda d: d.isoformat())
                | datetimes.map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"))
                | st.sampled_from(["2025-13-01T00:00:00Z", "yesterday", "", "2025-01-01"]))
numbers = st.integers(min_value=-1000, max_value=1000) | st.floats(allow_nan=False)
progress = st.fixed_dictionaries({}, optional={
    "completed_chunks": st.none() | st.integers(0, 9) | st.just(2.0) | json_values,
    "total_chunks": st.none() | st.integers(0, 9) | json_values,
    "percent": st.none() | numbers | json_values,
    "other": json_values,
}) | json_values

plain_progress = st.fixed_dictionaries({}, optional={
    "completed_chunks": st.none() | st.integers(0, 9), "total_chunks": st.integers(0, 9),
    "percent": st.none() | numbers})


def _field(name: str, *, odd: bool = True) -> st.SearchStrategy[Any]:
    if name == "status":
        plain = st.sampled_from(["queued", "processing", "complete", "failed", "cancelled",
                                 "error", "new_status"])
    elif name in TIME_FIELDS:
        plain = time_strings if odd else datetimes.map(lambda d: d.isoformat())
    elif name == "progress_pct":
        plain = numbers | st.just(10**400 // 10**380)
    elif name == "progress":
        plain = progress if odd else plain_progress
    else:
        plain = st.text(max_size=12)
    return st.none() | plain | plain | json_values if odd else st.none() | plain


status_dicts = st.fixed_dictionaries(
    {"status": _field("status")},
    optional={name: _field(name) for name in (*STRING_FIELDS[:1], *STRING_FIELDS[2:],
                                               *TIME_FIELDS, "progress_pct", "progress")}
    | {"chunks": json_values, "unknown_field": json_values})
# Mostly the documented shape, so the fast path answers often; odd values still appear.
plain_dicts = st.fixed_dictionaries(
    {"status": _field("status", odd=False).filter(lambda v: v is not None)},
    optional={name: _field(name, odd=False) for name in (
        *STRING_FIELDS[:1], *STRING_FIELDS[2:], *TIME_FIELDS, "progress_pct", "progress")}
    | {"chunks": json_values, "unknown_field": json_values})
bodies = (plain_dicts | plain_dicts | status_dicts | st.builds(lambda d: {"data": d}, status_dicts)
          | st.fixed_dictionaries({}, optional={"job_id": _field("job_id")}) | json_values)


@st.composite
def encoded(draw: st.DrawFn) -> bytes:
    value = draw(bodies)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8")


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(body=encoded(), defaults=st.sampled_from(DEFAULTS))
def test_fast_path_answers_exactly_as_the_converter_does(
        body: bytes, defaults: dict[str, str] | None) -> None:
    general = _outcome(GENERAL, body, defaults)
    fast = fast_render_status(body, defaults["job_id"] if defaults else None)
    if fast is not None:  # it answered: the converter must give the very same status
        assert general == ("ok", repr(fast))
    # And what parse_model returns (fast path or fallback) is always the converter's answer.
    assert _outcome(get_converter(), body, defaults) == general


# --- members of the class, named -----------------------------------------------------------

DOCS_STATUS = {  # docs/api/renders.md#render-status, mid-render, as the fake and the docs send it
    "job_id": "job_1", "status": "processing", "mode": "preprocessed",
    "checkpoint": "dri_done", "progress_pct": 47, "cdn_url": None, "mask_cdn_url": None,
    "error": None, "error_code": None, "error_message": None,
    "progress": {"completed_chunks": 0, "total_chunks": 1, "percent": 47},
    "download_url": None, "chunks": [], "created_at": "2025-01-01T12:00:00Z",
    "completed_at": None}


def _body(**changes: Any) -> bytes:
    return json.dumps({**DOCS_STATUS, **changes}).encode()


@pytest.mark.parametrize("body", [
    _body(),
    _body(status="complete", cdn_url="https://cdn.example/o.mp4", progress_pct=100.0,
          completed_at="2025-01-01T12:01:00+00:00"),
    _body(job_id=None),  # null job id: the one we asked about
    _body(created_at="2025-01-01T12:00:00"),  # naive: taken as UTC
    b'  {"status": "queued"}\n',
], ids=["docs", "complete", "null-job-id", "naive-time", "minimal"])
def test_plain_bodies_take_the_fast_path(body: bytes) -> None:
    fast = fast_render_status(body, JOB)
    assert fast is not None and fast == _general(body)
    assert fast.created_at is None or fast.created_at.tzinfo is not None


@pytest.mark.parametrize("changes", [
    {"created_at": "not a date"}, {"completed_at": 1735732800},  # epoch number
    {"progress_pct": True}, {"progress_pct": "47"}, {"mode": 3}, {"error": {"code": "x"}},
    {"progress": {"completed_chunks": 1.0}}, {"progress": {"total_chunks": False}},
    {"progress": [1, 2]}, {"download_url": ["x"]},
], ids=lambda c: next(iter(c)) + "=" + repr(next(iter(c.values())))[:20])
def test_unusual_informational_fields_fall_back_and_still_parse(changes: dict[str, Any]
                                                                ) -> None:
    body = _body(**changes)
    assert fast_render_status(body, JOB) is None  # not the plain shape
    polled = _poll(body)
    assert polled == _general(body) and polled.status == "processing"


@pytest.mark.parametrize("body", [
    _body(status=None), _body(status=7), _body(job_id=42),
    _body(status="complete", cdn_url=17),  # a complete render's URL is a decision field
    b"", b"<html>502</html>", b"[]", b'{"job_id": "j"}',
], ids=["null-status", "int-status", "int-job-id", "complete-bad-url", "empty", "html",
        "list", "no-status"])
def test_unreadable_decision_fields_fail_the_same_way(body: bytes) -> None:
    assert fast_render_status(body, JOB) is None
    with pytest.raises(ResponseFormatError):
        _poll(body)


def test_error_statuses_are_never_read_as_a_status() -> None:
    # A 404 whose body happens to look like a status is still "no such job"
    # (docs/api/conventions.md#http-statuses).
    body = json.dumps({"status": "failed", "detail": "job not found"}).encode()
    with pytest.raises(NotFoundError):
        _poll(body, 404)


def test_wrapped_and_duplicate_keys_match_the_converter() -> None:
    for body in (json.dumps({"data": DOCS_STATUS}).encode(),
                 b'{"status": "queued", "status": "complete", "cdn_url": "https://c/o.mp4"}',
                 "{\"status\": \"queued\", \"error\": \"caf\u00e9 \\ud83d\\ude00\"}".encode()):
        assert _poll(body) == _general(body)


def test_a_contract_converter_sees_every_body() -> None:
    # forbid_extra_keys (contract tests) must not be bypassed by the fast path.
    strict = _path(make_converter(forbid_extra_keys=True))
    with pytest.raises(ResponseFormatError, match="unknown_field"):
        strict.parser(RenderStatus, job_id=JOB)(Response(200, {}, _body(unknown_field=1)))


def test_a_missing_job_id_with_nothing_to_fill_it_is_left_to_the_converter() -> None:
    body = b'{"status": "queued"}'
    assert fast_render_status(body) is None
    with pytest.raises(ResponseFormatError, match="job_id"):
        parse_model(Response(200, {}, body), RenderStatus, get_converter(), now=NOW)


def test_cancel_answers_take_the_fast_path_with_their_defaults() -> None:
    parse = _path().parser(RenderStatus, job_id=JOB, status="cancelled")
    assert parse(Response(200, {}, b'{"status": "cancelled"}')).job_id == JOB
    assert parse(Response(200, {}, b"{}")) == RenderStatus(JOB, "cancelled")
