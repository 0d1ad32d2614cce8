"""Asyncio-native client for the Viggle avatar-render API.

Start with ``ViggleClient``; ``viggle_async.testing.FakeViggle`` is a local fake of
the API for tests. The public API is exactly ``__all__`` below.
"""

from ._backoff import RetryPolicy
from ._client import DEFAULT_BASE_URL, RetryEvent, ViggleClient
from ._clock import Clock, SystemClock
from ._errors import (
    APIError,
    AssetFailedError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    ConnectError,
    DownloadError,
    FastModeUnavailableError,
    InsufficientCreditsError,
    InvalidInputError,
    JobFailedError,
    NotFoundError,
    RateLimitError,
    RenderFailedError,
    RequestTimeoutError,
    ResponseFormatError,
    ServerError,
    TransportError,
    UploadStalledError,
    ViggleError,
    WaitTimeoutError,
)
from ._events import (
    Backoff,
    CharacterHandle,
    Completed,
    Downloaded,
    Downloading,
    Estimate,
    Event,
    Failed,
    FastFallback,
    JournalBusy,
    Outcome,
    Progress,
    Queued,
    RenderHandle,
    SceneHandle,
    Submitted,
    Uploading,
)
from ._journal import (
    AssetIndex,
    EntryState,
    Journal,
    JournalAccountError,
    JournalBusyError,
    JournalClosedError,
    JournalEntry,
    JournalError,
    JournalFormatError,
    JournalInUseError,
    JournalMismatchError,
    JournalStore,
    JournalTransitionError,
    JournalWriteError,
    LeaseStore,
    MemoryJournal,
    MemoryJournalStore,
    Transition,
    api_key_fingerprint,
)
from ._journal_sqlite import SQLiteJournal, SQLiteJournalStore, open_journal
from ._models import (
    AssetState,
    BackgroundMode,
    Character,
    Credits,
    Model,
    Page,
    RenderJob,
    RenderProgress,
    RenderState,
    RenderStatus,
    Scene,
    Segment,
)
from ._resources import Characters, PreparedCreate, RenderInputs, Renders, Scenes
from ._reuse import PlanTotals, ReusePlan, ReuseRule
from ._scheduler import PollModel, PollPolicy
from ._supervisor import FastFallbackPolicy, Supervisor
from ._transport import Timeouts
from ._uploads import Limits

__version__ = "0.1.0.dev0"


def __getattr__(name: str) -> object:
    if name == "ManualClock":
        # Moved to the testing helpers (issue 12.12); the root alias lasts this release.
        import warnings

        warnings.warn("viggle_async.ManualClock moved to viggle_async.testing.ManualClock; "
                      "the root alias will be removed in the next release",
                      DeprecationWarning, stacklevel=2)
        from .testing import ManualClock

        return ManualClock
    # The PostgreSQL store needs the "postgres" extra: imported only when asked for.
    if name in ("PostgresJournalStore", "open_postgres_journal"):
        from . import _journal_postgres

        return getattr(_journal_postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "APIError",
    "AssetFailedError",
    "AssetIndex",
    "AssetState",
    "AuthenticationError",
    "BackgroundMode",
    "Backoff",
    "BadRequestError",
    "Character",
    "CharacterHandle",
    "Characters",
    "Clock",
    "Completed",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "Credits",
    "DEFAULT_BASE_URL",
    "DownloadError",
    "Downloaded",
    "Downloading",
    "EntryState",
    "Estimate",
    "Event",
    "Failed",
    "FastFallback",
    "FastFallbackPolicy",
    "FastModeUnavailableError",
    "InsufficientCreditsError",
    "InvalidInputError",
    "JobFailedError",
    "Journal",
    "JournalAccountError",
    "JournalBusy",
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
    "Limits",
    "MemoryJournal",
    "MemoryJournalStore",
    "Model",
    "NotFoundError",
    "Outcome",
    "Page",
    "PlanTotals",
    "PollModel",
    "PollPolicy",
    "PostgresJournalStore",
    "PreparedCreate",
    "Progress",
    "Queued",
    "RateLimitError",
    "RenderFailedError",
    "RenderHandle",
    "RenderInputs",
    "RenderJob",
    "RenderProgress",
    "RenderState",
    "RenderStatus",
    "Renders",
    "RequestTimeoutError",
    "ResponseFormatError",
    "RetryEvent",
    "RetryPolicy",
    "ReusePlan",
    "ReuseRule",
    "SQLiteJournal",
    "SQLiteJournalStore",
    "Scene",
    "SceneHandle",
    "Scenes",
    "Segment",
    "ServerError",
    "Submitted",
    "Supervisor",
    "SystemClock",
    "Timeouts",
    "Transition",
    "TransportError",
    "UploadStalledError",
    "Uploading",
    "ViggleClient",
    "ViggleError",
    "WaitTimeoutError",
    "__version__",
    "api_key_fingerprint",
    "open_journal",
    "open_postgres_journal",
]
