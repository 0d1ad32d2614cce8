"""The resumable journal: what was asked for, what reached the server, how it ended.

Each entry walks ``intent -> sending -> submitted -> final``; ``final`` may also follow
``intent`` or ``sending`` (a create refused outright) and may be recorded again. ``sending`` is
recorded just before the last bytes of a create body are written: an entry left in ``intent``
was never seen by the server and is safe to resubmit; one left in ``sending`` is *ambiguous*
(the job may exist), so ``record_intent`` refuses it unless the caller passes
``replace=True``. /api has no idempotency keys (viggle-api.md §4), so this is the only
guard against submitting a job twice.

An entry's ``kind`` is "render", "character" or "scene"; ``job_id`` is the render job id
or the asset id; ``outputs`` are the files a render wrote, or a template scene's segments
(Get Scene does not return them, §2.12).

``Journal`` is the interface; ``MemoryJournal`` here and ``SQLiteJournal`` (``_journal_sqlite``)
implement it. Entries
hold no secrets: request inputs are kept only as a hash, and error text is scrubbed of bearer
tokens and ``sk-`` keys.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

import anyio
import anyio.to_thread
import attrs

from ._errors import ViggleError

__all__ = [
    "EntryState",
    "Journal",
    "JournalClosedError",
    "JournalEntry",
    "JournalError",
    "JournalFormatError",
    "JournalInUseError",
    "JournalMismatchError",
    "JournalTransitionError",
    "MemoryJournal",
    "request_fingerprint",
]


T = TypeVar("T")


def _paths(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


class JournalError(ViggleError):
    """Base of the journal's errors."""


class JournalTransitionError(JournalError):
    """The requested state change is not allowed from the entry's current state."""


class JournalMismatchError(JournalError):
    """A key already in the journal was recorded with other inputs (kind or fingerprint)."""


class JournalFormatError(JournalError):
    """The journal file is not one this version can read."""


class JournalInUseError(JournalError):
    """The journal is already open in another run (``SQLiteJournal`` takes a lock)."""


class JournalClosedError(JournalError):
    """The journal was used after ``close()``."""


class EntryState(enum.StrEnum):
    INTENT = "intent"
    SENDING = "sending"
    SUBMITTED = "submitted"
    FINAL = "final"


@attrs.frozen
class JournalEntry:
    """One unit of work. ``ambiguous`` means it may have reached the server unanswered."""

    key: str
    kind: str
    fingerprint: str
    state: EntryState = attrs.field(converter=EntryState)
    job_id: str | None = None
    final_status: str | None = None
    outputs: tuple[str, ...] = attrs.field(default=(), converter=_paths)
    error: str | None = None
    attempts: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0

    def __attrs_post_init__(self) -> None:
        # Illegal states are unrepresentable: a job id only once submitted, an outcome only
        # when final.
        early = self.state in (EntryState.INTENT, EntryState.SENDING)
        if early and (self.job_id is not None or self.final_status is not None or self.outputs
                      or self.error is not None):
            raise ValueError(f"{self.key!r}: a {self.state} entry has no job id or outcome")
        submitted = self.state is EntryState.SUBMITTED
        if submitted and (self.job_id is None or self.final_status is not None):
            raise ValueError(f"{self.key!r}: a submitted entry has a job id and no status")
        if self.state is EntryState.FINAL and self.final_status is None:
            raise ValueError(f"{self.key!r}: a final entry has a final_status")
        if self.attempts < 1:
            raise ValueError(f"{self.key!r}: attempts must be >= 1")

    @property
    def ambiguous(self) -> bool:
        return self.state is EntryState.SENDING


def request_fingerprint(inputs: Mapping[str, object]) -> str:
    """A stable hash of a request's inputs (JSON with sorted keys; other values via ``str``)."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


_SECRET_PATTERNS = (
    (re.compile(r"(?i)(bearer\s+)\S+"), r"\1<redacted>"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]+"), "sk-<redacted>"),
)
_MAX_ERROR_CHARS = 4000


def _scrub(text: str | None) -> str | None:
    if text is None:
        return None
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text[:_MAX_ERROR_CHARS]


class Journal(Protocol):
    """Where a supervisor records its work so a rerun can resume it."""

    async def record_intent(
        self, key: str, kind: str, fingerprint: str, *, replace: bool = False
    ) -> JournalEntry:
        """Before a create. Allowed for a new key, or one still in ``intent``; with
        ``replace=True`` also from ``sending`` (ambiguous) or ``final`` (a retry)."""
        ...

    async def mark_sending(self, key: str) -> JournalEntry:
        """Just before the last bytes of the create body go out (``intent`` only)."""
        ...

    async def record_submitted(self, key: str, job_id: str) -> JournalEntry:
        """The server answered with ``job_id`` (from ``sending``; repeating it is a no-op)."""
        ...

    async def record_final(
        self, key: str, status: str, outputs: Sequence[str | os.PathLike[str]] = (),
        error: str | None = None,
    ) -> JournalEntry:
        """The work ended (complete, failed, cancelled, rejected...). Recording it again
        later (e.g. after re-downloading outputs) replaces the outcome, keeping the job id."""
        ...

    async def get(self, key: str) -> JournalEntry | None: ...

    async def entries(self) -> list[JournalEntry]:
        """Every entry, oldest first."""
        ...

    async def close(self) -> None: ...


Transition = Callable[[JournalEntry | None], JournalEntry | None]  # None: no change


def _need(key: str, old: JournalEntry | None, *allowed: EntryState) -> JournalEntry:
    if old is None:
        raise JournalTransitionError(f"{key!r} has no intent recorded")
    if old.state not in allowed:
        wanted = "/".join(allowed)
        raise JournalTransitionError(f"{key!r} is {old.state}, expected {wanted}")
    return old


class _JournalBase:
    """The state machine, shared by every store; a store only implements ``_apply``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    async def _apply(self, key: str, transition: Transition) -> JournalEntry:
        raise NotImplementedError

    async def record_intent(
        self, key: str, kind: str, fingerprint: str, *, replace: bool = False
    ) -> JournalEntry:
        if not key:
            raise ValueError("journal keys must be non-empty")
        now = self._clock()

        def step(old: JournalEntry | None) -> JournalEntry:
            if old is None:
                return JournalEntry(key, kind, fingerprint, EntryState.INTENT,
                                    created_at=now, updated_at=now)
            if (old.kind, old.fingerprint) != (kind, fingerprint):
                raise JournalMismatchError(
                    f"{key!r} was recorded for other inputs; use a new key for new inputs")
            if old.state is EntryState.SUBMITTED:
                raise JournalTransitionError(
                    f"{key!r} is already submitted as {old.job_id}; resume polling it instead")
            if old.state is not EntryState.INTENT and not replace:
                why = "may have reached the server" if old.ambiguous else "is already final"
                raise JournalTransitionError(f"{key!r} {why}; pass replace=True to resubmit")
            return JournalEntry(key, kind, fingerprint, EntryState.INTENT,
                                attempts=old.attempts + 1, created_at=old.created_at,
                                updated_at=now)

        return await self._apply(key, step)

    async def mark_sending(self, key: str) -> JournalEntry:
        now = self._clock()

        def step(old: JournalEntry | None) -> JournalEntry:
            old = _need(key, old, EntryState.INTENT)
            return attrs.evolve(old, state=EntryState.SENDING, updated_at=now)

        return await self._apply(key, step)

    async def record_submitted(self, key: str, job_id: str) -> JournalEntry:
        if not job_id:
            raise ValueError("job_id must be non-empty")
        now = self._clock()

        def step(old: JournalEntry | None) -> JournalEntry | None:
            if old is not None and old.state is EntryState.SUBMITTED and old.job_id == job_id:
                return None
            old = _need(key, old, EntryState.SENDING)
            return attrs.evolve(old, state=EntryState.SUBMITTED, job_id=job_id, updated_at=now)

        return await self._apply(key, step)

    async def record_final(
        self, key: str, status: str, outputs: Sequence[str | os.PathLike[str]] = (),
        error: str | None = None,
    ) -> JournalEntry:
        if not status:
            raise ValueError("status must be non-empty")
        now = self._clock()
        paths = tuple(os.fspath(p) for p in outputs)
        error = _scrub(error)

        def step(old: JournalEntry | None) -> JournalEntry | None:
            if (old is not None and old.state is EntryState.FINAL
                    and (old.final_status, old.outputs, old.error) == (status, paths, error)):
                return None
            old = _need(key, old, *EntryState)  # any state may end; no submission risk here
            return attrs.evolve(old, state=EntryState.FINAL, final_status=status,
                                outputs=paths, error=error, updated_at=now)

        return await self._apply(key, step)


class MemoryJournal(_JournalBase):
    """An in-process journal (tests, or runs that need no resume)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._entries: dict[str, JournalEntry] = {}
        self._closed = False

    async def _apply(self, key: str, transition: Transition) -> JournalEntry:
        if self._closed:
            raise JournalClosedError("the journal is closed")
        old = self._entries.get(key)
        new = transition(old)
        if new is None:
            assert old is not None
            return old
        self._entries[key] = new
        await anyio.lowlevel.checkpoint()
        return new

    async def get(self, key: str) -> JournalEntry | None:
        if self._closed:
            raise JournalClosedError("the journal is closed")
        return self._entries.get(key)

    async def entries(self) -> list[JournalEntry]:
        if self._closed:
            raise JournalClosedError("the journal is closed")
        return list(self._entries.values())

    async def close(self) -> None:
        self._closed = True
