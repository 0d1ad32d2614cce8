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
that expires, a poll rate cap taken a batch of starts per round trip). ``LocalAccountState``
is the in-process implementation.

The poll rate cap is a GCRA token bucket (the "virtual scheduling" form of a leaky bucket):
``rate`` poll starts per second, of which up to ``burst`` may go out back to back. Across
everyone sharing one state, poll starts granted in any window of W seconds number at most
``burst + rate * W``. It is kept as one time (the theoretical arrival time of the next
start), so a shared store updates one value per batch and holds nothing per process: a
process that dies with tokens it took never used simply leaves them unused.
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

    async def take_polls(self, n: int, now: float) -> tuple[int, float]:
        """Take up to ``n`` status-poll starts from the account's poll rate cap.

        ``now``: the caller's clock seconds. Returns ``(granted, next_at)``: ``granted``
        (0..n) polls may start now, and ``next_at`` (clock seconds, >= ``now``) is the
        earliest time the next start after them may be granted. Granted starts are spent whether or
        not they are used: start them at once or drop them (``PollScheduler`` keeps them
        at most ``max(coalesce, 0.1)`` s). Raises ``ValueError`` for ``n < 1``.
        """
        ...


def default_poll_burst(rate: float) -> float:
    """The poll starts that may go back to back under ``rate`` (polls per second) when no
    burst is given: 0.1 s worth of them plus one, as far ahead of even spacing as the
    scheduler's default coalescing window (``PollPolicy.coalesce``) lets polls run."""
    return 1.0 + 0.1 * rate


def check_poll_cap(rate: float, burst: float | None) -> float:
    """Validate a poll rate cap; returns its burst. ``ValueError`` names the fix."""
    if not rate > 0:
        raise ValueError(f"poll_rate: {rate!r} polls per second. Fix: pass a number > 0 "
                         "(math.inf for no cap)")
    if burst is None:
        burst = 1.0 if math.isinf(rate) else default_poll_burst(rate)
    if not burst >= 1 or math.isinf(burst) or math.isnan(burst):
        raise ValueError(f"poll_burst: {burst!r}. Fix: pass a finite number >= 1 "
                         "(polls that may start back to back)")
    return burst


def gcra_take(tat: float, n: int, now: float, rate: float, burst: float
              ) -> tuple[int, float, float]:
    """One ``take_polls`` step of the GCRA bucket: ``(granted, next_at, new_tat)``.

    ``tat``: when the next start would be due at exactly ``rate`` (seconds). Start i of
    a batch is allowed while ``base + i / rate <= now + (burst - 1) / rate`` with
    ``base = max(tat, now)``. ``pg._account`` runs the same arithmetic in SQL.
    """
    if n < 1:
        raise ValueError(f"take_polls: n={n!r}. Fix: ask for at least 1 poll start")
    if math.isinf(rate):
        return n, now, tat
    base = max(tat, now)
    # The epsilon forgives float rounding in (now - base) * rate, never a whole start.
    granted = min(n, max(0, math.floor((now - base) * rate + burst + 1e-9)))
    new_tat = base + granted / rate
    return granted, max(now, new_tat - (burst - 1.0) / rate), new_tat


class LocalAccountState:
    """``AccountState`` for one process: plain fields, one anyio lock for the probe.

    ``budget`` is the caller's ``credit_budget`` (None: no cap). ``poll_rate``: status
    polls started per second by everyone sharing this state (``math.inf``: no cap);
    ``poll_burst``: how many may start back to back (default ``1 + 0.1 * poll_rate``).
    Raises ``ValueError`` for a rate <= 0 or a burst < 1.
    """

    def __init__(self, *, budget: float | None = None, poll_rate: float = 20.0,
                 poll_burst: float | None = None) -> None:
        self._poll_burst = check_poll_cap(poll_rate, poll_burst)
        self._poll_rate = poll_rate
        self._poll_tat = -math.inf
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

    async def take_polls(self, n: int, now: float) -> tuple[int, float]:
        granted, next_at, self._poll_tat = gcra_take(
            self._poll_tat, n, now, self._poll_rate, self._poll_burst)
        return granted, next_at
