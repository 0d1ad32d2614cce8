"""The shared poll scheduler: one dispatcher for every job being waited on.

Render status (``GET /api/render/{job_id}``) needs no auth and the docs say to poll it every
3-5 s until ``complete``/``failed`` (docs/api/renders.md#render-status,
docs/api/lifecycles.md#polling). For thousands of jobs a loop per
job wastes requests and CPU, so one dispatcher keeps a heap of next-poll times and sends each
poll as a short task, with:

- at most ``max_in_flight`` polls in flight and at most ``max_rate`` polls started per second;
  with ``take_polls`` (``AccountState.take_polls``), also within the account's shared poll
  rate cap, asked once per batch of polls rather than once per poll;
- intervals that grow while a job's observed state is unchanged, shrink when it moves, and,
  once ``progress_pct`` moves, aim at a fraction of the estimated remaining time so polls
  cluster near the expected end;
- jitter, so jobs submitted together do not poll in lockstep;
- per-waiter deadlines, ``pause_until`` (a 429's Retry-After), and never two polls of one job
  at once (a job is out of the heap while its poll runs);
- no starvation: the heap is ordered by due time, ties first-come first-served;
- coalescing: polls due within ``PollPolicy.coalesce`` of each other go out in one wake-up,
  so thousands of jobs do not each wake the event loop on their own, and a worker that
  finishes a poll takes the next due one itself;
- for a predictive policy (``PollPolicy.predictive()``), one ``PollModel`` learned from every
  job's results (queue delays, durations) and passed to the policy for the next job.

Time and randomness are parameters (a ``Clock`` and a ``rand()`` in [0, 1)).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Awaitable, Callable, Hashable
from types import TracebackType
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

from ._clock import Clock
from ._polling import (
    PollDeadlineExceeded,
    PollModel,
    PollPolicy,
    PollSchedulerClosed,
    PollState,
    PollStats,
    PollView,
)

__all__ = [
    "PollDeadlineExceeded",
    "PollModel",
    "PollPolicy",
    "PollScheduler",
    "PollSchedulerClosed",
    "PollState",
    "PollStats",
    "PollView",
]

R = TypeVar("R")

#: ``AccountState.take_polls``: ``(n, now) -> (granted, next_at)``.
TakePolls = Callable[[int, float], Awaitable[tuple[int, float]]]

# Seconds a batch of starts taken from the account may wait unused (at least the coalescing
# window) before it is dropped: a start kept longer could go out in a window the account
# already granted to others, which the shared cap's bound does not allow for.
_TOKEN_HOLD = 0.1
# The most starts asked for in one round trip (a bound on what one ask may leave unused).
_TOKEN_BATCH = 32
# Seconds before asking again after take_polls raised (e.g. the shared store is away).
_TOKEN_RETRY = 1.0

# Clock seconds per bucket of the far timeline (a power of two: bucket bounds are exact).
_BUCKET = 0.25

# Policy states kept for waits that a failed poll ended (oldest dropped first).
_MAX_KEPT = 4096

#: The policy of a scheduler given none (so of ``Supervisor``): the predictive one, which
#: met issue 13's targets on B3's realistic progress (see README, Benchmarks).
DEFAULT_POLICY = PollPolicy.predictive()


class _Job(Generic[R]):
    __slots__ = ("due", "fingerprint", "gen", "job_id", "last", "polling", "seen", "state",
                 "waiters")

    def __init__(self, job_id: str, state: PollState) -> None:
        self.job_id = job_id
        self.waiters: list[_Waiter[R]] = []
        self.polling = False
        self.gen = 0  # a heap entry is live only while its gen matches
        self.due = 0.0  # clock time of its live heap entry
        self.state = state  # the policy's memory of this job
        self.last: R | None = None
        self.seen = False
        self.fingerprint: Hashable = None


class _Waiter(Generic[R]):
    __slots__ = ("done", "error", "event", "job", "on_update", "result")

    def __init__(self, job: _Job[R], on_update: Callable[[R], None] | None,
                 event: anyio.Event) -> None:
        self.job = job
        self.on_update = on_update
        self.event = event
        self.done = False
        self.error: BaseException | None = None
        self.result: R


class _Slot(Generic[R]):
    """One poll worker's mailbox: the dispatcher sets ``job`` and then releases ``ready``.

    A semaphore rather than an event: it is reused for the worker's whole life, where an
    event (single use) cost a new one per hand-off (issue 13: the scheduler's CPU per poll).
    """

    __slots__ = ("job", "ready")

    def __init__(self) -> None:
        self.job: _Job[R] | None = None
        self.ready = anyio.Semaphore(0)


class PollScheduler(Generic[R]):
    """Polls many jobs from one dispatcher; use as ``async with PollScheduler(...) as s``.

    ``poll(job_id)`` fetches one status (retrying transient errors is its business);
    ``read(result)`` summarises it as a ``PollView``. Polls run on ``max_in_flight`` worker
    tasks (no task per job or per poll). Leaving the context cancels every poll and fails any
    remaining waiter with ``PollSchedulerClosed``. ``policy`` defaults to
    ``PollPolicy.predictive()`` (``DEFAULT_POLICY``); pass ``PollPolicy()`` for plain
    backoff.

    ``max_rate``: poll starts per second of this scheduler (``math.inf``: none).
    ``take_polls``: an ``AccountState.take_polls`` whose shared cap every start must also
    fit (so this scheduler's ``max_rate`` can only lower it). The dispatcher asks it for a
    batch (the due polls that fit ``max_rate`` and the idle workers, at most 32) in one
    await, and drops starts left unused after ``max(coalesce, 0.1)`` s. If it raises,
    no poll starts and it is asked again 1 s later (a poll never goes out uncapped).
    ``ValueError`` for ``max_in_flight < 1`` or ``max_rate <= 0``.
    """

    def __init__(
        self,
        poll: Callable[[str], Awaitable[R]],
        read: Callable[[R], PollView],
        *,
        clock: Clock,
        rand: Callable[[], float],
        max_in_flight: int = 8,
        max_rate: float = 20.0,
        policy: PollPolicy | None = None,
        take_polls: TakePolls | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if not max_rate > 0:
            raise ValueError("max_rate must be > 0 (math.inf for no cap)")
        self._poll = poll
        self._read = read
        self._clock = clock
        self._rand = rand
        self._max_in_flight = max_in_flight
        self._spacing = 0.0 if math.isinf(max_rate) else 1.0 / max_rate
        self._policy = policy or DEFAULT_POLICY
        # What a predictive policy learned from the jobs seen so far (shared by all jobs).
        self._model = PollModel()
        # Hinted jobs not polled yet whose hint the model did not know (re-aimed as it
        # learns), and the shortest hint waited on (PollPolicy.first_interval).
        self._cold: list[_Job[R]] = []
        self._kept: dict[str, PollState] = {}  # job id -> state, after a failed poll
        self._least_hint = math.inf
        # Coalescing (see PollPolicy.coalesce): polls due within the window go out in the
        # same wake-up. The rate cap may run that far ahead too, but only when its spacing
        # is finer than the window, so a slow cap (e.g. 5/s) still spaces every start.
        self._window = self._policy.coalesce
        self._rate_slack = self._window if self._spacing < self._window else 0.0
        self._jobs: dict[str, _Job[R]] = {}
        # Next-poll times, (due, seq, gen, job): a heap of those due before ``_horizon``
        # and, past it, unsorted buckets of _BUCKET seconds (with a heap of their indexes)
        # moved into the heap as the horizon reaches them. Thousands of jobs wait seconds
        # apart: the heap stays a few hundred entries, where one of all of them cost a
        # sift through ~15 levels of cold memory per poll (issue 13). Pop order is the
        # same: entries are totally ordered by (due, seq).
        self._heap: list[tuple[float, int, int, _Job[R]]] = []
        self._horizon = -math.inf
        self._far: dict[int, list[tuple[float, int, int, _Job[R]]]] = {}
        self._far_keys: list[int] = []
        self._deadlines: list[tuple[float, int, _Waiter[R]]] = []
        self._seq = itertools.count()
        self._tg: TaskGroup | None = None
        self._event_type: type[anyio.Event] = anyio.Event
        self._closed = False
        self._next_send = -math.inf  # earliest start of the next poll under the rate cap
        # Starts taken from the account's shared cap: how many are left, until when they
        # may be used, and when the account said the next one may be had. Without an
        # account they never run out.
        self._take_polls = take_polls
        self._tokens = 0.0 if take_polls is not None else math.inf
        self._tokens_until = -math.inf if take_polls is not None else math.inf
        self._tokens_next = -math.inf
        self._token_hold = max(self._window, _TOKEN_HOLD)
        self.rate_errors = 0  # take_polls calls that raised
        self._paused_until = -math.inf
        self._in_flight = 0
        self._idle: list[_Slot[R]] = []
        self._blocked_on_slots = False
        self._wake_scope: anyio.CancelScope | None = None
        self._wake_at = -math.inf
        self._polls_sent = 0
        self._polls_failed = 0
        self._peak = 0

    # -- context ---------------------------------------------------------------------------

    async def __aenter__(self) -> PollScheduler[R]:
        if self._tg is not None or self._closed:
            raise RuntimeError("a PollScheduler can be entered only once")
        # The running backend's Event class: made directly, an event skips the look-up of
        # the backend (sniffio) that anyio.Event() does each time (issue 13: one per wait).
        self._event_type = type(anyio.Event())
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        for _ in range(self._max_in_flight):
            slot: _Slot[R] = _Slot()
            self._idle.append(slot)
            tg.start_soon(self._worker, slot)
        tg.start_soon(self._dispatch)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closed = True
        for job in list(self._jobs.values()):
            for w in list(job.waiters):
                self._finish(w, error=PollSchedulerClosed("the poll scheduler was closed"))
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    # -- public ----------------------------------------------------------------------------

    @property
    def stats(self) -> PollStats:
        return PollStats(
            polls_sent=self._polls_sent,
            polls_failed=self._polls_failed,
            in_flight=self._in_flight,
            peak_in_flight=self._peak,
            jobs=len(self._jobs),
            waiters=sum(len(j.waiters) for j in self._jobs.values()),
        )

    def pause_until(self, when: float) -> None:
        """Start no poll before ``when`` (clock time); polls in flight carry on."""
        # Only ever extends: a shorter Retry-After arriving later must not cut a pause short.
        self._paused_until = max(self._paused_until, when)

    async def wait(
        self,
        job_id: str,
        *,
        deadline: float | None = None,
        on_update: Callable[[R], None] | None = None,
        first_delay: float | None = None,
        expected_seconds: float | None = None,
    ) -> R:
        """Poll ``job_id`` until terminal and return that result.

        ``deadline`` (clock time) raises ``PollDeadlineExceeded`` with the last result seen.
        ``on_update`` is called with each result whose fingerprint differs from the previous
        one (the first included, the terminal one too); if it raises, this wait raises that.
        ``first_delay`` overrides the policy's for a new job (e.g. 0 when resuming a known
        job id). ``expected_seconds`` hints how long a new job renders (its driving
        video's seconds; None: unknown): a predictive policy learns durations per hint and
        aims the first poll near the end (``PollPolicy.first_state``). Several waits on one
        id share its polls. An exception from ``poll`` or ``read`` ends the waits on that
        job only.
        """
        if self._tg is None or self._closed:
            raise PollSchedulerClosed("wait() needs an open PollScheduler context")
        _check_times(first_delay=first_delay, deadline=deadline,
                     expected_seconds=expected_seconds)
        now = self._clock.now()
        job = self._jobs.get(job_id)
        if job is None:
            job = self._new_job(job_id, now, first_delay, expected_seconds)
        waiter = _Waiter(job, on_update, self._event_type())
        job.waiters.append(waiter)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, next(self._seq), waiter))
            self._kick(deadline)
        try:
            await waiter.event.wait()
        finally:
            if not waiter.done:  # cancelled: forget this waiter, and the job if it was the last
                self._finish(waiter)
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def _new_job(self, job_id: str, now: float, first_delay: float | None,
                 hint: float | None) -> _Job[R]:
        policy = self._policy
        kept = self._kept.pop(job_id, None)
        state = kept or policy.first_state(now, expected_seconds=hint)
        job: _Job[R] = _Job(job_id, state)
        self._jobs[job_id] = job
        if first_delay is not None:
            delay = max(first_delay, 0.0)  # a past first poll is one due now
        elif kept is not None:
            # A wait restarted after a failed poll: it goes on from what it knew.
            delay = min(kept.interval, policy.first_delay)
        else:
            if hint is not None and hint < self._least_hint:
                self._least_hint = hint
            delay = policy.first_interval(self._model, state, least_hint=self._least_hint)
            if policy.predict and hint is not None and hint > self._model.reach \
                    and state.since is not None:
                # Its first poll is a guess until the model learns this hint: re-aimed then.
                self._cold.append(job)
        self._schedule(job, now + delay * self._jitter())
        return job

    def _reaim(self, now: float) -> None:
        """Move the first poll of each job whose hint the model did not know when it was
        scheduled to where the model now puts it (``PollPolicy.first_interval``): there
        once the model has learned the hint, else only later."""
        model, policy = self._model, self._policy
        reach, cold = model.reach, []
        # The first interval depends on the hint alone (and the model): computed once per
        # hint, not per job, as every cold job is rescanned each time the reach grows
        # (issue 13: at 10,000 jobs, the largest part of the scheduler's own CPU).
        firsts: dict[float, float | None] = {}
        for job in self._cold:
            if job.seen or job.polling or not job.waiters:
                continue  # polled since: its policy state takes it from there
            state = job.state
            hint: float = state.hint  # type: ignore[assignment]  # cold jobs have one
            first = firsts.get(hint, -1.0)
            if first == -1.0:
                first = firsts[hint] = None if model.shortest(hint) is None \
                    else policy.first_interval(model, state)
            if first is None:
                cold.append(job)  # nothing learned yet: stays where it was guessed
                continue
            due = state.since + first  # type: ignore[operator]  # cold jobs have one
            if hint > reach:
                # Still past what the model learned (its guess for this hint errs early):
                # only ever later than the guess it was scheduled with.
                if due < job.due:
                    due = job.due
                cold.append(job)
            if due != job.due:
                self._schedule(job, due if due > now else now)
        self._cold = cold

    # -- dispatcher ------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        clock = self._clock
        while True:
            now = clock.now()
            self._expire(now)
            if self._take_polls is not None and self._idle and now >= self._tokens_next:
                wanted = self._tokens_wanted(now)
                if wanted:
                    await self._take_tokens(self._take_polls, wanted, now)
                    now = clock.now()
            self._send_due(now)
            wake = self._next_wake()
            with anyio.CancelScope() as scope:
                self._wake_scope, self._wake_at = scope, wake
                if math.isinf(wake):
                    await anyio.sleep_forever()
                else:
                    await clock.sleep_until(wake)
            self._wake_scope, self._wake_at = None, -math.inf

    def _has_token(self, now: float) -> bool:
        if now > self._tokens_until:
            self._tokens = 0.0  # held too long: dropped, never used late
        return self._tokens >= 1

    def _tokens_wanted(self, now: float) -> int:
        """How many starts to ask the account for: 0 while some are in hand, else the due
        polls that this scheduler's own cap and idle workers would start now."""
        if self._has_token(now) or self._due(now) is None:
            return 0
        n = min(len(self._idle), _TOKEN_BATCH)
        if self._spacing:
            n = min(n, 1 + math.floor(
                (now - (max(self._next_send, now) - self._rate_slack)) / self._spacing
                + 1e-9))
        # Count live due entries down the heap (a parent is never due later than its
        # children), visiting only those due and their children: O(n), not O(heap).
        limit = now + self._window
        self._fill(limit)
        heap, count, stack = self._heap, 0, [0]
        while stack and count < n:
            i = stack.pop()
            if i < len(heap) and heap[i][0] <= limit:
                count += heap[i][2] == heap[i][3].gen
                stack += (2 * i + 1, 2 * i + 2)
        return count

    async def _take_tokens(self, take: TakePolls, n: int, now: float) -> None:
        try:
            granted, next_at = await take(n, now)
        except Exception:
            # Starting polls uncapped could exceed what the whole account may send; waiting
            # costs only latency, and the store's own errors surface on its other calls.
            self.rate_errors += 1
            granted, next_at = 0, now + _TOKEN_RETRY
        self._tokens = float(granted)
        self._tokens_until = self._clock.now() + self._token_hold
        if granted < n:
            # Nothing more before next_at: asking sooner would cost a round trip for a
            # refusal. Jitter (up to the wait again) keeps processes told the same next_at
            # from all asking at that instant, where one wins and the rest pay a round
            # trip each; the same jitter for a partial grant as for a refusal keeps it
            # fair (asking exactly at next_at after a partial grant, a process won every
            # race and starved the others). What the jitter leaves unused accrues up to
            # the burst. The floor keeps a store answering "not yet, now" from spinning
            # the dispatcher.
            self._tokens_next = now + max(next_at - now, 1e-3) * (1.0 + self._rand())
        else:
            self._tokens_next = -math.inf

    def _kick(self, when: float = -math.inf) -> None:
        """Wake the dispatcher if it sleeps past ``when``."""
        if self._wake_scope is not None and when < self._wake_at:
            self._wake_scope.cancel()
            self._wake_scope, self._wake_at = None, -math.inf

    def _expire(self, now: float) -> None:
        dl = self._deadlines
        while dl and dl[0][0] <= now:
            deadline, _, waiter = heapq.heappop(dl)
            if not waiter.done:
                job = waiter.job
                self._finish(waiter, error=PollDeadlineExceeded(job.job_id, deadline, job.last))

    def _send_due(self, now: float) -> None:
        self._blocked_on_slots = False
        while True:
            if not self._idle:
                # Due work waits for a slot: a worker that finishes takes it (_worker).
                self._blocked_on_slots = self._due(now) is not None
                return
            job = self._take_due(now)
            if job is None:
                return
            slot = self._idle.pop()
            slot.job = job
            slot.ready.release()

    def _due(self, now: float) -> _Job[R] | None:
        """The first job allowed to start at ``now`` (due within the coalescing window, not
        paused, within the rate cap), left in the heap; None if there is none."""
        heap = self._heap
        while heap or self._fill(-math.inf):
            due, _, gen, job = heap[0]
            if gen != job.gen:
                heapq.heappop(heap)
                continue
            # The rate test is written as _next_wake computes the wake-up (next_send -
            # slack), so float rounding can never leave a wake-up that finds nothing due.
            if (due > now + self._window or now < self._paused_until
                    or self._next_send - self._rate_slack > now):
                return None
            return job
        return None

    def _take_due(self, now: float) -> _Job[R] | None:
        """Pop the job ``_due`` finds and count it as sent (the caller polls it), if a start
        from the account's cap is in hand."""
        job = self._due(now)
        if job is None or not self._has_token(now):
            return None
        self._tokens -= 1
        heapq.heappop(self._heap)
        self._next_send = max(self._next_send, now) + self._spacing
        job.polling = True
        self._in_flight += 1
        self._polls_sent += 1
        self._peak = max(self._peak, self._in_flight)
        return job

    def _next_wake(self) -> float:
        wake = self._deadlines[0][0] if self._deadlines else math.inf
        if (self._heap or self._fill(-math.inf)) and not self._blocked_on_slots:
            # A stale top entry only causes one early wake-up that pops it.
            wake = min(wake, max(self._heap[0][0], self._paused_until,
                                 self._next_send - self._rate_slack,
                                 self._tokens_next if self._tokens < 1 else -math.inf))
        return wake

    async def _worker(self, slot: _Slot[R]) -> None:
        job: _Job[R] | None = None
        while True:
            if job is None:
                await slot.ready.acquire()
                job, slot.job = slot.job, None
            assert job is not None
            try:
                result = await self._poll(job.job_id)
                view = self._read(result)
            except Exception as exc:
                self._polls_failed += 1
                if self._policy.predict:
                    # The caller may wait again (a transient error): keep the job's samples
                    # and start time, so its predictions stay sharp.
                    self._kept[job.job_id] = job.state
                    if len(self._kept) > _MAX_KEPT:
                        del self._kept[next(iter(self._kept))]
                for w in list(job.waiters):
                    self._finish(w, error=exc)
            else:
                # Nobody waits any more (cancelled mid-poll): the result is dropped below.
                if job.waiters:
                    self._observe(job, result, view)
            finally:
                job.polling = False
                if not job.waiters and self._jobs.get(job.job_id) is job:
                    del self._jobs[job.job_id]
                self._in_flight -= 1
                # Take the next due poll here rather than going idle and waking the
                # dispatcher to hand it back: under load that saves an event and a wake-up
                # per poll (issue 13: the scheduler's own CPU per job).
                job = None if self._closed else self._take_due(self._clock.now())
                if job is None:
                    self._idle.append(slot)
                    if self._blocked_on_slots:
                        self._kick()

    # -- per-job logic ---------------------------------------------------------------------

    def _observe(self, job: _Job[R], result: R, view: PollView) -> None:
        now = self._clock.now()
        policy = self._policy
        if policy.predict:
            reach = self._model.reach
            self._model = policy.learn(self._model, job.state, progress_pct=view.progress_pct,
                                       terminal=view.terminal, now=now)
            if self._model.reach > reach and self._cold:
                self._reaim(now)
        moved = job.seen and view.fingerprint != job.fingerprint
        changed = moved or not job.seen
        job.seen, job.fingerprint, job.last = True, view.fingerprint, result
        if changed:
            for w in list(job.waiters):
                if w.on_update is not None:
                    try:
                        w.on_update(result)
                    except Exception as exc:
                        self._finish(w, error=exc)
        if view.terminal:
            for w in list(job.waiters):
                w.result = result
                self._finish(w)
            return
        if job.waiters:
            self._schedule(job, now + self._interval(job, view, moved, now) * self._jitter())

    def _interval(self, job: _Job[R], view: PollView, moved: bool, now: float) -> float:
        interval, job.state = self._policy.next_interval(
            job.state, progress_pct=view.progress_pct, moved=moved, now=now, model=self._model)
        return interval

    def _jitter(self) -> float:
        return 1.0 + self._policy.jitter * (2.0 * self._rand() - 1.0)

    def _schedule(self, job: _Job[R], due: float) -> None:
        job.gen += 1
        job.due = due
        slot = due / _BUCKET
        if slot == math.inf:
            # Never due (first_delay=math.inf, or past 1e308 s): kept out of the timeline,
            # where it would only lift the horizon to infinity; a deadline, the waiters
            # leaving or a later schedule ends it.
            return
        entry = (due, next(self._seq), job.gen, job)
        if due < self._horizon:
            heapq.heappush(self._heap, entry)
        else:
            key = math.floor(slot)
            bucket = self._far.get(key)
            if bucket is None:
                self._far[key] = [entry]
                heapq.heappush(self._far_keys, key)
            else:
                bucket.append(entry)
        self._kick(due)

    def _fill(self, limit: float) -> bool:
        """Move far buckets into the heap until it holds every entry due by ``limit`` and
        is not empty (unless nothing is scheduled); return whether it is not empty."""
        heap, far, keys = self._heap, self._far, self._far_keys
        while keys and (not heap or self._horizon <= limit):
            key = heapq.heappop(keys)
            bucket = far.pop(key)
            if heap:
                for entry in bucket:
                    heapq.heappush(heap, entry)
            else:
                heap.extend(bucket)  # the same list: callers hold it
                heapq.heapify(heap)
            self._horizon = (key + 1) * _BUCKET
        return bool(heap)

    def _finish(self, waiter: _Waiter[R], *, error: BaseException | None = None) -> None:
        """End one waiter: with ``error``, else with its ``result`` (unset if cancelled)."""
        if waiter.done:
            return
        waiter.done = True
        waiter.error = error
        waiter.event.set()
        job = waiter.job
        job.waiters.remove(waiter)
        if not job.waiters:
            job.gen += 1  # unschedule
            # A poll in flight is left to finish (its result is dropped) rather than cancelled:
            # that keeps the job registered until then, so a new wait() on the same id joins
            # it instead of polling it twice at once.
            if not job.polling:
                del self._jobs[job.job_id]


def _check_times(*, first_delay: float | None, deadline: float | None,
                 expected_seconds: float | None) -> None:
    """Refuse times the timeline cannot order (NaN) or place (-inf), naming the argument."""
    if first_delay is not None and (math.isnan(first_delay) or first_delay == -math.inf):
        raise ValueError(f"first_delay must be seconds >= 0 (math.inf: never), "
                         f"not {first_delay!r}")
    if deadline is not None and math.isnan(deadline):
        raise ValueError("deadline must be a clock time in seconds (None: no deadline), "
                         "not nan")
    if expected_seconds is not None and not (0 <= expected_seconds < math.inf):
        raise ValueError(f"expected_seconds must be the driving video's seconds (>= 0; "
                         f"None: unknown), not {expected_seconds!r}")
