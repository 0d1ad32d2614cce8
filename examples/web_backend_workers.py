"""A web backend with several processes that defers renders to worker processes, all
spending one Viggle account through one PostgreSQL ledger.

The app never renders in a request: POST /renders records the row in the ledger (with the
sha256 of its input files) and defers it to procrastinate; GET /renders/{key} reads the
row's state back. Run as many app processes as you like (behind any load balancer), and
``viggle-async worker`` on any number of machines: the workers share the account's 402
stop, 429 pause, fast-capacity probe and credit budget through the ledger.

    export VIGGLE_POSTGRES_DSN=postgresql://app@db/viggle VIGGLE_API_KEY=...
    python examples/web_backend_workers.py --port 8080      # each app process
    viggle-async worker --journal "$VIGGLE_POSTGRES_DSN"    # each worker process

    curl -XPOST localhost:8080/renders -d '{"key": "clip1", "ref_image": "/shared/me.png",
         "driving_video": "/shared/dance.mp4", "output": "/shared/out/clip1.mp4"}'
    curl localhost:8080/renders/clip1

Input and output paths must be on a filesystem every worker reaches, at the same path.
Needs ``pip install 'viggle-async[postgres]'``.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web

from viggle_async.pg import LedgerError, PostgresLedger, RowBook, RowQueue, row_spec

#: The run every web request's row belongs to (``bulk --status --run web`` shows it).
RUN = "web"
LEDGER = web.AppKey("ledger", PostgresLedger)
QUEUE = web.AppKey("queue", RowQueue)


async def _never(run: str, row: str) -> None:  # the app defers; workers run rows
    raise RuntimeError("the web app does not run rows")


def make_app(dsn: str | None = None, *, api_key: str | None = None,
             schema: str = "viggle") -> web.Application:
    """The app; ``dsn``/``api_key`` default to $VIGGLE_POSTGRES_DSN / $VIGGLE_API_KEY
    (the key binds the ledger to the account; it is never sent anywhere by the app)."""

    async def ledger_and_queue(app: web.Application) -> AsyncIterator[None]:
        key = api_key or os.environ["VIGGLE_API_KEY"]
        async with PostgresLedger(dsn, api_key=key, schema=schema) as ledger:
            from viggle_async.pg import resolve_dsn

            queue = RowQueue(resolve_dsn(dsn), _never, schema=ledger.schema)
            async with queue.app.open_async():
                await queue.install()
                app[LEDGER], app[QUEUE] = ledger, queue
                yield

    app = web.Application()
    app.cleanup_ctx.append(ledger_and_queue)
    app.router.add_post("/renders", create_render)
    app.router.add_get("/renders/{key}", render_state)
    return app


async def create_render(request: web.Request) -> web.Response:
    body: dict[str, Any] = await request.json()
    key = str(body.get("key") or "")
    if not key:
        raise web.HTTPBadRequest(text="key: missing. Fix: name the render, e.g. 'clip1'")
    files: dict[str, Path] = {f: Path(body[f]) for f in ("ref_image", "driving_video")
                              if f in body}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:  # checked here, so a bad request never reaches a worker
        raise web.HTTPBadRequest(text=f"not a file on the shared path: {', '.join(missing)}")
    inputs: dict[str, Any] = {k: v for k, v in body.items() if k not in ("key", "output")}
    inputs.update(files)
    output = Path(body["output"]) if body.get("output") else None
    spec = await anyio.to_thread.run_sync(functools.partial(row_spec, inputs, output=output))
    try:
        ready = await RowBook(request.app[LEDGER], RUN).add([(key, "render", spec, ())])
    except LedgerError as exc:  # the same key with other inputs
        raise web.HTTPConflict(text=str(exc)) from None
    deferred = await request.app[QUEUE].defer_rows(RUN, ready)
    return web.json_response({"key": key, "queued": bool(deferred)}, status=202)


async def render_state(request: web.Request) -> web.Response:
    row = await RowBook(request.app[LEDGER], RUN).get(request.match_info["key"])
    if row is None:
        raise web.HTTPNotFound(text="no such render")
    return web.json_response({"key": row.key, "state": row.state,
                              "outcome": dict(row.outcome) if row.outcome else None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--schema", default="viggle")
    args = parser.parse_args()
    web.run_app(make_app(schema=args.schema), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
