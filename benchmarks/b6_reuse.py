"""B6 asset reuse (issue 15): 200 renders sharing 3 driving videos, behind an upload cap.

Every row renders the same character image on one of 3 videos. Variants, each through the
Supervisor, with the client behind ``_proxy.UploadCapProxy`` (one upload rate for the whole
client process, like a home uplink):

- **on-demand**: every row uploads its image and video (``sup.render(ref_image=...,
  driving_video=...)``): 200 video uploads;
- **reuse**: the very same rows through ``Supervisor(reuse_assets=True)``: each distinct
  file uploaded once (one scene per video, one character for the image), then ID-only
  renders.

Figures: bytes the client sent (counted by the proxy, HTTP included) and wall time until
every render is complete.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any
from urllib.parse import urlsplit

from ._common import MIB, ScaledClock, median
from ._harness import BenchError, Server, run_child
from ._report import Context, Figure, Outcome

ROWS = 200
QUICK_ROWS = 60
VIDEO_SECONDS = (5.0, 8.0, 12.0)
SCALE = 50.0  # simulated seconds per real second: renders take well under a second
VARIANT_ORDER = ("reuse", "on_demand")


def run(ctx: Context) -> Outcome:
    from viggle_async.testing import make_png, write_mp4

    from ._proxy import UploadCapProxy

    rows = QUICK_ROWS if ctx.quick else ROWS
    video_bytes = 128 * 1024 if ctx.quick else 4 * MIB
    rate = 32e6 if ctx.quick else 64e6  # bytes per second, the whole client process
    videos = []
    for i, seconds in enumerate(VIDEO_SECONDS):
        path = ctx.tmpdir / f"b6-video-{i}.mp4"
        write_mp4(path, seconds, size=video_bytes, sparse=False)
        videos.append(str(path))
    image = ctx.tmpdir / "b6-character.png"
    image.write_bytes(make_png())
    per_run: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANT_ORDER}
    with Server(time_scale=SCALE, max_upload_bytes=video_bytes + MIB) as server:
        port = urlsplit(server.base_url).port
        assert port is not None
        with UploadCapProxy(port, rate) as proxy:
            params = {"base_url": proxy.base_url, "api_key": server.api_key,
                      "videos": videos, "image": str(image), "rows": rows, "scale": SCALE,
                      "video_bytes": video_bytes}
            for i in range(ctx.runs):
                k = i % len(VARIANT_ORDER)
                for variant in VARIANT_ORDER[k:] + VARIANT_ORDER[:k]:
                    server.reset()
                    proxy.stats(reset=True)
                    before = server.stats()["request_counts"]
                    result = run_child("b6_reuse", variant, params,
                                       timeout=120 + rows * video_bytes / rate * 3)
                    counts = server.stats()["request_counts"]
                    result["requests"] = {k: v - before.get(k, 0) for k, v in counts.items()
                                          if v - before.get(k, 0)}
                    result.update(proxy.stats())
                    result["loadavg"] = os.getloadavg()[0]
                    if result["completed"] != rows:
                        raise BenchError(f"B6 {variant}: {result['completed']} of {rows} "
                                         f"renders completed; failures: {result['failed']}")
                    per_run[variant].append(result)

    def med(variant: str, key: str) -> float:
        return median([r[key] for r in per_run[variant]])

    how = "Supervisor(reuse_assets=True)"
    figures = [
        Figure("B6", f"bytes uploaded, {rows} rows sharing {len(videos)} videos", "MB",
               med("reuse", "up_bytes") / 1e6, "on-demand uploads",
               med("on_demand", "up_bytes") / 1e6,
               note=f"reuse {how}; counted at the upload-capping proxy, HTTP included"),
        Figure("B6", f"wall time, {rows} rows sharing {len(videos)} videos", "s",
               med("reuse", "seconds"), "on-demand uploads", med("on_demand", "seconds"),
               note=f"client upload capped at {rate / 1e6:g} MB/s for the whole process; "
                    f"renders take {SCALE:g}x less than simulated time"),
    ]
    config = {"rows": rows, "videos": len(videos), "video_bytes": video_bytes,
              "upload_cap_mb_s": rate / 1e6, "time_scale": SCALE, "runs": ctx.runs,
              "reuse": how}
    return Outcome("asset reuse", figures, {"config": config, "runs": per_run})


# --- client processes ---------------------------------------------------------------------


def _run(p: dict[str, Any], reuse: bool) -> dict[str, Any]:
    import anyio

    from viggle_async import Completed, Failed, Supervisor, ViggleClient

    async def main() -> dict[str, Any]:
        completed, failed = 0, []
        clock = ScaledClock(p["scale"])
        async with ViggleClient(p["api_key"], base_url=p["base_url"], clock=clock) as client:
            sup = Supervisor(client, max_uploads=8, max_polls=32, max_active_jobs=p["rows"],
                             poll_rate=200.0, reuse_assets=reuse)

            async def consume(events: Any) -> None:
                nonlocal completed
                async for event in events:
                    # Completed events also come for the character and the scenes.
                    if isinstance(event, Completed) and event.key.startswith("row-"):
                        completed += 1
                    elif isinstance(event, Failed):
                        failed.append(f"{event.key}: {event.outcome.error}")

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg, sup:
                tg.start_soon(consume, sup.events())
                videos = p["videos"]
                for row in range(p["rows"]):
                    sup.render(key=f"row-{row}", ref_image=p["image"],
                               driving_video=videos[row % len(videos)])
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "completed": completed, "failed": failed[:20]}

    return asyncio.run(main())


VARIANTS = {"reuse": lambda p: _run(p, True), "on_demand": lambda p: _run(p, False)}
