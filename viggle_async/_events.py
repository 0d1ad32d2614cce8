"""What the supervisor reports: one event class per kind of happening (h11 style),
the final ``Outcome`` of each piece of work, and the awaitable handles.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.lowlevel
import attrs

__all__ = [
    "Backoff",
    "CharacterHandle",
    "Completed",
    "Downloaded",
    "Downloading",
    "Estimate",
    "Event",
    "Failed",
    "FastFallback",
    "Handle",
    "JournalBusy",
    "Outcome",
    "OutcomeState",
    "Progress",
    "Queued",
    "RenderHandle",
    "SceneHandle",
    "Submitted",
    "Uploading",
    "WorkKind",
]

WorkKind = Literal["render", "character", "scene"]
BackoffCause = Literal["capacity", "rate_limit", "connect", "download"]

OutcomeState = Literal[
    "complete",       # finished; outputs downloaded where asked (see ``download_error``)
    "failed",         # the job (or a dependency) failed; a failed job is refunded
    "cancelled",      # cancelled (on the server when ``job_id`` is set: refunded)
    "running",        # the run stopped, the job goes on at the API: ``job_id`` set,
                      # ``credits`` committed; a rerun on the journal resumes it
    "timed_out",      # ``render_timeout`` passed; the job goes on at the API: ``job_id``
                      # set, ``credits`` committed; a rerun on the journal resumes it
    "not_submitted",  # never sent: budget, 402, bad input, or the run was stopped
    "ambiguous",      # a create may have reached the API with no answer; not resent
    "skipped",        # already finished in an earlier run (from the journal)
]


@attrs.frozen
class Outcome:
    """The final word on one piece of work.

    ``state`` is an ``OutcomeState``. A job that exists on the server (``running``,
    ``timed_out``, ``complete``, a ``cancelled`` one cancelled remotely) keeps its
    ``job_id``; ``credits`` are the credits the work committed (estimated, whole credits).

    ``downloaded`` is True only for a ``complete`` or ``skipped`` render whose ``outputs``
    are on disk: written and verified in this run, or recorded by an earlier run and still
    there. It is False for everything else: work still ``running`` or ``timed_out``, a
    failure, a character or scene (nothing to download), a render run without ``output``.
    A ``complete`` render with ``download_error`` set is paid for and finished, but its
    output is not on disk (``download_error`` says why); ``viggle-async download JOB -o
    PATH``, or a rerun on the journal, fetches it.

    Raises ``ValueError`` when built with ``downloaded=True`` but no ``outputs`` or a state
    other than ``complete``/``skipped``, or with a ``download_error`` on a state other than
    ``complete`` (or with ``downloaded=True``).
    """

    key: str
    kind: WorkKind
    state: OutcomeState
    job_id: str | None = None
    asset_id: str | None = None  # the character or scene id
    status: str | None = None  # the API's final status string
    outputs: tuple[Path, ...] = ()
    credits: int | None = None  # estimated credits this work spent
    attempts: int = 0  # create requests sent
    fast: bool = False  # submitted in fast mode
    fallback_used: bool = False  # gave up on fast and submitted standard
    error: str | None = None
    error_code: str | None = None
    # The library error class behind ``error`` where the outcome came from one and the
    # caller may act on it, e.g. "ConnectError" (the API could not be reached; nothing sent).
    error_type: str | None = None
    # True only when ``outputs`` were written and verified (this run) or found from an
    # earlier run: a default of True made running jobs and assets look fetched.
    downloaded: bool = False
    # A complete render whose output could not be fetched (after fresh URLs and retries):
    # paid for and still on the API; a rerun on the journal downloads it.
    download_error: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.downloaded and (self.state not in ("complete", "skipped") or not self.outputs):
            raise ValueError(f"Outcome {self.key!r}: downloaded=True needs a complete or "
                             f"skipped state and the outputs written (got {self.state!r}, "
                             f"{len(self.outputs)} outputs)")
        if self.download_error is not None and (self.state != "complete" or self.downloaded):
            raise ValueError(f"Outcome {self.key!r}: download_error belongs to a complete, "
                             f"not downloaded render (got {self.state!r})")

    @property
    def ok(self) -> bool:
        """Finished, and every asked-for output is on disk (none asked for: finished)."""
        return self.state in ("complete", "skipped") and self.download_error is None


@attrs.frozen
class Estimate:
    """What a render would cost, worked out locally (no request sent).

    ``credits`` is None when the length cannot be read locally (a URL or scene input
    without ``estimated_seconds``).
    """

    credits: int | None
    fast: bool
    duration_s: float | None
    upload_bytes: int | None


@attrs.frozen
class Queued:
    key: str
    kind: WorkKind


@attrs.frozen
class Uploading:
    key: str
    sent: int
    total: int | None


@attrs.frozen
class Submitted:
    key: str
    job_id: str
    attempts: int
    fast: bool


@attrs.frozen
class Progress:
    key: str
    job_id: str
    status: str
    progress_pct: float | None
    checkpoint: str | None = None


@attrs.frozen
class Backoff:
    """Work is waiting ``delay`` seconds: a create for "capacity", "rate_limit" or
    "connect"; an output for "download" (then it asks for a fresh URL and tries again)."""

    key: str
    cause: BackoffCause
    delay: float


@attrs.frozen
class FastFallback:
    key: str
    attempts: int


@attrs.frozen
class Downloading:
    """Download progress of an output: ``received`` of ``total`` bytes (None if unknown)."""

    key: str
    path: Path
    received: int
    total: int | None


@attrs.frozen
class Downloaded:
    key: str
    path: Path
    bytes: int


@attrs.frozen
class JournalBusy:
    """The journal's store waited ``waited_s`` seconds for a lock another writer held."""

    waited_s: float


@attrs.frozen
class Completed:
    key: str
    outcome: Outcome


@attrs.frozen
class Failed:
    key: str
    outcome: Outcome


Event = (Queued | Uploading | Submitted | Progress | Backoff | FastFallback | Downloading
         | Downloaded | JournalBusy | Completed | Failed)


class Handle:
    """Scheduled work; ``await handle`` gives its ``Outcome`` once it is final."""

    kind: WorkKind

    def __init__(self, key: str):
        self.key = key
        # Made only when someone waits before the outcome is set: an anyio Event asks
        # sniffio for the backend, and most handles of a bulk run are never awaited early
        # (issue 13: 10,000 handles).
        self._done: anyio.Event | None = None
        self._outcome: Outcome | None = None
        self.value: Any = None  # the finished asset (Character / Scene), when there is one

    def __repr__(self) -> str:
        state = self._outcome.state if self._outcome else "pending"
        return f"<{type(self).__name__} key={self.key!r} {state}>"

    @property
    def done(self) -> bool:
        return self._outcome is not None

    @property
    def outcome(self) -> Outcome:
        if self._outcome is None:
            raise RuntimeError(f"{self.key!r} has not finished yet; await the handle")
        return self._outcome

    def _set(self, outcome: Outcome) -> None:
        if self._outcome is None:
            self._outcome = outcome
            if self._done is not None:
                self._done.set()

    async def wait(self) -> Outcome:
        if self._outcome is None:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()
        else:
            await anyio.lowlevel.checkpoint()  # as waiting on a set Event: one yield
        assert self._outcome is not None
        return self._outcome

    def __await__(self) -> Generator[Any, None, Outcome]:
        return self.wait().__await__()


class RenderHandle(Handle):
    kind: WorkKind = "render"


class CharacterHandle(Handle):
    kind: WorkKind = "character"


class SceneHandle(Handle):
    kind: WorkKind = "scene"
