"""A fake Viggle server in its own process, for tests that SIGKILL the client: the server
must outlive it and remember what it saw.

``python tests/reliability/fake_proc.py [--time-scale S] [--output-bytes N]`` prints
``base_url=``, ``cdn_base_url=``, ``control_url=`` and ``api_key=`` lines, then serves until
SIGTERM. Beside ``FakeViggle`` it runs one more loopback app (the "control" port) that:

- ``POST /control`` with JSON ``{"faults": {...}, "settings": {...}, "cdn_rate": n,
  "hold": {"file": name, "seconds": s}}`` sets fields of ``Faults`` / ``FakeSettings`` at
  run time (lists become frozensets), throttles the CDN to ``n`` bytes/s (null: full
  speed), and holds the answer of a ``POST /api/render`` that uploaded a file called
  ``name`` for ``s`` seconds *after* the job is made (``Faults.latency_s`` waits before the
  handler, so it cannot hold "created, not yet answered");
- ``GET /control/records`` answers every create in full (with its file names, which
  ``/__fake__/stats`` leaves out), each job's status, and the Authorization headers the CDN
  received;
- serves ``/outputs/...`` by streaming the fake's CDN through the throttle. Render bodies
  point here (``cdn_base``), on the host name ``localhost``: a download can then be caught
  half-way, and the CDN is still another host than the API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

import aiohttp
import attrs
from aiohttp import web
from aiohttp.typedefs import Handler

from viggle_async.testing import FakeSettings, FakeViggle, _app, _server
from viggle_async.testing._store import STORE

CHUNK = 64 * 1024


class _Hold:
    seconds = 0.0
    file = ""


@web.middleware
async def _hold_answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if (_Hold.seconds and request.method == "POST" and request.path == "/api/render"
            and isinstance(response, web.Response) and response.status == 200
            and isinstance(response.body, bytes)):
        job_id = json.loads(response.body).get("job_id")
        store = request.app[STORE]
        if any(c.result_id == job_id and _Hold.file in [p.filename for p in c.files]
               for c in store.obs.creates):
            await asyncio.sleep(_Hold.seconds)
    return response


def _api_app_with_hold(store: Any) -> web.Application:
    app = _api_app(store)
    app.middlewares.append(_hold_answer)  # innermost: runs around the handler itself
    return app


# The fake builds its app in start(); this script only adds the hold around its handlers.
_api_app = _app.api_app
_server.api_app = _api_app_with_hold  # type: ignore[attr-defined]


class Control:
    def __init__(self, fake: FakeViggle, session: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.session = session
        self.cdn_rate: float | None = None
        self.cdn_auth: list[str] = []

    async def configure(self, request: web.Request) -> web.Response:
        body = await request.json()
        for target, changes in ((self.fake.faults, body.get("faults", {})),
                                (self.fake.settings, body.get("settings", {}))):
            names = {a.name for a in attrs.fields(type(target))}
            for name, value in changes.items():
                if name not in names:
                    raise web.HTTPBadRequest(text=f"unknown field {name!r}")
                setattr(target, name, frozenset(value) if isinstance(value, list) else value)
        if "cdn_rate" in body:
            self.cdn_rate = body["cdn_rate"]
        if "hold" in body:
            _Hold.file, _Hold.seconds = body["hold"]["file"], float(body["hold"]["seconds"])
        return web.json_response({"ok": True})

    async def records(self, request: web.Request) -> web.Response:
        fake = self.fake
        now = fake.now()
        return web.json_response({
            "creates": [{"kind": c.kind, "status": c.status, "result_id": c.result_id,
                         "error_code": c.error_code, "fields": dict(c.fields),
                         "files": [p.filename for p in c.files]} for c in fake.creates],
            "jobs": {j: job.status(now) for j, job in fake.store.jobs.items()},
            "cdn_auth": len(self.cdn_auth) + len(fake.cdn_auth_headers),
        })

    async def output(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        if auth is not None:
            self.cdn_auth.append(auth)
        async with self.session.get(self.fake.cdn_base_url + request.path) as upstream:
            if upstream.status != 200:
                return web.Response(status=upstream.status)
            resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
            resp.content_length = upstream.content_length
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await resp.write(chunk)
                    if self.cdn_rate:
                        await asyncio.sleep(len(chunk) / self.cdn_rate)
                await resp.write_eof()
            except ConnectionResetError:
                pass  # the client was killed mid-download: the point of the test
            return resp


async def serve(args: argparse.Namespace) -> None:
    settings = FakeSettings(time_scale=args.time_scale, output_bytes=args.output_bytes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakeViggle(settings) as fake, aiohttp.ClientSession() as session:
        control = Control(fake, session)
        app = web.Application()
        app.router.add_post("/control", control.configure)
        app.router.add_get("/control/records", control.records)
        app.router.add_get("/outputs/{job_id}/{kind}.mp4", control.output)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            with contextlib.suppress(OSError):  # "localhost" may resolve to ::1 first
                await web.TCPSite(runner, "::1", port).start()
            fake.store.cdn_base = f"http://localhost:{port}"
            print(f"base_url={fake.base_url}", flush=True)
            print(f"cdn_base_url={fake.store.cdn_base}", flush=True)
            print(f"control_url=http://127.0.0.1:{port}", flush=True)
            print(f"api_key={fake.api_key}", flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=1000.0)
    parser.add_argument("--output-bytes", type=int, default=64 * 1024)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
