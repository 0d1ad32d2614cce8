"""Asyncio-native client for the Viggle avatar-render API.

Start with ``ViggleClient``; ``viggle_async.testing.FakeViggle`` is a local fake of
the API for tests. The public API is exactly ``__all__`` below.

Names load lazily (PEP 562): ``import viggle_async._protocol`` (the pure core) imports no
aiohttp, and ``import viggle_async`` costs little until a name is used. Type checkers and
IDEs read the imports under ``TYPE_CHECKING`` below, so they see every re-export.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    from ._supervisor import EventStream, FastFallbackPolicy, Supervisor
    from ._transport import Timeouts
    from ._uploads import Limits

#: Where each public name lives: loaded on first use, then cached in the module's globals.
_LAZY: dict[str, str] = {
    "APIError": "_errors",
    "AssetFailedError": "_errors",
    "AssetIndex": "_journal",
    "AssetState": "_models",
    "AuthenticationError": "_errors",
    "BackgroundMode": "_models",
    "Backoff": "_events",
    "BadRequestError": "_errors",
    "Character": "_models",
    "CharacterHandle": "_events",
    "Characters": "_resources",
    "Clock": "_clock",
    "Completed": "_events",
    "ConfigurationError": "_errors",
    "ConflictError": "_errors",
    "ConnectError": "_errors",
    "Credits": "_models",
    "DEFAULT_BASE_URL": "_client",
    "DownloadError": "_errors",
    "Downloaded": "_events",
    "Downloading": "_events",
    "EntryState": "_journal",
    "Estimate": "_events",
    "Event": "_events",
    "EventStream": "_supervisor",
    "Failed": "_events",
    "FastFallback": "_events",
    "FastFallbackPolicy": "_supervisor",
    "FastModeUnavailableError": "_errors",
    "InsufficientCreditsError": "_errors",
    "InvalidInputError": "_errors",
    "JobFailedError": "_errors",
    "Journal": "_journal",
    "JournalAccountError": "_journal",
    "JournalBusy": "_events",
    "JournalBusyError": "_journal",
    "JournalClosedError": "_journal",
    "JournalEntry": "_journal",
    "JournalError": "_journal",
    "JournalFormatError": "_journal",
    "JournalInUseError": "_journal",
    "JournalMismatchError": "_journal",
    "JournalStore": "_journal",
    "JournalTransitionError": "_journal",
    "JournalWriteError": "_journal",
    "LeaseStore": "_journal",
    "Limits": "_uploads",
    "MemoryJournal": "_journal",
    "MemoryJournalStore": "_journal",
    "Model": "_models",
    "NotFoundError": "_errors",
    "Outcome": "_events",
    "Page": "_models",
    "PlanTotals": "_reuse",
    "PollModel": "_scheduler",
    "PollPolicy": "_scheduler",
    "PreparedCreate": "_resources",
    "Progress": "_events",
    "Queued": "_events",
    "RateLimitError": "_errors",
    "RenderFailedError": "_errors",
    "RenderHandle": "_events",
    "RenderInputs": "_resources",
    "RenderJob": "_models",
    "RenderProgress": "_models",
    "RenderState": "_models",
    "RenderStatus": "_models",
    "Renders": "_resources",
    "RequestTimeoutError": "_errors",
    "ResponseFormatError": "_errors",
    "RetryEvent": "_client",
    "RetryPolicy": "_backoff",
    "ReusePlan": "_reuse",
    "ReuseRule": "_reuse",
    "SQLiteJournal": "_journal_sqlite",
    "SQLiteJournalStore": "_journal_sqlite",
    "Scene": "_models",
    "SceneHandle": "_events",
    "Scenes": "_resources",
    "Segment": "_models",
    "ServerError": "_errors",
    "Submitted": "_events",
    "Supervisor": "_supervisor",
    "SystemClock": "_clock",
    "Timeouts": "_transport",
    "Transition": "_journal",
    "TransportError": "_errors",
    "UploadStalledError": "_errors",
    "Uploading": "_events",
    "ViggleClient": "_client",
    "ViggleError": "_errors",
    "WaitTimeoutError": "_errors",
    "api_key_fingerprint": "_journal",
    "open_journal": "_journal_sqlite",
}

__version__ = "0.1.0.dev0"


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
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


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

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
    "EventStream",
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
