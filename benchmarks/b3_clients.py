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
                if _settled(s, job["job_id"], seen, failed):
                    return
                await asyncio.sleep(interval)

        async with aiohttp.ClientSession() as session:
            before, c0, usage0 = rss(), time.process_time(), _usage()
            real0, t0 = time.perf_counter(), time.monotonic()
            sampler = CpuSampler().start()
            async with asyncio.TaskGroup() as tg:
                for _, scene_id in p["jobs"]:
                    tg.create_task(job(session, scene_id))
            return _result(p, t0, c0, before, seen, failed, real0, usage0, sampler)

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


VARIANTS = {"supervisor": _supervisor, "async_loop": _async_loop, "threads": _threads}
