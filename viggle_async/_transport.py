"""The only client module that imports aiohttp: send a ``Request``, stream uploads,
download outputs, and turn aiohttp's exceptions into ours.

Uploads stream from ``Upload.chunks()`` through a custom payload with a known size,
so aiohttp sends Content-Length (not chunked) and memory stays flat; a fresh payload
is built for every attempt (conventions: never reuse a FormData). There is no total
timeout (it would kill long uploads): connect and read timeouts apply, and each
chunk write has its own ``stall_timeout``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import attrs
from aiohttp.abc import AbstractStreamWriter

from ._errors import (
    ConnectError,
    DownloadError,
    RequestTimeoutError,
    TransportError,
    UploadStalledError,
)
from ._protocol import Request, Response
from ._uploads import Upload

__all__ = ["AiohttpTransport", "Timeouts"]

_T = TypeVar("_T")
Progress = Callable[[int], None]
Hook = Callable[[], Awaitable[None]]


@attrs.frozen
class Timeouts:
    """Seconds. ``read``: wait for an answer; ``stall``: an upload chunk that makes no
    progress; ``request``: a cap on whole non-upload requests (None = no cap)."""

    connect: float = 15.0
    read: float = 120.0
    stall: float = 60.0
    request: float | None = 300.0


class _UploadPayload(aiohttp.payload.Payload):
    """One file part, streamed; calls ``before_last`` just before its final chunk."""

    def __init__(self, upload: Upload, *, on_progress: Progress | None,
                 before_last: Hook | None, stall: float):
        super().__init__(upload, content_type=upload.content_type, filename=upload.filename)
        self._size = upload.size
        self._upload = upload
        self._on_progress = on_progress
        self._before_last = before_last
        self._stall = stall
        self.stalled = False
        self.reached_last = False

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed upload cannot be decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter,
                                content_length: int | None) -> None:
        stream = self._upload.chunks()
        async with contextlib.aclosing(stream):
            pending = await self._step(anext(stream, None))
            while pending is not None:
                # Read one chunk ahead so we know which chunk is the last one.
                following = await self._step(anext(stream, None))
                if following is None:
                    if self._before_last is not None:
                        await self._before_last()
                    self.reached_last = True  # only now may the request be complete
                await self._step(writer.write(pending))
                if self._on_progress is not None:
                    self._on_progress(len(pending))
                pending = following

    async def _step(self, awaitable: Awaitable[_T]) -> _T:
        try:
            with anyio.fail_after(self._stall):
                return await awaitable
        except TimeoutError:
            self.stalled = True
            raise


class AiohttpTransport:
    """Sends requests over one aiohttp session (ours, or a caller's that we never close)."""

    def __init__(self, session: aiohttp.ClientSession | None = None, *,
                 timeouts: Timeouts = Timeouts(), connection_limit: int = 100):
        self._session = session
        self._owns_session = session is None
        self._timeouts = timeouts
        self._limit = connection_limit
        # Built once: a status poll is cheap, and thousands of them add up (benchmarks B3/B5).
        t = timeouts
        self._timeouts_by_kind = {
            uploading: aiohttp.ClientTimeout(total=None if uploading else t.request,
                                             connect=t.connect, sock_connect=t.connect,
                                             sock_read=t.read)
            for uploading in (False, True)}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Created lazily inside the running loop (conventions); no cookies: the API
            # is authenticated by header only. total=None: long uploads must not be cut.
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(limit=self._limit),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeouts.connect,
                                              sock_read=self._timeouts.read),
            )
        return self._session

    def open(self) -> None:
        """Create the session now rather than on the first request (inside a running loop)."""
        self._get_session()

    async def aclose(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _timeout(self, uploading: bool) -> aiohttp.ClientTimeout:
        return self._timeouts_by_kind[uploading]

    async def send(self, request: Request, *, url: str, headers: Mapping[str, str],
                   on_upload: Progress | None = None,
                   before_last_bytes: Hook | None = None) -> Response:
        """Send once. Errors are TransportError subclasses; ``may_have_reached_server`` is
        False unless ``before_last_bytes`` ran (or the body had no streamed file)."""
        session = self._get_session()
        payloads: list[_UploadPayload] = []
        data: Any = None
        if request.is_multipart:
            data = aiohttp.MultipartWriter("form-data")
            for name, value in request.fields or ():
                part = data.append(value)
                part.set_content_disposition("form-data", name=name)
            for index, fp in enumerate(request.files):
                last = index == len(request.files) - 1
                payload = _UploadPayload(fp.source, on_progress=on_upload,
                                         before_last=before_last_bytes if last else None,
                                         stall=self._timeouts.stall)
                payload.set_content_disposition("form-data", name=fp.field,
                                                filename=fp.filename)
                data.append_payload(payload)
                payloads.append(payload)
        if not payloads and before_last_bytes is not None:
            # A small body goes out in one write: from here on it may arrive whole.
            await before_last_bytes()
        started = not payloads
        try:
            async with session.request(
                request.method, url, params=list(request.params) or None, data=data,
                json=request.json, headers=headers, allow_redirects=False,
                timeout=self._timeout(bool(payloads)),
            ) as resp:
                body = await resp.read()
                return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                                body)
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(f"cannot connect to {_origin(url)}: {exc.os_error}") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Only the body's final part decides: earlier parts finishing proves nothing.
            reached = started or (bool(payloads) and payloads[-1].reached_last)
            where = f"{request.method} {request.path}"
            if any(p.stalled for p in payloads):
                raise UploadStalledError(
                    f"{where}: upload made no progress for {self._timeouts.stall:g} s",
                    may_have_reached_server=reached) from None
            if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
                raise RequestTimeoutError(f"{where}: no answer in time",
                                          may_have_reached_server=reached) from None
            raise TransportError(f"{where}: {type(exc).__name__}: {exc}",
                                 may_have_reached_server=reached) from None

    async def download(self, url: str, dest: Path, *,
                       on_progress: Callable[[int, int | None], None] | None = None) -> int:
        """Stream ``url`` to ``dest`` via a temporary file beside it; never sends auth."""
        session = self._get_session()
        # A process killed mid-download leaves its temporary file behind: clear those first.
        await anyio.to_thread.run_sync(_remove_stale_parts, dest)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{_PART}")
        received = 0
        try:
            # Ask for the file as stored: with a compressed transfer, Content-Length counts
            # encoded bytes and could not be checked against what is written.
            async with session.get(url, timeout=self._timeout(True),
                                   headers={"Accept-Encoding": "identity"}) as resp:
                if resp.status != 200:
                    raise DownloadError(f"download of {_origin(url)} answered HTTP {resp.status}")
                encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
                # A server that compresses anyway: aiohttp decodes it and checks the encoded
                # length itself (a short body raises ClientPayloadError), so skip ours.
                total = None if encoded else resp.content_length
                f = await anyio.to_thread.run_sync(open, tmp, "wb")
                try:
                    # Network chunks are small (~64 KiB); a worker-thread hop per chunk
                    # halved throughput (benchmarks B2), so writes go out in batches.
                    batch = bytearray()
                    async for chunk in resp.content.iter_any():
                        batch += chunk
                        if len(batch) >= _WRITE_BATCH:
                            received += await _write(f, batch)
                            batch = bytearray()
                            if on_progress is not None:
                                on_progress(received, total)
                    if batch or received == 0:
                        received += await _write(f, batch)
                        if on_progress is not None:
                            on_progress(received, total)
                    await anyio.to_thread.run_sync(_flush, f)
                finally:
                    f.close()
            if total is not None and received != total:
                raise DownloadError(f"download truncated: {received} of {total} bytes")
            await anyio.to_thread.run_sync(os.replace, tmp, dest)
            return received
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DownloadError(f"download from {_origin(url)} failed after {received} bytes: "
                                f"{type(exc).__name__}: {exc}") from None
        finally:
            # Shielded in place (not a detached asyncio.shield task): a cancelled download
            # returns only once its temporary file is gone.
            with anyio.CancelScope(shield=True), contextlib.suppress(FileNotFoundError):
                await anyio.to_thread.run_sync(os.unlink, tmp)


_PART = ".part"
_WRITE_BATCH = 4 * 1024 * 1024  # bytes held before a write: bounds memory per download


async def _write(f: Any, data: bytearray) -> int:
    await anyio.to_thread.run_sync(f.write, data)
    return len(data)


def _remove_stale_parts(dest: Path) -> None:
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.{'[0-9a-f]' * 8}{_PART}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _flush(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def _origin(url: str) -> str:
    # Never echo query strings: signed CDN URLs carry credentials there.
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
