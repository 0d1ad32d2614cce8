"""Bulk work: many renders, characters and scenes at once under shared limits.

One poll scheduler for every render; upload, active-job and create limits; a shared
fast-capacity gate (400 CS-UORC01-001: one probe at a time with capped full-jitter
backoff, then everyone goes); a shared pause on 429; a stop on 402; a credit guard;
and a journal so a rerun never submits a job twice (viggle-api.md §4, §5, §7).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ._backoff import full_jitter
from ._errors import (
    APIError,
    DownloadError,
    FastModeUnavailableError,
    InsufficientCreditsError,
    RateLimitError,
    TransportError,
    ViggleError,
)
from ._events import (
    Backoff,
    CharacterHandle,
    Completed,
    Downloaded,
    Estimate,
    Event,
    Failed,
    FastFallback,
    Handle,
    Outcome,
    Progress,
    Queued,
    RenderHandle,
    Submitted,
    Uploading,
)
from ._journal import Journal, JournalEntry
from ._models import RenderStatus
from ._resources import PreparedCreate
from ._scheduler import PollPolicy, PollScheduler, PollView

if TYPE_CHECKING:
    from ._client import ViggleClient

__all__ = ["FastFallbackPolicy", "Supervisor"]


@attrs.frozen
class FastFallbackPolicy:
    """When a fast render gives up on fast and is submitted standard instead.

    After ``after_attempts`` capacity rejections of that render, or ``after_seconds``
    since its first one; both None means never (keep waiting for capacity).
    """

    after_attempts: int | None = 5
    after_seconds: float | None = 300.0


class _Gate:
    """Fast-mode capacity, shared by every fast submission."""

    def __init__(self) -> None:
        self.open = True
        self.lock = anyio.Lock()
        self.failures = 0
        self.rejections = 0


def fingerprint(prepared: PreparedCreate, extra: str = "") -> str:
    """A stable digest of what a create would send (not the bytes of big files)."""
    h = hashlib.sha256(prepared.request.path.encode())
    for name, value in prepared.request.fields or ():
        h.update(f"\0{name}={value}".encode())
    for up in prepared.uploads:
        h.update(f"\0{up.field}:{up.filename}:{up.size}:{up.content_type}".encode())
    h.update(extra.encode())
    return h.hexdigest()[:32]


class Supervisor:
    """Runs bulk work inside ``async with Supervisor(client, ...) as sup:``.

    ``sup.render(...)`` / ``sup.character(...)`` schedule at once and return handles;
    leaving the block waits for everything. An exception or cancellation inside the
    block cancels local work; with ``cancel_remote=True`` submitted renders still
    running are cancelled on the server (refunded), best effort.
    """

    def __init__(
        self,
        client: ViggleClient,
        *,
        max_uploads: int = 4,
        max_polls: int = 8,
        max_active_jobs: int = 100,
        poll_rate: float = 20.0,
        journal: Journal | None = None,
        credit_budget: float | None = None,
        fast_fallback: FastFallbackPolicy = FastFallbackPolicy(),
        resubmit_ambiguous: bool = False,
        cancel_remote: bool = False,
        render_timeout: float | None = None,
        poll_policy: PollPolicy | None = None,
        capacity_backoff: tuple[float, float] = (2.0, 60.0),
        asset_poll_interval: float = 5.0,
        rand: Callable[[], float] = random.random,
    ):
        self.client = client
        self._clock = client.clock
        self._rand = rand
        self._journal = journal
        self._budget = credit_budget
        self._fallback = fast_fallback
        self._resubmit_ambiguous = resubmit_ambiguous
        self._cancel_remote = cancel_remote
        self._render_timeout = render_timeout
        self._capacity_backoff = capacity_backoff
        self._asset_poll = asset_poll_interval  # §4: characters and scenes every 5 s
        self._uploads = anyio.Semaphore(max_uploads)
        self._active = anyio.Semaphore(max_active_jobs)
        self._gate = _Gate()
        self._create_paused_until = 0.0
        self._stopped: str | None = None  # why new submissions stopped (402)
        self.credits_committed = 0
        self._subscribers: list[MemoryObjectSendStream[Event]] = []
        self._keys: set[str] = set()
        self._running_jobs: dict[str, str] = {}  # key -> job id, while polling
        self._scheduler: PollScheduler[RenderStatus] = PollScheduler(
            client.renders.get, _view, clock=self._clock, rand=rand, max_in_flight=max_polls,
            max_rate=poll_rate, policy=poll_policy)
        self._tg: TaskGroup | None = None

    # --- context ---------------------------------------------------------------------

    async def __aenter__(self) -> Supervisor:
        await self._scheduler.__aenter__()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._tg is not None
        try:
            if exc_info[0] is not None and self._cancel_remote:
                await self._cancel_running()
            try:
                return await self._tg.__aexit__(*exc_info)
            except BaseException:
                # Cancelled (or failed) while waiting for the work: the same as above.
                if self._cancel_remote:
                    await self._cancel_running()
                raise
        finally:
            await self._scheduler.__aexit__(None, None, None)
            for stream in self._subscribers:
                stream.close()

    async def _cancel_running(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(30):
            while self._running_jobs:
                key, job_id = self._running_jobs.popitem()
                try:
                    await self.client.renders.cancel(job_id)
                    self._emit(Failed(key, Outcome(key, "render", "cancelled", job_id=job_id,
                                                   status="cancelled",
                                                   error="cancelled on the server")))
                except ViggleError as exc:
                    self._emit(Failed(key, Outcome(key, "render", "failed", job_id=job_id,
                                                   error=f"remote cancel failed: {exc}")))

    # --- events ----------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """Every event from now on, until the supervisor closes."""
        send, receive = anyio.create_memory_object_stream[Event](float("inf"))
        self._subscribers.append(send)

        async def iterate() -> AsyncIterator[Event]:
            async with receive:
                async for event in receive:
                    yield event

        return iterate()

    def _emit(self, event: Event) -> None:
        for stream in self._subscribers:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                stream.send_nowait(event)

    # --- scheduling ------------------------------------------------------------------

    def _start(self, handle: Handle, work: Callable[[], Awaitable[Outcome]]) -> None:
        if self._tg is None:
            raise RuntimeError("use the Supervisor inside 'async with'")
        if handle.key in self._keys:
            raise ValueError(f"key {handle.key!r} is already scheduled; keys must be unique")
        self._keys.add(handle.key)
        self._emit(Queued(handle.key, handle.kind))

        async def run() -> None:
            try:
                outcome = await work()
            except BaseException:
                # Cancelled (or crashed): whoever awaits the handle still gets an answer.
                # The job may go on at the API unless cancel_remote reached it.
                handle._set(Outcome(handle.key, handle.kind, "cancelled",
                                    error="the supervisor stopped before this work finished"))
                raise
            handle._set(outcome)
            self._emit(Completed(handle.key, outcome) if outcome.ok
                       else Failed(handle.key, outcome))

        self._tg.start_soon(run)

    def render(self, *, key: str, character: CharacterHandle | None = None,
               output: str | Path | None = None, mask_output: str | Path | None = None,
               estimated_seconds: float | None = None, **inputs: Any) -> RenderHandle:
        """Schedule a render; ``inputs`` as for ``client.renders.create``.

        ``character`` waits for that handle's character and uses its id.
        ``estimated_seconds`` prices a render whose video is not local, for the budget.
        """
        handle = RenderHandle(key)
        self._start(handle, lambda: self._render(key, inputs, character, output, mask_output,
                                                 estimated_seconds))
        return handle

    def character(self, *, key: str, name: str, image: Any = None,
                  image_url: str | None = None) -> CharacterHandle:
        """Schedule a character (1 credit); the handle's ``value`` is the ready Character."""
        handle = CharacterHandle(key)
        self._start(handle, lambda: self._character(handle, name, image, image_url))
        return handle

    async def estimate(self, *, character: object = None, scene: object = None,
                       estimated_seconds: float | None = None, **inputs: Any) -> Estimate:
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
        return Estimate(_cost(prepared, estimated_seconds), prepared.fast, prepared.duration_s,
                        prepared.upload_bytes)

    # --- work ------------------------------------------------------------------------

    async def _render(self, key: str, inputs: dict[str, Any], character: Handle | None,
                      output: str | Path | None, mask_output: str | Path | None,
                      est_seconds: float | None) -> Outcome:
        def out(state: Any, **kw: Any) -> Outcome:
            return Outcome(key, "render", state, **kw)

        if character is not None:
            dep = await character
            if not dep.ok:
                return out("failed", error=f"character {character.key!r} failed: {dep.error}")
            inputs = {**inputs, "character_id": dep.asset_id}
        entry = await self._journal.get(key) if self._journal else None
        async with self._active:
            try:
                prepared = await self.client.renders.prepare(**inputs)
            except ViggleError as exc:
                return out("not_submitted", error=str(exc))
            fp = fingerprint(prepared)
            job_id: str | None = None
            attempts, fell_back, fast = 0, False, prepared.fast
            if entry is not None:
                resumed = self._resume(key, entry, fp)
                if isinstance(resumed, Outcome):
                    return resumed
                job_id = resumed
            cost = _cost(prepared, est_seconds)
            if job_id is None:
                refusal = self._refuse(prepared, cost)
                if refusal:
                    return out("not_submitted", error=refusal, credits=cost)
                self.credits_committed += cost or 0
                try:
                    job_id, attempts, fell_back, fast = await self._submit(key, prepared, fp,
                                                                           inputs)
                except _NotSent as ns:
                    self.credits_committed -= cost or 0
                    return out(ns.state, error=ns.reason, error_code=ns.code, credits=0,
                               attempts=ns.attempts)
            common = dict(job_id=job_id, credits=cost, attempts=attempts, fast=fast,
                          fallback_used=fell_back)
            final = await self._poll(key, job_id)
            if isinstance(final, str):
                return out("failed", error=final, **common)
            if not final.is_complete:
                if final.status != "complete":  # refunded by the API (§7)
                    self.credits_committed -= cost or 0
                await self._record_final(key, final.status, (), final.error_message)
                return out("cancelled" if final.status == "cancelled" else "failed",
                           status=final.status, error=final.error_message or final.error,
                           error_code=final.error_code, **common)
            try:
                paths = await self._download(key, final, output, mask_output)
            except DownloadError as exc:
                return out("failed", status=final.status, error=str(exc), **common)
            await self._record_final(key, "complete", paths, None)
            return out("complete", status="complete", outputs=paths, **common)

    def _resume(self, key: str, entry: JournalEntry, fp: str) -> Outcome | str | None:
        """What the journal says about ``key``: an outcome, a job id to poll, or None
        (submit it)."""
        if entry.fingerprint != fp:
            return Outcome(key, entry.kind, "not_submitted",
                           error="the journal has this key with different inputs; use a new key")
        if entry.state == "final":
            if entry.final_status != "complete":
                # Finished work is not redone silently: a failed job was refunded, and
                # trying again is the caller's call (use a new key).
                return Outcome(key, entry.kind, "failed", job_id=entry.job_id,
                               status=entry.final_status,
                               error=f"ended {entry.final_status} in an earlier run: "
                                     f"{entry.error or 'no reason recorded'}")
            if all(Path(p).exists() for p in entry.outputs):
                return Outcome(key, entry.kind, "skipped", job_id=entry.job_id,
                               status=entry.final_status,
                               outputs=tuple(Path(p) for p in entry.outputs))
            return entry.job_id  # outputs gone: poll the known job and download again
        if entry.state == "submitted":
            return entry.job_id
        if entry.state == "sending" and not self._resubmit_ambiguous:
            return Outcome(key, entry.kind, "ambiguous",
                           error="an earlier run may have created this job (its request was "
                                 "sent but no answer was recorded); pass "
                                 "resubmit_ambiguous=True to submit it again")
        return None  # "intent" never reached the API: safe to submit

    def _refuse(self, prepared: PreparedCreate, cost: int | None) -> str | None:
        if self._stopped:
            return self._stopped
        if self._budget is not None:
            if cost is None:
                return ("credit_budget is set but this render's cost cannot be read locally "
                        "(URL or scene input); pass estimated_seconds=")
            if self.credits_committed + cost > self._budget:
                return (f"over credit_budget: {self.credits_committed} committed + {cost} "
                        f"> {self._budget:g}")
        return None

    async def _submit(self, key: str, prepared: PreparedCreate, fp: str,
                      inputs: dict[str, Any]) -> tuple[str, int, bool, bool]:
        """Create the job; returns (job id, create requests sent, fell back, fast)."""
        attempts, rejections, fell_back = 0, 0, False
        first_rejection: float | None = None
        fast = prepared.fast

        async def mark_sending() -> None:
            if self._journal:
                await self._journal.mark_sending(key)

        while True:
            if self._stopped:
                raise _NotSent("not_submitted", self._stopped, attempts=attempts)
            await self._clock.sleep_until(self._create_paused_until)
            probing = fast and not self._gate.open
            if probing:
                await self._gate.lock.acquire()
                if self._gate.open:  # another probe succeeded while we queued
                    self._gate.lock.release()
                    probing = False
                else:
                    delay = full_jitter(self._gate.failures, base=self._capacity_backoff[0],
                                        cap=self._capacity_backoff[1], rand=self._rand)
                    self._emit(Backoff(key, "capacity", delay))
                    await self._clock.sleep_until(self._clock.now() + delay)
            try:
                if self._journal:
                    # Every attempt starts as an intent: the previous one was answered (429,
                    # capacity) or never connected, so no job exists. replace=True because
                    # _resume already decided; the journal still refuses a key with a job id.
                    await self._journal.record_intent(key, "render", fp, replace=True)
                async with self._uploads:
                    if self._stopped:  # a 402 arrived while we queued for a slot
                        raise _NotSent("not_submitted", self._stopped, attempts=attempts)
                    if fast and not probing and not self._gate.open:
                        continue  # capacity ran out while we queued for a slot: probe first
                    attempts += 1
                    job = await self.client.renders.submit(
                        prepared, before_last_bytes=mark_sending,
                        on_upload=lambda s, t: self._emit(Uploading(key, s, t)))
                if fast:
                    self._gate.open, self._gate.failures = True, 0
                if self._journal:
                    await self._journal.record_submitted(key, job.job_id)
                self._emit(Submitted(key, job.job_id, attempts, fast))
                return job.job_id, attempts, fell_back, fast
            except FastModeUnavailableError:
                self._gate.open = False
                self._gate.failures += 1
                self._gate.rejections += 1
                rejections += 1
                now = self._clock.now()
                first_rejection = first_rejection if first_rejection is not None else now
                policy = self._fallback
                if ((policy.after_attempts is not None and rejections >= policy.after_attempts)
                        or (policy.after_seconds is not None
                            and now - first_rejection >= policy.after_seconds)):
                    self._emit(FastFallback(key, rejections))
                    prepared = await self.client.renders.prepare(**{**inputs, "fast": False})
                    fast, fell_back = False, True
            except RateLimitError as exc:
                delay = exc.retry_after if exc.retry_after is not None else 5.0
                self._create_paused_until = max(self._create_paused_until,
                                                self._clock.now() + delay)
                self._emit(Backoff(key, "rate_limit", delay))
            except InsufficientCreditsError as exc:
                self._stopped = f"stopped after 402 ({exc.error_code}): {exc.message}"
                raise _NotSent("not_submitted", self._stopped, exc.error_code,
                               attempts) from None
            except TransportError as exc:
                if exc.may_have_reached_server:
                    raise _NotSent("ambiguous", str(exc), attempts=attempts) from None
                delay = full_jitter(attempts, base=1.0, cap=30.0, rand=self._rand)
                self._emit(Backoff(key, "connect", delay))
                await self._clock.sleep_until(self._clock.now() + delay)
            except APIError as exc:
                raise _NotSent("failed", str(exc), exc.error_code, attempts) from None
            finally:
                if probing:
                    self._gate.lock.release()

    async def _poll(self, key: str, job_id: str) -> RenderStatus | str:
        """Wait for a terminal status through the shared scheduler; a str is an error."""
        deadline = (None if self._render_timeout is None
                    else self._clock.now() + self._render_timeout)

        def update(status: RenderStatus) -> None:
            self._emit(Progress(key, job_id, status.status, status.progress_pct,
                                status.checkpoint))

        self._running_jobs[key] = job_id
        # Not in a finally: a cancelled poll stays listed, so __aexit__ can cancel the job.
        result = await self._poll_loop(job_id, deadline, update)
        self._running_jobs.pop(key, None)
        return result

    async def _poll_loop(self, job_id: str, deadline: float | None,
                         update: Callable[[RenderStatus], None]) -> RenderStatus | str:
        while True:
            try:
                return await self._scheduler.wait(job_id, deadline=deadline, on_update=update)
            except RateLimitError as exc:
                self._scheduler.pause_until(self._clock.now() + (exc.retry_after or 5.0))
            except (TransportError, APIError) as exc:
                if not _transient(exc):
                    return f"status polling failed: {exc}"
            except Exception as exc:  # the scheduler's deadline
                return f"gave up waiting: {exc}"

    async def _download(self, key: str, final: RenderStatus, output: str | Path | None,
                        mask_output: str | Path | None) -> tuple[Path, ...]:
        paths = []
        for url, dest in ((final.cdn_url, output), (final.mask_cdn_url, mask_output)):
            if url is None or dest is None:
                continue
            for attempt in range(3):
                try:
                    path = await self.client.download(url, dest)
                    break
                except DownloadError:
                    if attempt == 2:
                        raise
            self._emit(Downloaded(key, path, path.stat().st_size))
            paths.append(path)
        return tuple(paths)

    async def _record_final(self, key: str, status: str, outputs: tuple[Path, ...],
                            error: str | None) -> None:
        if self._journal:
            await self._journal.record_final(key, status, [str(p) for p in outputs], error)

    async def _character(self, handle: CharacterHandle, name: str, image: Any,
                         image_url: str | None) -> Outcome:
        key = handle.key
        try:
            async with self._active:
                if self._stopped:
                    return Outcome(key, "character", "not_submitted", error=self._stopped)
                async with self._uploads:
                    created = await self.client.characters.create(name=name, image=image,
                                                                  image_url=image_url)
                self.credits_committed += 1  # §7: a character costs 1 credit
                ready = await self.client.characters.wait(created.id,
                                                          poll_interval=self._asset_poll)
        except ViggleError as exc:
            code = getattr(exc, "error_code", None)
            return Outcome(key, "character", "failed", error=str(exc), error_code=code)
        handle.value = ready
        return Outcome(key, "character", "complete", asset_id=ready.id, status=ready.status,
                       credits=1, attempts=1)


# Stands in for the id of a character or scene not created yet, in a dry run.
_PENDING = "pending-dry-run"


def _cost(prepared: PreparedCreate, est_seconds: float | None) -> int | None:
    """Credits: ceil(seconds), x2 for fast (§7); from the local video or the caller's
    estimate."""
    if prepared.estimated_credits is not None:
        return prepared.estimated_credits
    if est_seconds is None:
        return None
    return math.ceil(est_seconds) * (2 if prepared.fast else 1)


class _NotSent(Exception):
    def __init__(self, state: Any, reason: str, code: str | None = None, attempts: int = 0):
        self.state, self.reason, self.code, self.attempts = state, reason, code, attempts


def _transient(exc: Exception) -> bool:
    if isinstance(exc, TransportError):
        return True
    return isinstance(exc, APIError) and exc.status >= 500


def _view(status: RenderStatus) -> PollView:
    return PollView(terminal=status.is_terminal, progress_pct=status.progress_pct,
                    fingerprint=(status.status, status.checkpoint, status.progress_pct))
