"""B1 upload: a big sparse video sent as ``driving_video`` with ``client.renders.create``.

Client peak RSS growth (VmHWM of a fresh process minus its RSS just before the upload) and
throughput, against the documented ``requests.post(..., files={...: open(...)})`` snippet,
raw aiohttp streaming the same files with ``FormData`` (reading 64 KiB per thread hop: a
weak ceiling), and the physical ceiling: the same bytes sent with ``socket.sendfile`` to a
discard server (``_discard.py``) on loopback, in the same run. The order of the variants
rotates from round to round.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

from ._common import MIB, median, rss, vm_hwm
from ._harness import BenchError, Server, run_child
from ._report import Context, Figure, Outcome

VARIANT_ORDER = ("library", "aiohttp", "requests", "wire")
MAX_RSS_GROWTH_MIB = 32
MIN_THROUGHPUT_RATIO = 0.90


def run(ctx: Context) -> Outcome:
    from viggle_async.testing import make_png, write_mp4

    size = 64 * MIB if ctx.quick else 1024 * MIB
    video = ctx.tmpdir / "b1-dance.mp4"
    image = ctx.tmpdir / "b1-character.png"
    write_mp4(video, 20.0, size=size, sparse=True)
    image.write_bytes(make_png())
    from ._discard import DiscardServer

    per_run: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANT_ORDER}
    with Server(max_upload_bytes=size + MIB, time_scale=1000.0) as server, \
            DiscardServer() as discard:
        params = {"base_url": server.base_url, "api_key": server.api_key, "video": str(video),
                  "image": str(image), "size": size, "discard_port": discard.port}
        for i in range(ctx.runs):
            k = i % len(VARIANT_ORDER)  # rotated, so drift and load favour no variant
            for variant in VARIANT_ORDER[k:] + VARIANT_ORDER[:k]:
                result = run_child("b1_upload", variant, params,
                                   timeout=120 + size / (10 * MIB))
                result["loadavg"] = os.getloadavg()[0]
                per_run[variant].append(result)
        profile = ctx.profile_path("B1-library")
        if profile is not None:  # an extra run: profiling slows it, so it is not counted
            run_child("b1_upload", "library", {**params, "profile": profile},
                      timeout=120 + size / (10 * MIB))
        accepted = sum(1 for c in server.stats()["creates"] if c["status"] == 200)
    expected = ctx.runs * (len(VARIANT_ORDER) - 1) + (ctx.profile_dir is not None)
    if accepted != expected:
        raise BenchError(f"B1: the fake accepted {accepted} creates, expected {expected}")
    video.unlink()

    def med(variant: str, key: str) -> float:
        return median([r[key] for r in per_run[variant]])

    def mbps(variant: str) -> float:
        return median([size / r["seconds"] / 1e6 for r in per_run[variant]])

    growth = {v: med(v, "growth") / MIB for v in VARIANT_ORDER}
    # ``requests`` read the files with the body; the wire row has no HTTP: not compared.
    cpu = {v: median([r["cpu"] / (size / 2**30) for r in per_run[v]]) for v in VARIANT_ORDER}
    lib_tp = mbps("library")
    raw_tp = mbps("aiohttp")
    figures = [
        Figure("B1", "upload throughput", "MB/s", lib_tp, "raw aiohttp", raw_tp,
               f"ratio >= {MIN_THROUGHPUT_RATIO:.2f}", lib_tp >= MIN_THROUGHPUT_RATIO * raw_tp),
        Figure("B1", "upload throughput", "MB/s", lib_tp,
               "loopback wire: sendfile to a discard server (physical ceiling)", mbps("wire"),
               note="no HTTP and no multipart parsing on the receiving side: what is left "
                    "between this and the library is the fake's parsing and the HTTP stack"),
        Figure("B1", "upload throughput", "MB/s", lib_tp, "requests (docs)", mbps("requests")),
        Figure("B1", "client peak RSS growth", "MiB", growth["library"], "requests (docs)",
               growth["requests"], f"<= {MAX_RSS_GROWTH_MIB} MiB",
               growth["library"] <= MAX_RSS_GROWTH_MIB),
        Figure("B1", "client peak RSS growth", "MiB", growth["library"], "raw aiohttp",
               growth["aiohttp"]),
        Figure("B1", "client CPU per GiB", "s", cpu["library"], "raw aiohttp", cpu["aiohttp"]),
    ]
    config = {"bytes": size, "runs": ctx.runs}
    return Outcome("upload", figures, {"config": config, "runs": per_run})


# --- client processes ---------------------------------------------------------------------


def _library(p: dict[str, Any]) -> dict[str, Any]:
    from viggle_async import Limits, ViggleClient

    async def main() -> dict[str, Any]:
        limits = Limits(max_upload_bytes=p["size"] + MIB)
        async with ViggleClient(p["api_key"], base_url=p["base_url"], limits=limits) as client:
            before, c0, t0 = rss(), time.process_time(), time.perf_counter()
            job = await client.renders.create(ref_image=p["image"], driving_video=p["video"])
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"seconds": seconds, "cpu": cpu, "growth": vm_hwm() - before,
                "job_id": job.job_id}

    return asyncio.run(main())


def _aiohttp(p: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    async def main() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {p['api_key']}"}
        # total=None: aiohttp's default 300 s total timeout would cut a slow big upload.
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            before, c0, t0 = rss(), time.process_time(), time.perf_counter()
            # The plain way (conventions: a real file object streams with Content-Length).
            with open(p["image"], "rb") as img, open(p["video"], "rb") as vid:  # noqa: ASYNC230
                form = aiohttp.FormData()
                form.add_field("ref_image", img, filename="character.png",
                               content_type="image/png")
                form.add_field("driving_video", vid, filename="dance.mp4",
                               content_type="video/mp4")
                async with session.post(p["base_url"] + "/api/render", data=form,
                                        headers=headers) as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {body}")
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"seconds": seconds, "cpu": cpu, "growth": vm_hwm() - before,
                "job_id": body["job_id"]}

    return asyncio.run(main())


def _requests(p: dict[str, Any]) -> dict[str, Any]:
    import requests

    base, h = p["base_url"], {"Authorization": f"Bearer {p['api_key']}"}
    before, c0, t0 = rss(), time.process_time(), time.perf_counter()
    # The documented snippet (seeds: On-Demand Guide), with the files closed afterwards.
    with open(p["image"], "rb") as img, open(p["video"], "rb") as vid:
        job = requests.post(f"{base}/api/render", headers=h, files={
            "ref_image": img,
            "driving_video": vid,
        }).json()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu": cpu, "growth": vm_hwm() - before,
            "job_id": job["job_id"]}


def _wire(p: dict[str, Any]) -> dict[str, Any]:
    """The same bytes over a raw socket with sendfile (zero copy) to the discard server."""
    before, c0, t0 = rss(), time.process_time(), time.perf_counter()
    with socket.create_connection(("127.0.0.1", p["discard_port"])) as sock, \
            open(p["video"], "rb") as vid:
        sent = sock.sendfile(vid)
        sock.shutdown(socket.SHUT_WR)
        received = int.from_bytes(sock.recv(8, socket.MSG_WAITALL), "big")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if sent != p["size"] or received != p["size"]:
        raise RuntimeError(f"sent {sent}, the discard server received {received}")
    return {"seconds": seconds, "cpu": cpu, "growth": vm_hwm() - before}


VARIANTS = {"library": _library, "aiohttp": _aiohttp, "requests": _requests, "wire": _wire}
