"""A TCP proxy that caps one client's upload rate: ``python -m benchmarks._proxy < CONFIG``.

Config: ``{"upstream_port": P, "rate": bytes per second}``. Listens on 127.0.0.1, prints
``port=...`` (the proxy) and ``stats_port=...``, and forwards every connection to
``127.0.0.1:P``. Bytes from the client to the server share ONE token bucket across all
connections (a per-process upload cap, like a home uplink); bytes back are not capped.

The stats port answers one line per connection: send ``get`` or ``reset`` and read
``{"up_bytes", "down_bytes", "connections"}`` (``reset`` zeroes them after answering).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from typing import Any

from ._common import serve_main, stop_event
from ._harness import ChildServer

__all__ = ["UploadCapProxy"]

_CHUNK = 64 * 1024


class UploadCapProxy(ChildServer):
    """The proxy in its own process; ``with UploadCapProxy(port, rate) as p: p.base_url``."""

    MODULE, LINES = "benchmarks._proxy", 2

    def __init__(self, upstream_port: int, rate: float) -> None:
        self.upstream_port, self.rate = upstream_port, rate
        self.port = self.stats_port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        return {"upstream_port": self.upstream_port, "rate": self.rate}

    def _started(self, info: dict[str, str]) -> None:
        self.port, self.stats_port = int(info["port"]), int(info["stats_port"])

    def stats(self, reset: bool = False) -> dict[str, int]:
        with socket.create_connection(("127.0.0.1", self.stats_port), timeout=30) as sock:
            sock.sendall(b"reset\n" if reset else b"get\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        stats: dict[str, int] = json.loads(data)
        return stats


class _Bucket:
    """One token bucket for every connection's upload direction."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next_free = time.monotonic()

    async def take(self, n: int) -> None:
        # Each chunk reserves its slot in one shared timeline, so the total rate is capped
        # however many connections send at once.
        now = time.monotonic()
        start = max(now, self.next_free)
        self.next_free = start + n / self.rate
        if self.next_free > now:
            await asyncio.sleep(self.next_free - now)


async def _serve(config: dict[str, Any]) -> None:
    stats = {"up_bytes": 0, "down_bytes": 0, "connections": 0}
    bucket = _Bucket(float(config["rate"]))
    upstream_port = int(config["upstream_port"])

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   up: bool) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if up:
                    await bucket.take(len(data))
                    stats["up_bytes"] += len(data)
                else:
                    stats["down_bytes"] += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(pump(client_r, server_w, True), pump(server_r, client_w, False))
        finally:
            server_w.close()
            client_w.close()

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).strip()
        writer.write(json.dumps(stats).encode())
        if line == b"reset":
            for key in stats:
                stats[key] = 0
        await writer.drain()
        writer.close()

    stop = stop_event()
    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    ctl = await asyncio.start_server(control, "127.0.0.1", 0)
    async with proxy, ctl:
        print(f"port={proxy.sockets[0].getsockname()[1]}", flush=True)
        print(f"stats_port={ctl.sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()


def main() -> int:
    return serve_main(_serve)


if __name__ == "__main__":
    sys.exit(main())
