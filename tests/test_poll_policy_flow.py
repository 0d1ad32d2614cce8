"""The supervisor's default (predictive) polling against the fake's realistic progress:
renders of varied length with rate jitter and stalls are found soon after they end in few
polls, and stalls too long to predict fall back to plain backoff and still finish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from viggle_async import Completed, PollPolicy, Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, Faults, ManualClock, make_png, write_mp4

SECONDS = (2, 5, 9, 14, 20)


@pytest.fixture
def media(tmp_path: Path) -> tuple[Path, list[Path]]:
    png = tmp_path / "me.png"
    png.write_bytes(make_png())
    videos = []
    for s in SECONDS:
        write_mp4(tmp_path / f"d{s}.mp4", float(s))
        videos.append(tmp_path / f"d{s}.mp4")
    return png, videos


async def run(clock: ManualClock, faults: Faults, media: tuple[Path, list[Path]],
              policy: PollPolicy | None, n: int = 60,
              with_renders: bool = False) -> Any:
    """Polls per job and each job's detection latency (seconds after it ended); with
    ``with_renders``, also each job's seconds from create to end."""
    png, videos = media
    latencies: list[float] = []
    renders: list[float] = []
    async with FakeViggle(clock=clock.now, output_bytes=256, faults=faults) as fake, \
            ViggleClient(fake.api_key, base_url=fake.base_url, clock=clock) as client:
        sup = Supervisor(client, max_uploads=8, max_polls=8, max_active_jobs=n,
                         poll_policy=policy)
        async with clock.autojump(), sup:
            events = sup.events()
            for i in range(n):
                sup.render(key=f"r{i}", ref_image=png, driving_video=videos[i % len(videos)])
            async for event in events:
                if isinstance(event, Completed):
                    job = fake.job(event.outcome.job_id or "")
                    latencies.append(fake.now() - job.finished)
                    renders.append(job.finished - job.created)
                    if len(latencies) == n:
                        break
        polls = fake.count("GET", "/api/render/{job_id}") / n
        return (polls, latencies, renders) if with_renders else (polls, latencies)


REALISTIC = {"render_rate_jitter": 0.3, "stall_fraction": 0.5, "stall_max": 0.1,
             "uneven_checkpoints": True, "queue_jitter": 0.5, "seed": 3}


async def test_the_default_finds_realistic_renders_soon_in_few_polls(
        clock: ManualClock, media: tuple[Path, list[Path]]) -> None:
    polls, latencies = await run(clock, Faults(**REALISTIC), media, None)
    plain_polls, plain_latencies = await run(ManualClock(), Faults(**REALISTIC), media,
                                             PollPolicy())
    assert len(latencies) == 60 and min(latencies) >= 0
    assert polls < plain_polls and polls <= 3.5
    # Issue 13's p99 (1.5 s past the end): the 59th of 60 (B3 measures the real figure).
    target = 1.5 + PollPolicy.predictive().margin
    assert sorted(latencies)[-2] <= target < max(plain_latencies)
    assert max(latencies) <= 2 * target


@pytest.mark.parametrize("seed", [3, 5, 7, 19])
async def test_stalls_too_long_to_predict_never_make_a_runaway_wait(
        seed: int, clock: ManualClock, media: tuple[Path, list[Path]]) -> None:
    # Every job pauses for up to 80 % of its render, far past the tenth the predictor
    # allows for: samples come late and aims miss. The promise (README, polling): misses
    # fall back to plain backoff (capped at 20 s), and no wait is longer than twice the
    # wait so far, so each job is found within max(20 s, twice its render) of its end,
    # never after the policy's 120 s max_interval or not at all. (Seed 3's worst job came
    # 41.8 s late once under load, another draw order; seeds 5, 7 and 19 reach 22-53 s.)
    faults = Faults(**{**REALISTIC, "stall_fraction": 1.0, "stall_max": 0.8, "seed": seed})
    polls, latencies, renders = await run(clock, faults, media, None, n=30, with_renders=True)
    assert len(latencies) == 30
    for late, render in zip(latencies, renders, strict=True):
        assert 0 <= late <= max(20.0, 2 * render)
    assert polls <= 12
