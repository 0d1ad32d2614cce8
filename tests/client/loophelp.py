"""A tiny loopback HTTP server for exact wire tests (imported by name: ``from loophelp
import serve``; not in ``conftest.py``, so test folders collected together never clash)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler, method: str = "*") -> AsyncIterator[str]:
    """Serve every path with ``handler`` on 127.0.0.1 (a free port); yields the base URL."""
    app = web.Application()
    app.router.add_route(method, "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
