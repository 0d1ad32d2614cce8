"""The CDN app: serves finished outputs on its own host and port.

Bodies are generated chunk by chunk from one shared block, so a 1 GiB output costs no
memory. Every Authorization header received is recorded: §8.1 says downloads must not send
the API key (signed storage URLs refuse a foreign Authorization header).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

from aiohttp import web

from ._store import STORE

__all__ = ["cdn_app"]

_BLOCK = 1024 * 1024
# An MP4 prelude (ftyp, then an mdat whose size 0 means "to the end of the file") so the
# output sniffs as video/mp4; the rest is a fixed byte pattern.
_PRELUDE = struct.pack(">I4s4sI8s", 24, b"ftyp", b"isom", 0x200, b"isomiso2") + struct.pack(
    ">I4s", 0, b"mdat"
)
_FILL = bytes(range(256)) * (_BLOCK // 256)
_FIRST = _PRELUDE + _FILL[len(_PRELUDE) :]


def _chunks(size: int) -> Iterator[memoryview]:
    first, rest = memoryview(_FIRST), memoryview(_FILL)
    sent = 0
    while sent < size:
        block = first if sent == 0 else rest
        chunk = block[: min(_BLOCK, size - sent)]
        sent += len(chunk)
        yield chunk


async def _download(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    obs = store.obs
    auth = request.headers.get("Authorization")
    if auth is not None:
        obs.cdn_auth_headers.append(auth)
    job = store.jobs.get(request.match_info["job_id"])
    kind = request.match_info["kind"]
    now = store.now()
    if (
        job is None
        or job.status(now) != "complete"
        or (kind == "mask" and job.background_mode != "transparent")
    ):
        raise web.HTTPNotFound()
    size = store.settings.output_bytes
    resp = web.StreamResponse(headers={"Content-Type": "video/mp4"})
    resp.content_length = size
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    obs.cdn_downloads += 1
    faults = store.faults
    truncate = faults.truncate_downloads > 0
    if truncate:
        faults.truncate_downloads -= 1
        obs.truncated_downloads += 1
    limit = int(size * faults.truncate_fraction) if truncate else size
    rate = faults.cdn_bytes_per_s
    for chunk in _chunks(limit):
        await resp.write(chunk)
        if rate:
            await asyncio.sleep(len(chunk) / rate)
    if truncate and request.transport is not None:
        # Full Content-Length announced, fewer bytes sent: close so the client sees it short.
        request.transport.close()
    return resp


def cdn_app(store_app: web.Application) -> web.Application:
    """A CDN application sharing ``store_app``'s store."""
    app = web.Application()
    app[STORE] = store_app[STORE]
    app.router.add_get("/outputs/{job_id}/{kind:output|mask}.mp4", _download)
    return app
