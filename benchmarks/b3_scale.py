"""B3 bulk scale: thousands of renders of varied length through the Supervisor.

Baselines: the documented loop made async (one task per job: create, poll every 3 s) and
the documented ``requests`` loop in a thread pool. Each job renders a stored character on
one of ``len(VIDEO_SECONDS)`` stored scenes, picked at random (seeded), so simulated render
times vary between ``queue + base + per_s * min(VIDEO_SECONDS)`` and the same with the max.

Per run (see README.md, "How B3 is measured"): wall time against the ideal (the last job's
completion at the fake, measured from the client's start), client CPU per job, status
requests per job (the fake's count), completion-detection latency p50/p99 (the client's
monotonic time on learning a job is complete, mapped onto the fake's simulated clock,
minus the moment the fake completes it) and client peak RSS growth.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from ._common import MIB, median, percentile
from ._harness import BenchError, Server, run_child
from ._report import Context, Figure, Outcome

MAX_WALL_RATIO = 1.05
MAX_CPU_MS_PER_JOB = 1.0
MAX_STATUS_RATIO = 0.5
VIDEO_SECONDS = tuple(range(3, 54, 2))  # scene lengths; 26 scenes
TIMING = {"queue_delay_s": 2.0, "render_base_s": 5.0, "render_s_per_video_s": 1.0}
BASELINE_NAMES = {"async_loop": "async 3 s loop", "threads": "requests threads"}
# A PollPolicy whose p99 detection latency is about the 3 s loop's (instead of the default's
# ~1 s): how many requests the scheduler needs at equal latency. Public knobs only.
MATCHED_POLICY = {"min_interval": 2.5, "aim": 0.7}


@dataclass
class Size:
    label: str
    jobs: int
    scale: float  # simulated seconds per real second
    variants: tuple[str, ...]


def plan(quick: bool) -> list[Size]:
    if quick:
        return [Size("60", 60, 60.0, ("supervisor", "async_loop", "threads"))]
    # The 3 s loop polls jobs/3 times per simulated second: at 10,000 jobs and scale 1 that
    # is 3,333 requests/s, about what one fake-server core serves with room to spare.
    return [Size("10k", 10_000, 1.0, ("supervisor", "async_loop", "matched")),
            Size("500", 500, 4.0, ("supervisor", "async_loop", "threads", "matched"))]


def _settings(scale: float) -> dict[str, Any]:
    return {"time_scale": scale, **TIMING, "scene_base_s": 0.0, "scene_s_per_video_s": 0.0,
            "character_pending_s": 0.0, "character_processing_s": 0.0}


def _setup(server: Server) -> tuple[str, list[str]]:
    """One character and the scenes, ready at once (their preprocessing takes no time)."""
    from viggle_async import ViggleClient
    from viggle_async.testing import make_mp4, make_png

    async def main() -> tuple[str, list[str]]:
        async with ViggleClient(server.api_key, base_url=server.base_url) as client:
            char = await client.characters.create(name="bench", image=make_png())
            scenes = [await client.scenes.create(name=f"s{s}", video=make_mp4(float(s)))
                      for s in VIDEO_SECONDS]
            await client.characters.wait(char.id, poll_interval=0.01)
            for scene in scenes:
                await client.scenes.wait(scene.id, poll_interval=0.01)
            return char.id, [s.id for s in scenes]

    return asyncio.run(main())


def _analyse(n: int, result: dict[str, Any], server: Server, server_cpu: float
             ) -> dict[str, float]:
    scale, offset = server.sim_offset()
    fake_jobs = server.jobs()
    stats = server.stats()
    if len(fake_jobs) != n or len(result["seen"]) != n or result["n_failed"]:
        raise BenchError(f"B3: {len(fake_jobs)} jobs created, {len(result['seen'])} seen "
                         f"complete of {n}; failures: {result['failed']}")

    def sim(mono: float) -> float:
        return mono * scale + offset

    t0 = sim(result["t0"])
    finished = {job_id: done for job_id, _, done, _ in fake_jobs}
    latencies = [sim(mono) - finished[job_id] for job_id, mono in result["seen"].items()]
    ideal = max(finished.values()) - t0
    wall = sim(result["t_end"]) - t0
    return {
        "wall": wall, "ideal": ideal, "wall_ratio": wall / ideal,
        "submit_span": max(created for _, created, _, _ in fake_jobs) - t0,
        "cpu_ms_per_job": result["cpu"] / n * 1e3,
        "user_ms_per_job": result["cpu_user"] / n * 1e3,
        "sys_ms_per_job": result["cpu_sys"] / n * 1e3,
        "status_per_job": stats["request_counts"].get("GET /api/render/{job_id}", 0) / n,
        "latency_p50": percentile(latencies, 50), "latency_p99": percentile(latencies, 99),
        "latency_max": max(latencies), "latency_min": min(latencies),
        "rss_growth_mib": result["growth"] / MIB, "peak_rss_mib": result["peak"] / MIB,
        "real_s": result["real_s"], "server_cpu_s": server_cpu,
        "server_busy": server_cpu / result["real_s"],
    }


def _run_size(ctx: Context, size: Size) -> dict[str, list[dict[str, float]]]:
    per_run: dict[str, list[dict[str, float]]] = {v: [] for v in size.variants}
    longest = TIMING["queue_delay_s"] + TIMING["render_base_s"] + TIMING[
        "render_s_per_video_s"] * max(VIDEO_SECONDS)
    timeout = 120 + 3 * longest / size.scale + size.jobs / 50
    with Server(**_settings(size.scale)) as server:
        character_id, scenes = _setup(server)
        rng = random.Random(6)
        jobs = [[f"job-{i}", rng.choice(scenes)] for i in range(size.jobs)]
        params = {"base_url": server.base_url, "api_key": server.api_key, "jobs": jobs,
                  "character_id": character_id, "scale": size.scale, "max_creates": 16,
                  "max_polls": 32, "poll_rate": max(20.0, size.jobs / 2)}
        for _ in range(ctx.runs):
            for variant in size.variants:
                server.reset()
                p = dict(params)
                child = variant
                if variant == "matched":
                    child, p["poll_policy"] = "supervisor", MATCHED_POLICY
                cpu0 = server.cpu_seconds()
                result = run_child("b3_clients", child, p, timeout=timeout)
                per_run[variant].append(
                    _analyse(size.jobs, result, server, server.cpu_seconds() - cpu0))
        profile = ctx.profile_path(f"B3-{size.label}-supervisor")
        if profile is not None:  # an extra run: profiling slows it, so it is not counted
            server.reset()
            run_child("b3_clients", "supervisor", {**params, "profile": profile},
                      timeout=timeout)
    return per_run


def _figures(size: Size, per_run: dict[str, list[dict[str, float]]]) -> list[Figure]:
    def med(variant: str, key: str) -> float:
        return median([r[key] for r in per_run[variant]])

    def per_request(variant: str) -> float:  # every request: the create and each poll
        return median([r["cpu_ms_per_job"] * 1e3 / (r["status_per_job"] + 1)
                       for r in per_run[variant]])

    tag = f"B3 {size.label}"
    sup = "supervisor"
    wall, ideal = med(sup, "wall"), med(sup, "ideal")
    ratio = med(sup, "wall_ratio")
    cpu = med(sup, "cpu_ms_per_job")
    figs = [Figure(tag, "wall time", "sim s", wall, "ideal", ideal,
                   f"ratio <= {MAX_WALL_RATIO}", ratio <= MAX_WALL_RATIO,
                   note=f"median of per-run wall/ideal ratios: {ratio:.3f}"
                   if abs(ratio - wall / ideal) > 0.005 else "")]
    for variant in [v for v in size.variants if v in BASELINE_NAMES]:
        name = BASELINE_NAMES[variant]
        status_met = (med(sup, "status_per_job") <= MAX_STATUS_RATIO
                      * med(variant, "status_per_job")
                      and med(sup, "latency_p99") <= med(variant, "latency_p99"))
        figs += [
            Figure(tag, "wall time", "sim s", wall, name, med(variant, "wall")),
            Figure(tag, "client CPU per job", "ms", cpu, name, med(variant, "cpu_ms_per_job"),
                   f"<= {MAX_CPU_MS_PER_JOB:g} ms", cpu <= MAX_CPU_MS_PER_JOB),
            Figure(tag, "client CPU per request", "µs", per_request(sup), name,
                   per_request(variant)),
            Figure(tag, "status requests per job", "req", med(sup, "status_per_job"), name,
                   med(variant, "status_per_job"), f"ratio <= {MAX_STATUS_RATIO} at <= p99",
                   status_met),
            Figure(tag, "detection latency p50", "sim s", med(sup, "latency_p50"), name,
                   med(variant, "latency_p50")),
            Figure(tag, "detection latency p99", "sim s", med(sup, "latency_p99"), name,
                   med(variant, "latency_p99"), "ratio <= 1",
                   med(sup, "latency_p99") <= med(variant, "latency_p99"),
                   note=f"fake server busy {med(variant, 'server_busy'):.0%} of the {name} "
                        f"run (supervisor run: {med(sup, 'server_busy'):.0%})"),
            Figure(tag, "client peak RSS growth", "MiB", med(sup, "rss_growth_mib"), name,
                   med(variant, "rss_growth_mib")),
        ]
    if "matched" in size.variants:
        loop = "async_loop"
        m_status, m_p99 = med("matched", "status_per_job"), med("matched", "latency_p99")
        figs += [
            Figure(tag, "status requests per job, latency-matched policy", "req", m_status,
                   BASELINE_NAMES[loop], med(loop, "status_per_job"),
                   f"ratio <= {MAX_STATUS_RATIO} at <= p99",
                   m_status <= MAX_STATUS_RATIO * med(loop, "status_per_job")
                   and m_p99 <= med(loop, "latency_p99"),
                   note=f"Supervisor(poll_policy=PollPolicy(**{MATCHED_POLICY}))"),
            Figure(tag, "detection latency p99, latency-matched policy", "sim s", m_p99,
                   BASELINE_NAMES[loop], med(loop, "latency_p99")),
            Figure(tag, "client CPU per job, latency-matched policy", "ms",
                   med("matched", "cpu_ms_per_job"), BASELINE_NAMES[loop],
                   med(loop, "cpu_ms_per_job")),
        ]
    return figs


def run(ctx: Context) -> Outcome:
    figures: list[Figure] = []
    details: dict[str, Any] = {"config": {}, "runs": {}}
    for size in plan(ctx.quick):
        per_run = _run_size(ctx, size)
        figures += _figures(size, per_run)
        details["config"][size.label] = {
            "jobs": size.jobs, "time_scale": size.scale, "variants": size.variants,
            "video_seconds": [min(VIDEO_SECONDS), max(VIDEO_SECONDS)], **TIMING,
            "max_creates": 16, "max_polls": 32, "poll_rate": max(20.0, size.jobs / 2)}
        details["runs"][size.label] = per_run
    return Outcome("bulk scale", figures, details)
