"""A tiny loopback HTTP server for exact wire tests, the scripted recording server built on
it, and the client tests' sample media (imported by name: ``from loophelp import serve``;
not in ``conftest.py``, so test folders collected together never clash)."""

from __future__ import annotations

import json
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def names(folder: Path) -> list[str]:
    """The sorted file names in ``folder``: a download leaves its file and nothing else
    (no ``.part``)."""
    return sorted(p.name for p in folder.iterdir())


@asynccontextmanager
async def serve(handler: Handler, method: str = "*", *,
                tls: ssl.SSLContext | None = None,
                client_max_size: int = 1024**2) -> AsyncIterator[str]:
    """Serve every path with ``handler`` on 127.0.0.1 (a free port); yields the base URL
    (``https://`` with a server ``tls`` context). ``client_max_size``: the largest request
    body, bytes, the handler may read."""
    app = web.Application(client_max_size=client_max_size)
    app.router.add_route(method, "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@attrs.frozen
class Media:
    png: Path
    mp4: Path  # 4 s, 64x64


@attrs.define
class Seen:
    """One request as the scripted server received it."""

    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    content_type: str


@attrs.define
class Reply:
    status: int = 200
    body: Any = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)


class Scripted:
    """A loopback server that answers queued replies (then 200 ``default``) and records
    every request exactly as it arrived, on any aiohttp version."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self.default = Reply()
        self.base_url = ""

    def queue(self, *replies: tuple[Any, ...]) -> None:
        """Queue replies given as ``(status, body[, headers])``."""
        self.replies.extend(Reply(*r) for r in replies)

    def always(self, status: int, body: Any) -> None:
        """Answer every request not queued with this."""
        self.default = Reply(status, body)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers), body,
                              request.content_type))
        reply = self.replies.popleft() if self.replies else self.default
        raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        return web.Response(status=reply.status, body=raw, headers=reply.headers,
                            content_type="application/json")
