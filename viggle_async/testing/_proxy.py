"""ProxyServer: a tiny forward HTTP proxy on loopback, for testing a client's proxy support.

Plain HTTP requests in absolute form (``GET http://host:port/path?query HTTP/1.1``) are
forwarded with their path and query byte for byte (a signed URL stays signed); any other
traffic (HTTPS, or anything) goes through ``CONNECT host:port`` tunnels. Every request the
proxy receives is recorded in :attr:`ProxyServer.requests`, with its headers, so a test can
check the ``Proxy-Authorization`` sent, and that the API key went only where it belongs.
One request per client connection (answers carry ``Connection: close``).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlsplit

import attrs

__all__ = ["ProxyRequest", "ProxyServer"]

_MAX_HEAD = 64 * 1024
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "upgrade"}
)


@attrs.frozen
class ProxyRequest:
    """One request the proxy received.

    ``target`` is the request target as sent: an absolute URL, or ``host:port`` for CONNECT.
    ``headers`` are (name, value) pairs as sent, in order. ``status`` is the proxy's own
    answer: 200 (tunnel opened or request forwarded), 400, 407 or 502.
    """

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    status: int

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


class ProxyServer:
    """``async with ProxyServer() as proxy: ...`` then pass ``proxy.url`` as the proxy.

    ``proxy_authorization``: the exact ``Proxy-Authorization`` value required (e.g.
    ``"Basic dXNlcjpwYXNz"``); a request without it is answered 407 with
    ``Proxy-Authenticate``. None: no authentication.
    """

    def __init__(
        self, *, proxy_authorization: str | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.proxy_authorization = proxy_authorization
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests: list[ProxyRequest] = []
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{self._host}:{port}"

    async def close(self) -> None:
        """Stop listening and cut every open connection and tunnel. Safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- one connection ----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, or sent no complete head: nothing to answer
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEAD:
            return await self._answer(writer, 400, "Request head too large")
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target, _, _version = rest.partition(" ")
        headers = tuple(
            (name.strip(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        )

        def record(status: int) -> None:
            self.requests.append(ProxyRequest(method, target, headers, status))

        sent_auth = next((v for k, v in headers if k.lower() == "proxy-authorization"), None)
        if self.proxy_authorization is not None and sent_auth != self.proxy_authorization:
            record(407)
            return await self._answer(
                writer, 407, "Proxy Authentication Required",
                [("Proxy-Authenticate", 'Basic realm="fake-proxy"')],
            )
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            try:
                up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            except (OSError, ValueError):
                record(502)
                return await self._answer(writer, 502, "Bad Gateway")
            record(200)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _splice(reader, writer, up_reader, up_writer)
            return None
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            record(400)
            return await self._answer(writer, 400, "Absolute http:// URL or CONNECT expected")
        try:
            up_reader, up_writer = await asyncio.open_connection(
                parts.hostname, parts.port or 80
            )
        except OSError:
            record(502)
            return await self._answer(writer, 502, "Bad Gateway")
        record(200)
        # The origin-form target is the absolute target minus scheme and authority, byte for
        # byte: no decoding, no re-encoding.
        origin = target[len(f"{parts.scheme}://{parts.netloc}") :] or "/"
        kept = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
        out = f"{method} {origin} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in kept)
        up_writer.write((out + "Connection: close\r\n\r\n").encode("latin-1"))
        try:
            await _copy_body(reader, up_writer, headers)
            await _copy_response(up_reader, writer)
        finally:
            up_writer.close()
        return None

    @staticmethod
    async def _answer(
        writer: asyncio.StreamWriter,
        status: int,
        reason: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        body = reason.encode()
        lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain",
                 f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in extra or []]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()


async def _copy_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    headers: tuple[tuple[str, str], ...],
) -> None:
    """Forward a request body framed by Content-Length or chunked encoding, as it comes."""
    lowered = {k.lower(): v for k, v in headers}
    if "chunked" in lowered.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    writer.write(trailer)
                writer.write(b"\r\n")
                break
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
    else:
        remaining = int(lowered.get("content-length", "0") or 0)
        while remaining > 0:
            chunk = await reader.read(min(remaining, 256 * 1024))
            if not chunk:
                break
            remaining -= len(chunk)
            writer.write(chunk)
            await writer.drain()
    await writer.drain()


async def _copy_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Relay the upstream answer, marked ``Connection: close``, until upstream closes."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    kept = [
        line for line in lines[1:]
        if line and line.partition(":")[0].strip().lower() not in ("connection", "keep-alive")
    ]
    out = "\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n"
    writer.write(out.encode("latin-1"))
    while chunk := await reader.read(256 * 1024):
        writer.write(chunk)
        await writer.drain()
    await writer.drain()


async def _splice(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Pipe both ways until either side closes."""

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await src.read(256 * 1024):
                dst.write(chunk)
                await dst.drain()

    tasks = [asyncio.ensure_future(pipe(a_reader, b_writer)),
             asyncio.ensure_future(pipe(b_reader, a_writer))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        b_writer.close()
