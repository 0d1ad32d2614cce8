"""Helpers shared by the API handlers: success bodies, create bookkeeping, input checks."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web

from viggle_async import _media

from ._errors import ApiError, api_error
from ._forms import DroppedConnection, Form, Upload, read_form, transfer_of
from ._observe import CreateRecord
from ._store import Store

__all__ = [
    "BACKGROUND_MODES",
    "CREATE_RECORD",
    "MODELS",
    "DroppedConnection",
    "VideoFacts",
    "billable",
    "check_image",
    "check_url",
    "check_video",
    "create_request",
    "field",
    "ok",
    "parse_background_mode",
    "parse_bool",
]

MODELS = frozenset({"V4_Preview", "V3_Preview"})  # docs/api/conventions.md#models
# docs/api/conventions.md#background-modes
BACKGROUND_MODES = frozenset({"original", "solid", "transparent"})
# Form booleans arrive as strings (docs/api/conventions.md#request-encodings); Python's str(True)
# is "True", so case is ignored.
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


# Where create_request leaves its CreateRecord on the request, for the middleware's faults.
# aiohttp 3.14 warns on plain-string request keys (NotAppKeyWarning); RequestKey is new there.
CREATE_RECORD: Any = (web.RequestKey("viggle_fake_create_record", CreateRecord)
                      if hasattr(web, "RequestKey") else "viggle_fake_create_record")


def ok(store: Store, body: dict[str, Any]) -> web.Response:
    """A 200 JSON answer, wrapped in ``{"data": ...}`` when that doc variant is on
    (docs/api/open-questions.md#response-wrapping)."""
    return web.json_response({"data": body} if store.settings.wrap_data else body)


def field(form: Form, name: str) -> str | None:
    """A text field's value; an empty string counts as not sent (``curl -F x=``)."""
    value = form.fields.get(name)
    return value if value else None


def parse_bool(form: Form, name: str) -> bool:
    value = field(form, name)
    if value is None:
        return False
    try:
        return _BOOLS[value.strip().lower()]
    except KeyError:
        raise api_error("CS-UORC01-002", f"{name} must be true or false, got {value!r}") from None


def parse_background_mode(form: Form) -> str:
    mode = field(form, "background_mode") or "original"
    # alias kept for backward compatibility (docs/api/conventions.md#background-modes)
    if mode == "inpaint":
        return "original"
    if mode not in BACKGROUND_MODES:
        raise api_error("CS-ORIV-011", f"Invalid background_mode {mode!r}")
    return mode


def check_url(name: str, url: str) -> None:
    """The fake never fetches URLs: it accepts any absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise api_error("CS-UORC01-002", f"{name} must be an http(s) URL, got {url!r}")


def check_image(upload: Upload) -> None:
    try:
        _media.probe_image(upload.head)
    except _media.MediaError as exc:
        raise api_error(
            "CS-UORC01-002", f"{upload.name} must be a PNG, JPEG or WebP image: {exc}"
        ) from exc


class VideoFacts:
    """What the fake knows about a driving video: duration (billing) and frame size."""

    def __init__(self, duration_s: float, width: int | None, height: int | None) -> None:
        self.duration_s, self.width, self.height = duration_s, width, height


def check_video(store: Store, upload: Upload) -> VideoFacts:
    """Probe an uploaded video and apply the docs/api/limits.md#limits limits with their
    docs/api/errors.md#error-codes codes."""
    s = store.settings
    if upload.size == 0:
        raise api_error("CS-ORIV-007", f"{upload.name} is empty")
    try:
        with open(upload.path, "rb") as f:
            info = _media.probe_video(f)
    except _media.MediaError as exc:
        code = "CS-ORIV-003" if exc.reason == "unsupported" else "CS-ORIV-007"
        raise api_error(code, f"{upload.name}: {exc}") from exc
    # WebM's header gives no duration to the probe: bill it like a URL input.
    duration = info.duration_s if info.duration_s is not None else s.url_video_seconds
    if duration > s.max_video_seconds:
        raise api_error(
            "CS-ORIV-004", f"Video is {duration:.1f}s long; the limit is {s.max_video_seconds}s"
        )
    width, height = info.width, info.height
    if max(width or 0, height or 0) > s.max_resolution:
        raise api_error(
            "CS-ORIV-006",
            f"Video is {width}x{height}; the limit is {s.max_resolution}x{s.max_resolution}",
        )
    return VideoFacts(duration, width, height)


def billable(seconds: float, fast: bool) -> int:
    """Credits for a render: ceil(seconds) x (2 if fast) (docs/api/credits.md#costs, fake-server
    suggestion)."""
    # Round first so a probe's 10.000000001 s is billed as 10, not 11.
    return math.ceil(round(seconds, 6)) * (2 if fast else 1)


@contextlib.asynccontextmanager
async def create_request(
    request: web.Request,
    store: Store,
    kind: Literal["render", "character", "scene", "import"],
    key: str,
    *,
    read_body: bool = True,
) -> AsyncIterator[tuple[Form, CreateRecord]]:
    """Record a create request, apply the drop fault, read its form, clean up after it."""
    form = Form()
    record = CreateRecord(kind, key, form.fields, form.parts, transfer_of(request))
    store.obs.creates.append(record)
    request[CREATE_RECORD] = record
    try:
        await _maybe_drop(request, store)
        if read_body:
            await read_form(
                request,
                form,
                store.tmpdir,
                store.settings.max_upload_bytes,
                store.settings.max_field_bytes,
                store.faults.upload_bytes_per_s,
                store.settings.body_stall_s,
            )
        yield form, record
    except ApiError as exc:
        record.status = exc.status
        if isinstance(exc.detail, dict):
            record.error_code = exc.detail.get("error_code")
        raise
    finally:
        form.cleanup()


async def _maybe_drop(request: web.Request, store: Store) -> None:
    faults = store.faults
    if faults.drop_uploads <= 0:
        return
    faults.drop_uploads -= 1
    remaining = faults.drop_after_bytes
    while remaining > 0:
        chunk = await request.content.read(min(remaining, 64 * 1024))
        if not chunk:
            break
        remaining -= len(chunk)
    store.obs.dropped_uploads += 1
    if request.transport is not None:
        request.transport.abort()
    raise DroppedConnection
