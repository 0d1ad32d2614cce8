"""Simulated time for the fake server: lifecycles are computed lazily from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ._config import FakeSettings

__all__ = ["SimClock"]


class SimClock:
    """Simulated seconds since start, running at ``settings.time_scale`` per ``clock()`` second.

    Changing ``time_scale`` or swapping ``clock`` while running re-anchors at that moment, so
    simulated time never jumps.
    """

    def __init__(self, settings: FakeSettings) -> None:
        self._settings = settings
        self._clock = settings.clock
        self._real0 = self._clock()
        self._sim0 = 0.0
        self._last = 0.0
        self._wall0 = datetime.now(UTC).replace(microsecond=0)
        settings.on_clock_change(self.now)

    def now(self) -> float:
        s = self._settings
        if s.clock is not self._clock:
            self._clock, self._real0 = s.clock, s.clock()
        # Settings call us just before time_scale or clock changes, so the current scale has
        # been in force since the last reading.
        real = self._clock()
        self._sim0 += (real - self._real0) * s.time_scale
        self._real0 = real
        self._last = max(self._last, self._sim0)
        return self._last

    def wall(self, sim: float) -> datetime:
        """The UTC wall-clock moment shown for simulated time ``sim``."""
        return self._wall0 + timedelta(seconds=sim)

    def sim_of(self, wall: datetime) -> float:
        """Inverse of :meth:`wall`."""
        return (wall - self._wall0).total_seconds()

    def iso(self, sim: float) -> str:
        """ISO-8601 UTC with a ``Z``, whole seconds, like the docs' examples
        (docs/api/conventions.md#timestamps)."""
        wall = self._wall0 + timedelta(seconds=sim)
        return wall.strftime("%Y-%m-%dT%H:%M:%SZ")
