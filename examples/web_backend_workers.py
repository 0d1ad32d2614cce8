"""A web backend whose app processes defer renders to `viggle-async worker` processes,
all spending one Viggle account through one PostgreSQL ledger.

The app never renders in a request: POST /renders checks the render with the library's
own rules (as renders.create would, reading only file headers), records the row in the
ledger with the sha256 of its input files, and defers it to procrastinate; GET
/renders/{key} reads the row's state back. Run as many app processes as you like (behind
any load balancer), and `viggle-async worker` on any number of machines: the workers share
the account's 402 stop, 429 pause, fast-capacity probe and credit budget through the ledger.

Try it with no API key, on the embedded fake server (a PostgreSQL server is still needed:
`bash ci/start-postgres` prints a DSN for a local one):

    export VIGGLE_POSTGRES_DSN=postgresql:///viggle_test?port=5432
    python examples/web_backend_workers.py --self-test

It serves the app on a free loopback port, posts one render (and one refused for a bad
field), runs one `viggle-async worker --exit-when-empty` against the fake, and prints the
render's state; it uses a schema of its own and drops it afterwards.

For real:

    export VIGGLE_POSTGRES_DSN=postgresql://app@db/viggle VIGGLE_API_KEY=...
    python examples/web_backend_workers.py --port 8080      # each app process
    viggle-async worker                                     # each worker, any machine

    curl -XPOST localhost:8080/renders -d '{"key": "clip1", "ref_image": "/shared/me.png",
         "driving_video": "/shared/dance.mp4", "output": "/shared/out/clip1.mp4"}'
    curl localhost:8080/renders/clip1

Paths must be absolute and on a filesystem every worker reaches at the same path: each
worker opens them on its own machine. Every refusal has a JSON body
{"error": ..., "field": ..., "fix": ...}: 400, or 409 for a key reused with other inputs.
Needs the postgres extra (`pip install -e '.[postgres]'` from a checkout,
`pip install 'viggle-async[postgres]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import json
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from aiohttp import ClientSession, web

from viggle_async import InvalidInputError, ViggleClient

try:
    from viggle_async.pg import LedgerError, PostgresLedger, RowBook, RowQueue, row_spec
except ImportError:  # one line, not a traceback
    raise SystemExit("this example needs the postgres extra: pip install -e '.[postgres]' "
                     "(from a checkout) or pip install 'viggle-async[postgres]'") from None

#: The run every web request's row belongs to (``bulk --status --run web`` shows it).
RUN = "web"
LEDGER = web.AppKey("ledger", PostgresLedger)
QUEUE = web.AppKey("queue", RowQueue)
CLIENT = web.AppKey("client", ViggleClient)

#: Request fields that are paths (opened by the workers, on their machines).
PATHS = ("ref_image", "driving_video", "output")


async def _never(run: str, row: str) -> None:  # the app defers; workers run rows
    raise RuntimeError("the web app does not run rows")


def make_app(dsn: str | None = None, *, api_key: str | None = None,
             schema: str = "viggle") -> web.Application:
    """The app; ``dsn``/``api_key`` default to $VIGGLE_POSTGRES_DSN / $VIGGLE_API_KEY.
    The key binds the ledger to the account and builds the client whose ``prepare`` checks
    each render; the app itself never sends a request to Viggle."""

    async def ledger_and_queue(app: web.Application) -> AsyncIterator[None]:
        key = api_key or os.environ.get("VIGGLE_API_KEY", "")
        async with (ViggleClient(api_key=key) as client,
                    PostgresLedger(dsn, api_key=key, schema=schema) as ledger):
            from viggle_async.pg import resolve_dsn

            queue = RowQueue(resolve_dsn(dsn), _never, schema=ledger.schema)
            async with queue.app.open_async():
                await queue.install()
                app[LEDGER], app[QUEUE], app[CLIENT] = ledger, queue, client
                yield

    app = web.Application()
    app.cleanup_ctx.append(ledger_and_queue)
    app.router.add_post("/renders", create_render)
    app.router.add_get("/renders/{key}", render_state)
    return app


def refuse(field: str, problem: str, fix: str, status: int = 400) -> web.HTTPException:
    """A refusal with a JSON body naming the field and the fix."""
    body = json.dumps({"error": f"{field}: {problem}. Fix: {fix}", "field": field, "fix": fix})
    error = web.HTTPBadRequest if status == 400 else web.HTTPConflict
    return error(text=body, content_type="application/json")


async def create_render(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        raise refuse("body", "is not JSON", "send a JSON object, e.g. {\"key\": \"clip1\", "
                     "\"ref_image\": \"/shared/me.png\", ...}") from None
    if not isinstance(body, dict):
        raise refuse("body", "is not a JSON object", "send {\"key\": ..., ...}")
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise refuse("key", "missing", "name the render, e.g. \"clip1\"")
    prepare = request.app[CLIENT].renders.prepare
    allowed = set(inspect.signature(prepare).parameters) | {"key", "output"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise refuse(unknown[0], "is not a render field", f"use {', '.join(sorted(allowed))}")
    for field in PATHS:
        if field in body and not (isinstance(body[field], str)
                                  and Path(body[field]).is_absolute()):
            raise refuse(field, f"{body[field]!r} is not an absolute path",
                         "pass an absolute path on the shared filesystem (each worker opens "
                         "it on its own machine, at the same path)")
    files = {f: Path(body[f]) for f in ("ref_image", "driving_video") if f in body}
    for field, path in files.items():
        if not path.is_file():  # checked here, so a bad request never reaches a worker
            raise refuse(field, f"{str(path)!r} is not a file on the shared path",
                         "pass a file every worker reaches at the same path")
    inputs: dict[str, Any] = {k: v for k, v in body.items() if k not in ("key", "output")}
    inputs.update(files)
    try:
        # The library's own checks, as renders.create runs them before sending: fields
        # together (bg_color needs background_mode="solid", ...), then each file's type
        # and limits. Nothing is sent.
        await prepare(**inputs)
    except InvalidInputError as exc:
        raise refuse(exc.field, exc.problem, exc.fix) from None
    except OSError as exc:  # a file the app cannot read, a worker may not read either
        field = next((f for f, p in files.items() if str(p) == exc.filename), "body")
        raise refuse(field, f"cannot be read ({exc.strerror})",
                     "make it readable on the shared path") from None
    output = Path(body["output"]) if body.get("output") else None
    spec = await anyio.to_thread.run_sync(functools.partial(row_spec, inputs, output=output))
    try:
        ready = await RowBook(request.app[LEDGER], RUN).add([(key, "render", spec, ())])
    except LedgerError as exc:  # the same key with other inputs
        raise refuse("key", str(exc), "use another key for other inputs", 409) from None
    deferred = await request.app[QUEUE].defer_rows(RUN, ready)
    return web.json_response({"key": key, "queued": bool(deferred)}, status=202)


async def render_state(request: web.Request) -> web.Response:
    row = await RowBook(request.app[LEDGER], RUN).get(request.match_info["key"])
    if row is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such render"}),
                               content_type="application/json")
    return web.json_response({"key": row.key, "state": row.state,
                              "outcome": dict(row.outcome) if row.outcome else None})


async def self_test(dsn: str) -> int:
    """Serve on a free loopback port against the embedded fake server, post one render and
    one bad one, run one worker process until no row is left, print the outcome."""
    import psycopg

    from viggle_async.testing import FakeViggle, make_png, write_mp4

    schema = f"example_{uuid.uuid4().hex[:10]}"  # ours alone, dropped below
    try:
        async with FakeViggle(time_scale=100.0) as fake:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                (folder / "me.png").write_bytes(make_png())
                write_mp4(folder / "dance.mp4", 1.0)
                render = {"key": "clip1", "ref_image": str(folder / "me.png"),
                          "driving_video": str(folder / "dance.mp4"),
                          "output": str(folder / "out" / "clip1.mp4")}
                runner = web.AppRunner(make_app(dsn, api_key=fake.api_key, schema=schema))
                await runner.setup()
                try:
                    await web.TCPSite(runner, "127.0.0.1", 0).start()
                    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
                    async with ClientSession() as http:
                        for body in (render, {**render, "key": "bad", "bg_color": "#fff"}):
                            async with http.post(f"{url}/renders", json=body) as resp:
                                print(f"POST /renders {body['key']} -> {resp.status} "
                                      f"{await resp.text()}")
                        # The DSN goes by environment, not argv: no password in `ps`.
                        env = {**os.environ, "VIGGLE_POSTGRES_DSN": dsn,
                               "VIGGLE_BASE_URL": fake.base_url, "VIGGLE_API_KEY": fake.api_key}
                        done = await anyio.run_process(
                            [sys.executable, "-m", "viggle_async", "-q", "worker", "--schema",
                             schema, "--exit-when-empty", "--poll-interval", "0.05"],
                            env=env, check=False)
                        if done.returncode != 0:
                            print(done.stderr.decode(), file=sys.stderr)
                            return 1
                        async with http.get(f"{url}/renders/clip1") as resp:
                            state = await resp.json()
                    print(f"GET /renders/clip1 -> {state['state']} "
                          f"({state['outcome']['state']}), "
                          f"{(folder / 'out' / 'clip1.mp4').stat().st_size} bytes written")
                finally:
                    await runner.cleanup()
    finally:
        with contextlib.suppress(psycopg.Error):  # never created if the ledger was not
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return 0 if state["state"] == "done" else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080,
                        help="serve on 127.0.0.1:PORT (default 8080)")
    parser.add_argument("--schema", default="viggle",
                        help="the ledger's schema, as the workers' --schema (default viggle)")
    parser.add_argument("--self-test", action="store_true",
                        help="run once against the embedded fake server (no API key needed)")
    args = parser.parse_args()
    dsn = os.environ.get("VIGGLE_POSTGRES_DSN") or os.environ.get("VIGGLE_JOURNAL_DSN")
    if not dsn:
        parser.exit(2, "error: VIGGLE_POSTGRES_DSN is not set: export the ledger's DSN "
                       "(bash ci/start-postgres prints one for a local server)\n")
    if args.self_test:
        try:
            raise SystemExit(asyncio.run(self_test(dsn)))
        except LedgerError as exc:  # its message never holds the password
            parser.exit(2, f"error: {' '.join(str(exc).split())}\n")  # libpq's lines: one
    if not os.environ.get("VIGGLE_API_KEY"):
        parser.exit(2, "error: VIGGLE_API_KEY is not set: export your API key, or try "
                       "--self-test on the embedded fake server (no key)\n")
    web.run_app(make_app(dsn, schema=args.schema), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
