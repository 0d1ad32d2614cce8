"""A fake Viggle server in its own process, for tests that SIGKILL the client: the server
must outlive it and remember what it saw.

``python tests/reliability/fake_proc.py [--time-scale S] [--output-bytes N]
[--fault NAME=VALUE ...]`` prints ``base_url=``, ``cdn_base_url=``, ``control_url=`` and
``api_key=`` lines, then serves until SIGTERM. ``--fault`` is the fake's own option (as for
``python -m viggle_async.testing``). The faults the crash tests need are the fake's generic
knobs: ``Faults.answer_delay_s`` holds a create's answer after the job exists,
``Faults.latency_s`` holds a request before its handler, ``Faults.cdn_bytes_per_s``
throttles the CDN so a download can be caught half-way (the CDN is on the host name
``localhost``, another host than the API). What is specific to these tests is one more
loopback app beside ``FakeViggle`` (the "control" port) that:

- ``POST /control`` with JSON ``{"faults": {...}, "settings": {...}}`` sets fields of
  ``Faults`` / ``FakeSettings`` at run time (lists become frozensets), since the fake's
  command line sets them only at start;
- ``GET /control/records`` answers every create in full with its file *names* (which
  ``/__fake__/stats`` leaves out), each job's status, and how many Authorization headers
  the CDN received.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import attrs
from aiohttp import web

from viggle_async.testing import FakeSettings, FakeViggle
from viggle_async.testing.__main__ import faults_from


class Control:
    def __init__(self, fake: FakeViggle) -> None:
        self.fake = fake

    async def configure(self, request: web.Request) -> web.Response:
        body = await request.json()
        for target, changes in ((self.fake.faults, body.get("faults", {})),
                                (self.fake.settings, body.get("settings", {}))):
            names = {a.name for a in attrs.fields(type(target))}
            for name, value in changes.items():
                if name not in names:
                    raise web.HTTPBadRequest(text=f"unknown field {name!r}")
                setattr(target, name, frozenset(value) if isinstance(value, list) else value)
        return web.json_response({"ok": True})

    async def records(self, request: web.Request) -> web.Response:
        fake = self.fake
        now = fake.now()
        return web.json_response({
            "creates": [{"kind": c.kind, "status": c.status, "result_id": c.result_id,
                         "error_code": c.error_code, "fields": dict(c.fields),
                         "files": [p.filename for p in c.files]} for c in fake.creates],
            "jobs": {j: job.status(now) for j, job in fake.store.jobs.items()},
            "cdn_auth": len(fake.cdn_auth_headers),
        })


async def serve(args: argparse.Namespace) -> None:
    settings = FakeSettings(time_scale=args.time_scale, output_bytes=args.output_bytes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakeViggle(settings, faults=faults_from(args.fault)) as fake:
        control = Control(fake)
        app = web.Application()
        app.router.add_post("/control", control.configure)
        app.router.add_get("/control/records", control.records)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            print(f"base_url={fake.base_url}", flush=True)
            print(f"cdn_base_url={fake.cdn_base_url}", flush=True)
            print(f"control_url=http://127.0.0.1:{port}", flush=True)
            print(f"api_key={fake.api_key}", flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=1000.0)
    parser.add_argument("--output-bytes", type=int, default=64 * 1024)
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
