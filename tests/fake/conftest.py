"""Fixtures for the fake-server tests: a manual clock, the server, and a raw HTTP helper."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from fakeapi import Api, ManualClock

from viggle_async.testing import FakeViggle


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeViggle]:
    async with FakeViggle(clock=clock) as server:
        yield server


@pytest.fixture
async def api(fake: FakeViggle) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(fake, session)
