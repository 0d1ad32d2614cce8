"""Fixtures for the supervisor tests: one manual clock shared by the client and the fake
server (waits are exact and instant under ``clock.autojump()``), and small sample media."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from viggle_async import ManualClock, PollPolicy, ViggleClient
from viggle_async.testing import FakeViggle, make_png, write_mp4

# Manual time costs nothing, but every poll is a real request: poll at a steady 2 s.
POLICY = PollPolicy(first_delay=2.0, min_interval=2.0, max_interval=2.0, jitter=0.0)
# The fake's default: queued 2 s, then 5 s + 2 s per video second (halved when fast).
RENDER_KW = {"poll_policy": POLICY, "capacity_backoff": (0.5, 2.0), "asset_poll_interval": 1.0}


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeViggle]:
    async with FakeViggle(clock=clock.now, output_bytes=256) as server:
        yield server


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "me.png"
    path.write_bytes(make_png())
    return path


@pytest.fixture
def videos(tmp_path: Path) -> dict[int, Path]:
    """1 s to 4 s clips: a render costs ceil(seconds) credits (x2 fast, §7)."""
    out = {}
    for seconds in (1, 2, 3, 4):
        path = tmp_path / f"dance{seconds}.mp4"
        write_mp4(path, float(seconds))
        out[seconds] = path
    return out


async def ready_scene(client: ViggleClient, clock: ManualClock) -> str:
    """A ready 5 s video-template scene: character renders need one (§2.1 mode 2)."""
    async with clock.autojump():
        scene = await client.scenes.import_template("tmpl-video-wave")
        ready = await client.scenes.wait(scene.id, poll_interval=1.0)
    return ready.id
