"""A CDN that caps each connection: ``python -m benchmarks._cdn < CONFIG.json``.

A throttled ``aiohttp.web`` file server in its own process, on 127.0.0.1, for B2's
"capped CDN" figures. The fake's CDN serves whole files only and has no throttle; real CDNs
cap each connection's rate, which is what segmented ``Range`` downloads get around. Config:
``{"size": bytes, "rate": bytes per second per connection}``. Prints ``url=...`` and serves
until SIGTERM.

- ``GET``/``HEAD /out.mp4``: ``size`` bytes of a fixed pattern (``pattern_at``), never held
  in memory, with ``Accept-Ranges: bytes``, ``ETag`` and ``Content-Length``.
- ``Range: bytes=a-b`` / ``a-`` / ``-n`` (one range) answers 206 with ``Content-Range``; an
  unsatisfiable range answers 416; several ranges are not supported (200, whole file).
- Each response is paced to ``rate`` bytes per second. aiohttp clients send one request at a
  time per connection (no pipelining), so pacing each response caps each connection.
- ``GET /stats``: ``{"requests", "ranges", "bytes", "peak_connections"}`` since the last
  ``POST /reset``.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import Any

from ._common import serve_app, serve_main
from ._harness import ChildServer, _http

__all__ = ["ThrottledCdn", "pattern_at"]

_PERIOD = 251  # a prime: a shifted or misplaced block never matches the pattern
_BLOCK = 64 * 1024
_PATTERN = bytes(i % _PERIOD for i in range(_BLOCK + _PERIOD))
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def pattern_at(offset: int, length: int) -> bytes:
    """The file's bytes ``[offset, offset + length)``, ``length <= 64 KiB``."""
    start = offset % _PERIOD
    return _PATTERN[start:start + length]


class ThrottledCdn(ChildServer):
    """The throttled file server in its own process; ``with ThrottledCdn(size, rate) as cdn``."""

    MODULE, LINES = "benchmarks._cdn", 1

    def __init__(self, size: int, rate: float) -> None:
        self.size, self.rate = size, rate
        self.url = ""

    def _config(self) -> dict[str, Any]:
        return {"size": self.size, "rate": self.rate}

    def _started(self, info: dict[str, str]) -> None:
        self.url = info["url"]

    def stats(self, reset: bool = False) -> dict[str, Any]:
        """What the CDN served since the last reset (``reset=True`` starts over after)."""
        root = self.url.rsplit("/", 1)[0]
        stats: dict[str, Any] = _http("GET", root + "/stats")
        if reset:
            _http("POST", root + "/reset")
        return stats


def verify(path: str, size: int) -> None:
    """Raise ValueError unless the file at ``path`` is the CDN's ``size`` bytes exactly."""
    offset = 0
    with open(path, "rb") as f:
        while chunk := f.read(_BLOCK):
            if chunk != pattern_at(offset, len(chunk)):
                raise ValueError(f"{path}: wrong bytes near offset {offset}")
            offset += len(chunk)
    if offset != size:
        raise ValueError(f"{path}: {offset} bytes, expected {size}")


def _app(size: int, rate: float) -> Any:
    from aiohttp import web

    stats = {"requests": 0, "ranges": 0, "bytes": 0, "peak_connections": 0}
    active = 0
    etag = f'"bench-{size}"'

    async def out(request: web.Request) -> web.StreamResponse:
        nonlocal active
        stats["requests"] += 1
        start, end, status = 0, size - 1, 200
        header = request.headers.get("Range")
        match = _RANGE.match(header.strip()) if header else None
        if match and (match[1] or match[2]):
            if match[1]:
                start = int(match[1])
                end = min(int(match[2]), size - 1) if match[2] else size - 1
            else:  # bytes=-n: the last n bytes
                start = max(0, size - int(match[2]))
            if start >= size or start > end:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
            stats["ranges"] += 1
        headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Type": "video/mp4",
                   "Content-Length": str(end - start + 1)}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        active += 1
        stats["peak_connections"] = max(stats["peak_connections"], active)
        try:
            t0, sent, offset = time.monotonic(), 0, start
            while offset <= end:
                n = min(_BLOCK, end + 1 - offset)
                await resp.write(pattern_at(offset, n))
                offset += n
                sent += n
                stats["bytes"] += n
                # Pace to `rate`: sleep until this many bytes were due.
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await resp.write_eof()
        except ConnectionError:
            # The client stopped reading: a segmented download closes its first answer
            # (the whole file) once segment 0 has its bytes. Not an error worth a traceback.
            pass
        finally:
            active -= 1
        return resp

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response(stats)

    async def reset(_: web.Request) -> web.Response:
        for key in stats:
            stats[key] = 0
        return web.json_response(stats)

    app = web.Application()
    app.router.add_get("/out.mp4", out)  # also HEAD
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    return app


async def _serve(config: dict[str, Any]) -> None:
    app = _app(int(config["size"]), float(config["rate"]))
    await serve_app(app, lambda port: [f"url=http://127.0.0.1:{port}/out.mp4"])


def main() -> int:
    return serve_main(_serve)


if __name__ == "__main__":
    sys.exit(main())
