"""The only client module that imports aiohttp: send a ``Request``, stream uploads,
open download streams, resolve proxies, and turn aiohttp's exceptions into ours.

``AiohttpTransport`` implements the ``Transport`` seam of ``_protocol``. Uploads
stream from ``Upload.chunks()`` through a custom payload with a known size, so
aiohttp sends Content-Length (not chunked) and memory stays flat; a fresh payload
is built for every attempt (conventions: never reuse a FormData). There is no total
timeout (it would kill long uploads): connect and read timeouts apply, and each
chunk write has its own ``stall_timeout``. The download sink (temporary file,
verify, fsync, rename, retries) lives in ``_download`` and works on any transport.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
import urllib.request
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Coroutine,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
import anyio
import attrs
from aiohttp.abc import AbstractStreamWriter
from yarl import URL

from ._errors import (
    ConfigurationError,
    ConnectError,
    InvalidInputError,
    RequestTimeoutError,
    TransportError,
    UploadStalledError,
)
from ._protocol import Hook, Request, Response, StreamedResponse, UploadObserver
from ._uploads import Upload

__all__ = ["AiohttpTransport", "Timeouts"]

_T = TypeVar("_T")


@attrs.frozen
class Timeouts:
    """Seconds. ``read``: wait for an answer (and, in a download, for the next bytes);
    ``stall``: an upload chunk that makes no progress; ``request``: a cap on whole
    non-upload requests (None = no cap). A request without a file has one deadline,
    ``connect + read`` capped by ``request``; uploads and downloads have no total
    timeout."""

    connect: float = 15.0
    read: float = 120.0
    stall: float = 60.0
    request: float | None = 300.0


class _Sent:
    """File bytes written so far in one send, across every file part (for progress)."""

    def __init__(self, observer: UploadObserver | None):
        self.total = 0
        self._report = observer.on_progress if observer is not None else None

    def add(self, n: int) -> None:
        self.total += n
        if self._report is not None:
            self._report(self.total)


class _UploadPayload(aiohttp.payload.Payload):
    """One file part, streamed; calls ``before_last`` just before its final chunk.

    The part's size was declared (Content-Length) when the upload was checked. A file
    that shrinks or grows while it is read (an editor re-saving it) would hang the
    request (too few bytes) or corrupt it (too many): the count is checked one chunk
    ahead, so the mismatch is found before the last byte of the declared size goes out.
    """

    def __init__(self, upload: Upload, *, sent: _Sent, before_last: Hook | None,
                 stall: float):
        super().__init__(upload, content_type=upload.content_type, filename=upload.filename)
        self._size = upload.size
        self._upload = upload
        self._sent = sent
        self._before_last = before_last
        self._stall = stall
        self.stalled = False
        self.reached_last = False
        self.changed: InvalidInputError | None = None

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed upload cannot be decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter,
                                content_length: int | None) -> None:
        stream = self._upload.chunks()
        async with aclosing(stream):
            pending = await self._step(anext(stream, None))
            read = self._count(0, pending)
            while pending is not None:
                # Read one chunk ahead so we know which chunk is the last one.
                following = await self._step(anext(stream, None))
                read = self._count(read, following)
                if following is None:
                    if self._size is not None and read != self._size:
                        raise self._changed(read)  # shrank: nothing final has gone out
                    if self._before_last is not None:
                        await self._before_last()
                    self.reached_last = True  # only now may the request be complete
                await self._step(writer.write(pending))
                self._sent.add(len(pending))
                pending = following

    def _count(self, read: int, chunk: bytes | None) -> int:
        read += len(chunk) if chunk is not None else 0
        if self._size is not None and read > self._size:
            raise self._changed(read)  # grew: the declared length would be overrun
        return read

    def _changed(self, read: int) -> InvalidInputError:
        upload = self._upload
        how = "grew" if read > (self._size or 0) else "shrank"
        self.changed = InvalidInputError(
            upload.field,
            f"{upload.filename!r} {how} while it was uploading: {self._size} bytes declared, "
            f"{'at least ' if how == 'grew' else ''}{read} read; nothing was completed",
            "wait until the file is fully written (e.g. the editor has finished saving), "
            "then send it again")
        return self.changed

    async def _step(self, awaitable: Awaitable[_T]) -> _T:
        try:
            with anyio.fail_after(self._stall):
                return await awaitable
        except TimeoutError:
            self.stalled = True
            raise


class _Proxies:
    """Which proxy a URL goes through, decided once per client.

    ``proxy`` (explicit) applies to every request. Otherwise, with ``trust_env``, the
    standard variables are read once, as ``urllib.request.getproxies_environment`` does
    (``http_proxy``/``https_proxy``/``all_proxy``/``no_proxy``, either case, lower case
    winning); ``no_proxy`` is the only bypass (loopback is not exempt by itself).
    Credentials come only from the proxy URL (``http://user:pass@host:port``); aiohttp's
    own ``trust_env`` is never used, so ``~/.netrc`` never adds any.
    """

    def __init__(self, proxy: str | None, trust_env: bool):
        self._explicit = _proxy_url(proxy, "proxy") if proxy is not None else None
        env = urllib.request.getproxies_environment() if trust_env and proxy is None else {}
        self._bypass = {"no": env["no"]} if env.get("no") else {}
        self._by_scheme: dict[str, URL] = {}
        for scheme in ("http", "https"):
            if env.get(scheme):
                self._by_scheme[scheme] = _proxy_url(env[scheme], f"{scheme}_proxy")
            elif env.get("all"):
                self._by_scheme[scheme] = _proxy_url(env["all"], "all_proxy")
        self._cache: dict[tuple[str, str, int | None], URL | None] = {}

    def for_url(self, url: URL) -> URL | None:
        if self._explicit is not None:
            return self._explicit
        if not self._by_scheme:
            return None
        key = (url.scheme, url.raw_host or "", url.explicit_port)
        try:
            return self._cache[key]
        except KeyError:
            pass
        proxy = self._by_scheme.get(url.scheme)
        if proxy is not None and self._bypass:
            host = key[1] if key[2] is None else f"{key[1]}:{key[2]}"
            # Undocumented but stable since Python 3.0; requests relies on it too.
            if urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
                    host, self._bypass):
                proxy = None
        if len(self._cache) < 1024:  # bounded: a client talks to a handful of hosts
            self._cache[key] = proxy
        return proxy


def _proxy_url(value: str, name: str) -> URL:
    # Like curl and httpx, a proxy given as host:port means plain http to the proxy.
    url = URL(value if "://" in value else f"http://{value}")
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            f"{name} {url.with_user(None).with_password(None)!s} is not an http(s) proxy URL "
            "(socks proxies are not supported); fix the variable, pass proxy='http://host:port'"
            ", or ViggleClient(trust_env=False) to ignore the environment")
    return url


class _ApiUrls:
    """API request URLs as yarl URLs, the origin parsed once.

    ``URL(str)`` parses, validates and re-encodes the whole string: the largest cost of ours
    in a status poll (issue 13). The API's origin (``scheme://host:port``) is the same in
    every request, so it is parsed once and each path, when it is already plain (what
    ``_endpoints`` builds: fixed segments and quoted ids), is set on it as it is. Anything
    else (a space, non-ASCII, ``%``, a dot segment, a query, another origin) goes through
    yarl's normalisation as before, so both ways give the same URL.
    """

    __slots__ = ("_origin", "_prefix")

    def __init__(self) -> None:
        self._prefix: str | None = None  # the origin as written, e.g. "https://host:8443"
        self._origin = URL()

    def __call__(self, url: str) -> URL:
        prefix = self._prefix
        if prefix is not None and url.startswith(prefix):
            path = url[len(prefix):]
            if _PLAIN_PATH(path) and "/." not in path:
                return self._origin.with_path(path, encoded=True)
        target = URL(url)
        if prefix is None and target.absolute:
            cut = url.find("/", url.find("://") + 3)
            if cut > 0:
                self._prefix, self._origin = url[:cut], URL(url[:cut])
        return target


# A path of characters that never need encoding (RFC 3986 unreserved, sub-delims, ":",
# "@", "/"): no "%", "?" or "#".
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*\Z").match


def _text_form(fields: Sequence[tuple[str, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body of text fields and its Content-Type, byte for byte what
    ``aiohttp.MultipartWriter("form-data")`` writes for them (each part's Content-Type
    and Content-Disposition headers, CRLFs, the closing boundary; a fresh random
    boundary). Names must pass ``_plain_names`` (they then need no quoting)."""
    boundary = uuid.uuid4().hex
    dash = f"--{boundary}\r\n".encode()
    body = bytearray()
    for name, value in fields:
        body += dash
        body += _PART_HEAD % name.encode()
        body += value.encode()
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), f"multipart/form-data; boundary={boundary}"


_PART_HEAD = (b"Content-Type: text/plain; charset=utf-8\r\n"
              b'Content-Disposition: form-data; name="%s"\r\n\r\n')
# Field names aiohttp writes as they are inside name="...": the API's names (no quoting,
# no percent-encoding). Anything else goes through aiohttp's writer.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+\Z").match


def _plain_names(fields: Sequence[tuple[str, str]]) -> bool:
    return all(_PLAIN_NAME(name) and isinstance(value, str) for name, value in fields)


def _raw_url(url: str) -> URL:
    """``url`` exactly as given: yarl would otherwise re-encode a signed URL's ``%2F``,
    ``%7E``, ``%3D``... and break its signature. A URL with non-ASCII characters cannot go
    out raw, so yarl encodes that (rare) kind."""
    return URL(url, encoded=True) if url.isascii() else URL(url)


class _LoopEndCloser:
    """Closes our session inside its event loop when that loop shuts down.

    A client that is never closed (or is later refused in a second ``asyncio.run``) would
    leave its session and kept-alive sockets to be garbage-collected after the loop is
    gone: "Unclosed client session", ResourceWarnings. An asyncio loop has one shutdown
    step that runs code in the loop before it closes: ``shutdown_asyncgens`` (run by
    ``asyncio.run``, ``asyncio.Runner`` and pytest-asyncio), which closes every async
    generator still suspended. So a tiny generator, suspended once here, closes the
    session from its ``finally``. Elsewhere (another async library, a loop closed by
    hand) it does nothing, and never fails.
    """

    def __init__(self, session: aiohttp.ClientSession):
        self._session = session
        self._quiet = False
        self._agen = self._run()

    @classmethod
    def start(cls, session: aiohttp.ClientSession) -> _LoopEndCloser | None:
        hooks = sys.get_asyncgen_hooks()
        if hooks.firstiter is None:  # no loop tracks async generators here
            return None
        closer = cls(session)
        asyncio_finalizer = hooks.finalizer

        def finalizer(agen: AsyncGenerator[None, None]) -> None:
            # Collected while suspended (its transport was dropped without aclose): let the
            # loop close it as usual, or finish it quietly if that loop is gone.
            if closer._quiet or asyncio_finalizer is None:
                closer._finish(agen)
            else:
                try:
                    asyncio_finalizer(agen)
                except RuntimeError:  # the loop is closed
                    closer._finish(agen)

        # The finalizer is captured when the generator first runs; restore at once.
        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
        try:
            closer._agen.asend(None).send(None)  # run to the ``yield``: no await needed
        except StopIteration:
            pass
        finally:
            sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=asyncio_finalizer)
        return closer

    async def _run(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if not self._quiet and not self._session.closed:
                await self._session.close()

    def finish(self) -> None:
        """Stop watching (the session was closed, or abandoned, by its owner)."""
        self._finish(self._agen)

    def _finish(self, agen: AsyncGenerator[None, None]) -> None:
        self._quiet = True
        with suppress(StopIteration, RuntimeError):
            agen.aclose().send(None)  # the finally has nothing to await now


class _ReadWatch:
    """Ends a download body that sends nothing for ``read`` seconds, with one timer per
    response. aiohttp's ``sock_read`` timeout would re-arm a timer (a heap push and a
    cancel) on every chunk read from the socket, about 4,000 times per GiB (benchmark
    B2). Here the reader only stamps ``since`` while it waits; the timer looks at the
    stamp when it fires and sleeps again until the stamp's deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, content: aiohttp.StreamReader,
                 read: float):
        self._loop, self._content, self._read = loop, content, read
        #: loop time when the reader began waiting for bytes; None while it holds a chunk
        self.since: float | None = loop.time()
        self._handle: asyncio.TimerHandle | None = loop.call_at(self.since + read, self._fire)

    def _fire(self) -> None:
        since, now = self.since, self._loop.time()
        if since is not None and now - since >= self._read:
            self._handle = None
            # As aiohttp's own read timeout does: the waiting read raises it.
            self._content.set_exception(aiohttp.ServerTimeoutError(
                f"no bytes for {self._read:g} s"))
            return
        self._handle = self._loop.call_at((now if since is None else since) + self._read,
                                          self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _Deadlines:
    """One deadline of ``seconds`` for each request in flight, kept by one loop timer.

    Every request here has the same length of deadline, so start order is deadline order:
    the requests wait in a dict (insertion ordered) and a single ``call_at`` timer, armed
    for the oldest, cancels each task whose deadline has passed and re-arms for the next
    one. A request then costs a dict insert and delete, not a timer of its own. As in
    ``asyncio.timeout``, the task's cancellation count tells our cancel from its owner's:
    ``timed_out`` is True only when the cancel that arrived is ours alone.
    """

    __slots__ = ("_expired", "_handle", "_loop", "_seconds", "_waiting")

    def __init__(self, seconds: float):
        self._seconds = seconds
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enter(self) -> tuple[asyncio.Task[Any], int] | None:
        """Start the current task's deadline; None when there is no task to cancel (or it
        already has a deadline here): the caller then uses a timeout of its own."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None or task in self._waiting:
            return None
        if loop is not self._loop:  # a transport is used from one loop; start afresh
            self.stop()
            self._loop = loop
        deadline = loop.time() + self._seconds
        self._waiting[task] = deadline
        if self._handle is None:
            self._handle = loop.call_at(deadline, self._fire)
        return task, task.cancelling()

    def timed_out(self, entry: tuple[asyncio.Task[Any], int]) -> bool:
        """Called on CancelledError: True (and the cancel consumed) when our deadline,
        and nothing else, cancelled the task."""
        task, cancelling = entry
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() <= cancelling

    def leave(self, entry: tuple[asyncio.Task[Any], int]) -> None:
        task = entry[0]
        self._waiting.pop(task, None)
        if self._expired and task in self._expired:
            # Expired but ended some other way (its own cancel came first): undo ours.
            self._expired.discard(task)
            task.uncancel()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._waiting.clear()
        self._expired.clear()

    def _fire(self) -> None:
        self._handle = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        waiting = self._waiting
        while waiting:
            task = next(iter(waiting))
            deadline = waiting[task]
            if deadline > now:
                self._handle = loop.call_at(deadline, self._fire)
                return
            del waiting[task]
            self._expired.add(task)
            task.cancel()


class _Streamed:
    """An aiohttp response as a ``StreamedResponse``; read errors become TransportError,
    and ``read`` seconds without a byte a RequestTimeoutError."""

    def __init__(self, resp: aiohttp.ClientResponse, where: str, read: float):
        self._resp = resp
        self._where = where
        self._read = read if read > 0 else math.inf  # 0: no limit, as aiohttp's sock_read
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.headers.items()}

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        loop = asyncio.get_running_loop()
        clock = loop.time
        watch = _ReadWatch(loop, content, self._read)
        read = content.readchunk
        try:
            # One socket read's bytes at a time (up to 256 KiB), handed on as they are:
            # readany would join everything buffered (a copy whenever the reader is
            # behind); readchunk pops one buffer, joining only inside an HTTP chunk.
            while True:
                chunk, boundary = await read()
                if not chunk:
                    if boundary:
                        continue  # the end of an HTTP chunk, not of the body
                    break
                watch.since = None
                yield chunk
                watch.since = clock()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _mapped(exc, f"GET {self._where}", self._where, reached=True) from None
        finally:
            watch.cancel()


class AiohttpTransport:
    """Sends requests over one aiohttp session (ours, or a caller's that we never close).

    ``proxy``: a proxy URL for every request; by default (``trust_env=True``) the
    ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY`` variables decide, read once here.
    Raises ConfigurationError for a proxy that is not an http(s) URL.
    """

    def __init__(self, session: aiohttp.ClientSession | None = None, *,
                 timeouts: Timeouts = Timeouts(), connection_limit: int = 100,
                 proxy: str | None = None, trust_env: bool = True):
        self._session = session
        self._owns_session = session is None
        self._timeouts = timeouts
        self._limit = connection_limit
        self._proxies = _Proxies(proxy, trust_env)
        self._urls = _ApiUrls()
        self._loop_end: _LoopEndCloser | None = None
        # Built once: a status poll is cheap, and thousands of them add up (benchmarks B3/B5).
        t = timeouts
        # A request without a file gets one timer in all (issue 13: each aiohttp timer is
        # a heap push and a cancel per request): its answer is a small JSON body that
        # comes whole, so "connect, then wait ``read`` for the answer" is one deadline of
        # connect + read, capped by ``request``. ``sock_connect`` only runs when a new
        # connection is opened, so it costs nothing on a kept-alive one.
        plain_total = t.connect + t.read
        plain_total = plain_total if t.request is None else min(t.request, plain_total)
        self._plain_timeout = aiohttp.ClientTimeout(total=plain_total, sock_connect=t.connect)
        # Requests without a body (status polls, cancels, deletes) share one timer for that
        # deadline (_Deadlines) and ask aiohttp for none: aiohttp's costs a TimeoutHandle,
        # a TimerContext, a loop timer and two bound methods per request, all alive for
        # the whole wait, which drives the cyclic GC at 32 polls in flight (issue 13, B5).
        self._deadlines = _Deadlines(plain_total) if plain_total > 0 else None
        self._untimed = aiohttp.ClientTimeout(total=None, sock_connect=t.connect)
        # An upload has no total (it would kill long uploads): connect and read timeouts,
        # plus the per-chunk stall watchdog.
        self._upload_timeout = aiohttp.ClientTimeout(
            total=None, connect=t.connect, sock_connect=t.connect, sock_read=t.read)
        # A download has no total either; its headers get connect + read, its body
        # ``read`` between bytes from _ReadWatch (cheaper than sock_read per chunk).
        self._download_timeout = aiohttp.ClientTimeout(
            total=None, connect=t.connect, sock_connect=t.connect, sock_read=None)
        self._download_headers_s = t.connect + t.read if t.read > 0 else None  # 0: no limit

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
            self._loop_end = _LoopEndCloser.start(self._session)
        return self._session

    def open(self) -> None:
        """Create the session now rather than on the first request (inside a running loop)."""
        self._get_session()

    async def aclose(self) -> None:
        if self._deadlines is not None:
            self._deadlines.stop()
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None
        if self._loop_end is not None:
            self._loop_end.finish()
            self._loop_end = None

    def loop_changed(self) -> None:
        """Called by the request path when a second event loop tries to use this transport.

        Our session belongs to the first loop: if that loop ended through ``asyncio.run``
        it was already closed there (see ``_LoopEndCloser``) and is dropped here, so
        ``aclose`` from the new loop, and the next use after it, start afresh.
        """
        # A session still open may be serving its own loop in another thread: keep it.
        if self._owns_session and self._session is not None and self._session.closed:
            self._session = None
            if self._loop_end is not None:
                self._loop_end.finish()
                self._loop_end = None

    def send(self, request: Request, *, url: str, headers: Mapping[str, str],
             observer: UploadObserver | None = None) -> Coroutine[Any, Any, Response]:
        """Send once (await the result). Errors are TransportError subclasses;
        ``may_have_reached_server`` is False unless ``observer.before_last_bytes`` ran (or
        the body had no streamed file). A file that changes size while it is read raises
        InvalidInputError (nothing was completed, so no job exists)."""
        # A plain function handing over the coroutine: one coroutine less per poll.
        if request.fields is None and observer is None:
            return self._send_plain(request, url, headers)
        return self._send_body(request, url, headers, observer)

    async def _send_plain(self, request: Request, url: str, headers: Mapping[str, str]
                          ) -> Response:
        # Reads, cancels, deletes, JSON creates: the status poll path (issue 13), without
        # the multipart bookkeeping. Nothing is streamed, so once sending starts the
        # request may have reached the server.
        session = self._session or self._get_session()
        target = self._urls(url)
        deadlines = self._deadlines
        entry = deadlines.enter() if deadlines is not None else None
        try:
            # Awaited, not ``async with``: the context manager costs two more coroutines
            # per request (its __aenter__ alive for the whole wait); ``read`` releases the
            # connection when the body is complete and closes it when reading fails.
            resp = await session.request(
                request.method, target, params=request.params or None, data=None,
                json=request.json,
                headers=headers, allow_redirects=False,
                timeout=self._plain_timeout if entry is None else self._untimed,
                proxy=self._proxies.for_url(target))
            try:
                body = await resp.read()
            finally:
                resp.release()
            # aiohttp's headers are already a case-insensitive mapping (lower-case
            # look-ups work): no copy per poll.
            return Response(resp.status, resp.headers, body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _mapped(exc, f"{request.method} {request.path}", _origin(url),
                          reached=True) from None
        except asyncio.CancelledError:
            if entry is not None and deadlines is not None and deadlines.timed_out(entry):
                raise RequestTimeoutError(f"{request.method} {request.path}: no answer in "
                                          "time", may_have_reached_server=True) from None
            raise
        finally:
            if entry is not None and deadlines is not None:
                deadlines.leave(entry)

    async def _send_body(self, request: Request, url: str, headers: Mapping[str, str],
                         observer: UploadObserver | None) -> Response:
        session = self._get_session()
        before_last_bytes = observer.before_last_bytes if observer is not None else None
        sent = _Sent(observer)
        payloads: list[_UploadPayload] = []
        data: Any = None
        if request.is_multipart and not request.files and _plain_names(request.fields or ()):
            # Text fields only (a render from ids or URLs): the same multipart bytes,
            # built in one piece (issue 13). aiohttp's writer costs a payload lookup and
            # header quoting per field and writes the body in ~4 socket writes per field.
            data, content_type = _text_form(request.fields or ())
            headers = {**headers, "Content-Type": content_type}
        elif request.is_multipart:
            data = aiohttp.MultipartWriter("form-data")
            for name, value in request.fields or ():
                part = data.append(value)
                part.set_content_disposition("form-data", name=name)
            for index, fp in enumerate(request.files):
                last = index == len(request.files) - 1
                payload = _UploadPayload(fp.source, sent=sent,
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
        target = self._urls(url)
        try:
            async with session.request(
                request.method, target, params=list(request.params) or None, data=data,
                json=request.json, headers=headers, allow_redirects=False,
                timeout=self._upload_timeout if payloads else self._plain_timeout,
                proxy=self._proxies.for_url(target),
            ) as resp:
                body = await resp.read()
                return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                                body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            for p in payloads:
                if p.changed is not None:
                    raise p.changed from None
            # Only the body's final part decides: earlier parts finishing proves nothing.
            reached = started or (bool(payloads) and payloads[-1].reached_last)
            where = f"{request.method} {request.path}"
            if any(p.stalled for p in payloads):
                raise UploadStalledError(
                    f"{where}: upload made no progress for {self._timeouts.stall:g} s",
                    may_have_reached_server=reached) from None
            raise _mapped(exc, where, _origin(url), reached=reached) from None

    def stream(self, url: str, *, headers: Mapping[str, str]
               ) -> AbstractAsyncContextManager[StreamedResponse]:
        """GET ``url`` with exactly ``headers`` (no API key is added) and read the body as
        it arrives. The URL goes out byte for byte as given (signed CDN URLs). Redirects
        are followed. Errors opening or reading raise TransportError subclasses."""
        return self._stream(url, headers)

    @asynccontextmanager
    async def _stream(self, url: str, headers: Mapping[str, str]
                      ) -> AsyncIterator[StreamedResponse]:
        session = self._get_session()
        where = _origin(url)
        for _hop in range(_MAX_REDIRECTS + 1):
            target = _raw_url(url)
            try:
                with anyio.fail_after(self._download_headers_s):
                    resp = await session.get(
                        target, headers=headers, timeout=self._download_timeout,
                        proxy=self._proxies.for_url(target), allow_redirects=False,
                        read_bufsize=_DOWNLOAD_BUFSIZE)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise _mapped(exc, f"GET {where}", where, reached=True) from None
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                break
            # Followed here, not by aiohttp: its resolution requotes the Location, and a
            # signed URL must arrive as the server wrote it.
            resp.close()
            url = urljoin(url, location)
            where = _origin(url)
        else:
            raise TransportError(f"GET {where}: more than {_MAX_REDIRECTS} redirects",
                                 may_have_reached_server=True)
        try:
            yield _Streamed(resp, where, self._timeouts.read)
        finally:
            # A connection with unread body bytes cannot be reused: close it, not drain it.
            if resp.content.at_eof():
                resp.release()
            else:
                resp.close()


_MAX_REDIRECTS = 10
# Bytes aiohttp buffers per download before it stops reading the socket (it resumes at
# half). At its default (64 KiB: pause past 128 KiB) every 256 KiB the event loop reads
# pauses and resumes the socket, two epoll syscalls and two timer resets per chunk
# (benchmark B2). 1 MiB never pauses a reader that keeps up, and bounds memory per
# connection to about 2 MiB when the disk is behind.
_DOWNLOAD_BUFSIZE = 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _mapped(exc: BaseException, where: str, origin: str, *, reached: bool) -> TransportError:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"cannot connect to {origin}: {exc.os_error}")
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return RequestTimeoutError(f"{where}: no answer in time", may_have_reached_server=reached)
    # Some aiohttp errors quote the whole URL: a signed URL's query carries credentials.
    text = _QUERY.sub(r"\1?...", str(exc))
    return TransportError(f"{where}: {type(exc).__name__}: {text}",
                          may_have_reached_server=reached)


_QUERY = re.compile(r"""(\w+://[^\s?'"]*)\?[^\s'"]*""")


def _origin(url: str) -> str:
    """Scheme, host, port and path only: a signed CDN URL carries credentials in its
    query, and a URL may carry user:password; neither belongs in a message."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal
    return f"{parts.scheme}://{host}{port}{parts.path}"
