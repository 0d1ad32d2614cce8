"""Every documented error answer maps to its exception (docs/api/conventions.md#error-envelope,
docs/api/conventions.md#http-statuses, docs/api/errors.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from viggle_async import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FastModeUnavailableError,
    InsufficientCreditsError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ViggleError,
)
from viggle_async._protocol import Response, error_from_response

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _error(status: int, body: Any, headers: dict[str, str] | None = None) -> APIError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return error_from_response(Response(status, headers or {}, raw), now=NOW)


def _detail(code: str) -> dict[str, Any]:
    return {"detail": {"error_code": code, "message": f"message of {code}",
                       "action": f"action of {code}"}}


CODES: list[tuple[str, int, type[APIError]]] = [
    ("CS-UORC01-001", 400, FastModeUnavailableError),
    ("CS-UORC01-002", 400, BadRequestError),
    ("CS-UORC01-006", 401, AuthenticationError),
    ("CS-UORC01-007", 401, AuthenticationError),
    ("CS-UORC01-008", 402, InsufficientCreditsError),
    *[(f"CS-ORIV-{n:03d}", 400, BadRequestError) for n in range(1, 13)],
    ("CS-ORAU-001", 401, AuthenticationError),
    ("CS-ORAU-002", 401, AuthenticationError),
    # The older page gives no status for these: the code alone decides
    # (docs/api/errors.md#older-codes).
    ("CS-ORAU-001", 400, AuthenticationError),
    ("CS-ORCR-001", 402, InsufficientCreditsError),
    ("CS-ORCR-001", 400, InsufficientCreditsError),
]


@pytest.mark.parametrize(("code", "status", "exc"), CODES,
                         ids=[f"{c}-{s}" for c, s, _ in CODES])
def test_documented_code_maps_to_exception(code: str, status: int,
                                           exc: type[APIError]) -> None:
    error = _error(status, _detail(code), {"x-request-id": "req-1"})
    assert type(error) is exc
    assert (error.status, error.error_code) == (status, code)
    assert error.message == f"message of {code}" and error.action == f"action of {code}"
    assert error.request_id == "req-1"
    assert code in str(error) and f"action of {code}" in str(error)


STATUSES: list[tuple[int, type[APIError]]] = [
    (400, BadRequestError), (401, AuthenticationError), (403, AuthenticationError),
    (402, InsufficientCreditsError), (404, NotFoundError), (409, ConflictError),
    (422, BadRequestError), (429, RateLimitError), (500, ServerError), (502, ServerError),
    (503, ServerError), (504, ServerError), (418, APIError),
]


@pytest.mark.parametrize(("status", "exc"), STATUSES, ids=[str(s) for s, _ in STATUSES])
def test_status_without_code_maps_to_exception(status: int, exc: type[APIError]) -> None:
    error = _error(status, {"detail": "plain words"})
    assert type(error) is exc
    assert error.message == "plain words" and error.error_code is None


def test_detail_as_string_object_and_list() -> None:
    auth = _error(401, {"detail": "API key required. Use Authorization: Bearer sk-xxx"})
    assert isinstance(auth, AuthenticationError)
    assert auth.message.startswith("API key required")
    obj = _error(400, _detail("CS-ORIV-011"))
    assert obj.error_code == "CS-ORIV-011"
    listed = _error(422, {"detail": [{"loc": ["body", "name"], "msg": "field required"},
                                     {"loc": "query", "msg": "bad"}, "junk"]})
    assert isinstance(listed, BadRequestError)
    assert listed.message == "body.name: field required; query: bad"


def test_top_level_error_code_and_message() -> None:
    # Several doc samples read result.get("error_code") at the top level
    # (docs/api/conventions.md#error-envelope).
    error = _error(402, {"error_code": "CS-UORC01-008", "message": "no credits",
                         "action": "top up"})
    assert isinstance(error, InsufficientCreditsError)
    assert (error.error_code, error.message, error.action) == (
        "CS-UORC01-008", "no credits", "top up")
    assert _error(400, {"error_code": "CS-UORC01-001"}).__class__ is FastModeUnavailableError


def test_v1_error_envelope() -> None:
    error = _error(500, {"error": {"code": "internal", "message": "boom", "request_id": "r"}})
    assert isinstance(error, ServerError)
    assert (error.error_code, error.message, error.request_id) == ("internal", "boom", "r")


@pytest.mark.parametrize("body", [b"", b"<html>502 Bad Gateway</html>", b"\xff\xfe"],
                         ids=["empty", "html", "binary"])
def test_error_without_json_still_maps(body: bytes) -> None:
    error = _error(502, body)
    assert isinstance(error, ServerError) and error.message


def test_retry_after_seconds_and_http_date() -> None:
    assert _error(429, {}, {"retry-after": "12"}).retry_after == 12.0  # type: ignore[attr-defined]
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert _error(429, {}, {"retry-after": later}).retry_after == 90.0  # type: ignore[attr-defined]
    assert _error(429, {}, {"retry-after": "soon"}).retry_after is None  # type: ignore[attr-defined]


def test_every_error_is_a_viggle_error() -> None:
    for status, _ in STATUSES:
        assert isinstance(_error(status, {}), ViggleError)


@pytest.mark.parametrize(("body", "message"), [
    (b"<html><head><title>504 Gateway Time-out</title></head>\n<body><h1>504</h1>\n</body></html>",
     "504 Gateway Time-out"),
    (b"<html><body>\n  <h1>Bad   Gateway</h1>\n  <p>nginx</p>\n</body></html>",
     "Bad Gateway nginx"),
    (b"upstream connect error\nor disconnect/reset before headers",
     "upstream connect error or disconnect/reset before headers"),
    (b"x" * 500, "x" * 119 + "…"),
])
def test_a_gateway_page_becomes_a_one_line_message(body: bytes, message: str) -> None:
    # A CLI line or a log record shows the page's gist, not its markup over many lines.
    error = error_from_response(Response(504, {"content-type": "text/html"}, body),
                                now=datetime.now(UTC))
    assert str(error.message) == message
    assert "\n" not in str(error)
    assert error.body == body[:200].decode()  # the raw start stays available
