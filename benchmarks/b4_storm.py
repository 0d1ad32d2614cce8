"""B4 capacity storm: fast renders while fast capacity is gone for a simulated minute.

The Supervisor's shared fast-capacity gate (one probe at a time, capped full-jitter backoff)
against per-job backoff (each job retries on its own with the same capped exponential
backoff and full jitter). Also run without an outage, as the ideal drain.

Figures: create requests rejected with CS-UORC01-001 (the fake's count), and the drain:
from the moment capacity returns until the fake has accepted the last render, against the
same span from the start in the run without an outage.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from typing import Any

import anyio

from ._common import ScaledClock, median
from ._harness import BenchError, Server, run_child
from ._report import Context, Figure, Outcome

MIN_REJECTION_RATIO = 10.0
MAX_DRAIN_RATIO = 1.10
OUTAGE_S = 60.0
BACKOFF = (2.0, 10.0)  # base, cap (s): the Supervisor's default capacity_backoff, for both
SCENE_SECONDS = 3.0
TIMING = {"queue_delay_s": 1.0, "render_base_s": 2.0, "render_s_per_video_s": 1.0}
# gate_short_cap: the same gate with a 10 s backoff cap, to show what the cap costs in drain.
SHORT_CAP = (2.0, 10.0)
VARIANT_ORDER = ("gate", "per_job", "no_outage", "gate_short_cap")


def run(ctx: Context) -> Outcome:
    jobs_n, scale = (100, 100.0) if ctx.quick else (1000, 10.0)
    # The short-cap variant is for information only: left out of the smoke run.
    variants = VARIANT_ORDER[:3] if ctx.quick else VARIANT_ORDER
    per_run: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    settings = {"time_scale": scale, **TIMING, "scene_base_s": 0.0, "scene_s_per_video_s": 0.0,
                "character_pending_s": 0.0, "character_processing_s": 0.0}
    timeout = 120 + 6 * OUTAGE_S / scale + jobs_n / 20
    with Server(**settings) as server:
        character_id, scene_id = _setup(server)
        params = {"base_url": server.base_url, "api_key": server.api_key,
                  "control_url": server.control_url, "character_id": character_id,
                  "scene_id": scene_id, "jobs": jobs_n, "scale": scale, "max_creates": 16,
                  "outage_s": OUTAGE_S}
        for _ in range(ctx.runs):
            for variant in variants:
                server.reset()
                result = run_child("b4_storm", variant, params, timeout=timeout)
                per_run[variant].append(_analyse(jobs_n, result, server))
        profile = ctx.profile_path("B4-gate")
        if profile is not None:  # an extra run: profiling slows it, so it is not counted
            server.reset()
            run_child("b4_storm", "gate", {**params, "profile": profile}, timeout=timeout)

    def med(variant: str, key: str) -> float:
        return median([r[key] for r in per_run[variant]])

    gate_rej, job_rej = med("gate", "rejected"), med("per_job", "rejected")
    ideal = med("no_outage", "accept_span")
    drain_gate, drain_job = med("gate", "drain"), med("per_job", "drain")
    figures = [
        Figure("B4", "rejected create requests", "req", gate_rej, "per-job backoff", job_rej,
               f"ratio <= 1/{MIN_REJECTION_RATIO:g}",
               gate_rej * MIN_REJECTION_RATIO <= job_rej),
        Figure("B4", "drain after capacity returns", "sim s", drain_gate, "ideal (no outage)",
               ideal, f"ratio <= {MAX_DRAIN_RATIO}", drain_gate <= MAX_DRAIN_RATIO * ideal,
               note="drain = last render accepted by the fake - capacity back; ideal = the "
                    "same span from the start in a run without an outage"),
        Figure("B4", "drain after capacity returns", "sim s", drain_gate, "per-job backoff",
               drain_job),
        Figure("B4", "wall time", "sim s", med("gate", "wall"), "per-job backoff",
               med("per_job", "wall")),
    ]
    if "gate_short_cap" in per_run:
        figures += [
            Figure("B4", "rejected, gate with capacity_backoff=(2, 10)", "req",
                   med("gate_short_cap", "rejected"), "per-job backoff", job_rej),
            Figure("B4", "drain, gate with capacity_backoff=(2, 10)", "sim s",
                   med("gate_short_cap", "drain"), "ideal (no outage)", ideal),
        ]
    config = {"jobs": jobs_n, "time_scale": scale, "outage_s": OUTAGE_S, "backoff": BACKOFF,
              "fast_render_s": TIMING["queue_delay_s"] + (TIMING["render_base_s"] + TIMING[
                  "render_s_per_video_s"] * SCENE_SECONDS) / 2, "max_creates": 16}
    return Outcome("capacity storm", figures, {"config": config, "runs": per_run})


def _setup(server: Server) -> tuple[str, str]:
    from viggle_async import ViggleClient
    from viggle_async.testing import make_mp4, make_png

    async def main() -> tuple[str, str]:
        async with ViggleClient(server.api_key, base_url=server.base_url) as client:
            char = await client.characters.create(name="bench", image=make_png())
            scene = await client.scenes.create(name="s", video=make_mp4(SCENE_SECONDS))
            await client.characters.wait(char.id, poll_interval=0.01)
            await client.scenes.wait(scene.id, poll_interval=0.01)
            return char.id, scene.id

    return asyncio.run(main())


def _analyse(n: int, result: dict[str, Any], server: Server) -> dict[str, float]:
    scale, offset = server.sim_offset()
    stats = server.stats()
    fake_jobs = server.jobs()
    if len(fake_jobs) != n or result["completed"] != n or not all(j[3] for j in fake_jobs):
        raise BenchError(f"B4: {len(fake_jobs)} jobs created, {result['completed']} completed "
                         f"of {n} (all must be fast)")
    t0 = result["t0"] * scale + offset
    back = result["until_sim"] if result["until_sim"] is not None else t0
    last = max(created for _, created, _, _ in fake_jobs)
    return {
        "rejected": stats["capacity_rejections"],
        "creates_sent": stats["request_counts"].get("POST /api/render", 0),
        "drain": last - back, "accept_span": last - t0,
        "wall": (result["t_end"] - result["t0"]) * scale,
        "cpu_s": result["cpu"],
    }


# --- client processes ---------------------------------------------------------------------


def _outage(p: dict[str, Any]) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"{p['control_url']}/outage?sim_seconds={p['outage_s']}", method="POST", data=b"")
    with opener.open(request, timeout=30) as resp:
        until: float = json.loads(resp.read())["until_sim"]
        return until


def _supervised(p: dict[str, Any], outage: bool,
                backoff: tuple[float, float] = BACKOFF) -> dict[str, Any]:
    from viggle_async import FastFallbackPolicy, Supervisor, ViggleClient

    async def main() -> dict[str, Any]:
        async with ViggleClient(p["api_key"], base_url=p["base_url"],
                                clock=ScaledClock(p["scale"])) as client:
            # Never fall back to standard: every render waits for fast capacity, so both
            # strategies do the same work.
            sup = Supervisor(client, max_uploads=p["max_creates"], max_polls=32,
                             max_active_jobs=p["jobs"], poll_rate=max(20.0, p["jobs"] / 2),
                             fast_fallback=FastFallbackPolicy(None, None),
                             capacity_backoff=backoff)
            c0, t0 = time.process_time(), time.monotonic()
            until = _outage(p) if outage else None
            async with sup:
                handles = [sup.render(key=f"job-{i}", character_id=p["character_id"],
                                      scene_id=p["scene_id"], fast=True)
                           for i in range(p["jobs"])]
            outcomes = [await h for h in handles]
        return {"t0": t0, "t_end": time.monotonic(), "cpu": time.process_time() - c0,
                "until_sim": until, "completed": sum(o.state == "complete" for o in outcomes)}

    return asyncio.run(main())


def _per_job(p: dict[str, Any]) -> dict[str, Any]:
    from viggle_async import FastModeUnavailableError, ViggleClient
    from viggle_async._backoff import full_jitter

    async def main() -> dict[str, Any]:
        completed = 0
        rand = random.Random().random
        async with ViggleClient(p["api_key"], base_url=p["base_url"],
                                clock=ScaledClock(p["scale"])) as client:
            clock = client.clock
            creates = anyio.Semaphore(p["max_creates"])

            async def job() -> None:
                nonlocal completed
                attempt = 0
                while True:
                    try:
                        async with creates:
                            created = await client.renders.create(
                                character_id=p["character_id"], scene_id=p["scene_id"],
                                fast=True)
                        break
                    except FastModeUnavailableError:
                        delay = full_jitter(attempt, base=BACKOFF[0], cap=BACKOFF[1], rand=rand)
                        attempt += 1
                        await clock.sleep_until(clock.now() + delay)
                await client.renders.wait(created.job_id, poll_interval=3.0)
                completed += 1

            c0, t0 = time.process_time(), time.monotonic()
            until = _outage(p)
            async with anyio.create_task_group() as tg:
                for _ in range(p["jobs"]):
                    tg.start_soon(job)
        return {"t0": t0, "t_end": time.monotonic(), "cpu": time.process_time() - c0,
                "until_sim": until, "completed": completed}

    return asyncio.run(main())


VARIANTS = {
    "gate": lambda p: _supervised(p, outage=True),
    "no_outage": lambda p: _supervised(p, outage=False),
    "per_job": _per_job,
    "gate_short_cap": lambda p: _supervised(p, outage=True, backoff=SHORT_CAP),
}
