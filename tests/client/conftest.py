"""Fixtures for the client tests: one manual clock shared by the client and the fake server,
the fake server, a client pointed at it, sample files, and a scripted recording server
(its classes are in ``loophelp``, which tests import; never this module)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from loophelp import Media, Scripted, serve

from viggle_async.testing import FakeViggle, ManualClock, make_png, write_mp4


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeViggle]:
    # The fake's simulated time is the client's manual time: a client sleeping 3 s of
    # manual time sees a job 3 s further on, and ``clock.autojump()`` makes waits instant.
    async with FakeViggle(clock=clock.now) as server:
        yield server


@pytest.fixture
def media(tmp_path: Path) -> Media:
    png = tmp_path / "me.png"
    png.write_bytes(make_png())
    mp4 = tmp_path / "dance.mp4"
    write_mp4(mp4, 4.0)
    return Media(png, mp4)


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    server = Scripted()
    async with serve(server.handle, "*") as server.base_url:
        yield server
