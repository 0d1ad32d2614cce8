"""Asyncio-native client for the Viggle avatar-render API.

Start with ``ViggleClient``; ``viggle_async.testing.FakeViggle`` is a local fake of
the API for tests. The public API is exactly ``__all__`` below.
"""

from ._backoff import RetryPolicy
from ._client import DEFAULT_BASE_URL, RetryEvent, ViggleClient
from ._clock import Clock, ManualClock, SystemClock
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
from ._resources import Characters, PreparedCreate, Renders, Scenes
from ._transport import Timeouts
from ._uploads import Limits

__version__ = "0.1.0.dev0"

__all__ = [
    "APIError",
    "AssetFailedError",
    "AssetState",
    "AuthenticationError",
    "BackgroundMode",
    "BadRequestError",
    "Character",
    "Characters",
    "Clock",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "Credits",
    "DEFAULT_BASE_URL",
    "DownloadError",
    "FastModeUnavailableError",
    "InsufficientCreditsError",
    "InvalidInputError",
    "JobFailedError",
    "Limits",
    "ManualClock",
    "Model",
    "NotFoundError",
    "Page",
    "PreparedCreate",
    "RateLimitError",
    "RenderFailedError",
    "RenderJob",
    "RenderProgress",
    "RenderState",
    "RenderStatus",
    "Renders",
    "RequestTimeoutError",
    "ResponseFormatError",
    "RetryEvent",
    "RetryPolicy",
    "Scene",
    "Scenes",
    "Segment",
    "ServerError",
    "SystemClock",
    "Timeouts",
    "TransportError",
    "UploadStalledError",
    "ViggleClient",
    "ViggleError",
    "WaitTimeoutError",
    "__version__",
]
