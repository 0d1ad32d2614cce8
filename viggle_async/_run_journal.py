"""The supervisor's side of a journal: every journal call of one run goes through here.

A journal that cannot be written (a full disk, a locked or corrupt file, any store error) is
noticed once: new creates stop (the journal is what keeps a rerun from paying twice), work
already created goes on, and no job id that came back is ever dropped: it stays in memory,
in its outcome, and in the ``JournalError`` the supervisor raises when its block ends.

Store errors are caught as ``JournalError`` (the store contract) plus ``sqlite3.Error`` and
``OSError`` (what a store may let through today; the journal helper's stores wrap them).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ._events import WorkKind
from ._journal import Journal, JournalEntry, JournalError

__all__ = ["RunJournal"]

T = TypeVar("T")

# What a journal store may raise when it cannot do a step.
_STORE_ERRORS = (JournalError, sqlite3.Error, OSError)


class RunJournal:
    """Wraps the run's ``Journal`` (or none).

    ``get``, ``record_intent`` and ``mark_sending`` raise ``JournalError`` (the caller sends
    nothing). ``record_submitted`` and ``record_final`` never raise: the work goes on and
    the failure is kept for the end of the run (``error()``). ``on_failure(reason)`` is
    called on the first failure (the supervisor stops new creates).
    """

    def __init__(self, journal: Journal | None,
                 on_failure: Callable[[str], Awaitable[None]]) -> None:
        self.journal = journal
        self._on_failure = on_failure
        self.failure: JournalError | None = None
        self.unjournaled: dict[str, str] = {}  # key -> job/asset id the journal lacks

    def __bool__(self) -> bool:
        return self.journal is not None

    async def get(self, key: str) -> JournalEntry | None:
        if self.journal is None:
            return None
        journal = self.journal
        return await self._step(f"read {key!r}", lambda: journal.get(key))

    async def record_intent(self, key: str, kind: WorkKind, fp: str) -> None:
        if self.journal is not None:
            journal = self.journal
            # replace=True: the caller's resume step already decided; the journal still
            # refuses a key whose job id it knows.
            await self._step(f"record the intent of {key!r}",
                             lambda: journal.record_intent(key, kind, fp, replace=True))

    async def mark_sending(self, key: str) -> None:
        if self.journal is not None:
            journal = self.journal
            await self._step(f"mark {key!r} sending", lambda: journal.mark_sending(key))

    async def record_submitted(self, key: str, job_id: str) -> None:
        if self.journal is None:
            return
        journal = self.journal
        try:
            await self._step(f"record job {job_id} of {key!r}",
                             lambda: journal.record_submitted(key, job_id))
        except JournalError:
            self.unjournaled[key] = job_id

    async def record_final(self, key: str, status: str,
                           outputs: Sequence[str | os.PathLike[str]] = (),
                           error: str | None = None) -> None:
        if self.journal is None:
            return
        journal = self.journal
        # A failure is kept in self.failure; the outcome still says how the work ended.
        with contextlib.suppress(JournalError):
            await self._step(f"record the end of {key!r}",
                             lambda: journal.record_final(key, status, outputs, error))

    def error(self) -> JournalError | None:
        """The error that ends the run, naming every id the journal lacks; None if none."""
        if self.failure is None:
            return None
        text = f"the journal could not be written, so new work was stopped: {self.failure}"
        if self.unjournaled:
            ids = ", ".join(f"{k}={v}" for k, v in sorted(self.unjournaled.items()))
            text += (f". Created but not in the journal (keep these ids; a rerun cannot "
                     f"resume them): {ids}")
        err = JournalError(text)
        err.__cause__ = self.failure
        return err

    async def _step(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except _STORE_ERRORS as exc:
            failure = exc if isinstance(exc, JournalError) else JournalError(
                f"could not {what}: {type(exc).__name__}: {exc}")
            if self.failure is None:
                self.failure = failure
                await self._on_failure(f"the journal could not be written: {failure}")
            if failure is exc:
                raise
            raise failure from exc
