"""``MockTransport``: an in-memory ``Transport`` for unit tests of the request path (the
retry rules, error mapping, parsing), in the spirit of httpx's ``MockTransport``.

No socket, no aiohttp, no client import: a handler answers each ``Request``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import attrs

from .._protocol import Request, Response, UploadObserver

__all__ = ["MockCall", "MockTransport"]

Handler = Callable[[Request], "Response | Awaitable[Response]"]


@attrs.frozen
class MockCall:
    """One ``send`` as the transport received it. ``headers`` are hidden from the repr
    (they carry the API key)."""

    request: Request
    url: str
    headers: Mapping[str, str] = attrs.field(repr=False)


@attrs.frozen
class _Streamed:
    status: int
    headers: Mapping[str, str]
    body: bytes

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.body:
            yield self.body


class MockTransport:
    """Answers every request with ``handler(request)`` (a ``Response``, or an awaitable of
    one). The handler may raise ``TransportError`` subclasses to stand for network faults
    (``ConnectError``: nothing sent; ``RequestTimeoutError(..., may_have_reached_server=True)``:
    an answer lost).

    Uploads are played as a real transport would: each file part's chunks are read (so a
    one-shot stream is consumed), ``observer.on_progress(sent)`` gets the file bytes sent so
    far in this send after each chunk,
    and ``observer.before_last_bytes()`` is awaited just before the last chunk (before the
    handler when there is no file). ``calls`` records every send; ``stream`` answers a GET
    of ``url`` through the same handler (``Request.path`` is then the whole URL).
    """

    def __init__(self, handler: Handler):
        self.handler = handler
        self.calls: list[MockCall] = []
        self.closed = False

    @property
    def requests(self) -> list[Request]:
        """The requests sent, in order."""
        return [c.request for c in self.calls]

    async def _answer(self, request: Request) -> Response:
        result: Any = self.handler(request)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Response):
            raise TypeError(f"MockTransport handler returned {type(result).__name__}, "
                            "expected a viggle_async._protocol.Response")
        return result

    async def send(self, request: Request, *, url: str, headers: Mapping[str, str],
                   observer: UploadObserver | None = None) -> Response:
        self.calls.append(MockCall(request, url, dict(headers)))
        await _play_upload(request, observer)
        return await self._answer(request)

    @contextlib.asynccontextmanager
    async def _stream(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[_Streamed]:
        request = Request("GET", url, "read", auth=False)
        self.calls.append(MockCall(request, url, dict(headers)))
        response = await self._answer(request)
        yield _Streamed(response.status, response.headers, response.body)

    def stream(self, url: str, *, headers: Mapping[str, str]
               ) -> contextlib.AbstractAsyncContextManager[_Streamed]:
        return self._stream(url, headers)

    async def aclose(self) -> None:
        self.closed = True


async def _play_upload(request: Request, observer: UploadObserver | None) -> None:
    before = observer.before_last_bytes if observer else None
    progress = observer.on_progress if observer else None
    sources = [fp.source for fp in request.files if hasattr(fp.source, "chunks")]
    if not sources:
        if before is not None:
            await before()  # a small body goes out whole: from here it may have arrived
        return
    sent = 0
    for index, source in enumerate(sources):
        last_part = index == len(sources) - 1
        pending: bytes | None = None
        async with contextlib.aclosing(source.chunks()) as stream:
            async for chunk in stream:
                if pending is not None:
                    sent += len(pending)
                    if progress is not None:
                        progress(sent)
                pending = chunk
        if last_part and before is not None:
            await before()
        if pending is not None:
            sent += len(pending)
            if progress is not None:
                progress(sent)
