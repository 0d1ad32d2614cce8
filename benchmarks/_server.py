"""``python -m benchmarks._server < CONFIG.json``: the fake server, in its own process.

Builds ``FakeViggle(FakeSettings(...), faults=Faults(**config["faults"]))`` from the JSON
settings on stdin (``faults`` optional: the run's base faults, e.g. realistic render
progress), prints
``base_url=``, ``cdn_base_url=``, ``api_key=`` and ``control_url=`` lines, then serves until
SIGTERM or SIGINT. Everything listens on 127.0.0.1.

The control app (its own port, never the API's) gives what a benchmark needs beyond
``/__fake__/stats``:

- ``GET /clock``: ``{"mono", "sim", "scale"}`` read at one instant, to map a client's
  ``time.monotonic()`` onto the fake's simulated time;
- ``GET /jobs``: ``[[job_id, created, finished, fast], ...]`` in simulated seconds (the
  moment each render was accepted and the moment it completes, as the fake defines them);
- ``GET /draws``: ``[[created, started, finished, video_seconds], ...]`` per render in the
  order the fake accepted them (simulated seconds): what its random source drew for each
  arrival, B3's paced floor's oracle;
- ``POST /outage?sim_seconds=S``: no fast capacity for the next S simulated seconds;
  answers ``{"until_sim"}``;
- ``POST /reset``: forget every job, observation and fault (between runs); the base faults
  come back, their random source restarting from its seed, so every run draws the same.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import attrs
from aiohttp import web

from viggle_async.testing import FakeSettings, FakeViggle, Faults

from ._common import serve_app, serve_main

API_KEY = "sk-bench"


def _settings(config: dict[str, Any]) -> FakeSettings:
    balance = int(config.pop("balance", 10**12))
    return FakeSettings(api_keys={API_KEY: balance}, **config)


def _control_app(fake: FakeViggle, base: Faults) -> web.Application:
    async def clock(_: web.Request) -> web.Response:
        mono, sim = time.monotonic(), fake.now()
        return web.json_response({"mono": mono, "sim": sim, "scale": fake.settings.time_scale})

    async def jobs(_: web.Request) -> web.Response:
        rows = [[j.job_id, j.created, j.finished, j.fast] for j in fake.store.jobs.values()]
        return web.json_response(rows)

    async def draws(_: web.Request) -> web.Response:
        rows = [[j.created, j.started, j.finished, j.video_seconds]
                for j in fake.store.jobs.values()]  # a dict: in order of arrival
        return web.json_response(rows)

    async def outage(request: web.Request) -> web.Response:
        sim_seconds = float(request.query["sim_seconds"])
        # Faults.fast_unavailable_until is on the settings clock (time.monotonic), in real
        # seconds.
        until = time.monotonic() + sim_seconds / fake.settings.time_scale
        fake.faults = attrs.evolve(base, fast_unavailable_until=until)
        return web.json_response({"until_sim": fake.now() + sim_seconds})

    async def reset(_: web.Request) -> web.Response:
        store = fake.store
        store.jobs.clear()
        store.obs.reset()
        fake.faults = attrs.evolve(base)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/clock", clock)
    app.router.add_get("/jobs", jobs)
    app.router.add_get("/draws", draws)
    app.router.add_post("/outage", outage)
    app.router.add_post("/reset", reset)
    return app


async def _serve(config: dict[str, Any]) -> None:
    base = Faults(**config.pop("faults", {}))
    async with FakeViggle(_settings(config), faults=base) as fake:
        await serve_app(_control_app(fake, base), lambda port: [
            f"base_url={fake.base_url}", f"cdn_base_url={fake.cdn_base_url}",
            f"api_key={fake.api_key}", f"control_url=http://127.0.0.1:{port}"])


def main() -> int:
    return serve_main(_serve)


if __name__ == "__main__":
    sys.exit(main())
