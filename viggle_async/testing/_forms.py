"""Form bodies read the way the real server must: file parts streamed to disk, never whole.

Multipart file parts are written chunk by chunk to a temp file, with the size limit enforced
while reading (CS-ORIV-005, docs/api/errors.md#error-codes); runs of zero bytes become holes, so
sparse test files cost
no disk. ``application/x-www-form-urlencoded`` bodies (the docs' ID-only examples,
docs/api/conventions.md#request-encodings) are
small and read at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Awaitable
from typing import Literal, TypeVar

import attrs
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ._errors import api_error
from ._observe import FilePart

__all__ = ["DroppedConnection", "Form", "Upload", "read_form", "transfer_of"]

_T = TypeVar("_T")

_CHUNK = 256 * 1024
_ZEROS = bytes(_CHUNK)


@attrs.define
class Upload:
    """A file part saved to ``path``; ``head`` holds its first bytes for sniffing."""

    name: str
    filename: str | None
    content_type: str | None
    path: str
    size: int
    head: bytes


class DroppedConnection(Exception):
    """The connection is gone (aborted on purpose, or the client left): answer nothing."""


@attrs.define
class Form:
    fields: dict[str, str] = attrs.field(factory=dict)
    files: dict[str, Upload] = attrs.field(factory=dict)
    parts: list[FilePart] = attrs.field(factory=list)

    def cleanup(self) -> None:
        for upload in self.files.values():
            with contextlib.suppress(OSError):
                os.unlink(upload.path)


def transfer_of(request: web.Request) -> Literal["content-length", "chunked"]:
    encoding = request.headers.get("Transfer-Encoding", "")
    return "chunked" if "chunked" in encoding.lower() else "content-length"


async def read_form(
    request: web.Request,
    form: Form,
    tmpdir: str,
    max_upload: int,
    max_field: int,
    bytes_per_s: float | None = None,
    stall_s: float | None = None,
) -> None:
    """Fill ``form`` from the request body; raises ApiError for bodies we refuse.

    ``form`` is filled as parts arrive, so the caller can record and clean up even when
    reading fails half-way. A body whose framing is broken (shorter or longer than its
    multipart boundaries say, or stalling ``stall_s`` seconds before its declared end) is a
    400 validation error, as a real server answers, never a 500; a client that went away
    raises :class:`DroppedConnection` (no one is left to answer).
    """
    ctype = request.content_type
    if ctype == "multipart/form-data":
        try:
            await _read_multipart(
                request, form, tmpdir, max_upload, max_field, bytes_per_s, stall_s
            )
        except ConnectionResetError as exc:
            raise DroppedConnection from exc
        except TimeoutError as exc:
            raise api_error(
                "CS-UORC01-002",
                f"The request body stalled for {stall_s} s before its declared end"
                " (shorter than its Content-Length?)",
            ) from exc
        except (ValueError, AssertionError, HttpProcessingError) as exc:
            # aiohttp's multipart reader: "Reading after EOF" (no closing boundary within
            # the body), bad boundaries, bad chunked framing.
            raise api_error("CS-UORC01-002", f"Malformed multipart body: {exc}") from exc
    elif ctype == "application/x-www-form-urlencoded":
        for name, value in (await request.post()).items():
            if not isinstance(value, str):  # pragma: no cover - urlencoded has no files
                continue
            _add_field(form, name, value)
    elif request.body_exists:
        raise api_error(
            "CS-UORC01-002",
            f"Unsupported Content-Type {ctype!r}: send multipart/form-data"
            " or application/x-www-form-urlencoded",
        )


def _add_field(form: Form, name: str, value: str) -> None:
    if name in form.fields or name in form.files:
        raise api_error("CS-UORC01-002", f"Field {name!r} was sent more than once")
    form.fields[name] = value


async def _read_multipart(
    request: web.Request,
    form: Form,
    tmpdir: str,
    max_upload: int,
    max_field: int,
    bytes_per_s: float | None,
    stall_s: float | None,
) -> None:
    transfer = transfer_of(request)
    reader = await request.multipart()
    while True:
        part = await _within(reader.next(), stall_s)
        if part is None:
            return
        if not isinstance(part, BodyPartReader):
            raise api_error("CS-UORC01-002", "Nested multipart bodies are not supported")
        name = part.name
        if not name:
            raise api_error("CS-UORC01-002", "A multipart part has no name")
        if part.filename is None:
            _add_field(form, name, await _read_text(part, name, max_field, stall_s))
            continue
        if name in form.fields or name in form.files:
            raise api_error("CS-UORC01-002", f"Field {name!r} was sent more than once")
        fd, path = tempfile.mkstemp(dir=tmpdir, prefix="upload-")
        upload = Upload(name, part.filename, part.headers.get("Content-Type"), path, 0, b"")
        form.files[name] = upload
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                await _stream_part(part, f, upload, max_upload, digest, bytes_per_s, stall_s)
        finally:
            form.parts.append(
                FilePart(
                    name,
                    part.filename,
                    upload.size,
                    upload.content_type,
                    transfer,
                    digest.hexdigest(),
                )
            )


async def _within(aw: Awaitable[_T], stall_s: float | None) -> _T:
    """``await aw``, raising TimeoutError after ``stall_s`` seconds (None: no limit)."""
    if not stall_s:
        return await aw
    # asyncio.timeout, not wait_for: on 3.11 wait_for wraps the read in a task of its own.
    async with asyncio.timeout(stall_s):
        return await aw


async def _read_text(
    part: BodyPartReader, name: str, max_field: int, stall_s: float | None
) -> str:
    data = bytearray()
    while chunk := await _within(part.read_chunk(_CHUNK), stall_s):
        data += chunk
        if len(data) > max_field:
            raise api_error("CS-UORC01-002", f"Field {name!r} is longer than {max_field} bytes")
    try:
        return data.decode(part.get_charset("utf-8"))
    except (UnicodeDecodeError, LookupError) as exc:
        raise api_error("CS-UORC01-002", f"Field {name!r} is not valid text") from exc


async def _stream_part(
    part: BodyPartReader,
    f: io.BufferedWriter,
    upload: Upload,
    max_upload: int,
    digest: hashlib._Hash,
    bytes_per_s: float | None,
    stall_s: float | None,
) -> None:
    head = bytearray()
    # Smaller reads when throttled, so the pace is smooth.
    size = min(_CHUNK, max(1024, int(bytes_per_s / 10))) if bytes_per_s else _CHUNK
    while chunk := await _within(part.read_chunk(size), stall_s):
        if bytes_per_s:
            await asyncio.sleep(len(chunk) / bytes_per_s)
        upload.size += len(chunk)
        digest.update(chunk)
        if upload.size > max_upload:
            # Stop reading here: the rest of the body is never stored
            # (docs/api/errors.md#error-codes CS-ORIV-005).
            raise api_error(
                "CS-ORIV-005", f"File {upload.name!r} is larger than {max_upload} bytes"
            )
        if len(head) < 4096:
            head += chunk[: 4096 - len(head)]
        if len(chunk) == _CHUNK and chunk == _ZEROS:
            f.seek(len(chunk), os.SEEK_CUR)
        else:
            f.write(chunk)
    f.truncate(upload.size)
    upload.head = bytes(head)
