"""pytest plugin (entry point ``viggle_async``): ``fake_viggle`` and ``viggle_client``.

Both fixtures are function-scoped async fixtures, usable with pytest-asyncio in auto or strict
mode. ``fake_viggle`` is a running :class:`~viggle_async.testing.FakeViggle` with default
settings (change ``fake_viggle.settings`` / ``fake_viggle.faults`` inside the test).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from ._server import FakeViggle

__all__ = ["fake_viggle", "viggle_client"]


@pytest_asyncio.fixture
async def fake_viggle() -> AsyncIterator[FakeViggle]:
    """A running fake server, closed after the test."""
    async with FakeViggle() as fake:
        yield fake


@pytest_asyncio.fixture
async def viggle_client(fake_viggle: FakeViggle) -> AsyncIterator[Any]:
    """A ``viggle_async.ViggleClient`` pointed at ``fake_viggle``, entered with ``async with``."""
    # Imported here, and only here: the fake server must stay independent of the client.
    client_cls = importlib.import_module("viggle_async").ViggleClient
    async with client_cls(api_key=fake_viggle.api_key, base_url=fake_viggle.base_url) as client:
        yield client
