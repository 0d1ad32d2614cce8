"""The resumable journal: what was asked for, what reached the server, how it ended.

Each entry walks ``intent -> sending -> submitted -> final``; ``final`` may also follow
``intent`` or ``sending`` (a create refused outright) and may be recorded again. ``sending`` is
recorded just before the last bytes of a create body are written: an entry left in ``intent``
was never seen by the server and is safe to resubmit; one left in ``sending`` is *ambiguous*
(the job may exist), so ``record_intent`` refuses it unless the caller passes
``replace=True``. /api has no idempotency keys (docs/api/client-rules.md#create-retries), so this
is the only
guard against submitting a job twice.

An entry's ``kind`` is "render", "character" or "scene"; ``job_id`` is the render job id
or the asset id; ``outputs`` are the files a render wrote, or a template scene's segments
(Get Scene does not return them, docs/api/assets.md#get-scene).

Two layers. ``Journal`` is the state machine above (the methods users and the supervisor
call: it decides every transition and its replace rules, in this one place). A
``JournalStore`` below it only stores entries: apply one transition atomically, get, list,
close. A new store (another database) is one module implementing ``JournalStore``, run
against the shared contract suite (``tests/journal/contract.py``); it never re-implements
the rules that prevent double billing. ``MemoryJournal`` and ``SQLiteJournal``
(``_journal_sqlite``) are a ``Journal`` over the memory and SQLite stores.

Optional store capabilities, each with its own contract tests: ``AssetIndex`` (content hash
-> asset id, per API-key fingerprint, so an asset is never reused across keys) and
``LeaseStore`` (many workers on one store). A store checks for them with ``isinstance``.

Entries hold no secrets: request inputs are kept only as a hash, and error text is scrubbed
of bearer tokens and ``sk-`` keys.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import anyio
import anyio.lowlevel
import attrs

from ._errors import ViggleError

__all__ = [
    "AssetIndex",
    "EntryState",
    "Journal",
    "JournalAccountError",
    "JournalBusyError",
    "JournalClosedError",
    "JournalEntry",
    "JournalError",
    "JournalFormatError",
    "JournalInUseError",
    "JournalMismatchError",
    "JournalStore",
    "JournalTransitionError",
    "JournalWriteError",
    "LeaseStore",
    "MemoryJournal",
    "MemoryJournalStore",
    "Transition",
    "api_key_fingerprint",
    "request_fingerprint",
]




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


class JournalAccountError(JournalError):
    """The journal's ledger is bound to another API key (its fingerprint): a worker with a
    different key may not record jobs or reuse assets in it."""


class JournalWriteError(JournalError):
    """The store could not record (or read) a step: read-only file, disk full, I/O error.

    ``path`` names the store (a file path, or a DSN without its password); ``cause`` is the
    underlying reason in words. Nothing was recorded by the failed call.
    """

    def __init__(self, path: str, cause: str, *, action: str = "write") -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"cannot {action} the journal {path!r}: {cause}")


class JournalBusyError(JournalWriteError):
    """Another connection held the store's write lock past the journal's ``busy_timeout``
    (e.g. a database browser left open on the file). Nothing was recorded; close the other
    program or raise ``busy_timeout``."""


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


def api_key_fingerprint(api_key: str) -> str:
    """A stable, one-way name for an API key (hex SHA-256 of a tagged key): what a store
    keeps to bind an asset index or a ledger to one account, never the key itself."""
    return hashlib.sha256(b"viggle-async/account\0" + api_key.encode()).hexdigest()


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


Transition = Callable[[JournalEntry | None], JournalEntry | None]
"""A pure step: the key's entry (``None`` if absent) -> the new entry, or ``None`` for "no
change" (only when an entry exists). It may raise ``JournalError`` to refuse the step; a store
may call it more than once (a retried write), so it must have no side effects."""


@runtime_checkable
class JournalStore(Protocol):
    """Where a ``Journal`` keeps its entries: the whole contract a new store implements.

    A store knows nothing of the state machine; it only guarantees atomicity and durability.
    Run ``tests/journal/contract.py`` against it.
    """

    async def apply(self, key: str, transition: Transition) -> JournalEntry:
        """Atomically read ``key``'s entry, call ``transition`` on it, store the result.

        Returns the stored entry (the old one when ``transition`` returns ``None``). If
        ``transition`` raises, nothing is stored and the error propagates. Applies on one key
        are serialised, across every connection of the store: each sees the one before. A
        cancelled call either completes or leaves nothing behind. Raises
        ``JournalClosedError`` after ``close()`` and ``JournalWriteError`` (or
        ``JournalBusyError``) when the step cannot be recorded.
        """
        ...

    async def get(self, key: str) -> JournalEntry | None:
        """The entry for ``key``, or ``None``. ``JournalClosedError`` after ``close()``."""
        ...

    async def entries(self) -> list[JournalEntry]:
        """Every entry, in the order their keys were first recorded."""
        ...

    async def close(self) -> None:
        """Release the store's resources; idempotent; completes even when cancelled."""
        ...


@runtime_checkable
class AssetIndex(Protocol):
    """Optional store capability: content hash -> asset id (character or scene), so the same
    file is uploaded once. Keyed by ``account`` (``api_key_fingerprint``): an asset made
    with one API key is never offered to another."""

    async def find_asset(self, account: str, content_hash: str) -> str | None:
        """The asset id recorded for this account and content, or ``None``."""
        ...

    async def remember_asset(self, account: str, content_hash: str, asset_id: str) -> None:
        """Record (or replace) the asset id for this account and content."""
        ...

    async def forget_asset(self, account: str, content_hash: str) -> None:
        """Drop the record (the asset was deleted or failed on the server); no-op if absent."""
        ...


@runtime_checkable
class LeaseStore(Protocol):
    """Optional store capability: leases, so several workers can share one store and each
    key is worked on by one of them at a time. Times are in seconds of the store's clock."""

    async def acquire_lease(self, key: str, owner: str, ttl: float) -> bool:
        """Take or renew ``key`` for ``owner`` for ``ttl`` seconds. ``False`` (and nothing
        changes) while another owner's lease on ``key`` has not expired."""
        ...

    async def release_lease(self, key: str, owner: str) -> None:
        """Give ``key`` up; a no-op unless ``owner`` holds it."""
        ...


def _need(key: str, old: JournalEntry | None, *allowed: EntryState) -> JournalEntry:
    if old is None:
        raise JournalTransitionError(f"{key!r} has no intent recorded")
    if old.state not in allowed:
        wanted = "/".join(allowed)
        raise JournalTransitionError(f"{key!r} is {old.state}, expected {wanted}")
    return old


class Journal:
    """Where a supervisor records its work so a rerun can resume it: the state machine over
    any ``JournalStore``.

    ``Journal(store)`` works with any store (e.g. one you wrote); ``MemoryJournal()`` and
    ``await SQLiteJournal.open(path)`` are ready-made. ``clock`` gives entry timestamps
    (seconds since the epoch). Use as ``async with`` to close the store at the end.
    """

    def __init__(self, store: JournalStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    @property
    def store(self) -> JournalStore:
        """The store below (check it for ``AssetIndex`` / ``LeaseStore`` with isinstance)."""
        return self._store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def record_intent(
        self, key: str, kind: str, fingerprint: str, *, replace: bool = False
    ) -> JournalEntry:
        """Before a create. Allowed for a new key, or one still in ``intent``; with
        ``replace=True`` also from ``sending`` (ambiguous) or ``final`` (a retry).

        Raises ``JournalMismatchError`` if ``key`` was recorded with another kind or
        fingerprint, ``JournalTransitionError`` otherwise when not allowed."""
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

        return await self._store.apply(key, step)

    async def mark_sending(self, key: str) -> JournalEntry:
        """Just before the last bytes of the create body go out (``intent`` only)."""
        now = self._clock()

        def step(old: JournalEntry | None) -> JournalEntry:
            old = _need(key, old, EntryState.INTENT)
            return attrs.evolve(old, state=EntryState.SENDING, updated_at=now)

        return await self._store.apply(key, step)

    async def record_submitted(self, key: str, job_id: str) -> JournalEntry:
        """The server answered with ``job_id`` (from ``sending``; repeating it is a no-op)."""
        if not job_id:
            raise ValueError("job_id must be non-empty")
        now = self._clock()

        def step(old: JournalEntry | None) -> JournalEntry | None:
            if old is not None and old.state is EntryState.SUBMITTED and old.job_id == job_id:
                return None
            old = _need(key, old, EntryState.SENDING)
            return attrs.evolve(old, state=EntryState.SUBMITTED, job_id=job_id, updated_at=now)

        return await self._store.apply(key, step)

    async def record_final(
        self, key: str, status: str, outputs: Sequence[str | os.PathLike[str]] = (),
        error: str | None = None,
    ) -> JournalEntry:
        """The work ended (complete, failed, cancelled, rejected...). Recording it again
        later (e.g. after re-downloading outputs) replaces the outcome, keeping the job id.
        ``error`` is stored scrubbed of bearer tokens and ``sk-`` keys."""
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

        return await self._store.apply(key, step)

    async def get(self, key: str) -> JournalEntry | None:
        """The entry for ``key``, or ``None``."""
        return await self._store.get(key)

    async def entries(self) -> list[JournalEntry]:
        """Every entry, oldest first."""
        return await self._store.entries()

    async def close(self) -> None:
        """Close the store (idempotent); later calls raise ``JournalClosedError``."""
        await self._store.close()


class MemoryJournalStore:
    """A ``JournalStore`` in process memory, with the asset index and leases (tests, runs that
    need no resume, a reference for new stores). ``clock`` (epoch seconds) times leases."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: dict[str, JournalEntry] = {}
        self._assets: dict[tuple[str, str], str] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise JournalClosedError("the journal is closed")

    async def apply(self, key: str, transition: Transition) -> JournalEntry:
        self._check()
        # No await between the read and the write: atomic on the event loop.
        old = self._entries.get(key)
        new = transition(old)
        if new is None:
            if old is None:
                raise JournalError(f"{key!r}: a transition returned no change for no entry")
            return old
        self._entries[key] = new
        await anyio.lowlevel.checkpoint()
        return new

    async def get(self, key: str) -> JournalEntry | None:
        self._check()
        return self._entries.get(key)

    async def entries(self) -> list[JournalEntry]:
        self._check()
        return list(self._entries.values())

    async def close(self) -> None:
        self._closed = True

    async def find_asset(self, account: str, content_hash: str) -> str | None:
        self._check()
        return self._assets.get((account, content_hash))

    async def remember_asset(self, account: str, content_hash: str, asset_id: str) -> None:
        self._check()
        self._assets[(account, content_hash)] = asset_id

    async def forget_asset(self, account: str, content_hash: str) -> None:
        self._check()
        self._assets.pop((account, content_hash), None)

    async def acquire_lease(self, key: str, owner: str, ttl: float) -> bool:
        self._check()
        now = self._clock()
        held = self._leases.get(key)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._leases[key] = (owner, now + ttl)
        return True

    async def release_lease(self, key: str, owner: str) -> None:
        self._check()
        if self._leases.get(key, ("", 0.0))[0] == owner:
            del self._leases[key]


class MemoryJournal(Journal):
    """An in-process journal (tests, or runs that need no resume): ``Journal`` over a
    ``MemoryJournalStore``."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(MemoryJournalStore(clock=clock), clock=clock)
