"""``ManualClock``: a test double for the ``Clock`` every waiting component takes.

Its time moves only when a test calls ``advance``/``advance_to`` (or inside ``autojump``), so
polling, backoff and timeouts can be tested exactly and instantly. It lives with the testing
helpers; ``viggle_async.ManualClock`` still works for this release, with a
``DeprecationWarning``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

__all__ = ["ManualClock"]


class _Sleeper:
    __slots__ = ("active", "deadline", "event", "seq")

    def __init__(self, deadline: float, seq: int) -> None:
        self.deadline = deadline
        self.seq = seq
        self.event = anyio.Event()
        self.active = True

    def __lt__(self, other: _Sleeper) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)


# A settle that never finds the loop idle means some task spins on zero-length sleeps; fail
# loudly instead of hanging the test.
_MAX_SETTLE_SPINS = 100_000
# While a worker thread runs, the settle waits for it in real-time steps this long (seconds)...
_THREAD_POLL = 0.0005
# ...for at most this long in all (seconds): a thread that waits for manual time itself would
# otherwise hang the test, so past this the clock treats the thread as blocked.
_THREAD_PATIENCE = 30.0


class _ExecutorJobs:
    """Counts a stock asyncio loop's ``run_in_executor`` jobs not yet delivered to the loop.

    aiohttp reads upload files and compresses bodies with ``loop.run_in_executor``; while such a
    job runs, the ready queue is empty although the loop is not idle. The count drops in a done
    callback of the job's asyncio future, which asyncio schedules together with the awaiting
    task's wake-up, so the count reaches zero only once that wake-up is already queued.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = 0

    def done(self, _future: object) -> None:
        self.pending -= 1


# One counter per loop, shared by every clock on it; installed on first use, for the loop's life.
_EXECUTOR_JOBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ExecutorJobs] = (
    weakref.WeakKeyDictionary())


def _executor_jobs(loop: asyncio.AbstractEventLoop) -> _ExecutorJobs:
    jobs = _EXECUTOR_JOBS.get(loop)
    if jobs is None:
        jobs = _EXECUTOR_JOBS[loop] = _ExecutorJobs()
        submit: Callable[..., asyncio.Future[Any]] = loop.run_in_executor

        def run_in_executor(executor: Any, func: Callable[..., Any],
                            *args: Any) -> asyncio.Future[Any]:
            future = submit(executor, func, *args)
            jobs.pending += 1
            future.add_done_callback(jobs.done)
            return future

        # asyncio has no hook for executor work, so the clock wraps the loop's own method (an
        # instance attribute; the class's method is untouched).
        loop.run_in_executor = run_in_executor  # type: ignore[method-assign,assignment]
    return jobs


def _threads_busy(jobs: _ExecutorJobs) -> bool:
    """Whether work handed to a thread by anyio or asyncio has not come back to the loop yet.

    anyio's default limiter releases a token only after the worker's result is back on the
    loop, so a borrowed token means the task's wake-up is still to come.
    """
    if jobs.pending:
        return True
    return anyio.to_thread.current_default_thread_limiter().borrowed_tokens > 0


class ManualClock:
    """A clock whose time moves only when told to; for tests.

    ``await clock.advance(s)`` first lets runnable tasks run at the current time, then steps
    time forward through every pending sleeper's deadline in order: at each, it sets ``now()``
    to that deadline, wakes the sleepers due then and lets all tasks run until they block
    again, before moving on. So a task that sleeps in a loop sees each of its wake-ups at the
    exact time it asked for.

    "Blocked" means waiting on something other than the event loop's ready queue (an event, a
    lock, a socket), with no work out in a worker thread: on the stock asyncio loop the clock
    waits, in real time, for ``anyio.to_thread`` calls (default limiter) and
    ``loop.run_in_executor`` jobs (aiohttp's file reads) to come back before it moves time, so a
    slow thread on a loaded machine does not let time jump ahead of it. Other threads (e.g.
    aiosqlite's connection thread) are not seen.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[_Sleeper] = []
        self._seq = itertools.count()
        self._active = 0
        self._new_sleeper: anyio.Event | None = None
        self._autojumping = False

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock right now (cancelled ones excluded)."""
        return self._active

    def next_deadline(self) -> float | None:
        """The earliest pending sleeper's deadline, or None when nobody sleeps."""
        self._drop_inactive()
        return self._heap[0].deadline if self._heap else None

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        sleeper = _Sleeper(deadline, next(self._seq))
        heapq.heappush(self._heap, sleeper)
        self._active += 1
        if self._new_sleeper is not None:
            self._new_sleeper.set()
        try:
            await sleeper.event.wait()
        finally:
            # Cancelled before its deadline: leave no waiter behind (the heap entry is dropped
            # lazily; ``sleepers`` stops counting it at once).
            if sleeper.active:
                sleeper.active = False
                self._active -= 1

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of manual time."""
        await self.sleep_until(self._now + seconds)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order."""
        if seconds < 0:
            raise ValueError(f"cannot move time backwards (advance({seconds}))")
        await self.advance_to(self._now + seconds)

    async def advance_to(self, when: float) -> None:
        """Move time forward to ``when``, waking sleepers in deadline order."""
        if when < self._now:
            raise ValueError(f"cannot move time backwards ({when} < now {self._now})")
        # Tasks already runnable act at the current time, before it moves.
        await self.run_until_idle()
        while True:
            self._drop_inactive()
            if not self._heap or self._heap[0].deadline > when:
                break
            self._now = max(self._now, self._heap[0].deadline)
            while self._heap and self._heap[0].deadline <= self._now:
                sleeper = heapq.heappop(self._heap)
                if sleeper.active:
                    sleeper.active = False
                    self._active -= 1
                    sleeper.event.set()
            await self.run_until_idle()
        self._now = when
        await self.run_until_idle()

    async def run_until_idle(self) -> None:
        """Let every other task run until all of them are blocked; time does not move.

        On the stock asyncio loop this includes waiting (in real time, up to 30 s) for work
        out in worker threads to come back.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        ready = getattr(loop, "_ready", None)
        if ready is None:
            # Not the stock asyncio loop (trio, uvloop): use anyio's portable helper.
            await anyio.wait_all_tasks_blocked()
            return
        # anyio's asyncio helper sleeps 0.1 s of real time whenever a task is runnable, far too
        # slow for thousands of steps; an empty ready queue right after we resume means every
        # other task is waiting on something.
        jobs = _executor_jobs(loop)  # type: ignore[arg-type]
        patience = None
        spins = 0
        while spins < _MAX_SETTLE_SPINS:
            await asyncio.sleep(0)
            if ready:
                spins += 1
                continue
            if not _threads_busy(jobs):
                return
            # A worker thread still runs: the loop only looks idle. Wait for it in real time.
            now = loop.time()  # type: ignore[union-attr]
            if patience is None:
                patience = now + _THREAD_PATIENCE
            elif now > patience:
                return
            await asyncio.sleep(_THREAD_POLL)
        raise RuntimeError("tasks never became idle: something loops on zero-length sleeps")

    @asynccontextmanager
    async def autojump(self) -> AsyncIterator[None]:
        """Within this block, whenever all tasks are blocked, jump to the next deadline.

        Do not call ``advance`` inside the block: two tasks waiting for idleness would each
        see the other as runnable.
        """
        if self._autojumping:
            raise RuntimeError("autojump is already active on this clock")
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio)
            loop = None
        if loop is not None and getattr(loop, "_ready", None) is not None:
            # Count executor jobs from the block's first line, before the jumper first runs.
            _executor_jobs(loop)
        self._autojumping = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._autojump_loop)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._autojumping = False
            self._new_sleeper = None

    async def _autojump_loop(self) -> None:
        while True:
            await self.run_until_idle()
            nxt = self.next_deadline()
            if nxt is None:
                self._new_sleeper = anyio.Event()
                await self._new_sleeper.wait()
                self._new_sleeper = None
                continue
            await self.advance_to(nxt)

    def _drop_inactive(self) -> None:
        heap = self._heap
        while heap and not heap[0].active:
            heapq.heappop(heap)
