"""Shared by the reliability tests (imported by name: ``from relhelp import Media``); not in
``conftest.py``, so test folders collected together never import each other's conftest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler, method: str = "*", *,
                shutdown_timeout: float = 60.0) -> AsyncIterator[str]:
    """Serve every path with ``handler`` on 127.0.0.1 (a free port); yields the base URL.
    ``shutdown_timeout``: seconds the cleanup waits for handlers still running."""
    app = web.Application()
    app.router.add_route(method, "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@attrs.frozen
class Media:
    png: Path
    mp4: Path  # 2 s, 64x64: 2 credits standard, 4 fast (docs/api/credits.md#costs)
    tmp: Path
