"""Helpers shared by the orchestrator, the client and the server processes: clocks, memory,
statistics, serving until SIGTERM.

Imports nothing heavy, so a client process pays only for what its variant needs.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "MARK",
    "RESULT_FILE_VAR",
    "MIB",
    "ROOT",
    "ScaledClock",
    "emit",
    "loopback_env",
    "median",
    "percentile",
    "rss",
    "serve_app",
    "serve_main",
    "stop_event",
    "vm_hwm",
]

MIB = 2**20
ROOT = Path(__file__).resolve().parent.parent
# A client process prints its result on one line starting with this, so stray output
# (warnings, logging) never breaks parsing.
MARK = "BENCH-RESULT "
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
               "ALL_PROXY")


class ScaledClock:
    """Simulated seconds in step with the fake server's clock.

    The fake runs ``scale`` simulated seconds per real second of ``time.monotonic`` (one
    system-wide clock on Linux, so both processes agree). Giving the client this clock makes
    its poll intervals and backoff delays simulated seconds too: "poll every 3 s" means 3 s
    of render time whatever the scale.
    """

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def now(self) -> float:
        return time.monotonic() * self.scale

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep(max(0.0, (deadline - self.now()) / self.scale))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss() -> int:
    """This process's resident set size now, in bytes."""
    return _status_kib("VmRSS:") * 1024


def vm_hwm() -> int:
    """This process's peak resident set size, in bytes.

    VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would include the parent's peak.
    """
    return _status_kib("VmHWM:") * 1024


#: The file a child process writes its result to (set by ``run_child``).
RESULT_FILE_VAR = "VIGGLE_BENCH_RESULT_FILE"


def emit(result: Mapping[str, Any]) -> None:
    """Hand a client process's result to the orchestrator: into the file ``run_child``
    named, else printed on one line. A file, because a 10,000-job result (about 200 KB of
    JSON) once arrived on stdout cut at 131,046 characters, whatever else wrote there."""
    data = json.dumps(result)
    path = os.environ.get(RESULT_FILE_VAR)
    if path:
        with open(path, "w") as f:
            f.write(data)
        return
    sys.stdout.write(MARK + data + "\n")
    sys.stdout.flush()


def loopback_env() -> dict[str, str]:
    """The environment for child processes, without proxy settings: every request of a
    benchmark must go straight to 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0-100) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def stop_event() -> asyncio.Event:
    """An event the running loop sets on SIGTERM (the orchestrator's ``close``) or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_app(app: web.Application, announce: Callable[[int], Iterable[str]]) -> None:
    """Serve ``app`` on 127.0.0.1, a free port, until SIGTERM or SIGINT; once it listens,
    print the startup lines ``announce(port)`` for the orchestrator."""
    from aiohttp import web

    stop = stop_event()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        for line in announce(runner.addresses[0][1]):
            print(line, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def serve_main(serve: Callable[[dict[str, Any]], Coroutine[Any, Any, None]]) -> int:
    """A server process's ``main``: run ``serve`` on the JSON config read from stdin."""
    asyncio.run(serve(json.loads(sys.stdin.read() or "{}")))
    return 0
