"""The CDN app: serves finished outputs on its own host and port.

Bodies are generated chunk by chunk from a short repeating unit, so a 1 GiB output costs no
memory. Every Authorization header received is recorded: docs/api/client-rules.md#downloads says
downloads must not send
the API key (signed storage URLs refuse a foreign Authorization header). Every request is
logged with its raw path and query (``Observations.cdn_requests``).

The CDN faults (see :class:`~viggle_async.testing.Faults`): S3-style signed URLs that expire
and are checked against the raw query received, per-object failure statuses for the first N
requests or T seconds, connections closed mid-body, Range / If-Range support, and pacing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import attrs
from aiohttp import web

from ._mp4 import job_video
from ._observe import CdnRequest
from ._records import RenderJob
from ._store import STORE, Store

__all__ = ["cdn_app", "cdn_url"]

_CHUNK = 256 * 1024
# The classic output: an MP4 prelude (ftyp, then an mdat whose size 0 means "to the end of
# the file") so it sniffs as video/mp4; then byte i of the file is i % 256.
_PRELUDE = struct.pack(">I4s4sI8s", 24, b"ftyp", b"isom", 0x200, b"isomiso2") + struct.pack(
    ">I4s", 0, b"mdat"
)
_UNIT = bytes(range(256))
_BLOCK = _UNIT * (_CHUNK // len(_UNIT) + 2)  # shared: any phase of the unit, one chunk long

# S3's query-string authentication, close enough that a client must pass it through as is.
_SIG_PARAM = "&X-Amz-Signature="


@attrs.frozen
class _Content:
    """An output: ``head`` bytes, then byte ``i`` is ``unit[i % len(unit)]``, to ``size``."""

    head: bytes
    unit: bytes
    size: int
    etag: str

    def chunks(self, start: int, end: int, chunk: int) -> Iterator[bytes | memoryview]:
        block = _BLOCK if self.unit is _UNIT else self.unit * (chunk // len(self.unit) + 2)
        view = memoryview(block)
        chunk = min(chunk, len(block) - len(self.unit))
        pos = start
        while pos < end:
            if pos < len(self.head):
                n = min(end, len(self.head)) - pos
                yield self.head[pos : pos + n]
            else:
                n = min(chunk, end - pos)
                phase = pos % len(self.unit)
                yield view[phase : phase + n]
            pos += n


def _content(store: Store, job: RenderJob, kind: str) -> _Content:
    size = store.settings.output_bytes
    if store.settings.output_mp4:
        # A playable MP4 of the job's duration whose frames differ per job and kind; past its
        # last frame, unreferenced mdat padding up to ``size``.
        tag = f"{job.job_id}/{kind}"
        head = job_video(tag, max(job.video_seconds, 0.001), size)
        seed = hashlib.sha256(tag.encode()).digest()
        unit = hashlib.shake_256(seed).digest(4096)
        size = max(size, len(head))
        etag = hashlib.sha256(f"{tag}/{size}".encode()).hexdigest()[:32]
    else:
        head, unit = _PRELUDE, _UNIT
        etag = hashlib.sha256(f"{job.job_id}/{kind}/{size}".encode()).hexdigest()[:32]
    return _Content(head, unit, size, f'"{etag}"')


def cdn_url(store: Store, path: str, issued: float) -> str:
    """The CDN URL of ``path``, signed at simulated time ``issued`` when Faults.url_ttl_s is
    set. The query uses percent-escapes (``%2F``, ``%2B``, ``%3D``) that URL libraries like
    to re-encode; the signature covers them exactly as written."""
    ttl = store.faults.url_ttl_s
    url = store.cdn_base + path
    if ttl is None:
        return url
    wall = store.clock.wall(issued)
    digest = hashlib.sha256(f"{path}|{issued}".encode()).digest()[:16]
    # STS session tokens are base64: '+', '/' and '=' padding, all escaped in a query.
    token = "FwoGZXIvYXdzE+/" + base64.b64encode(digest).decode()
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential=AKIAFAKEVIGGLECDN%2F{wall:%Y%m%d}%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Date={wall:%Y%m%dT%H%M%SZ}&X-Amz-Expires={max(1, math.ceil(ttl))}"
        f"&X-Amz-SignedHeaders=host&X-Amz-Security-Token={quote(token, safe='')}"
    )
    return f"{url}?{query}{_SIG_PARAM}{_signature(store, path, query)}"


def _signature(store: Store, raw_path: str, raw_query: str) -> str:
    return hmac.new(store.cdn_secret, f"{raw_path}\n{raw_query}".encode(), "sha256").hexdigest()


def _s3_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> (
    web.Response
):
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml", headers=headers)


def _check_signature(store: Store, request: web.Request) -> web.Response | None:
    """403 unless the raw query carries our signature and has not expired (Faults.url_ttl_s)."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    signed, sep, signature = raw_query.rpartition(_SIG_PARAM)
    expected = _signature(store, raw_path, signed)
    if not sep or not hmac.compare_digest(signature, expected):
        return _s3_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    params = dict(p.partition("=")[::2] for p in signed.split("&"))
    try:
        issued = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = int(params["X-Amz-Expires"])
    except (KeyError, ValueError):  # pragma: no cover - we signed it, so we wrote it
        return _s3_error(403, "AccessDenied", "Malformed query-string authentication")
    ttl = store.faults.url_ttl_s
    lifetime = min(expires, ttl) if ttl is not None else expires
    if store.now() >= store.clock.sim_of(issued) + lifetime:
        return _s3_error(403, "AccessDenied", "Request has expired")
    return None


# What S3 / CloudFront put in the error body for each status.
_S3_CODES = {
    403: "AccessDenied",
    404: "NoSuchKey",
    410: "Gone",
    500: "InternalError",
    502: "BadGateway",
    503: "SlowDown",
    504: "GatewayTimeout",
}

_Range = tuple[int, int]


def _byte_range(header: str, size: int) -> _Range | bool | None:
    """``Range`` -> (start, end exclusive); None: ignore it (serve 200); False: 416."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multi-range: a server may always answer 200 in full
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:  # suffix: the last N bytes
            n = int(last)
            return (max(0, size - n), size) if n > 0 and size > 0 else False
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start < 0 or (last and end <= start):
        return None
    if start >= size:
        return False
    return start, min(end, size)


async def _download(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    obs = store.obs
    seen = {k: request.headers[k] for k in ("Range", "If-Range", "Authorization")
            if k in request.headers}
    if "Authorization" in seen:
        obs.cdn_auth_headers.append(seen["Authorization"])
    answer = _prepare_answer(store, request)
    obs.cdn_requests.append(CdnRequest(request.method, request.raw_path, seen, answer.status))
    if isinstance(answer, web.Response):
        return answer
    return await _stream(store, request, answer)


@attrs.define
class _Body:
    """A successful answer still to stream: 200 or 206 for ``[start, end)`` of ``content``."""

    content: _Content
    start: int
    end: int
    status: int
    object_path: str


def _prepare_answer(store: Store, request: web.Request) -> web.Response | _Body:
    faults = store.faults
    if faults.url_ttl_s is not None and (refused := _check_signature(store, request)):
        return refused
    job = store.jobs.get(request.match_info["job_id"])
    kind = request.match_info["kind"]
    now = store.now()
    if (
        job is None
        or job.status(now) != "complete"
        or (kind == "mask" and job.background_mode != "transparent")
    ):
        return web.Response(status=404, text="404: Not Found")
    path = request.path
    state = store.cdn_objects.setdefault(path, [now, 0, 0])
    state[1] += 1
    if state[1] <= faults.cdn_fail_first_n or (
        faults.cdn_fail_for_s > 0 and now - state[0] < faults.cdn_fail_for_s
    ):
        store.obs.cdn_failed += 1
        status = faults.cdn_fail_status
        headers = {"Retry-After": faults.cdn_retry_after} if faults.cdn_retry_after else None
        code = _S3_CODES.get(status, "InternalError")
        return _s3_error(status, code, "Injected CDN failure", headers)
    content = _content(store, job, kind)
    start, end, status = 0, content.size, 200
    range_header = request.headers.get("Range")
    if faults.cdn_range_support and range_header is not None:
        if_range = request.headers.get("If-Range")
        # A validator that is not our current ETag (an old ETag, or a date): the full body.
        if if_range is None or if_range.strip() == content.etag:
            wanted = _byte_range(range_header, content.size)
            if wanted is False:
                return web.Response(
                    status=416, headers={"Content-Range": f"bytes */{content.size}"}
                )
            if isinstance(wanted, tuple):
                start, end = wanted
                status = 206
    return _Body(content, start, end, status, path)


async def _stream(store: Store, request: web.Request, body: _Body) -> web.StreamResponse:
    faults = store.faults
    content = body.content
    resp = web.StreamResponse(
        status=body.status, headers={"Content-Type": "video/mp4", "ETag": content.etag}
    )
    if faults.cdn_range_support:
        resp.headers["Accept-Ranges"] = "bytes"
    if body.status == 206:
        resp.headers["Content-Range"] = f"bytes {body.start}-{body.end - 1}/{content.size}"
    length = body.end - body.start
    resp.content_length = length
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    obs = store.obs
    obs.cdn_downloads += 1
    state = store.cdn_objects[body.object_path]
    state[2] += 1
    limit = length
    if state[2] <= faults.cdn_drop_first_n:
        limit = min(limit, faults.cdn_drop_after_bytes)
        obs.cdn_dropped += 1
    if faults.truncate_downloads > 0:
        faults.truncate_downloads -= 1
        obs.truncated_downloads += 1
        limit = min(limit, int(length * faults.truncate_fraction))
    rate = faults.cdn_bytes_per_s
    # Smaller chunks when paced, so the pace is smooth rather than one pause per 256 KiB.
    chunk = 16 * 1024 if rate else _CHUNK
    try:
        for piece in content.chunks(body.start, body.start + limit, chunk):
            await resp.write(piece)
            if rate:
                await asyncio.sleep(len(piece) / rate)
    except ConnectionError:  # reset, broken pipe, aiohttp's "Connection lost" while draining
        # The client closed the connection early, as a real CDN sees it do (a cancelled
        # download, a segment past its range): nothing to report in the caller's test output.
        obs.cdn_client_closed += 1
        return resp
    if limit < length and request.transport is not None:
        # Full Content-Length announced, fewer bytes sent: close so the client sees it short.
        request.transport.close()
    return resp


def cdn_app(store_app: web.Application) -> web.Application:
    """A CDN application sharing ``store_app``'s store."""
    app = web.Application()
    app[STORE] = store_app[STORE]
    app.router.add_get("/outputs/{job_id}/{kind:output|mask}.mp4", _download)
    return app
