"""How one piece of supervised work runs: resume from the journal, create through the
shared ``Submitter``, poll through the shared scheduler, download, record the end.

The flows take an explicit ``RunContext``: the shared pieces of one supervisor run, each with
one owner (the account state, the journal, the scheduler, the submitter, the job registry).
``Supervisor`` builds the context and owns the lifecycle; ``Runner`` holds no shared state of
its own beyond a per-run cache of scene lengths.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from ._account import AccountState
from ._errors import (
    APIError,
    AssetFailedError,
    DownloadError,
    InvalidInputError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    TransportError,
    ViggleError,
    WaitTimeoutError,
)
from ._events import (
    Backoff,
    Downloaded,
    Downloading,
    Event,
    Handle,
    Outcome,
    Progress,
    WorkKind,
)
from ._journal import JournalEntry, JournalError
from ._models import RenderStatus, Scene, Segment
from ._protocol import Hook
from ._resources import PreparedCreate
from ._run_journal import RunJournal
from ._scheduler import PollDeadlineExceeded, PollScheduler, PollView
from ._submitter import NotSent, Slot, Submitter, fingerprint

if TYPE_CHECKING:
    from ._client import ViggleClient

__all__ = ["Hook", "JobRegistry", "RunContext", "Runner", "cost_of", "poll_view"]


class JobRegistry:
    """The job ids of one run: every id a create returned, and the renders still running
    (created, not final), which ``cancel_remote`` cancels. The only writer of both.

    It also decides what a render stopped by cancellation truly is (``stopped``): still
    ``running`` on the server with its id and credits, ``cancelled`` on the server, or
    ``complete`` but not downloaded."""

    def __init__(self) -> None:
        self._created: dict[str, str] = {}  # key -> job or asset id
        self._running: dict[str, str] = {}  # key -> render job id
        self._details: dict[str, dict[str, Any]] = {}  # key -> Outcome fields of its job
        self._ended: dict[str, str] = {}  # key -> final status seen (or set by a cancel)
        self._remote: dict[str, str] = {}  # key -> why a remote cancel failed

    def created(self, key: str, kind: WorkKind, ident: str) -> None:
        self._created[key] = ident
        if kind == "render":
            self._running[key] = ident

    def polling(self, key: str, job_id: str, **details: Any) -> None:
        """``key``'s job is being waited for (a resumed job is running too); ``details``
        are its Outcome fields (credits, attempts, fast, fallback_used)."""
        self._created.setdefault(key, job_id)
        self._running[key] = job_id
        self._details[key] = details

    def priced(self, key: str, credits: int | None) -> None:
        """The credits ``key``'s create commits, before it is sent."""
        self._details[key] = {"credits": credits}

    def finished(self, key: str, status: str | None = None) -> None:
        self._running.pop(key, None)
        if status is not None:
            self._ended[key] = status

    def forget(self, key: str) -> None:
        """Drop everything known of ``key``'s ended work, before it is scheduled again."""
        for table in (self._created, self._running, self._details, self._ended, self._remote):
            table.pop(key, None)

    def cancelled_remotely(self, key: str, error: str | None = None) -> None:
        """After a remote cancel: done (``error`` None), or it failed and the job runs on."""
        if error is None:
            self._ended[key] = "cancelled"
        else:
            self._remote[key] = error

    def created_id(self, key: str) -> str | None:
        return self._created.get(key)

    def is_running(self, key: str) -> bool:
        return key in self._running

    def take_running(self) -> tuple[str, str] | None:
        """Remove and return one running (key, job id), or None."""
        return self._running.popitem() if self._running else None

    def stopped(self, key: str, kind: WorkKind) -> Outcome:
        """The truthful outcome of ``key``'s work, stopped before it finished."""
        job_id = self._created.get(key) if kind == "render" else None
        if job_id is None:
            return Outcome(key, kind, "cancelled", asset_id=self._created.get(key),
                           error="the supervisor stopped before this work finished")
        details = self._details.get(key, {})
        ended = self._ended.get(key)
        if ended == "cancelled":
            return Outcome(key, kind, "cancelled", job_id=job_id, status="cancelled",
                           error="cancelled on the server", **{**details, "credits": 0})
        if ended == "complete":
            # Finished and paid for; stopped while its output was being fetched.
            return Outcome(key, kind, "complete", job_id=job_id, status="complete",
                           downloaded=False, **details,
                           download_error="the run stopped before the download finished")
        if ended is not None:
            return Outcome(key, kind, "failed", job_id=job_id, status=ended, **details,
                           error=f"ended {ended}")
        why = self._remote.get(key)
        return Outcome(key, kind, "running", job_id=job_id, **details,
                       error=f"remote cancel failed: {why}; still running on the server"
                       if why else "still running on the server: the run was stopped")


@attrs.frozen
class RunContext:
    """The shared pieces one run's flows work with; built by ``Supervisor``."""

    client: ViggleClient
    account: AccountState
    journal: RunJournal
    scheduler: PollScheduler[RenderStatus]
    submitter: Submitter
    jobs: JobRegistry
    emit: Callable[[Event], None]
    active: anyio.Semaphore  # max_active_jobs
    rand: Callable[[], float]
    resubmit_ambiguous: bool = False
    resubmit_ended: frozenset[str] = frozenset()  # "cancelled", "failed": submit again
    render_timeout: float | None = None  # seconds
    asset_poll: float = 5.0  # seconds between asset polls (docs/api/lifecycles.md#polling)


class Runner:
    """The per-item flows (render, character or scene) of one run, over ``ctx``."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self._clock = ctx.client.clock
        self._account = ctx.account
        self._journal = ctx.journal
        self._scheduler = ctx.scheduler
        self._sub = ctx.submitter
        self._jobs = ctx.jobs
        self._emit = ctx.emit
        self._active = Slot(ctx.active)  # one for every job: it keeps no per-use state
        self._rand = ctx.rand
        self._scene_seconds: dict[str, float | None] = {}  # scene id -> length, asked once
        self._scene_locks: dict[str, anyio.Lock] = {}

    # --- renders ---------------------------------------------------------------------

    async def render(self, key: str, inputs: dict[str, Any], deps: dict[str, Handle | None],
                      output: str | Path | None, mask_output: str | Path | None,
                      est_seconds: float | None) -> Outcome:
        for field, dep in deps.items():
            if dep is not None:
                done = await dep
                if not done.ok:
                    return _render_outcome(key, "failed",
                                           error=f"{dep.kind} {dep.key!r} failed: {done.error}")
                inputs = {**inputs, field: done.asset_id}
                if isinstance(dep.value, Scene) and dep.value.duration_seconds is not None:
                    self._scene_seconds.setdefault(dep.value.id, dep.value.duration_seconds)
        entry = None
        if self._journal.journal is not None:  # no journal: no coroutine to run (issue 13)
            try:
                entry = await self._journal.get(key)
            except JournalError as exc:
                return _render_outcome(key, "not_submitted", error=f"not sent: {exc}")
        async with self._active:
            try:
                prepared = await self.client.renders.prepare(**inputs)
            except ViggleError as exc:
                return _render_outcome(key, "not_submitted", error=str(exc))
            fp = fingerprint(prepared)
            job_id: str | None = None
            attempts, fell_back, fast = 0, False, prepared.fast
            if entry is not None:
                resumed = self._resume(key, "render", entry, fp)
                if isinstance(resumed, Outcome):
                    return resumed
                job_id = resumed
            folders = (None if output is None and mask_output is None
                       else await _ready_folders(output=output, mask_output=mask_output))
            if folders is not None and job_id is None:
                # before anything is paid for
                return _render_outcome(key, "not_submitted", error=folders)
            if (est_seconds is None and prepared.estimated_credits is None
                    and isinstance(inputs.get("scene_id"), str)
                    and inputs.get("driving_video_url") is None):
                # A scene render is as long as its scene (docs/api/assets.md#get-scene
                # duration_seconds, docs/api/credits.md#costs).
                scene_id = inputs["scene_id"]
                est_seconds = (self._scene_seconds[scene_id] if scene_id in self._scene_seconds
                               else await self._scene_length(scene_id))
            cost = cost_of(prepared, est_seconds)
            if job_id is None:
                refusal = await self._account.reserve(cost, owner=key)
                if refusal:
                    return _render_outcome(key, "not_submitted", error=refusal, credits=cost)
                self._jobs.priced(key, cost)
                try:
                    sub = await self._sub.render(key, prepared, fp, inputs)
                except NotSent as ns:
                    if ns.state == "ambiguous":
                        # The job may exist and be billed: its credits stay committed.
                        return _render_outcome(key, ns.state, error=ns.reason,
                                               error_code=ns.code, credits=cost,
                                               attempts=ns.attempts)
                    await self._account.refund(cost or 0, owner=key)
                    return _render_outcome(key, ns.state, error=ns.reason, error_code=ns.code,
                                           credits=0, attempts=ns.attempts,
                                           error_type=ns.error_type)
                job_id, attempts, fell_back, fast = (sub.job_id, sub.attempts, sub.fell_back,
                                                     sub.fast)
                if fell_back and cost is not None:
                    # Submitted standard after all: half the fast price (docs/api/credits.md#costs).
                    cost = await self._account.settle_fallback(cost, owner=key)
            details = dict(credits=cost, attempts=attempts, fast=fast, fallback_used=fell_back)
            # Render time grows with the video's length, and fast renders run at twice the
            # speed (docs/api/renders.md#request-fields): the scheduler's hint.
            hint = prepared.duration_s if prepared.duration_s is not None else est_seconds
            if hint is not None and fast:
                hint /= 2
            # Not needed while the job renders: the create (its request and fields) is not
            # kept alive through the wait, in every job at once (issue 13: GC walks them).
            del prepared
            final = await self._poll(key, job_id, details, hint)
            common = dict(job_id=job_id, **details)
            if isinstance(final, _TimedOut):
                # The API has no deadline: the job renders on and is charged
                # (docs/api/credits.md#costs); the
                # journal keeps it at "submitted", so a rerun resumes it.
                return _render_outcome(key, "timed_out", error=str(final), **common)
            if isinstance(final, str):
                return _render_outcome(key, "failed", error=final, **common)
            if not final.is_complete:
                if final.status != "complete":  # refunded by the API (docs/api/credits.md#costs)
                    await self._account.refund(cost or 0, owner=key)
                await self._record_final(key, final.status, (), final.error_message)
                return _render_outcome(key,
                                       "cancelled" if final.status == "cancelled" else "failed",
                                       status=final.status,
                                       error=final.error_message or final.error,
                                       error_code=final.error_code, **common)
            paths, not_fetched = await self._download(key, final, output, mask_output)
            if not_fetched is not None:
                # Paid for and finished: never "failed". The journal keeps the job at
                # "submitted", so a rerun polls it and downloads again.
                return _render_outcome(key, "complete", status="complete", outputs=paths,
                                       downloaded=False, download_error=not_fetched, **common)
            await self._record_final(key, "complete", paths, None)
            # Each path was written by ``client.download``, which verifies the body (length,
            # resumed ranges) before moving it into place; none asked for: nothing on disk.
            return _render_outcome(key, "complete", status="complete", outputs=paths,
                                   downloaded=bool(paths), **common)

    def _resume(self, key: str, kind: WorkKind, entry: JournalEntry,
                fp: str) -> Outcome | str | None:
        """What the journal says about ``key``: an outcome, a job or asset id to resume,
        or None (submit it)."""
        if entry.fingerprint != fp:
            return Outcome(key, kind, "not_submitted",
                           error="the journal has this key with different inputs; use a new key")
        if entry.state == "final":
            ended = "cancelled" if entry.final_status == "cancelled" else "failed"
            if (entry.final_status not in ("complete", "ready")
                    and ended in self.ctx.resubmit_ended):
                # Asked for: a new create, which replaces the ended entry in the journal.
                return None
            if entry.final_status not in ("complete", "ready"):
                # Finished work is not redone silently: a failed job was refunded, and
                # trying again is the caller's call (use a new key).
                return Outcome(key, kind, "failed", job_id=entry.job_id,
                               status=entry.final_status,
                               error=f"ended {entry.final_status} in an earlier run: "
                                     f"{entry.error or 'no reason recorded'} (to submit it "
                                     f"again, and pay again: resubmit_ended={{{ended!r}}})")
            if entry.kind == "render" and all(Path(p).exists() for p in entry.outputs):
                # The journal records outputs only once downloaded and verified.
                return Outcome(key, kind, "skipped", job_id=entry.job_id,
                               status=entry.final_status,
                               outputs=tuple(Path(p) for p in entry.outputs),
                               downloaded=bool(entry.outputs))
            return entry.job_id  # outputs gone (or an asset to look up): resume it
        if entry.state == "submitted":
            return entry.job_id
        if entry.state == "sending" and not self.ctx.resubmit_ambiguous:
            return Outcome(key, kind, "ambiguous",
                           error="an earlier run may have created this (its request was "
                                 "sent but no answer was recorded); check your Viggle "
                                 "account, and to submit it again pass resubmit_ambiguous=True "
                                 "(CLI: --resubmit-ambiguous)")
        return None  # "intent" never reached the API: safe to submit

    async def _scene_length(self, scene_id: str) -> float | None:
        """The scene's ``duration_seconds`` (Get Scene, docs/api/assets.md#get-scene), asked once
        per scene; None
        when the API does not say or cannot be asked (then the render is not priced)."""
        lock = self._scene_locks.get(scene_id)
        if lock is None:
            lock = self._scene_locks[scene_id] = anyio.Lock()
        async with lock:
            if scene_id not in self._scene_seconds:
                try:
                    scene = await self.client.scenes.get(scene_id)
                except (APIError, TransportError, ResponseFormatError):
                    return None  # not cached: the next render of this scene asks again
                self._scene_seconds[scene_id] = scene.duration_seconds
            return self._scene_seconds[scene_id]

    async def _poll(self, key: str, job_id: str, details: dict[str, Any],
                    hint: float | None = None) -> RenderStatus | str:
        """Wait for a terminal status through the shared scheduler; a str is an error
        (``_TimedOut`` when ``render_timeout`` passed). ``hint``: the render's expected
        length in video seconds (``PollScheduler.wait(expected_seconds=)``)."""
        timeout = self.ctx.render_timeout
        deadline = None if timeout is None else self._clock.now() + timeout

        # A partial, not a closure: it lives as long as the job is polled, and a closure's
        # cells are three more objects per job for the cyclic GC to walk (issue 13).
        update = functools.partial(self._update, key, job_id)
        self._jobs.polling(key, job_id, **details)
        # Not in a finally: a cancelled poll stays listed, so __aexit__ can cancel the job.
        result = await self._poll_loop(job_id, deadline, update, hint)
        self._jobs.finished(key, None if isinstance(result, str) else result.status)
        return result

    def _update(self, key: str, job_id: str, status: RenderStatus) -> None:
        self._emit(Progress(key, job_id, status.status, status.progress_pct, status.checkpoint))

    async def _poll_loop(self, job_id: str, deadline: float | None,
                         update: Callable[[RenderStatus], None],
                         hint: float | None = None) -> RenderStatus | str:
        """Poll until terminal; a str says why we stopped waiting (the job may go on)."""
        unreadable = 0
        while True:
            try:
                # A wait restarted after an error keeps the hint; what the model learned
                # from the job stays in the scheduler's shared model.
                return await self._scheduler.wait(job_id, deadline=deadline, on_update=update,
                                                  expected_seconds=hint)
            except PollDeadlineExceeded as exc:
                return _TimedOut(f"still rendering after render_timeout: {exc}")
            except (APIError, TransportError) as exc:
                pause = _pause_of(exc)
                if pause is not None:
                    # 429, or a 5xx with Retry-After (a 503 under load): the API asks every
                    # client to wait, so every poll of this supervisor waits
                    # (docs/api/conventions.md#http-statuses, docs/api/lifecycles.md#polling).
                    await self._account.pause_polls(self._clock.now() + pause)
                    self._scheduler.pause_until(await self._account.polls_paused_until())
                elif not _transient(exc):
                    return f"status polling failed: {exc}"
            except ResponseFormatError as exc:
                # A status we cannot read (e.g. "complete" with no cdn_url yet) is not an
                # end: the job exists and is paid for. Poll again, a bounded number of times.
                unreadable += 1
                if unreadable >= _MAX_UNREADABLE:
                    return f"status unreadable {unreadable} times in a row: {exc}"

    async def _download(self, key: str, final: RenderStatus, output: str | Path | None,
                        mask_output: str | Path | None
                        ) -> tuple[tuple[Path, ...], str | None]:
        """Fetch the outputs asked for; the paths written and, if one could not be fetched,
        why (else None).

        One ``client.download`` per output: it backs off on CDN hiccups, resumes dropped
        bodies, and after a 403/404/410 (an expired signed URL) calls ``refresh``, which asks
        the API for the job again: its status carries freshly signed URLs
        (docs/api/renders.md#status-fields)."""
        paths: list[Path] = []
        status = final
        for which, dest in (("cdn_url", output), ("mask_cdn_url", mask_output)):
            url = getattr(status, which)
            if dest is None or url is None:
                continue

            async def refresh(which: str = which, last: str = url) -> str:
                nonlocal status
                self._emit(Backoff(key, "download", 0.0))
                status = await self._refresh(final.job_id, status)
                fresh: str | None = getattr(status, which)
                return fresh or last

            try:
                path = await self.client.download(url, dest, on_progress=self._progress(key, dest),
                                                  refresh=refresh, job_id=final.job_id)
            except InvalidInputError as exc:  # the destination itself: retrying is futile
                return tuple(paths), f"{which}: {exc}"
            except DownloadError as exc:
                return tuple(paths), f"{which}: {exc}"
            self._emit(Downloaded(key, path, path.stat().st_size))
            paths.append(path)
        return tuple(paths), None

    async def _refresh(self, job_id: str, status: RenderStatus) -> RenderStatus:
        """The job's current status, for fresh output URLs; ``status`` if none comes."""
        try:
            fresh = await self.client.renders.get(job_id)
        except (APIError, TransportError, ResponseFormatError):
            return status  # retry the old URL; the next try asks again
        return fresh if fresh.is_complete else status

    def _progress(self, key: str, dest: str | Path) -> Callable[[int, int | None], None]:
        path = Path(dest)
        return lambda received, total: self._emit(Downloading(key, path, received, total))

    async def _record_final(self, key: str, status: str, outputs: tuple[Path, ...],
                            error: str | None) -> None:
        if self._journal.journal is not None:
            await self._journal.record_final(key, status, [str(p) for p in outputs], error)

    # --- characters and scenes -------------------------------------------------------

    async def asset(self, handle: Handle, cost: int, prepare: Callable[[], Awaitable[str]],
                     create: Callable[[Hook], Awaitable[Any]],
                     get: Callable[[str], Awaitable[Any]],
                     wait: Callable[..., Awaitable[Any]]) -> Outcome:
        """Create (or, from the journal, find) a character or scene and wait until ready."""
        key, kind = handle.key, handle.kind
        try:
            entry = await self._journal.get(key)
        except JournalError as exc:
            return Outcome(key, kind, "not_submitted", error=f"not sent: {exc}")
        attempts = 0
        segments: tuple[Segment, ...] = _segments_from(entry.outputs) if entry else ()
        async with self._active:
            try:
                fp = await prepare()
            except ViggleError as exc:
                return Outcome(key, kind, "not_submitted", error=str(exc))
            asset_id = None
            if entry is not None:
                resumed = self._resume(key, kind, entry, fp)
                if isinstance(resumed, Outcome):
                    return resumed
                asset_id = resumed
            try:
                if asset_id is None:
                    refusal = await self._account.reserve(cost, owner=key)
                    if refusal:
                        return Outcome(key, kind, "not_submitted", error=refusal)
                    try:
                        created, attempts = await self._sub.asset(key, kind, fp, create,
                                                                  lambda a: str(a.id))
                    except NotSent as ns:
                        if ns.state != "ambiguous":  # else it may exist and be billed
                            await self._account.refund(cost, owner=key)
                        return Outcome(key, kind, ns.state, error=ns.reason,
                                       error_code=ns.code, attempts=ns.attempts,
                                       error_type=ns.error_type)
                    asset_id = created.id
                    segments = getattr(created, "segments", ())
                elif entry is not None and entry.state == "final":
                    # Finished earlier: still there?
                    handle.value = _with_segments(await get(asset_id), segments)
                    return Outcome(key, kind, "skipped", asset_id=asset_id,
                                   status=handle.value.status)
                ready = _with_segments(await wait(asset_id, poll_interval=self.ctx.asset_poll),
                                       segments)
            except NotFoundError as exc:
                return Outcome(key, kind, "failed", asset_id=asset_id, error_code=exc.error_code,
                               error=f"{kind} {asset_id} is gone: {exc}; use a new key")
            except AssetFailedError as exc:  # the API says it failed: final
                await self._record_final(key, "failed", (), str(exc))
                return Outcome(key, kind, "failed", asset_id=asset_id, error=str(exc),
                               error_code=getattr(exc.asset, "error_code", None),
                               attempts=attempts)
            except (APIError, TransportError, ResponseFormatError, WaitTimeoutError) as exc:
                # Only waiting failed: the asset exists (and a character is paid for), so the
                # journal keeps its id and a rerun resumes it instead of paying again.
                return Outcome(key, kind, "failed", asset_id=asset_id, attempts=attempts,
                               error=f"waiting for {kind} {asset_id} failed (a rerun "
                                     f"resumes it): {exc}",
                               error_code=getattr(exc, "error_code", None))
        await self._journal.record_final(key, ready.status, _segment_outputs(segments))
        handle.value = ready
        return Outcome(key, kind, "complete", asset_id=ready.id, status=ready.status,
                       credits=cost, attempts=attempts)


# Get Scene does not return a template's segments (docs/api/assets.md#get-scene): they come only
# with the import
# answer, so the journal keeps them, as the outputs of a finished scene.
_SEGMENT = "segment:"


def _render_outcome(key: str, state: Any, **kw: Any) -> Outcome:
    # A module function rather than a closure over ``key`` in every render (a closure and
    # its cell live as long as the job: objects for the cyclic GC, issue 13).
    return Outcome(key, "render", state, **kw)


def _segment_outputs(segments: tuple[Segment, ...]) -> list[str]:
    return [f"{_SEGMENT}{s.uuid}:{s.type or ''}" for s in segments]


def _segments_from(outputs: tuple[str, ...]) -> tuple[Segment, ...]:
    found = []
    for item in outputs:
        if item.startswith(_SEGMENT):
            uuid, _, kind = item[len(_SEGMENT):].rpartition(":")
            found.append(Segment(uuid, kind or None))
    return tuple(found)


def _with_segments(asset: Any, segments: tuple[Segment, ...]) -> Any:
    return asset.with_segments(segments) if isinstance(asset, Scene) else asset


def cost_of(prepared: PreparedCreate, est_seconds: float | None) -> int | None:
    """Credits: ceil(seconds), x2 for fast (docs/api/credits.md#costs); from the local video or the
    caller's
    estimate."""
    if prepared.estimated_credits is not None:
        return prepared.estimated_credits
    if est_seconds is None:
        return None
    return math.ceil(est_seconds) * (2 if prepared.fast else 1)


async def _ready_folders(**dests: str | Path | None) -> str | None:
    """Create the folders the outputs go to (as the CLI does); why not, or None."""
    for field, dest in dests.items():
        if dest is None:
            continue
        path = Path(dest)
        try:
            if await anyio.to_thread.run_sync(path.is_dir):
                return f"{field}: {str(path)!r} is a directory. Fix: pass a file path"
            await anyio.to_thread.run_sync(functools.partial(
                path.parent.mkdir, parents=True, exist_ok=True))
        except OSError as exc:
            return (f"{field}: cannot create the folder {str(path.parent)!r} "
                    f"({exc.strerror or exc}). Fix: pass an output path in a writable folder")
    return None


class _TimedOut(str):
    """Why a wait stopped at ``render_timeout`` (the job goes on at the API)."""

    __slots__ = ()


# Unreadable status answers in a row before a job's wait gives up (it stays resumable).
_MAX_UNREADABLE = 10


def _pause_of(exc: APIError | TransportError) -> float | None:
    """Seconds the API asked every client to wait, or None: a 429 (5 s when it gave no
    Retry-After) or a 5xx that carries a Retry-After."""
    if isinstance(exc, RateLimitError):
        return exc.retry_after if exc.retry_after is not None else 5.0
    if isinstance(exc, APIError) and exc.status >= 500:
        # ``retry_after`` on 5xx errors comes with the request path's parsing of the header.
        retry_after = getattr(exc, "retry_after", None)
        return float(retry_after) if isinstance(retry_after, int | float) else None
    return None


def _transient(exc: Exception) -> bool:
    if isinstance(exc, TransportError):
        return True
    return isinstance(exc, APIError) and exc.status >= 500


def poll_view(status: RenderStatus) -> PollView:
    return PollView(terminal=status.is_terminal, progress_pct=status.progress_pct,
                    fingerprint=(status.status, status.checkpoint, status.progress_pct))
