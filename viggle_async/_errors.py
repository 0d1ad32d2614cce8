"""The exception tree. Every error this library raises is a ``ViggleError``::

    ViggleError
    ├── ConfigurationError          bad client settings (no API key, refused base URL)
    ├── InvalidInputError           bad arguments, caught locally before any byte is sent
    ├── APIError                    the API answered with an error status; ``retry_after``
    │   │                           (seconds, when the server said) and
    │   │                           ``may_have_reached_server`` (a create may have made a job)
    │   ├── BadRequestError         400 / 422 (validation)
    │   │   └── FastModeUnavailableError   400 CS-UORC01-001: no fast capacity right now
    │   ├── AuthenticationError     401 / 403
    │   ├── InsufficientCreditsError       402
    │   ├── NotFoundError           404
    │   ├── ConflictError           409 (e.g. cancelling a finished job)
    │   ├── RateLimitError          429, with ``retry_after``
    │   └── ServerError             5xx
    ├── TransportError              no usable answer; ``may_have_reached_server`` says
    │   │                           whether a create may have been made anyway
    │   ├── ConnectError            could not connect: nothing was sent
    │   ├── RequestTimeoutError     no answer in time
    │   └── UploadStalledError      an upload made no progress for ``stall_timeout``
    ├── ResponseFormatError         the answer was not in any shape the API documents
    │                               (``may_have_reached_server``: True unless proven otherwise)
    ├── DownloadError               an output download failed (bad status, truncated)
    ├── JobFailedError              a job ended ``failed`` or ``cancelled``
    │   ├── RenderFailedError       ``.status`` is the final RenderStatus
    │   └── AssetFailedError        a character or scene ended ``failed``
    ├── WaitTimeoutError            ``wait()`` gave up; ``.last`` is the last status seen
    │                               (also a builtin ``TimeoutError``)
    └── JournalError                (in ``_journal``) a journal refused a step or its file
        └── JournalInUseError       another run holds the journal open

No exception, repr or message ever contains the API key: errors are built from
responses and arguments, never from request headers.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AssetFailedError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "DownloadError",
    "FastModeUnavailableError",
    "InsufficientCreditsError",
    "InvalidInputError",
    "JobFailedError",
    "NotFoundError",
    "RateLimitError",
    "RenderFailedError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "ServerError",
    "TransportError",
    "UploadStalledError",
    "ViggleError",
    "WaitTimeoutError",
]


class ViggleError(Exception):
    """Root of every error raised by viggle_async."""


class ConfigurationError(ViggleError):
    """The client is not configured to make this call (e.g. no API key)."""


class InvalidInputError(ViggleError, ValueError):
    """An argument breaks a documented rule; raised before anything is sent.

    ``field`` names the argument, ``fix`` says what to do, and ``error_code`` is the
    code the API would have answered with, when the docs name one.
    """

    def __init__(self, field: str, problem: str, fix: str, *, error_code: str | None = None):
        self.field = field
        self.problem = problem
        self.fix = fix
        self.error_code = error_code
        code = f" [{error_code}]" if error_code else ""
        super().__init__(f"{field}: {problem}{code}. Fix: {fix}")


class APIError(ViggleError):
    """The API answered with an error status.

    ``error_code``/``message``/``action`` come from the ``detail`` envelope; quote
    ``error_code`` and ``request_id`` to support.

    ``retry_after`` is the server's ``Retry-After`` in seconds (None when absent or
    unreadable), on any status, so a scheduler can pause everyone. ``may_have_reached_server``
    is True when the answer does not prove the request had no effect: for a create, a job
    may exist and been billed (a gateway's 5xx after the backend accepted it); only the
    documented refusals (``_protocol.proves_no_job``) set it False.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_code: str | None = None,
        action: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
        may_have_reached_server: bool = False,
    ):
        self.status = status
        self.message = message
        self.error_code = error_code
        self.action = action
        self.request_id = request_id
        self.body = body
        self.retry_after = retry_after
        self.may_have_reached_server = may_have_reached_server
        parts = [f"HTTP {status}"]
        if error_code:
            parts.append(error_code)
        text = f"{' '.join(parts)}: {message}"
        if action:
            text += f" (action: {action})"
        if request_id:
            text += f" [request id {request_id}]"
        super().__init__(text)


class BadRequestError(APIError):
    """400 or 422: the request failed the API's validation."""


class FastModeUnavailableError(BadRequestError):
    """400 CS-UORC01-001: no fast-mode capacity; retry later or with ``fast=False``."""


class AuthenticationError(APIError):
    """401 or 403: the API key is missing, invalid or expired."""


class InsufficientCreditsError(APIError):
    """402: not enough credits to start this job."""


class NotFoundError(APIError):
    """404: no such job, character or scene."""


class ConflictError(APIError):
    """409: the request conflicts with the job's state (e.g. already finished)."""


class RateLimitError(APIError):
    """429: too many requests; ``retry_after`` is seconds to wait, when the API said."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None,
                 **kwargs: Any):
        super().__init__(status, message, retry_after=retry_after, **kwargs)


class ServerError(APIError):
    """5xx: the API (or a gateway in front of it) failed. ``retry_after`` when it said; for
    a create, ``may_have_reached_server`` is True: the job may exist anyway."""

    def __init__(self, status: int, message: str, *, may_have_reached_server: bool = True,
                 **kwargs: Any):
        super().__init__(status, message, may_have_reached_server=may_have_reached_server,
                         **kwargs)


class TransportError(ViggleError):
    """No usable answer arrived.

    ``may_have_reached_server`` is False only when the request provably never left
    (e.g. the connection could not be made); for a create that is the only case
    that is safe to resend.
    """

    def __init__(self, message: str, *, may_have_reached_server: bool):
        self.may_have_reached_server = may_have_reached_server
        super().__init__(message)


class ConnectError(TransportError):
    """The connection could not be made; nothing was sent."""

    def __init__(self, message: str):
        super().__init__(message, may_have_reached_server=False)


class RequestTimeoutError(TransportError):
    """The API did not answer in time."""


class UploadStalledError(TransportError):
    """An upload made no progress for the configured ``stall_timeout``."""


class ResponseFormatError(ViggleError):
    """The API answered in a shape that none of the documented variants match.

    ``status`` is the HTTP status. ``may_have_reached_server`` defaults to True: an
    unreadable answer (an HTML page, an empty body, a 2xx without a job id) to a create
    proves nothing, so the job may exist.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 may_have_reached_server: bool = True):
        self.status = status
        self.may_have_reached_server = may_have_reached_server
        super().__init__(message)


class DownloadError(ViggleError):
    """Downloading an output failed; no file was left at the destination."""


class JobFailedError(ViggleError):
    """A job reached a terminal state other than success."""


class RenderFailedError(JobFailedError):
    """A render ended ``failed`` or ``cancelled``; ``status`` is the final RenderStatus."""

    def __init__(self, status: Any):
        self.status = status
        code = getattr(status, "error_code", None)
        msg = getattr(status, "error_message", None) or getattr(status, "error", None)
        text = f"render {status.job_id} ended {status.status}"
        if code:
            text += f" [{code}]"
        if msg:
            text += f": {msg}"
        super().__init__(text)


class AssetFailedError(JobFailedError):
    """A character or scene ended ``failed``; ``asset`` is its final state."""

    def __init__(self, asset: Any):
        self.asset = asset
        kind = type(asset).__name__.lower()
        msg = getattr(asset, "error_message", None) or getattr(asset, "error", None)
        super().__init__(f"{kind} {asset.id} ended {asset.status}" + (f": {msg}" if msg else ""))


class WaitTimeoutError(ViggleError, TimeoutError):
    """``wait()`` ran out of time; ``last`` is the last status seen (the job goes on)."""

    def __init__(self, message: str, *, last: Any):
        self.last = last
        super().__init__(message)
