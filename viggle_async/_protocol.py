"""The pure core: the request/response vocabulary, the ``Transport`` seam, and the
interpretation of responses. No I/O, no ``async``.

Requests are described here (``Request``) and built per endpoint, with the documented
rules, in ``_endpoints``. Incoming responses are interpreted tolerantly
(docs/api/conventions.md#error-envelope, docs/api/client-rules.md#tolerant-parsing);
``proves_no_job`` is the one rule for which answers to a create prove no job exists.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.v import format_exception

from ._backoff import parse_retry_after
from ._converter import fast_render_status, get_converter
from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FastModeUnavailableError,
    InsufficientCreditsError,
    InvalidInputError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
)
from ._models import BackgroundMode, Model, Page, RenderStatus

__all__ = [
    "FilePart",
    "Hook",
    "Request",
    "Response",
    "StreamedResponse",
    "Transport",
    "UploadObserver",
    "build_request",
    "check_url",
    "error_from_response",
    "parse_model",
    "parse_page",
    "proves_no_job",
]

T = TypeVar("T")
RequestKind = Literal["create", "read", "cancel", "delete"]

FAST_UNAVAILABLE = "CS-UORC01-001"
# The documented choices (docs/api/conventions.md#models,
# docs/api/conventions.md#background-modes), from the enums users pass: one list to keep.
# ``_endpoints`` checks inputs against them; the CLI offers them.
MODELS: tuple[str, ...] = tuple(m.value for m in Model)
BACKGROUND_MODES: tuple[str, ...] = tuple(m.value for m in BackgroundMode)


@attrs.frozen
class FilePart:
    """A file field of a multipart body. ``source`` is opaque here (see ``_uploads``)."""

    field: str
    filename: str
    content_type: str
    size: int | None
    source: Any = attrs.field(repr=False)


@attrs.frozen
class Request:
    """An HTTP request, described without doing it.

    ``kind`` drives retry rules: a ``create`` may have cost credits, so it is resent
    only when it provably never arrived.
    """

    method: str
    path: str
    kind: RequestKind
    auth: bool = True
    params: tuple[tuple[str, str], ...] = ()
    fields: tuple[tuple[str, str], ...] | None = None  # multipart text fields
    files: tuple[FilePart, ...] = ()
    json: Mapping[str, Any] | None = None

    @property
    def is_multipart(self) -> bool:
        return self.fields is not None


@attrs.frozen
class Response:
    """An HTTP response as bytes; ``headers`` are looked up by lower-case name (a plain
    dict with lower-case keys, or a case-insensitive mapping such as aiohttp's)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


#: An async callback with no arguments: "the last bytes are about to go out" (the journal
#: records ``sending`` in it). One definition for the transport, the request path and the
#: supervisor.
Hook = Callable[[], Awaitable[None]]


@attrs.frozen
class UploadObserver:
    """What a multipart body reports while it is written (the transport calls these).

    ``on_progress(sent)``: cumulative file bytes written so far (bytes), for progress bars.
    ``before_last_bytes()``: awaited just before the last bytes of the body go out. From
    that moment the request may have reached the API: a create whose answer is then lost
    is ambiguous (the journal records ``sending`` here). A body with no streamed file
    calls it before the request is sent at all.
    """

    on_progress: Callable[[int], None] | None = None
    before_last_bytes: Hook | None = None


class StreamedResponse(Protocol):
    """A response whose body is read as it arrives (downloads). ``headers`` keys are
    lower-case; ``chunks()`` yields the body's bytes in arrival order, each once."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class Transport(Protocol):
    """The one network seam (compare httpx's ``BaseTransport``).

    ``send`` performs one attempt of ``request`` against ``url`` and returns the whole
    response; it never retries (the request path decides that) and raises only
    ``TransportError`` subclasses, with ``may_have_reached_server`` True once
    ``observer.before_last_bytes`` has run. ``stream`` opens a GET whose body is read
    incrementally (downloads from the CDN: the caller passes every header, and never the
    API key). ``aclose`` releases connections; a transport is used from one event loop.
    """

    async def send(self, request: Request, *, url: str, headers: Mapping[str, str],
                   observer: UploadObserver | None = None) -> Response: ...

    def stream(self, url: str, *, headers: Mapping[str, str]
               ) -> AbstractAsyncContextManager[StreamedResponse]: ...

    async def aclose(self) -> None: ...


def build_request(
    method: str,
    path: str,
    kind: RequestKind,
    *,
    auth: bool = True,
    params: Sequence[tuple[str, str]] = (),
    fields: Sequence[tuple[str, str]] | None = None,
    files: Sequence[FilePart] = (),
    json_body: Mapping[str, Any] | None = None,
) -> Request:
    return Request(method, path, kind, auth, tuple(params),
                   None if fields is None else tuple(fields), tuple(files), json_body)


def check_url(field: str, url: str) -> str:
    """A URL the API will fetch: absolute http(s) with a host."""
    if not isinstance(url, str):
        raise InvalidInputError(field, f"must be a URL string, got {type(url).__name__}",
                                "pass an absolute http(s) URL")
    fix = "pass a URL like https://example.com/file.mp4"
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError:
        host = None
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInputError(field, f"{url!r:.80} is not a valid absolute http(s) URL",
                                fix, error_code="CS-UORC01-002")
    if any(c.isspace() for c in url) or not _HOST.fullmatch(host):
        raise InvalidInputError(field, f"{url!r:.80} has spaces or a malformed host", fix,
                                error_code="CS-UORC01-002")
    return url


# Tolerant: DNS names (internationalised too), IPv4, IPv6 literals (urlsplit strips the
# brackets; % for a zone); anything else in a host cannot be fetched.
_HOST = re.compile(r"[\w.\-:%]+")


# --- responses -----------------------------------------------------------------

_ENVELOPE_KEYS = frozenset({"job_id", "id", "status", "character_id", "scene_id", "balance",
                            "characters", "scenes"})


def decode_json(response: Response) -> Any:
    try:
        return json.loads(response.body) if response.body.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise ResponseFormatError(
            f"HTTP {response.status}: the body is not JSON: {response.body[:80]!r}",
            status=response.status) from None


def unwrap(data: Any) -> Any:
    """Drop an optional ``{"data": ...}`` wrapper (docs/api/client-rules.md#tolerant-parsing,
    docs/api/assets.md#get-character, docs/api/assets.md#import-template examples)."""
    if (isinstance(data, dict) and isinstance(data.get("data"), (dict, list))
            and not _ENVELOPE_KEYS.intersection(data)):
        return data["data"]
    return data


def _message_of(data: Any) -> tuple[str | None, str | None, str | None]:
    """(error_code, message, action) from any documented error shape
    (docs/api/conventions.md#error-envelope)."""
    if not isinstance(data, dict):
        return None, (data if isinstance(data, str) and data else None), None
    detail = data.get("detail")
    code = message = action = None
    if isinstance(detail, dict):
        code, message = detail.get("error_code"), detail.get("message")
        action = detail.get("action")
    elif isinstance(detail, str):
        message = detail
    elif isinstance(detail, list):  # FastAPI 422 validation items
        msgs = [f"{_loc(i.get('loc'))}: {i.get('msg')}" for i in detail if isinstance(i, dict)]
        message = "; ".join(msgs) or None
    error = data.get("error")
    if isinstance(error, dict):  # the /v1 envelope (docs/api/v1.md), seen in third-party code
        code = code or error.get("code")
        message = message or error.get("message")
    elif isinstance(error, str):
        message = message or error
    code = code or data.get("error_code")
    message = message or data.get("message")
    action = action or data.get("action")
    as_str = [v if isinstance(v, str) else None for v in (code, message, action)]
    return as_str[0], as_str[1], as_str[2]


def _loc(loc: Any) -> str:
    """A validation item's ``loc``: a list of path parts, tolerated as a scalar too."""
    if isinstance(loc, list):
        return ".".join(map(str, loc))
    return "" if loc is None else str(loc)


_AUTH_CODES = frozenset({"CS-UORC01-006", "CS-UORC01-007", "CS-ORAU-001", "CS-ORAU-002"})


def is_success(status: int) -> bool:
    # Only 2xx: redirects are not followed (the Authorization header must not travel to
    # another host, docs/api/client-rules.md#downloads), so a 3xx is a failure too — never a silent
    # "cancelled".
    return 200 <= status < 300


# Statuses that are a refusal: whoever answered did not act on the request.
# docs/api/conventions.md#http-statuses documents
# 400 (validation, including fast capacity CS-UORC01-001), 401 and 402 for the creates;
# 403, 404, 409, 413, 415 and 422 are the standard statuses of a request refused before it
# was acted on (auth, routing, state, size, type, FastAPI validation,
# docs/api/conventions.md#error-envelope). 429 is a rate
# limiter's answer: it stands in front of the work, so nothing was created
# (docs/api/client-rules.md#tolerant-parsing).
_REFUSALS = frozenset({400, 401, 402, 403, 404, 409, 413, 415, 422, 429})


def proves_no_job(response: Response) -> bool:
    """True when ``response`` to a create proves that no job (character, scene) exists.

    The one rule behind "never spend a credit twice" (conventions; issue 11.1): only a
    documented refusal (the 4xx statuses above, 429, fast capacity CS-UORC01-001) proves
    it. Anything else after the last bytes were sent means the job *may* exist: a 5xx of
    any shape (a gateway can answer 502/504 after the backend created and billed the job),
    a redirect, an undocumented 4xx (408, 410, 425...), and a 2xx, whose body we may not
    even be able to read. Pure: callers (the request path, the supervisor) decide with it.
    """
    return response.status in _REFUSALS


def error_from_response(response: Response, *, now: datetime | Callable[[], datetime]
                        ) -> APIError:
    """The APIError subclass for an error response (docs/api/conventions.md#http-statuses,
    docs/api/errors.md).

    ``now`` (a datetime, or a function giving one) reads an HTTP-date ``Retry-After``;
    pass the injected wall clock. ``retry_after`` is set on every status that sends the
    header; ``may_have_reached_server`` is ``not proves_no_job(response)``.
    """
    status = response.status
    header = response.headers.get("retry-after")
    retry_after = None if header is None else parse_retry_after(
        header, now=now if isinstance(now, datetime) else now())
    maybe = not proves_no_job(response)
    if 300 <= status < 400:
        return APIError(status, f"unexpected redirect (HTTP {status}); redirects are not "
                                "followed, so the API key never leaves the API host",
                        retry_after=retry_after, may_have_reached_server=maybe)
    try:
        data: Any = json.loads(response.body) if response.body.strip() else None
    except (ValueError, UnicodeDecodeError):
        data = response.body[:200].decode("utf-8", "replace") or None
    code, message, action = _message_of(data)
    if isinstance(data, str):
        message = _page_summary(data)  # a gateway's HTML page: one line, not the markup
    request_id = response.headers.get("x-request-id")
    if request_id is None and isinstance(data, dict) and isinstance(data.get("error"), dict):
        rid = data["error"].get("request_id")
        request_id = rid if isinstance(rid, str) else None
    kwargs: dict[str, Any] = dict(error_code=code, action=action, request_id=request_id,
                                  body=data, retry_after=retry_after,
                                  may_have_reached_server=maybe)
    text = message or f"HTTP {status} with no error message"
    # Codes first: they are the API's stable contract; statuses back them up.
    if code in _AUTH_CODES or status in (401, 403):
        return AuthenticationError(status, text, **kwargs)
    if code in ("CS-UORC01-008", "CS-ORCR-001") or status == 402:
        return InsufficientCreditsError(status, text, **kwargs)
    if code == FAST_UNAVAILABLE:
        return FastModeUnavailableError(status, text, **kwargs)
    if status == 429:
        return RateLimitError(status, text, **kwargs)
    if status in (400, 422):
        return BadRequestError(status, text, **kwargs)
    if status == 404:
        return NotFoundError(status, text, **kwargs)
    if status == 409:
        return ConflictError(status, text, **kwargs)
    if status >= 500:
        return ServerError(status, text, **kwargs)
    return APIError(status, text, **kwargs)


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")


def _page_summary(page: str, limit: int = 120) -> str | None:
    """One line for a non-JSON error body (a proxy's or gateway's page): its ``<title>``, or
    its text without tags, whitespace collapsed, at most ``limit`` characters. The raw start
    of the body stays on the error's ``body``; messages are shown on one line (CLI, logs)."""
    match = _TITLE.search(page)
    text = " ".join((match.group(1) if match else _TAG.sub(" ", page)).split())
    if len(text) > limit:
        text = text[:limit - 1].rstrip() + "…"
    return text or None


def _describe(exc: BaseException, type_: type | None) -> str:
    # cattrs' default says only "invalid value"; our hooks' messages say what was wrong.
    return f"{format_exception(exc, type_)} ({exc})"


def _structure(converter: cattrs.Converter, data: Any, cls: type[T], status: int) -> T:
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        detail = "; ".join(cattrs.transform_error(exc, format_exception=_describe)) if isinstance(
            exc, cattrs.BaseValidationError) else str(exc)
        raise ResponseFormatError(f"unexpected {cls.__name__} shape: {detail}",
                                  status=status) from None


def parse_model(response: Response, cls: type[T], converter: cattrs.Converter, *,
                now: datetime | Callable[[], datetime],
                defaults: Mapping[str, Any] | None = None) -> T:
    """Interpret a response as ``cls`` or raise the matching ViggleError.

    ``defaults`` fill fields the answer left out (e.g. the job id we asked about).
    """
    if not is_success(response.status):
        raise error_from_response(response, now=now)
    if cls is RenderStatus and converter is get_converter() and (
            not defaults or _STATUS_DEFAULTS.issuperset(defaults)):
        # The poll path (issue 13): msgspec for the plain shape, the same answer as below
        # (property-tested); a contract test's converter sees every body.
        job_id = defaults.get("job_id") if defaults else None
        fast = fast_render_status(response.body, job_id)
        if fast is not None:
            return fast  # type: ignore[return-value]  # cls is RenderStatus
    data = unwrap(decode_json(response))
    if defaults and isinstance(data, dict):
        data = {**defaults, **{k: v for k, v in data.items() if v is not None}}
    elif defaults and data is None:
        data = dict(defaults)
    return _structure(converter, data, cls, response.status)


_STATUS_DEFAULTS = frozenset({"job_id", "status"})


def parse_page(response: Response, key: str, cls: type[T], converter: cattrs.Converter, *,
               limit: int, offset: int, now: datetime | Callable[[], datetime]) -> Page[T]:
    """A list response ``{key: [...], "total": N}`` (docs/api/assets.md#list-characters,
    docs/api/assets.md#list-scenes); a bare list is accepted."""
    if not is_success(response.status):
        raise error_from_response(response, now=now)
    data = unwrap(decode_json(response))
    total: Any = None
    if isinstance(data, dict):
        items = data.get(key, data.get("items"))
        total = data.get("total")
    else:
        items = data
    if not isinstance(items, list):
        raise ResponseFormatError(f"expected a list under {key!r}", status=response.status)
    if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
        total = None  # tolerate an odd total rather than lose the page
    parsed = tuple(_structure(converter, item, cls, response.status) for item in items)
    return Page(items=parsed, total=total, limit=limit, offset=offset)


def check_ok(response: Response, *, now: datetime | Callable[[], datetime]) -> None:
    """For endpoints whose success body carries nothing we need (deletes)."""
    if not is_success(response.status):
        raise error_from_response(response, now=now)
