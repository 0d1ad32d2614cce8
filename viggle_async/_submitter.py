"""Sending creates for the supervisor under the shared rules.

A fast-capacity gate shared by every fast render (400 CS-UORC01-001: one probe at a time
with capped full-jitter backoff, then everyone goes), a shared pause on 429, a stop on 402
(all three kept by the ``AccountState``), and the journal steps around each create
(docs/api/client-rules.md#create-retries, docs/api/errors.md, docs/api/credits.md#costs). A create
is resent only when the API cannot have made the job:
it answered 429 or capacity, or the connection failed before the last bytes went out.
Anything else that may have reached the API is *ambiguous*: a 5xx, an HTML or empty page, a
redirect or an unreadable 2xx may come from a gateway that already forwarded the request, so
only a documented refusal (``_proves_no_job``) puts a journal entry back to ``intent``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.lowlevel
import attrs

from ._account import AccountState
from ._backoff import full_jitter
from ._errors import (
    APIError,
    ConnectError,
    FastModeUnavailableError,
    InsufficientCreditsError,
    RateLimitError,
    ResponseFormatError,
    TransportError,
)
from ._events import (
    Backoff,
    Event,
    FastFallback,
    OutcomeState,
    Submitted,
    Uploading,
    WorkKind,
)
from ._journal import EntryState, JournalError
from ._models import RenderJob
from ._protocol import Hook
from ._resources import PreparedCreate
from ._run_journal import RunJournal

if TYPE_CHECKING:
    from ._client import ViggleClient

__all__ = ["FastFallbackPolicy", "NotSent", "Slot", "Submission", "Submitter", "fingerprint"]

T = TypeVar("T")


@attrs.frozen
class FastFallbackPolicy:
    """When a fast render gives up on fast and is submitted standard instead.

    After ``after_attempts`` capacity rejections of that render, or ``after_seconds``
    since its first one; both None means never (keep waiting for capacity).
    """

    after_attempts: int | None = 5
    after_seconds: float | None = 300.0


@attrs.frozen
class Submission:
    job_id: str
    attempts: int  # create requests sent
    fell_back: bool
    fast: bool


class NotSent(Exception):
    """No job was made (or it may have been: state "ambiguous"); ``reason`` says why."""

    def __init__(self, state: OutcomeState, reason: str, code: str | None = None,
                 attempts: int = 0, error_type: str | None = None):
        super().__init__(reason)
        self.state, self.reason, self.code, self.attempts = state, reason, code, attempts
        self.error_type = error_type  # the library error class behind it, if one


class Slot:
    """``async with Slot(semaphore)``: a free slot is taken without a loop round trip.

    anyio's ``Semaphore.__aenter__`` checks for cancellation and yields to the loop even
    when a slot is free (``fast_acquire`` needs anyio 4.5); that costs two task look-ups
    and a scheduling pass per job (issue 13). A job that finds a slot free goes on to its
    next await, which is a cancellation point anyway; one that must queue waits as before.
    """

    __slots__ = ("_sem",)

    def __init__(self, sem: anyio.Semaphore):
        self._sem = sem

    async def __aenter__(self) -> None:
        try:
            self._sem.acquire_nowait()
            return
        except anyio.WouldBlock:
            pass
        # Waited for outside the except block: inside it, the exception and its traceback
        # (frames) would stay alive for the whole wait, in every queued job.
        await self._sem.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._sem.release()


# A standard create holds no probe: one empty stack, shared (nothing is ever pushed on it),
# instead of a new one per create.
_NO_PROBE = contextlib.AsyncExitStack()


def fingerprint(prepared: PreparedCreate, extra: str = "") -> str:
    """A stable digest of what a create would send (not the bytes of big files)."""
    h = hashlib.sha256(prepared.request.path.encode())
    for name, value in prepared.request.fields or ():
        h.update(f"\0{name}={value}".encode())
    for up in prepared.uploads:
        h.update(f"\0{up.field}:{up.filename}:{up.size}:{up.content_type}".encode())
    h.update(extra.encode())
    return h.hexdigest()[:32]


# The answers that prove a create made no job: the documented refusals
# (docs/api/conventions.md#http-statuses,
# docs/api/errors.md: validation and fast capacity are 400/422, auth 401/403, credits 402, a missing
# character or scene 404) and 429 (rate limited before the job was made).
# What a create may raise besides cancellation: an answer, no answer, or an unreadable one.
CreateError = (APIError, TransportError, ResponseFormatError)


def _proves_no_job(exc: BaseException) -> bool:
    """True only when ``exc`` proves the create made no job, so it may be sent again.

    The rule itself lives in one place, ``_protocol.proves_no_job`` (documented refusals:
    400/422 incl. fast capacity, 401/403, 402, 404, 409, 413, 415, 429), which sets
    ``may_have_reached_server`` on every API error; a transport error sets it False only when
    the request provably never went out whole. A 5xx, a 3xx, an undocumented 4xx, or an
    answer that is not JSON may come from a gateway that forwarded the request: the job may
    exist.
    """
    if isinstance(exc, CreateError):
        return not exc.may_have_reached_server
    return False


class Submitter:
    """Sends every create of one supervisor; see the module docstring for the rules."""

    def __init__(self, client: ViggleClient, *, account: AccountState, journal: RunJournal,
                 uploads: anyio.Semaphore, fallback: FastFallbackPolicy,
                 capacity_backoff: tuple[float, float], rand: Callable[[], float],
                 emit: Callable[[Event], None], on_created: Callable[[str, WorkKind, str], None]):
        self.client = client
        self._clock = client.clock
        self._account = account
        self._journal = journal
        self._uploads = Slot(uploads)  # shared: a Slot keeps no per-use state
        self._fallback = fallback
        self._capacity_backoff = capacity_backoff
        self._rand = rand
        self._unreachable_since: dict[str, float] = {}  # key -> first connect failure
        self._emit = emit
        self._on_created = on_created  # (key, kind, id): called before the id is journaled

    async def render(self, key: str, prepared: PreparedCreate, fp: str,
                     inputs: dict[str, Any]) -> Submission:
        """Create a render job, through the capacity gate, falling back to standard as the
        policy says."""
        account = self._account
        attempts, rejections, fell_back = 0, 0, False
        first_rejection: float | None = None
        fast = prepared.fast
        while True:
            await self._check_stopped(attempts)
            await self._wait_creates()
            async with (contextlib.AsyncExitStack() if fast else _NO_PROBE) as probe:
                probing = False
                if fast and not await account.fast_open():
                    failures = await probe.enter_async_context(account.probe())
                    if failures is None:  # another probe succeeded while we queued
                        await probe.aclose()
                    else:
                        probing = True
                        delay = full_jitter(failures, base=self._capacity_backoff[0],
                                            cap=self._capacity_backoff[1], rand=self._rand)
                        self._emit(Backoff(key, "capacity", delay))
                        await self._clock.sleep_until(self._clock.now() + delay)
                try:
                    async with self._uploads:
                        await self._check_stopped(attempts)  # a 402 came while we queued
                        # ...or a 429's pause: the one read above may predate it.
                        await self._wait_creates()
                        if fast and not probing and not await account.fast_open():
                            continue  # capacity ran out while we queued for a slot: probe
                        attempts += 1
                        job = await self._once(key, "render", fp,
                                               self._render_call(key, prepared),
                                               lambda j: j.job_id)
                    if fast:
                        await account.fast_accepted()
                    self._emit(Submitted(key, job.job_id, attempts, fast))
                    return Submission(job.job_id, attempts, fell_back, fast)
                except FastModeUnavailableError:
                    await account.fast_refused()
                    rejections += 1
                    now = self._clock.now()
                    first_rejection = first_rejection if first_rejection is not None else now
                    policy = self._fallback
                    if ((policy.after_attempts is not None
                         and rejections >= policy.after_attempts)
                            or (policy.after_seconds is not None
                                and now - first_rejection >= policy.after_seconds)):
                        self._emit(FastFallback(key, rejections))
                        prepared = await self.client.renders.prepare(
                            **{**inputs, "fast": False})
                        fast, fell_back = False, True
                except CreateError as exc:
                    await self._not_created(key, exc, attempts)

    def _render_call(self, key: str,
                     prepared: PreparedCreate) -> Callable[[Hook], Awaitable[RenderJob]]:
        def call(hook: Hook) -> Awaitable[RenderJob]:
            return self.client.renders.submit(
                prepared, before_last_bytes=hook,
                on_upload=lambda sent, total: self._emit(Uploading(key, sent, total)))
        return call

    async def asset(self, key: str, kind: WorkKind, fp: str, create: Callable[[Hook], Awaitable[T]],
                    ident: Callable[[T], str]) -> tuple[T, int]:
        """Create a character or scene; returns it and the create requests sent."""
        attempts = 0
        while True:
            await self._check_stopped(attempts)
            await self._wait_creates()
            try:
                async with self._uploads:
                    await self._check_stopped(attempts)
                    await self._wait_creates()
                    attempts += 1
                    return await self._once(key, kind, fp, create, ident), attempts
            except CreateError as exc:
                await self._not_created(key, exc, attempts)

    async def _wait_creates(self) -> None:
        """Wait out a create pause (a 429); no pause: no sleep, so no loop round trip and
        no backend look-up per create (issue 13)."""
        until = await self._account.creates_paused_until()
        if until > self._clock.now():
            await self._clock.sleep_until(until)

    async def _check_stopped(self, attempts: int) -> None:
        stopped = await self._account.stopped()
        if stopped:
            raise NotSent("not_submitted", stopped, attempts=attempts)

    async def _once(self, key: str, kind: WorkKind, fp: str, create: Callable[[Hook], Awaitable[T]],
                    ident: Callable[[T], str]) -> T:
        """One create request, journaled: intent, sending, then the id.

        A journal that cannot record the intent or the send raises NotSent (nothing was
        sent); one that cannot record the id keeps it (``RunJournal.unjournaled``)."""
        journal = self._journal
        journaled = journal.journal is not None  # else every step below is skipped
        # Every attempt starts as an intent: the previous one was refused (429, capacity)
        # or never connected, so no job exists.
        if journaled:
            try:
                await journal.record_intent(key, kind, fp)
            except JournalError as exc:
                raise NotSent("not_submitted", f"not sent: {exc}") from None
        marked = False
        marking = False  # a mark was begun; it may have reached the journal
        journal_failed: JournalError | None = None
        with anyio.CancelScope() as scope:

            async def before_last_bytes() -> None:
                nonlocal marked, marking, journal_failed
                # The last moment a cancel may still stop the job for free: nothing before
                # this is sure to have suspended (a free slot is taken without a checkpoint,
                # a create from URLs or ids prepares without I/O), so a block that failed
                # just after scheduling would otherwise send, shielded, and be charged.
                await anyio.lowlevel.checkpoint_if_cancelled()
                # From here the job may exist: if we are cancelled now, still wait for the
                # answer (bounded by the read timeout) so its id is journaled and, with
                # cancel_remote, cancelled; otherwise a rerun could only call it ambiguous.
                # Shielded before "sending" is written, so a cancel that arrives while it is
                # being written cannot leave it "sending" with the request abandoned.
                scope.shield = True
                # The client may resend after a 429 answer; "sending" is already recorded.
                if not marked and journaled:
                    try:
                        if marking:
                            # An earlier try was cut off while marking (aiohttp cancels
                            # the body writer when an answer, e.g. a 429, comes before
                            # the body was read): read whether its mark landed.
                            entry = await journal.get(key)
                            marked = entry is not None and entry.state is EntryState.SENDING
                        if not marked:
                            marking = True
                            await journal.mark_sending(key)
                    except JournalError as exc:
                        # Raised before the last bytes: the request is never complete.
                        journal_failed = exc
                        raise
                marked = True

            try:
                result = await create(before_last_bytes)
            except Exception as exc:
                if journal_failed is not None:
                    raise NotSent("not_submitted", f"not sent: {journal_failed}") from None
                if not isinstance(exc, CreateError):
                    raise
                # A documented refusal (429, capacity, 402, 4xx) proves no job exists: back to
                # "intent", so a rerun may send it. Anything else (5xx, HTML, no answer) leaves
                # "sending": the job may exist, and a rerun reports it ambiguous.
                # If the journal cannot, the entry stays "sending": ambiguous, never resent.
                if (marked or marking) and journaled and _proves_no_job(exc):
                    with contextlib.suppress(JournalError):
                        await journal.record_intent(key, kind, fp)
                raise
            created = ident(result)
            self._on_created(key, kind, created)
            if journaled:
                await journal.record_submitted(key, created)  # keeps the id if it cannot
        return result

    async def _not_created(self, key: str, exc: Exception, attempts: int) -> None:
        """After a create failed: wait and return to retry, or raise NotSent.

        Resent only after a refusal that asks for it (429) or a connection that never
        carried the request; an answer that does not prove "no job" is ``ambiguous``."""
        if isinstance(exc, RateLimitError):
            delay = exc.retry_after if exc.retry_after is not None else 5.0
            await self._account.pause_creates(self._clock.now() + delay)
            self._emit(Backoff(key, "rate_limit", delay))
        elif isinstance(exc, InsufficientCreditsError):
            await self._account.stop(f"stopped after 402 ({exc.error_code}): {exc.message}")
            reason = await self._account.stopped() or "stopped after 402"
            raise NotSent("not_submitted", reason, exc.error_code, attempts) from None
        elif not _proves_no_job(exc):
            code = exc.error_code if isinstance(exc, APIError) else None
            raise NotSent("ambiguous", f"{_AMBIGUOUS}: {exc}", code, attempts) from None
        elif isinstance(exc, TransportError):
            delay = full_jitter(attempts, base=1.0, cap=30.0, rand=self._rand)
            now = self._clock.now()
            since = self._unreachable_since.setdefault(key, now)
            deadline = self.client.retry.connect_deadline
            if isinstance(exc, ConnectError) and now + delay - since > deadline:
                # Bounded like every other request (RetryPolicy.connect_deadline): an API
                # that cannot be reached for that long ends the create, nothing sent.
                raise NotSent("not_submitted",
                              f"cannot reach the API for {deadline:g} s (connect_deadline): "
                              f"{exc}; nothing was sent", None, attempts,
                              error_type=type(exc).__name__) from None
            self._emit(Backoff(key, "connect", delay))
            await self._clock.sleep_until(self._clock.now() + delay)
        elif isinstance(exc, APIError):
            raise NotSent("failed", str(exc), exc.error_code, attempts,
                          error_type=type(exc).__name__) from None


_AMBIGUOUS = ("the create was sent and its answer does not prove that no job was made, so it "
              "is not resent (check your Viggle account; to send it again pass "
              "resubmit_ambiguous=True, CLI: --resubmit-ambiguous)")
