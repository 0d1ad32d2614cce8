"""Fixtures for the supervisor tests: one manual clock shared by the client and the fake
server (waits are exact and instant under ``clock.autojump()``), and small sample media."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from viggle_async.testing import FakeViggle, ManualClock, make_png, write_mp4


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
    """1 s to 4 s clips: a render costs ceil(seconds) credits (x2 fast,
    docs/api/credits.md#costs)."""
    out = {}
    for seconds in (1, 2, 3, 4):
        path = tmp_path / f"dance{seconds}.mp4"
        write_mp4(path, float(seconds))
        out[seconds] = path
    return out
