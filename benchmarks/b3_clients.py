"""B3's client processes: the Supervisor, the two baselines and two raw-aiohttp floors,
each rendering ``jobs``.

Every variant sends the same renders (``character_id`` + ``scene_id``), caps concurrent
creates at ``max_creates``, records ``time.monotonic()`` when it learns each job is
complete, and reports its CPU time and peak RSS. Times are converted to the fake's
simulated time by the orchestrator. ``params["loop"] == "uvloop"`` runs the variant on
uvloop's event loop instead of asyncio's.
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio

from ._common import ScaledClock, rss, vm_hwm

# Where a second, predictive poll policy may appear (issue 13, "Polling that predicts"):
# a PollPolicy classmethod, a class exported by the package, or a PollPolicy switch.
_POLICY_FACTORIES = ("predictive", "adaptive")
_POLICY_CLASSES = ("PredictivePollPolicy", "PredictivePolicy")
_POLICY_SWITCHES = ("predictive", "predict")


def second_policy() -> tuple[str, str] | None:
    """``(label, spec)`` of a real second poll policy in this build, or None.

    The spec is passed to a client process, which builds the policy with ``build_policy``.
    If the predictive policy became the default (the scheduler's ``DEFAULT_POLICY``, or a
    switch defaulting to on), the second policy is plain backoff.
    """
    import attrs

    import viggle_async
    from viggle_async import PollPolicy, _scheduler

    default = getattr(_scheduler, "DEFAULT_POLICY", None)
    if default is not None and getattr(default, "predict", False):
        return "PollPolicy() (plain backoff)", "plain:"

    for name in _POLICY_FACTORIES:
        if callable(getattr(PollPolicy, name, None)):
            return f"PollPolicy.{name}()", f"factory:{name}"
    for name in _POLICY_CLASSES:
        if hasattr(viggle_async, name):
            return f"{name}()", f"class:{name}"
    fields = attrs.fields_dict(PollPolicy)
    for name in _POLICY_SWITCHES:
        if name in fields:
            on = fields[name].default is not True
            label = f"PollPolicy({name}={on})" + ("" if on else " (plain backoff)")
            return label, f"switch:{name}={int(on)}"
    return None


def build_policy(spec: str) -> Any:
    import viggle_async
    from viggle_async import PollPolicy

    kind, _, name = spec.partition(":")
    if kind == "plain":
        return PollPolicy()
    if kind == "factory":
        return getattr(PollPolicy, name)()
    if kind == "class":
        return getattr(viggle_async, name)()
    if kind == "switch":
        field, _, on = name.partition("=")
        return PollPolicy(**{field: bool(int(on))})
    raise ValueError(f"unknown policy spec {spec!r}")


class CpuSampler:
    """A daemon thread reading this process's CPU time every ``period`` real seconds.

    ``peak_share()`` is the highest CPU share of one core over any ``window`` seconds: a
    client that is saturated only while most jobs are in flight shows it there, where its
    whole-run average would not.
    """

    def __init__(self, period: float = 0.25, window: float = 1.0) -> None:
        self.period, self.window = period, window
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), time.process_time()))
            if self._stop.wait(self.period):
                return

    def peak_share(self) -> float:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), time.process_time()))
        peak, j = 0.0, 0
        for i, (t, c) in enumerate(self.samples):
            while j < i and t - self.samples[j + 1][0] >= self.window:
                j += 1
            t0, c0 = self.samples[j]
            if t - t0 >= self.window:
                peak = max(peak, (c - c0) / (t - t0))
        return peak


def _usage() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def _result(p: dict[str, Any], t0: float, c0: float, before: int, seen: dict[str, float],
            failed: list[str], real0: float, usage0: tuple[float, float],
            sampler: CpuSampler) -> dict[str, Any]:
    t_end = time.monotonic()
    peak = sampler.peak_share()
    user, system = _usage()
    return {"t0": t0, "t_end": t_end, "real_s": time.perf_counter() - real0,
            "cpu": time.process_time() - c0, "cpu_user": user - usage0[0],
            "cpu_sys": system - usage0[1], "growth": vm_hwm() - before, "peak": vm_hwm(),
            "seen": seen, "failed": failed[:20], "n_failed": len(failed),
            "cpu_peak_share": peak}


def _run(p: dict[str, Any], main: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
         ) -> dict[str, Any]:
    """``main()`` on the event loop ``p["loop"]`` names: asyncio's (the default) or uvloop's."""
    if p.get("loop") == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def _settled(status: dict[str, Any], job_id: str, seen: dict[str, float],
             failed: list[str]) -> bool:
    """Whether a baseline's poll found the job finished; records when it was seen complete
    (``seen``) or why it failed (``failed``)."""
    if status["status"] == "complete":
        seen[job_id] = time.monotonic()
        return True
    if status["status"] in ("failed", "cancelled"):
        failed.append(f"{job_id}: {status['status']}")
        return True
    return False


async def _poll_until_settled(session: Any, base: str, job_id: str, seen: dict[str, float],
                              failed: list[str], interval: float) -> None:
    """GET the job's status, ``interval`` real seconds apart, until it has ended."""
    while True:
        async with session.get(f"{base}/api/render/{job_id}") as r:
            status = await r.json()
        if _settled(status, job_id, seen, failed):
            return
        await asyncio.sleep(interval)


async def _each_job(p: dict[str, Any], job: Callable[[Any, int, str], Coroutine[Any, Any, None]],
                    seen: dict[str, float], failed: list[str]) -> dict[str, Any]:
    """The measured part of a raw-aiohttp variant: ``job(session, index, scene_id)`` for
    every job, one task each, on one session."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        before, c0, usage0 = rss(), time.process_time(), _usage()
        real0, t0 = time.perf_counter(), time.monotonic()
        sampler = CpuSampler().start()
        async with asyncio.TaskGroup() as tg:
            for i, (_, scene_id) in enumerate(p["jobs"]):
                tg.create_task(job(session, i, scene_id))
        return _result(p, t0, c0, before, seen, failed, real0, usage0, sampler)


def _supervisor(p: dict[str, Any]) -> dict[str, Any]:
    from viggle_async import Completed, Failed, Supervisor, ViggleClient

    async def main() -> dict[str, Any]:
        seen: dict[str, float] = {}
        failed: list[str] = []
        clock = ScaledClock(p["scale"])
        async with ViggleClient(p["api_key"], base_url=p["base_url"], clock=clock) as client:
            policy = build_policy(p["poll_policy"]) if p.get("poll_policy") else None
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
            sampler = CpuSampler().start()
            async with anyio.create_task_group() as tg, sup:
                tg.start_soon(consume, sup.events())
                for key, scene_id in p["jobs"]:
                    sup.render(key=key, character_id=p["character_id"], scene_id=scene_id)
            return _result(p, t0, c0, before, seen, failed, real0, usage0, sampler)

    return _run(p, main)


def _async_loop(p: dict[str, Any]) -> dict[str, Any]:
    """The documented loop made async: one task per job, create, then poll every 3 s."""
    import aiohttp

    async def main() -> dict[str, Any]:
        seen: dict[str, float] = {}
        failed: list[str] = []
        base, h = p["base_url"], {"Authorization": f"Bearer {p['api_key']}"}
        interval = 3.0 / p["scale"]  # 3 simulated seconds
        creates = asyncio.Semaphore(p["max_creates"])

        async def job(session: aiohttp.ClientSession, _: int, scene_id: str) -> None:
            async with creates, session.post(f"{base}/api/render", headers=h, data={
                    "character_id": p["character_id"], "scene_id": scene_id}) as r:
                job = await r.json()
            await _poll_until_settled(session, base, job["job_id"], seen, failed, interval)

        return await _each_job(p, job, seen, failed)

    return _run(p, main)


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
            if _settled(s, job["job_id"], seen, failed):
                return
            time.sleep(interval)

    before, c0, usage0 = rss(), time.process_time(), _usage()
    real0, t0 = time.perf_counter(), time.monotonic()
    sampler = CpuSampler().start()
    with ThreadPoolExecutor(max_workers=len(p["jobs"])) as pool:
        for future in [pool.submit(job, scene_id) for _, scene_id in p["jobs"]]:
            future.result()
    return _result(p, t0, c0, before, seen, failed, real0, usage0, sampler)


def _raw_floor(p: dict[str, Any]) -> dict[str, Any]:
    """The request floor, back to back: raw aiohttp sending one create per job and
    ``p["polls"]`` status requests in all (the supervisor's measured count), 16 creates and
    32 polls in flight, with no waiting between them: what the requests alone cost this
    machine's client. It does not look at the answers (a job is "seen" after its last poll)."""
    import aiohttp

    async def main() -> dict[str, Any]:
        seen: dict[str, float] = {}
        base, h = p["base_url"], {"Authorization": f"Bearer {p['api_key']}"}
        creates, polls = asyncio.Semaphore(p["max_creates"]), asyncio.Semaphore(p["max_polls"])
        n, total = len(p["jobs"]), int(p["polls"])

        async def job(session: aiohttp.ClientSession, i: int, scene_id: str) -> None:
            async with creates, session.post(f"{base}/api/render", headers=h, data={
                    "character_id": p["character_id"], "scene_id": scene_id}) as r:
                job = await r.json()
            for _ in range(total // n + (i < total % n)):
                async with polls, session.get(f"{base}/api/render/{job['job_id']}") as r:
                    await r.json()
            seen[job["job_id"]] = time.monotonic()

        return await _each_job(p, job, seen, [])

    return _run(p, main)


# A paced floor's poll that finds its job still running tries again this much later.
RECHECK_SIM_S = 0.1


def _paced_floor(p: dict[str, Any]) -> dict[str, Any]:
    """The cheapest client at the run's pacing: one task per job, create, then one poll at
    the moment the job completes, known from an oracle; if that poll is early, another
    ``RECHECK_SIM_S`` simulated seconds later. About 2 requests per job, spread over the
    run as a real client's are.

    The oracle (``p["oracle"]``) is the fake's draws in a previous run, per arrival: the
    fake restarts its random source on reset, so its k-th create draws the same queue delay
    (``queue[k]``, sim s) and render-time factor (``factor[k]``: the render takes
    ``factor[k] * (render_base_s + render_s_per_video_s * video seconds)``). Arrivals are
    counted in the order create answers come back, which is nearly the fake's order; a
    mismatch costs a recheck or some latency, never correctness.

    With ``p["polls"]`` (status requests in all, as for the back-to-back floor) each job
    also sends its share of them minus one before that last poll, evenly spaced between
    its create and its completion: the supervisor's request count at the run's pacing.
    """
    import aiohttp

    scale = p["scale"]
    queue, factor = p["oracle"]["queue"], p["oracle"]["factor"]
    base_s, per_s = p["render_base_s"], p["render_s_per_video_s"]
    seconds: dict[str, float] = p["scene_seconds"]
    recheck = RECHECK_SIM_S / scale

    async def main() -> dict[str, Any]:
        seen: dict[str, float] = {}
        failed: list[str] = []
        base, h = p["base_url"], {"Authorization": f"Bearer {p['api_key']}"}
        creates = asyncio.Semaphore(p["max_creates"])
        arrivals = itertools.count()

        n, total = len(p["jobs"]), p.get("polls")

        async def job(session: aiohttp.ClientSession, i: int, scene_id: str) -> None:
            async with creates, session.post(f"{base}/api/render", headers=h, data={
                    "character_id": p["character_id"], "scene_id": scene_id}) as r:
                k = next(arrivals)
                job = await r.json()
            url = f"{base}/api/render/{job['job_id']}"
            # The fake stamped the job before answering, so waiting from now is never early
            # when the oracle's k is this job's.
            wait = ((queue[k] + factor[k] * (base_s + per_s * seconds[scene_id])) / scale
                    if k < len(queue) else 0.0)
            early = max(0, total // n + (i < total % n) - 1) if total else 0
            for _ in range(early):  # extra polls, evenly spaced, their answers unread
                await asyncio.sleep(wait / (early + 1))
                async with session.get(url) as r:
                    await r.json()
            await asyncio.sleep(wait / (early + 1))
            await _poll_until_settled(session, base, job["job_id"], seen, failed, recheck)

        return await _each_job(p, job, seen, failed)

    return _run(p, main)


VARIANTS = {"supervisor": _supervisor, "async_loop": _async_loop, "threads": _threads,
            "raw_floor": _raw_floor, "paced_floor": _paced_floor}
