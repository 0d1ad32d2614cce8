"""Clocks: the time source every waiting component takes as a parameter.

``SystemClock`` reads the event loop's monotonic clock. The test double,
``viggle_async.testing.ManualClock``, moves only when a test tells it to.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import anyio
import anyio.lowlevel

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic time source in seconds that can also sleep until a point in time."""

    def now(self) -> float:
        """Current time in seconds (monotonic; the origin is arbitrary)."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline``; a past deadline still yields once."""
        ...


class SystemClock:
    """The running event loop's clock (``anyio.current_time``)."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)
