"""Shared by the supervisor tests (imported by name: ``from suphelp import RENDER_KW``).

Not in ``conftest.py``: test folders that each import their own ``conftest`` module clash
when pytest collects two folders in one run (issue 12.12).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from viggle_async import PollPolicy, ViggleClient
from viggle_async.testing import ManualClock

# Manual time costs nothing, but every poll is a real request: poll at a steady 2 s.
POLICY = PollPolicy(first_delay=2.0, min_interval=2.0, max_interval=2.0, jitter=0.0)
# The fake's default: queued 2 s, then 5 s + 2 s per video second (halved when fast).
RENDER_KW = {"poll_policy": POLICY, "capacity_backoff": (0.5, 2.0), "asset_poll_interval": 1.0}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve_routes(*routes: tuple[str, str, Handler]) -> AsyncIterator[str]:
    """A scripted API on 127.0.0.1 (a free port): ``(method, path, handler)`` routes, e.g.
    ``("POST", "/api/render", create)``; yields the base URL."""
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def ready_scene(client: ViggleClient, clock: ManualClock) -> str:
    """A ready 5 s video-template scene: character renders need one
    (docs/api/renders.md#render-modes mode 2)."""
    async with clock.autojump():
        scene = await client.scenes.import_template("tmpl-video-wave")
        ready = await client.scenes.wait(scene.id, poll_interval=1.0)
    return ready.id
