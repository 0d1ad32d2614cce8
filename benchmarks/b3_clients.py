"""B3's client processes: the Supervisor and the two baselines, each rendering ``jobs``.

Every variant sends the same renders (``character_id`` + ``scene_id``), caps concurrent
creates at ``max_creates``, records ``time.monotonic()`` when it learns each job is
complete, and reports its CPU time and peak RSS. Times are converted to the fake's
simulated time by the orchestrator.
"""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio

from ._common import ScaledClock, rss, vm_hwm


def _usage() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def _result(p: dict[str, Any], t0: float, c0: float, before: int, seen: dict[str, float],
            failed: list[str], real0: float, usage0: tuple[float, float]) -> dict[str, Any]:
    t_end = time.monotonic()
    user, system = _usage()
    return {"t0": t0, "t_end": t_end, "real_s": time.perf_counter() - real0,
            "cpu": time.process_time() - c0, "cpu_user": user - usage0[0],
            "cpu_sys": system - usage0[1], "growth": vm_hwm() - before, "peak": vm_hwm(),
            "seen": seen, "failed": failed[:20], "n_failed": len(failed)}


def _supervisor(p: dict[str, Any]) -> dict[str, Any]:
    from viggle_async import Completed, Failed, PollPolicy, Supervisor, ViggleClient

    async def main() -> dict[str, Any]:
        seen: dict[str, float] = {}
        failed: list[str] = []
        clock = ScaledClock(p["scale"])
        async with ViggleClient(p["api_key"], base_url=p["base_url"], clock=clock) as client:
            policy = PollPolicy(**p["poll_policy"]) if p.get("poll_policy") else None
            sup = Supervisor(client, max_uploads=p["max_creates"], max_polls=p["max_polls"],
                             max_active_jobs=len(p["jobs"]), poll_rate=p["poll_rate"],
                             poll_policy=policy)

            async def consume(events: Any) -> None:
                async for event in events:
                    if isinstance(event, Completed):
                        seen[event.outcome.job_id or event.key] = time.monotonic()
                    elif isinstance(event, Failed):
                        failed.append(f"{event.key}: {event.outcome.error}")

            before, c0, usage0 = rss(), time.process_time(), _usage()
            real0, t0 = time.perf_counter(), time.monotonic()
            async with anyio.create_task_group() as tg, sup:
                tg.start_soon(consume, sup.events())
                for key, scene_id in p["jobs"]:
                    sup.render(key=key, character_id=p["character_id"], scene_id=scene_id)
            return _result(p, t0, c0, before, seen, failed, real0, usage0)

    return asyncio.run(main())


def _async_loop(p: dict[str, Any]) -> dict[str, Any]:
    """The documented loop made async: one task per job, create, then poll every 3 s."""
    import aiohttp

    async def main() -> dict[str, Any]:
        seen: dict[str, float] = {}
        failed: list[str] = []
        base, h = p["base_url"], {"Authorization": f"Bearer {p['api_key']}"}
        interval = 3.0 / p["scale"]  # 3 simulated seconds
        creates = asyncio.Semaphore(p["max_creates"])

        async def job(session: aiohttp.ClientSession, scene_id: str) -> None:
            async with creates, session.post(f"{base}/api/render", headers=h, data={
                    "character_id": p["character_id"], "scene_id": scene_id}) as r:
                job = await r.json()
            while True:
                async with session.get(f"{base}/api/render/{job['job_id']}") as r:
                    s = await r.json()
                if s["status"] == "complete":
                    seen[job["job_id"]] = time.monotonic()
                    return
                if s["status"] in ("failed", "cancelled"):
                    failed.append(f"{job['job_id']}: {s['status']}")
                    return
                await asyncio.sleep(interval)

        async with aiohttp.ClientSession() as session:
            before, c0, usage0 = rss(), time.process_time(), _usage()
            real0, t0 = time.perf_counter(), time.monotonic()
            async with asyncio.TaskGroup() as tg:
                for _, scene_id in p["jobs"]:
                    tg.create_task(job(session, scene_id))
            return _result(p, t0, c0, before, seen, failed, real0, usage0)

    return asyncio.run(main())


def _threads(p: dict[str, Any]) -> dict[str, Any]:
    """The documented requests loop, one thread per job (as many threads as jobs)."""
    import requests

    seen: dict[str, float] = {}
    failed: list[str] = []
    base, h = p["base_url"], {"Authorization": f"Bearer {p['api_key']}"}
    interval = 3.0 / p["scale"]
    creates = threading.Semaphore(p["max_creates"])

    def job(scene_id: str) -> None:
        with creates:
            job = requests.post(f"{base}/api/render", headers=h, data={
                "character_id": p["character_id"], "scene_id": scene_id}).json()
        while True:
            s = requests.get(f"{base}/api/render/{job['job_id']}").json()
            if s["status"] == "complete":
                seen[job["job_id"]] = time.monotonic()
                return
            if s["status"] in ("failed", "cancelled"):
                failed.append(f"{job['job_id']}: {s['status']}")
                return
            time.sleep(interval)

    before, c0, usage0 = rss(), time.process_time(), _usage()
    real0, t0 = time.perf_counter(), time.monotonic()
    with ThreadPoolExecutor(max_workers=len(p["jobs"])) as pool:
        for future in [pool.submit(job, scene_id) for _, scene_id in p["jobs"]]:
            future.result()
    return _result(p, t0, c0, before, seen, failed, real0, usage0)


VARIANTS = {"supervisor": _supervisor, "async_loop": _async_loop, "threads": _threads}
