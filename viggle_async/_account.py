"""The account-wide state that every create and poll of a run shares, behind one interface.

What one Viggle account allows is shared by everything sent with its key: fast-mode capacity
(400 CS-UORC01-001), rate limits (429, and a 5xx with Retry-After), credits (402, and the
caller's ``credit_budget``), and a poll rate cap (docs/api/lifecycles.md#polling,
docs/api/errors.md, docs/api/credits.md#costs). ``AccountState``
is that state's one owner; the supervisor's flows ask it and tell it, and never keep a copy.

Every method is async and takes or returns plain values (clock seconds, credits, reasons), so
an implementation may live outside the process: the shape is the one a shared store needs
(an atomic ``reserve`` against one committed total, one ``paused_until`` for everyone, one
fast-capacity probe in flight while the gate is closed, a probe slot that could be a lease
that expires). ``LocalAccountState`` is the in-process implementation.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import anyio

__all__ = ["AccountState", "LocalAccountState"]


class AccountState(Protocol):
    """Shared limits of one account; times are clock seconds, amounts are credits."""

    async def reserve(self, credits: int | None, *, owner: str | None = None) -> str | None:
        """Reserve ``credits`` for one create, atomically against the committed total.

        Returns why not (new creates stopped, over the budget, or the cost is unknown
        while a budget is set), or None when reserved (``None`` credits reserve nothing).
        ``owner`` (the work's key) lets a shared implementation make the reservation
        idempotent per key across processes; ``LocalAccountState`` ignores it.
        """
        ...

    async def refund(self, credits: int, *, owner: str | None = None) -> None:
        """Give back a reservation whose create provably made no job, or whose job the
        API refunded (failed or cancelled, docs/api/credits.md#costs)."""
        ...

    async def settle_fallback(self, credits: int, *, owner: str | None = None) -> int:
        """A fast render reserved at ``credits`` was submitted standard: keep half
        (docs/api/credits.md#costs)
        and return what is now committed for it."""
        ...

    async def committed(self) -> int:
        """Credits reserved and not refunded."""
        ...

    async def stop(self, reason: str) -> None:
        """Stop new creates for good (a 402, or a journal that cannot be written); the
        first reason stays."""
        ...

    async def stopped(self) -> str | None:
        """Why new creates stopped, or None."""
        ...

    async def pause_creates(self, until: float) -> None:
        """No create before ``until`` (a 429 on a create); only ever extends."""
        ...

    async def creates_paused_until(self) -> float: ...

    async def pause_polls(self, until: float) -> None:
        """No status poll before ``until`` (a 429, or a 5xx with Retry-After, on a poll)."""
        ...

    async def polls_paused_until(self) -> float: ...

    async def fast_open(self) -> bool:
        """Whether fast creates may go out freely (no capacity refusal since the last
        success)."""
        ...

    def probe(self) -> AbstractAsyncContextManager[int | None]:
        """Hold the one fast-capacity probe slot. Yields the failures so far (for the
        backoff) while the gate is still closed, or None if it opened while we queued."""
        ...

    async def fast_refused(self) -> None:
        """A fast create was refused for capacity: close the gate for everyone."""
        ...

    async def fast_accepted(self) -> None:
        """A fast create was accepted: open the gate for everyone."""
        ...

    async def capacity_rejections(self) -> int:
        """Fast-capacity refusals seen so far."""
        ...


class LocalAccountState:
    """``AccountState`` for one process: plain fields, one anyio lock for the probe.

    ``budget`` is the caller's ``credit_budget`` (None: no cap).
    """

    def __init__(self, *, budget: float | None = None) -> None:
        self._budget = budget
        self._committed = 0
        self._stopped: str | None = None
        self._creates_paused = -math.inf
        self._polls_paused = -math.inf
        self._fast_open = True
        self._failures = 0  # capacity refusals since the gate last opened
        self._rejections = 0
        self._probe = anyio.Lock()

    async def reserve(self, credits: int | None, *, owner: str | None = None) -> str | None:
        if self._stopped:
            return self._stopped
        if self._budget is not None:
            if credits is None:
                return ("credit_budget is set but this render's length is unknown (a video "
                        "URL, or a scene whose duration the API did not report); pass "
                        "estimated_seconds=")
            if self._committed + credits > self._budget:
                return (f"over credit_budget: {self._committed} committed + {credits} "
                        f"> {self._budget:g}")
        self._committed += credits or 0
        return None

    async def refund(self, credits: int, *, owner: str | None = None) -> None:
        self._committed -= credits

    async def settle_fallback(self, credits: int, *, owner: str | None = None) -> int:
        standard = credits // 2
        self._committed -= credits - standard
        return standard

    async def committed(self) -> int:
        return self._committed

    @property
    def committed_now(self) -> int:
        """``committed()`` without awaiting (this implementation only)."""
        return self._committed

    async def stop(self, reason: str) -> None:
        if not self._stopped:
            self._stopped = reason

    async def stopped(self) -> str | None:
        return self._stopped

    async def pause_creates(self, until: float) -> None:
        self._creates_paused = max(self._creates_paused, until)

    async def creates_paused_until(self) -> float:
        return self._creates_paused

    async def pause_polls(self, until: float) -> None:
        self._polls_paused = max(self._polls_paused, until)

    async def polls_paused_until(self) -> float:
        return self._polls_paused

    async def fast_open(self) -> bool:
        return self._fast_open

    @asynccontextmanager
    async def probe(self) -> AsyncIterator[int | None]:
        async with self._probe:
            yield None if self._fast_open else self._failures

    async def fast_refused(self) -> None:
        self._fast_open = False
        self._failures += 1
        self._rejections += 1

    async def fast_accepted(self) -> None:
        self._fast_open, self._failures = True, 0

    async def capacity_rejections(self) -> int:
        return self._rejections

    @property
    def rejections_now(self) -> int:
        """``capacity_rejections()`` without awaiting (this implementation only)."""
        return self._rejections
