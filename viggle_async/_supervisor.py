"""Bulk work: many renders, characters and scenes at once under shared limits.

One poll scheduler for every render; upload, active-job and create limits; a shared
fast-capacity gate (400 CS-UORC01-001: one probe at a time with capped full-jitter
backoff, then everyone goes); a shared pause on 429; a stop on 402; a credit guard;
and a journal so a rerun never submits a job twice (docs/api/client-rules.md#create-retries,
docs/api/errors.md, docs/api/credits.md#costs).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack, cast

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from . import _journal_sqlite as _journal_module
from ._account import AccountState, LocalAccountState
from ._errors import RateLimitError, ViggleError
from ._events import (
    CharacterHandle,
    Completed,
    Estimate,
    Event,
    Failed,
    Handle,
    JournalBusy,
    Outcome,
    Queued,
    RenderHandle,
    SceneHandle,
)
from ._http import RetryEvent
from ._journal import Journal, request_fingerprint
from ._journal_sqlite import SQLiteJournal
from ._models import RenderStatus
from ._protocol import Hook
from ._resources import RenderInputs
from ._reuse import ReusePlan, ReuseRule
from ._reuse_run import ReuseRun, estimate_reuse, reusable_inputs
from ._run_journal import RunJournal
from ._runner import JobRegistry, RunContext, Runner, cost_of, poll_view
from ._scheduler import PollPolicy, PollScheduler
from ._submitter import FastFallbackPolicy, Submitter, fingerprint

if TYPE_CHECKING:
    from ._client import ViggleClient

__all__ = ["EventStream", "FastFallbackPolicy", "Supervisor", "fingerprint"]

logger = logging.getLogger("viggle_async")


class Supervisor:
    """Runs bulk work inside ``async with Supervisor(client, ...) as sup:``.

    ``sup.render(...)``, ``sup.character(...)`` and ``sup.scene(...)`` schedule at once and
    return awaitable handles; leaving the block waits for everything. An exception or
    cancellation inside the block cancels local work; with ``cancel_remote=True`` submitted
    renders still running are cancelled on the server (refunded), best effort. Their handles
    say the truth: ``running`` (job id, committed credits: the job goes on at the API) or
    ``cancelled`` with the job id when the remote cancel went through. ``render_timeout``
    (seconds) stops waiting for a render: its outcome is ``timed_out``, job id kept.

    Limits: ``max_uploads`` creates with a body in flight at once (4), ``max_polls`` status
    requests in flight (8), ``max_active_jobs`` jobs submitted and not yet final (100),
    ``poll_rate`` status requests per second at most (20.0). ``credit_budget`` (credits, or
    None): nothing is submitted past it; every render is priced first (its video's length, a
    scene's ``duration_seconds``, or ``estimated_seconds``). ``fast_fallback``
    (``FastFallbackPolicy``): when a fast render gives up on fast capacity and goes standard.
    ``resubmit_ambiguous``: send again the creates an earlier run left ambiguous (they may
    exist and be paid for). ``poll_policy`` (``PollPolicy``, default the benchmarked one):
    intervals between status polls. ``capacity_backoff`` (seconds, ``(base, cap)``): the
    jittered backoff of fast-capacity probes. ``asset_poll_interval`` (seconds) between
    character/scene status polls. ``rand``: the random source of every jitter (tests pass a
    seeded one).

    ``resubmit_ended`` (``{"cancelled"}``, ``{"failed"}`` or both): keys the journal
    holds as ended that way in an earlier run are submitted again (and paid again); the
    new create replaces the old entry. By default such keys are reported ``failed``.

    ``journal`` is a ``Journal`` object, or a path (str or PathLike) to a SQLite journal
    opened for the block and closed after it; anything else raises ``TypeError``. A journal
    that cannot be written stops new creates, lets created work finish, and makes the block
    raise ``JournalError`` naming every job id it could not record.

    ``reuse_assets`` (False by default; True or a ``ReuseRule``): renders of local files
    that share a driving video go out as one scene per video and one character per image,
    each file uploaded once (see ``start`` and ``ReuseRule``); ``reuse_fallback=True`` sends
    the renders of a scene that could not be made on demand instead of failing them.
    Raises ``TypeError`` for any other ``reuse_assets`` value.

    ``account``: the account-wide state (capacity gate, 429/5xx pauses, 402 stop, credit
    budget) to share, e.g. ``viggle_async.pg.PostgresAccountState`` for many processes;
    default a ``LocalAccountState(budget=credit_budget)`` of this supervisor's own. With
    ``account`` set, ``credit_budget`` must be None (``ValueError``): the state holds it.
    """

    def __init__(
        self,
        client: ViggleClient,
        *,
        max_uploads: int = 4,
        max_polls: int = 8,
        max_active_jobs: int = 100,
        poll_rate: float = 20.0,
        journal: Journal | str | os.PathLike[str] | None = None,
        credit_budget: float | None = None,
        fast_fallback: FastFallbackPolicy = FastFallbackPolicy(),
        resubmit_ambiguous: bool = False,
        resubmit_ended: Collection[str] = frozenset(),
        cancel_remote: bool = False,
        render_timeout: float | None = None,
        poll_policy: PollPolicy | None = None,
        # Capped at 10 s (benchmarks B4): one probe at a time costs little, and a long cap
        # leaves everyone waiting up to that long after capacity returns.
        capacity_backoff: tuple[float, float] = (2.0, 10.0),
        asset_poll_interval: float = 5.0,
        rand: Callable[[], float] = random.random,
        reuse_assets: bool | ReuseRule = False,
        reuse_fallback: bool = False,
        account: AccountState | None = None,
    ):
        self.client = client
        self._clock = client.clock
        self._journal_path: str | os.PathLike[str] | None = None
        if isinstance(journal, (str, os.PathLike)):
            self._journal_path, journal = journal, None  # opened in __aenter__
        elif journal is not None and not _is_journal(journal):
            raise TypeError(f"journal must be a Journal, a path (str or PathLike) or None, "
                            f"not {type(journal).__name__}")
        self._cancel_remote = cancel_remote
        self._stack: contextlib.AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._subscribers: list[_EventQueue] = []
        self._closed = False  # the event streams are closed: the block has ended
        self._keys: dict[str, Handle] = {}  # key -> its current handle
        self._stopped: dict[str, Handle] = {}  # cancelled, awaiting the remote cancel
        # The shared state, each piece with one owner; the flows get them as one context.
        if account is not None and credit_budget is not None:
            raise ValueError("credit_budget: give it to the account state instead (e.g. "
                             "PostgresAccountState(ledger, budget=...)) when passing account=")
        self._account: AccountState = (
            LocalAccountState(budget=credit_budget, poll_rate=poll_rate)
            if account is None else account)
        self._journal = RunJournal(journal, on_failure=self._account.stop)
        self._jobs = JobRegistry()
        submitter = Submitter(client, account=self._account, journal=self._journal,
                              uploads=anyio.Semaphore(max_uploads), fallback=fast_fallback,
                              capacity_backoff=capacity_backoff, rand=rand, emit=self._emit,
                              on_created=self._jobs.created)
        self._scheduler: PollScheduler[RenderStatus] = PollScheduler(
            client.renders.get, poll_view, clock=self._clock, rand=rand, max_in_flight=max_polls,
            max_rate=poll_rate, policy=poll_policy,
            # Its own LocalAccountState has the scheduler's own cap: asking it too would
            # only cost CPU (a few µs per poll), so only a given account is asked.
            take_polls=None if account is None else self._account.take_polls)
        self._runner = Runner(RunContext(
            client=client, account=self._account, journal=self._journal,
            scheduler=self._scheduler, submitter=submitter, jobs=self._jobs, emit=self._emit,
            active=anyio.Semaphore(max_active_jobs), rand=rand,
            resubmit_ambiguous=resubmit_ambiguous, render_timeout=render_timeout,
            # docs/api/lifecycles.md#polling: characters and scenes every 5 s
            asset_poll=asset_poll_interval,
            resubmit_ended=_ended_states(resubmit_ended)))
        # Asset reuse (issue 15): the logic lives in _reuse_run; here only the hooks.
        self._reuse_rule = _reuse_rule(reuse_assets)
        self._reuse: ReuseRun | None = None
        if self._reuse_rule is not None:
            self._reuse = ReuseRun(client, self._runner, self._reuse_rule,
                                   fallback=reuse_fallback, start=self._start)

    @property
    def capacity_rejections(self) -> int:
        """Fast-capacity rejections (400 CS-UORC01-001) seen so far (with a shared
        ``account``: its ``rejections_now``, the account-wide count as this process last
        saw it, or 0 if it has none)."""
        return int(getattr(self._account, "rejections_now", 0))

    @property
    def unjournaled(self) -> dict[str, str]:
        """Ids (key -> job or asset id) created in this run that the journal could not
        record; their outcomes carry them too. Empty unless the journal failed."""
        return dict(self._journal.unjournaled)

    @property
    def credits_committed(self) -> int:
        """Credits reserved for work sent (or possibly sent) and not refunded (with a
        shared ``account``: its ``committed_now``, the account-wide total as this process
        last saw it, or 0 if it has none)."""
        return int(getattr(self._account, "committed_now", 0))

    # --- context ---------------------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self._close_streams)  # a failed enter ends events() too
            if self._journal_path is not None:
                store = await _open_journal(self._journal_path, self.on_journal_busy)
                stack.push_async_callback(store.close)
                self._journal.journal = store
            await stack.enter_async_context(self._scheduler)
            stack.callback(self._close_streams)
            # Runs after the work ends and before the scheduler closes: a block that failed
            # or was cancelled while waiting still reaches its running jobs.
            stack.push_async_exit(self._after_work)
            # Removed after the task group ends (LIFO), so creates still running at exit
            # are observed too.
            stack.callback(self.client._http.observe_retries(self._on_client_retry))
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._stack is not None
        if exc_info[0] is None and self._reuse is not None:
            try:
                await self._reuse.start()  # renders held for the reuse plan go out now
            except BaseException as exc:
                await self._stack.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        if exc_info[0] is not None and self._cancel_remote:
            await self._cancel_running()
        try:
            suppress = await self._stack.__aexit__(*exc_info)
        except BaseException as exc:
            self._note_journal_failure(exc)  # the block's own error wins; keep the ids
            raise
        finally:
            for handle in self._stopped.values():
                handle._set(self._jobs.stopped(handle.key, handle.kind))
            self._close_streams()  # even if entering failed half-way
        failure = self._journal.error()
        if failure is not None:
            if exc_info[0] is None or suppress:
                # Every outcome is set by now, created job ids included; this names the ids
                # the journal lacks, so none is lost.
                raise failure
            self._note_journal_failure(exc_info[1])
        return suppress

    def _note_journal_failure(self, exc: object) -> None:
        failure = self._journal.error()
        if failure is not None and isinstance(exc, BaseException):
            exc.add_note(str(failure))

    async def _after_work(self, exc_type: type[BaseException] | None, *_: Any) -> bool:
        if exc_type is not None and self._cancel_remote:
            await self._cancel_running()
        return False

    def _close_streams(self) -> None:
        self._closed = True
        for queue in self._subscribers:
            queue.close()

    def _on_client_retry(self, event: RetryEvent) -> None:
        # The client resends a create refused with 429 by itself (after its Retry-After,
        # docs/api/client-rules.md#create-retries); the submitter hears of the 429 only
        # once those retries are spent. Every other create of the account must wait too,
        # from the first 429 on: across processes when the account state is shared.
        if (event.method != "POST" or not isinstance(event.cause, RateLimitError)
                or self._tg is None):
            return
        with contextlib.suppress(RuntimeError):  # the task group has ended: none of ours runs
            self._tg.start_soon(self._pause_creates, self._clock.now() + event.delay)

    async def _pause_creates(self, until: float) -> None:
        try:
            await self._account.pause_creates(until)
        except ViggleError as exc:
            # Best effort: the creating task still waits out its own retry; only the
            # others of a shared account miss the early pause (they see their own 429).
            logger.warning("could not share a create pause: %s", exc)

    def on_journal_busy(self, waited_s: float) -> None:
        """Report a journal store's wait for its lock (``waited_s`` seconds) as a
        ``JournalBusy`` event; pass it as a store's ``on_busy`` callback."""
        self._emit(JournalBusy(waited_s))

    async def _cancel_running(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(30):
            while (running := self._jobs.take_running()) is not None:
                key, job_id = running
                try:
                    await self.client.renders.cancel(job_id)
                    await self._journal.record_final(key, "cancelled", (),
                                                    "cancelled on the server")
                    self._jobs.cancelled_remotely(key)
                except ViggleError as exc:
                    self._jobs.cancelled_remotely(key, str(exc))
                self._emit(Failed(key, self._jobs.stopped(key, "render")))

    # --- events ----------------------------------------------------------------------

    def events(self) -> EventStream:
        """Every event from now on, until the supervisor closes (also when its block is
        cancelled: the iteration then ends after the last event, remote cancels included).
        Called after the block ended, it yields nothing."""
        queue = _EventQueue()
        if self._closed:
            queue.close()
        # Readers that left are dropped here rather than on every event.
        self._subscribers = [q for q in self._subscribers if not q.stopped]
        self._subscribers.append(queue)
        return EventStream(queue)

    def _emit(self, event: Event) -> None:
        for queue in self._subscribers:
            queue.put(event)

    # --- scheduling ------------------------------------------------------------------

    def release(self, handle: Handle) -> None:
        """Let ``handle``'s key be scheduled again, once its work has ended.

        Keys are unique within a supervisor: ``render``/``character``/``scene`` with a key
        already used raise ``ValueError``. A long-lived process that is handed the same
        work again (the ``worker`` command, given a row that ``bulk --enqueue`` re-queued)
        releases the ended handle first. The journal still decides what the new work does:
        a job it knows is resumed or reported, never created again (README, "Bulk
        rendering with the supervisor"). Raises ``ValueError`` while the work still runs
        (two works on one key would race), or for a handle already released (the key's
        newer work may be running)."""
        if self._keys.get(handle.key) is not handle:
            # An older handle of the key: releasing it again would free the key while
            # newer work on it runs (a third work would race the second).
            raise ValueError(f"this handle of key {handle.key!r} was already released; "
                             "release the key's latest handle")
        if not handle.done:
            raise ValueError(f"key {handle.key!r} is still being worked on")
        del self._keys[handle.key]
        self._jobs.forget(handle.key)
        self._stopped.pop(handle.key, None)

    def _start(self, handle: Handle, work: Callable[[], Awaitable[Outcome]]) -> None:
        if self._tg is None:
            raise RuntimeError("use the Supervisor inside 'async with'")
        if handle.key in self._keys:
            raise ValueError(f"key {handle.key!r} is already scheduled; keys must be unique")
        self._keys[handle.key] = handle
        self._emit(Queued(handle.key, handle.kind))
        self._tg.start_soon(self._run, handle, work)

    async def _run(self, handle: Handle, work: Callable[[], Awaitable[Outcome]]) -> None:
        """One piece of work, as its own task: sets ``handle`` and emits how it ended.

        A method rather than a closure per job: a closure's cells are objects the cyclic
        GC walks for as long as the job runs (issue 13: 10,000 at once)."""
        try:
            outcome = await work()
        except Exception as exc:
            # One piece of work never takes the whole block down (an exception group
            # out of ``async with``): its outcome says what broke, with any job id it got.
            logger.error("supervised %s %r failed unexpectedly", handle.kind, handle.key,
                         exc_info=True)
            outcome = Outcome(handle.key, handle.kind, "failed",
                              job_id=self._jobs.created_id(handle.key),
                              error=f"unexpected {type(exc).__name__}: {exc}")
        except BaseException:
            # Cancelled (or crashed): whoever awaits the handle still gets an answer,
            # the true one: a submitted job goes on at the API ("running", its id and
            # credits) unless cancel_remote reaches it, which __aexit__ tries first.
            if self._cancel_remote and self._jobs.is_running(handle.key):
                self._stopped[handle.key] = handle  # set after the remote cancel
            else:
                handle._set(self._jobs.stopped(handle.key, handle.kind))
            raise
        handle._set(outcome)
        self._emit(Completed(handle.key, outcome) if outcome.ok
                   else Failed(handle.key, outcome))

    def render(self, *, key: str, character: CharacterHandle | None = None,
               scene: SceneHandle | None = None, output: str | Path | None = None,
               mask_output: str | Path | None = None, estimated_seconds: float | None = None,
               **inputs: Unpack[RenderInputs]) -> RenderHandle:
        """Schedule a render; ``inputs`` as for ``client.renders.create``.

        ``character``/``scene`` wait for that handle and use its id; if it fails, so does
        this render. ``estimated_seconds`` prices a render whose video is not local.

        With ``reuse_assets``, a render of local ``ref_image`` + ``driving_video`` files is
        held until ``await sup.start()`` or the end of the block (awaiting its handle
        before then waits for ever): see ``start``.
        """
        handle = RenderHandle(key)
        # The runner and the reuse plan read inputs by name: a plain dict from here on.
        raw = cast(dict[str, Any], inputs)
        if (self._reuse is not None and character is None and scene is None
                and reusable_inputs(raw)):
            # Held until the reuse plan is made (start() or the end of the block).
            reuse = self._reuse
            work: list[Callable[[], Awaitable[Outcome]]] = []
            self._start(handle, lambda: work[0]())  # runs after this returns
            # Held only once _start accepted the key (a duplicate raised above).
            work.append(reuse.hold(handle, raw, output, mask_output, estimated_seconds))
            return handle
        deps: dict[str, Handle | None] = {"character_id": character, "scene_id": scene}
        self._start(handle, functools.partial(self._runner.render, key, raw, deps, output,
                                              mask_output, estimated_seconds))
        return handle

    def character(self, *, key: str, name: str, image: Any = None,
                  image_url: str | None = None) -> CharacterHandle:
        """Schedule a character (1 credit); the handle's ``value`` is the ready Character."""
        handle = CharacterHandle(key)
        chars = self.client.characters

        async def prepare() -> str:
            return fingerprint(await chars.prepare(name=name, image=image, image_url=image_url))

        self._start(handle, lambda: self._runner.asset(
            handle, 1, prepare,
            lambda hook: chars.create(name=name, image=image, image_url=image_url,
                                      before_last_bytes=hook),
            chars.get, chars.wait))
        return handle

    def scene(self, *, key: str, name: str | None = None, video: Any = None,
              video_url: str | None = None, template_id: str | None = None,
              background_mode: str | None = None, model: str | None = None) -> SceneHandle:
        """Schedule a scene (free): from ``video``/``video_url``, or a template import with
        ``template_id``. The handle's ``value`` is the ready Scene."""
        handle = SceneHandle(key)
        scenes = self.client.scenes
        if template_id is not None:
            if video is not None or video_url is not None or background_mode or model:
                raise ValueError("scene(): template_id imports a template; pass no video, "
                                 "video_url, background_mode or model with it")

            async def prepare() -> str:
                return request_fingerprint({"import": template_id, "name": name})

            def create(hook: Hook) -> Awaitable[Any]:
                return scenes.import_template(template_id, name, before_last_bytes=hook)
        else:
            if name is None:
                raise ValueError("scene(): name is required for a scene from a video")
            kw = dict(name=name, video=video, video_url=video_url,
                      background_mode=background_mode, model=model)

            async def prepare() -> str:
                return fingerprint(await scenes.prepare(**kw))

            def create(hook: Hook) -> Awaitable[Any]:
                return scenes.create(**kw, before_last_bytes=hook)

        self._start(handle, lambda: self._runner.asset(handle, 0, prepare, create, scenes.get,
                                                scenes.wait))
        return handle

    async def start(self) -> ReusePlan | None:
        """Make the reuse plan for the renders held so far and send them (``reuse_assets``).

        Hashes each file (SHA-256 of the bytes, never the name), plans with the rule (see
        ``ReuseRule``), schedules one scene per chosen driving video and one character per
        distinct image (journaled under keys derived from the content hash and the API
        key's fingerprint), and releases the held renders. The end of the ``async with``
        body calls it. Returns the plan, or None without ``reuse_assets``.
        """
        if self._reuse is None:
            return None
        if self._tg is None:
            raise RuntimeError("use the Supervisor inside 'async with'")
        return await self._reuse.start()

    @property
    def reuse_asset_outcomes(self) -> tuple[Outcome, ...]:
        """Outcomes of the scenes and characters ``reuse_assets`` made or found so far
        (``credits``: 1 per character created in this run); empty without reuse."""
        return self._reuse.asset_outcomes() if self._reuse is not None else ()

    async def plan_reuse(self) -> ReusePlan | None:
        """Both plans (on demand and with reuse) for the renders held so far: credits,
        upload bytes and creates; sends nothing. None without ``reuse_assets``."""
        if self._reuse is None:
            return None
        return await self._reuse.plan()

    async def estimate_reuse(self, renders: dict[str, dict[str, Any]]) -> ReusePlan:
        """Both plans for ``renders`` (key -> ``render`` inputs, ``estimated_seconds``
        included), with this supervisor's rule (``ReuseRule()`` when reuse is off); sends
        nothing and works outside ``async with``. Raises ``InvalidInputError`` on bad input,
        ``OSError`` when a file cannot be read."""
        return await estimate_reuse(self.client, renders, self._reuse_rule or ReuseRule())

    async def estimate(self, *, character: object = None, scene: object = None,
                       estimated_seconds: float | None = None,
                       **inputs: Unpack[RenderInputs]) -> Estimate:
        """Check a render's inputs and price it, sending nothing (a dry run).

        Takes what ``render`` takes; ``character``/``scene`` may be handles (or anything
        standing for one) not yet finished. Raises ``InvalidInputError`` on bad input.
        Works outside ``async with``.
        """
        if character is not None:
            inputs = {**inputs, "character_id": _PENDING}
        if scene is not None:
            inputs = {**inputs, "scene_id": _PENDING}
        prepared = await self.client.renders.prepare(**inputs)
        return Estimate(cost_of(prepared, estimated_seconds), prepared.fast, prepared.duration_s,
                        prepared.upload_bytes)


class _EventQueue:
    """One ``events()`` subscriber's buffer: unbounded, ended by ``close`` (no more events
    will come) or ``stop`` (the reader left: what comes is dropped, the buffer freed).

    Cheaper than an anyio memory stream (issue 13: about six events per render, 60,000 in
    a 10,000-job run): a put is an append, and the reader (``EventStream``) takes what is
    buffered without a loop round trip per event, waiting (on an Event made only then) when
    it is empty."""

    __slots__ = ("closed", "items", "stopped", "waiter")

    def __init__(self) -> None:
        self.items: deque[Event] = deque()
        self.waiter: anyio.Event | None = None
        self.closed = False
        self.stopped = False

    def put(self, event: Event) -> None:
        if self.closed or self.stopped:
            return
        self.items.append(event)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set()

    def close(self) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set()

    def stop(self) -> None:
        self.stopped = True
        self.items.clear()
        self.close()


class EventStream(AsyncIterator[Event]):
    """What ``Supervisor.events()`` returns: this reader's events, in order, ending after
    the supervisor's last event. ``await stream.aclose()`` stops receiving (later events
    are dropped, the buffer is freed), as does dropping the stream.

    An object rather than an async generator so that the reader leaving is seen however it
    leaves: ``aclose()``, or the stream dropped (``__del__``; a ``break`` out of
    ``async for sup.events()`` drops it at once on CPython), started or not. A generator's
    ``finally`` never runs for one that was never started, and a break alone does not
    close it. Every ``_BATCH`` events it still lets the loop run, so a consumer that never
    awaits cannot starve the work, and a cancelled consumer stops there at the latest."""

    __slots__ = ("_queue", "_since", "_started")

    _BATCH = 64

    def __init__(self, queue: _EventQueue) -> None:
        self._queue = queue
        self._since = 0
        self._started = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        queue = self._queue
        items = queue.items
        if not self._started:
            self._started = True
            await anyio.lowlevel.checkpoint()
        while True:
            if items:
                if self._since >= self._BATCH:
                    self._since = 0
                    await anyio.lowlevel.checkpoint()
                    continue
                self._since += 1
                return items.popleft()
            if queue.closed:
                raise StopAsyncIteration
            self._since = 0
            waiter = queue.waiter = anyio.Event()
            await waiter.wait()

    async def aclose(self) -> None:
        """Stop receiving: later events are dropped and the iteration ends."""
        self._queue.stop()

    def __del__(self) -> None:
        self._queue.stop()


def _reuse_rule(option: object) -> ReuseRule | None:
    if option is False:
        return None
    if option is True:
        return ReuseRule()
    if isinstance(option, ReuseRule):
        return option
    raise TypeError(f"reuse_assets must be True, False or a ReuseRule, not {option!r}")


def _ended_states(states: Collection[str]) -> frozenset[str]:
    wrong = sorted(set(states) - {"cancelled", "failed"})
    if wrong or isinstance(states, str):
        raise ValueError(f"resubmit_ended: {wrong or states!r} is not a set of 'cancelled' "
                         "and/or 'failed'; pass e.g. {'cancelled', 'failed'}")
    return frozenset(states)


def _is_journal(obj: object) -> bool:
    return all(callable(getattr(obj, name, None)) for name in
               ("get", "record_intent", "mark_sending", "record_submitted", "record_final"))


async def _open_journal(path: str | os.PathLike[str],
                        on_busy: Callable[[float], None]) -> Journal:
    """The SQLite journal at ``path``, through the journal module's ``open_journal`` (with
    ``on_busy`` when it takes one) where there is one, else ``SQLiteJournal.open``."""
    # Seam: the journal helper adds ``open_journal(path, *, on_busy=...)``; until it lands
    # this opens the store directly.
    opener = getattr(_journal_module, "open_journal", None)
    if opener is None:
        return await SQLiteJournal.open(path)
    takes_busy = "on_busy" in inspect.signature(opener).parameters
    store = opener(path, on_busy=on_busy) if takes_busy else opener(path)
    if inspect.isawaitable(store):
        store = await store
    return store  # type: ignore[no-any-return]


# Stands in for the id of a character or scene not created yet, in a dry run.
_PENDING = "pending-dry-run"
