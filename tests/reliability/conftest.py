"""Fixtures for the reliability suites: a fake server on the shared manual clock (so waits are
exact and instant under ``clock.autojump()``) and small sample media. ``client`` comes from
tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from relhelp import Media

from viggle_async.testing import FakeViggle, ManualClock, make_png, write_mp4


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeViggle]:
    async with FakeViggle(clock=clock.now, output_bytes=4096) as server:
        yield server


@pytest.fixture
def media(tmp_path: Path) -> Media:
    png = tmp_path / "me.png"
    png.write_bytes(make_png())
    mp4 = tmp_path / "dance.mp4"
    write_mp4(mp4, 2.0)
    return Media(png, mp4, tmp_path)

