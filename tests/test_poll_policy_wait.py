"""``renders.wait`` and the asset ``wait`` methods poll through a ``PollPolicy`` (issue 12.6):
the default cadence, ``poll_interval=`` as a fixed interval, ``policy=`` for any policy, and
bad arguments refused before any request. Scripted statuses, in manual time."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from viggle_async import PollPolicy, ViggleClient
from viggle_async._protocol import Request, Response
from viggle_async.testing import ManualClock, MockTransport

URL = "https://cdn.test/out.mp4"


def render(status: str, pct: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"job_id": "j", "status": status, "progress_pct": pct}
    if status == "complete":
        body["cdn_url"] = URL
    return body


class Script:
    """Answers each GET with the body its timeline gives at the clock's time."""

    def __init__(self, clock: ManualClock, at: Callable[[float], dict[str, Any]]) -> None:
        self.clock, self.at, self.times = clock, at, []  # type: list[float]

    def __call__(self, request: Request) -> Response:
        self.times.append(self.clock.now())
        return Response(200, {}, json.dumps(self.at(self.clock.now())).encode())


async def run_wait(at: Callable[[float], dict[str, Any]], call: Callable[[ViggleClient], Any]
                   ) -> tuple[Any, list[float]]:
    clock = ManualClock()
    script = Script(clock, at)
    async with ViggleClient("sk", base_url="https://api.test", transport=MockTransport(script),
                            clock=clock) as client, clock.autojump():
        result = await call(client)
    return result, script.times


def linear(queue: float, end: float) -> Callable[[float], dict[str, Any]]:
    def at(t: float) -> dict[str, Any]:
        if t < queue:
            return render("queued", 0)
        if t >= end:
            return render("complete", 100)
        return render("processing", float(int(100 * (t - queue) / (end - queue))))
    return at


async def test_default_render_cadence_is_the_documented_3_s() -> None:
    _, times = await run_wait(linear(2.0, 10.0), lambda c: c.renders.wait("j"))
    assert times == [0.0, 3.0, 6.0, 9.0, 12.0]


@pytest.mark.parametrize("interval", [0.5, 2.0, 7.0])
async def test_poll_interval_is_a_fixed_interval_whatever_the_progress(interval: float
                                                                      ) -> None:
    final, times = await run_wait(linear(2.0, 20.0),
                                  lambda c: c.renders.wait("j", poll_interval=interval))
    assert final.is_complete
    assert all(abs(b - a - interval) < 1e-9 for a, b in itertools.pairwise(times))
    assert times[-1] - 20.0 < interval


async def test_a_policy_backs_off_while_nothing_changes() -> None:
    policy = PollPolicy(first_delay=2.0, min_interval=1.0, growth=2.0, jitter=0.5)
    _, times = await run_wait(lambda t: render("queued", 0) if t < 30 else render("complete"),
                              lambda c: c.renders.wait("j", policy=policy))
    # At once, then 2 x 2, 2 x 4, 2 x 8: no jitter in a single wait.
    assert times == [0.0, 4.0, 12.0, 28.0, 48.0]


async def test_the_predictive_policy_aims_at_the_end_of_one_job() -> None:
    _, times = await run_wait(linear(3.0, 53.0),
                              lambda c: c.renders.wait("j", policy=PollPolicy.predictive()))
    policy = PollPolicy.predictive()
    assert 0 <= times[-1] - 53.0 <= policy.tolerance + policy.margin
    assert len(times) <= 5  # a 3 s loop sends 19


@pytest.mark.parametrize("kind", ["characters", "scenes"])
async def test_asset_waits_poll_every_5_s_or_as_told(kind: str) -> None:
    def at(t: float) -> dict[str, Any]:
        body = {"id": "a", "status": "ready" if t >= 12 else "processing"}
        return {**body, "segments": [{"uuid": "p1"}]} if kind == "scenes" else body

    final, times = await run_wait(at, lambda c: getattr(c, kind).wait("a"))
    assert final.is_ready and times == [0.0, 5.0, 10.0, 15.0]
    _, times = await run_wait(at, lambda c: getattr(c, kind).wait(
        "a", policy=PollPolicy(first_delay=4.0, min_interval=4.0, growth=1.0, jitter=0.0)))
    assert times == [0.0, 4.0, 8.0, 12.0]


@pytest.mark.parametrize("call", [
    lambda c: c.renders.wait("j", poll_interval=0),
    lambda c: c.renders.wait("j", poll_interval=-3.0),
    lambda c: c.renders.wait("j", poll_interval=3.0, policy=PollPolicy()),
    lambda c: c.characters.wait("a", poll_interval=0.0),
    lambda c: c.scenes.wait("a", poll_interval=5.0, policy=PollPolicy()),
], ids=["zero", "negative", "both", "character-zero", "scene-both"])
async def test_bad_wait_arguments_fail_before_any_request(call: Callable[[ViggleClient], Any]
                                                          ) -> None:
    clock = ManualClock()
    script = Script(clock, lambda t: render("complete"))
    async with ViggleClient("sk", base_url="https://api.test",
                            transport=MockTransport(script), clock=clock) as client:
        with pytest.raises(ValueError, match="poll_interval"):
            await call(client)
    assert script.times == []
