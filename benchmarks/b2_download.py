"""B2 download: a big output from the fake CDN to disk with ``client.download``.

Client peak RSS growth and throughput, against raw aiohttp streaming the body to a file
(the ceiling) and the documented ``requests.get(cdn_url).content`` snippet.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from ._common import MIB, median, rss, vm_hwm
from ._harness import BenchError, Server, run_child
from ._report import Context, Figure, Outcome

VARIANT_ORDER = ("library", "aiohttp", "aiohttp_fsync", "requests")
MAX_RSS_GROWTH_MIB = 32
MIN_THROUGHPUT_RATIO = 0.90
CHUNK = 256 * 1024


def _finished_output(server: Server) -> str:
    """Create one render on the fake, wait for it, return its CDN URL on 127.0.0.1."""
    import requests

    from viggle_async.testing import make_mp4, make_png

    base, h = server.base_url, {"Authorization": f"Bearer {server.api_key}"}
    with requests.Session() as s:
        s.trust_env = False  # no proxy: loopback only
        job = s.post(f"{base}/api/render", headers=h, files={
            "ref_image": ("c.png", make_png()), "driving_video": ("d.mp4", make_mp4(2.0))}).json()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = s.get(f"{base}/api/render/{job['job_id']}").json()
            if status["status"] == "complete":
                # The fake names its CDN "localhost"; it listens on 127.0.0.1 too.
                url: str = status["cdn_url"].replace("//localhost:", "//127.0.0.1:", 1)
                return url
            time.sleep(0.05)
    raise BenchError("B2: the setup render did not complete")


def run(ctx: Context) -> Outcome:
    size = 64 * MIB if ctx.quick else 1024 * MIB
    per_run: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANT_ORDER}
    with Server(output_bytes=size, time_scale=1000.0) as server:
        url = _finished_output(server)
        for i in range(ctx.runs):
            for variant in VARIANT_ORDER:
                dest = ctx.tmpdir / f"b2-{variant}-{i}.mp4"
                p: dict[str, Any] = {"url": url, "dest": str(dest), "size": size}
                result = run_child("b2_download", variant, p, timeout=120 + size / (10 * MIB))
                got = dest.stat().st_size
                dest.unlink()
                os.sync()  # write back before the next run, so runs do not slow each other
                if got != size:
                    raise BenchError(f"B2 {variant}: wrote {got} bytes, expected {size}")
                per_run[variant].append(result)
        profile = ctx.profile_path("B2-library")
        if profile is not None:  # an extra run: profiling slows it, so it is not counted
            dest = ctx.tmpdir / "b2-profiled.mp4"
            run_child("b2_download", "library",
                      {"url": url, "dest": str(dest), "size": size, "profile": profile},
                      timeout=120 + size / (10 * MIB))
            dest.unlink()
        if server.stats()["cdn_auth_headers"]:
            raise BenchError("B2: a download sent an Authorization header to the CDN")

    def mbps(variant: str) -> float:
        return median([size / r["seconds"] / 1e6 for r in per_run[variant]])

    growth = {v: median([r["growth"] for r in per_run[v]]) / MIB for v in VARIANT_ORDER}
    cpu = {v: median([r["cpu"] / (size / 2**30) for r in per_run[v]]) for v in VARIANT_ORDER}
    lib_tp, raw_tp = mbps("library"), mbps("aiohttp")
    figures = [
        Figure("B2", "download throughput", "MB/s", lib_tp, "raw aiohttp", raw_tp,
               f"ratio >= {MIN_THROUGHPUT_RATIO:.2f}", lib_tp >= MIN_THROUGHPUT_RATIO * raw_tp),
        Figure("B2", "download throughput", "MB/s", lib_tp, "raw aiohttp + fsync",
               mbps("aiohttp_fsync"),
               note="the library fsyncs before renaming the file into place; this baseline "
                    "does the same, to separate the durability cost from the rest"),
        Figure("B2", "download throughput", "MB/s", lib_tp, "requests (docs)", mbps("requests")),
        Figure("B2", "client peak RSS growth", "MiB", growth["library"], "requests (docs)",
               growth["requests"], f"<= {MAX_RSS_GROWTH_MIB} MiB",
               growth["library"] <= MAX_RSS_GROWTH_MIB),
        Figure("B2", "client peak RSS growth", "MiB", growth["library"], "raw aiohttp",
               growth["aiohttp"]),
        Figure("B2", "client CPU per GiB", "s", cpu["library"], "raw aiohttp", cpu["aiohttp"]),
    ]
    return Outcome("download", figures, {"config": {"bytes": size, "runs": ctx.runs},
                                         "runs": per_run})


# --- client processes ---------------------------------------------------------------------


def _library(p: dict[str, Any]) -> dict[str, Any]:
    from viggle_async import ViggleClient

    async def main() -> dict[str, Any]:
        # The CDN needs no key; the client refuses to send one there anyway (§8.1).
        async with ViggleClient("unused", base_url="http://127.0.0.1:9") as client:
            before, c0, t0 = rss(), time.process_time(), time.perf_counter()
            await client.download(p["url"], p["dest"])
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"seconds": seconds, "cpu": cpu, "growth": vm_hwm() - before}

    return asyncio.run(main())


def _aiohttp(p: dict[str, Any], fsync: bool = False) -> dict[str, Any]:
    import aiohttp

    async def main() -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            before, c0, t0 = rss(), time.process_time(), time.perf_counter()
            async with session.get(p["url"]) as resp:
                resp.raise_for_status()
                with Path(p["dest"]).open("wb") as f:  # noqa: ASYNC230 - the plain way
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        f.write(chunk)
                    if fsync:
                        f.flush()
                        os.fsync(f.fileno())
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"seconds": seconds, "cpu": cpu, "growth": vm_hwm() - before}

    return asyncio.run(main())


def _requests(p: dict[str, Any]) -> dict[str, Any]:
    import requests

    before, c0, t0 = rss(), time.process_time(), time.perf_counter()
    # The documented snippet (seeds: On-Demand Guide).
    video = requests.get(p["url"])
    with open(p["dest"], "wb") as f:
        f.write(video.content)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu": cpu, "growth": vm_hwm() - before}


VARIANTS = {"library": _library, "aiohttp": _aiohttp,
            "aiohttp_fsync": lambda p: _aiohttp(p, fsync=True), "requests": _requests}
