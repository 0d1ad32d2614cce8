"""``ViggleClient``: configuration, the one request path with its retry rules,
downloads, and the resources (``renders``, ``characters``, ``scenes``).

Retry rules (viggle-api.md §4, §8.1; "never spend a credit twice"): reads, cancels
and deletes are retried on connection errors, timeouts, 429 and 5xx with capped,
fully-jittered backoff honouring Retry-After. A create is retried only where no job
can exist: the connection was never made, or the API answered 429. Anything
ambiguous raises, with ``may_have_reached_server`` set.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import anyio
import attrs

from ._backoff import RetryPolicy
from ._clock import Clock, SystemClock
from ._converter import get_converter
from ._errors import (
    ConfigurationError,
    ConnectError,
    InvalidInputError,
    RateLimitError,
    TransportError,
)
from ._protocol import Request, Response, UploadObserver, check_url, error_from_response
from ._transport import AiohttpTransport, Timeouts
from ._uploads import Limits

if TYPE_CHECKING:
    import aiohttp

    from ._resources import Characters, Renders, Scenes

__all__ = ["DEFAULT_BASE_URL", "RetryEvent", "ViggleClient"]

DEFAULT_BASE_URL = "https://apis.viggle.ai"
T = TypeVar("T")
logger = logging.getLogger("viggle_async")


@attrs.frozen
class RetryEvent:
    """Passed to ``on_retry`` before each retry sleep."""

    method: str
    path: str
    attempt: int  # 1 for the first retry
    delay: float
    cause: BaseException


def _check_base_url(url: str, allow_insecure_http: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url {url!r} is not an absolute http(s) URL")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        # The key travels in a header: refuse cleartext except to this machine.
        raise ConfigurationError(
            f"base_url {url!r} uses plain http to a non-loopback host; use https, or pass "
            "allow_insecure_http=True if you really mean it")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ViggleClient:
    """An async client for the Viggle API. Use ``async with ViggleClient() as client``.

    ``api_key`` defaults to ``$VIGGLE_API_KEY``, ``base_url`` to ``$VIGGLE_BASE_URL``
    or ``https://apis.viggle.ai``. Pass ``session`` to share your aiohttp session (it
    is used, never closed). ``clock`` and ``rand`` exist so tests are exact.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeouts: Timeouts = Timeouts(),
        retry: RetryPolicy = RetryPolicy(),
        limits: Limits = Limits(),
        allow_insecure_http: bool = False,
        on_retry: Callable[[RetryEvent], None] | None = None,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
        transport: AiohttpTransport | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
    ):
        key = api_key if api_key is not None else os.environ.get("VIGGLE_API_KEY")
        self.__key = key or None
        self.base_url = _check_base_url(
            base_url or os.environ.get("VIGGLE_BASE_URL") or DEFAULT_BASE_URL,
            allow_insecure_http)
        self.timeouts = timeouts
        self.retry = retry
        self.limits = limits
        self.clock: Clock = clock or SystemClock()
        self._rand = rand
        self._on_retry = on_retry
        # Proxies: ``proxy`` for every request, else HTTP(S)_PROXY/ALL_PROXY/NO_PROXY,
        # read once here; ``trust_env=False`` ignores the environment.
        self._transport = transport or AiohttpTransport(session, timeouts=timeouts,
                                                        proxy=proxy, trust_env=trust_env)
        self._converter = get_converter()
        from ._resources import Characters, Renders, Scenes

        self.renders: Renders = Renders(self)
        self.characters: Characters = Characters(self)
        self.scenes: Scenes = Scenes(self)

    def __repr__(self) -> str:
        key = "set" if self.__key else "none"
        return f"ViggleClient(base_url={self.base_url!r}, api_key=<{key}>)"

    @property
    def has_api_key(self) -> bool:
        return self.__key is not None

    async def __aenter__(self) -> ViggleClient:
        # Open the HTTP session now (it builds TLS contexts: ~80 ms), not in the first request.
        self._transport.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's own HTTP session (a caller's session is left open)."""
        await self._transport.aclose()

    # --- the one request path -------------------------------------------------

    def _headers(self, request: Request) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "viggle-async"}
        if request.auth:
            if self.__key is None:
                raise ConfigurationError(
                    f"{request.method} {request.path} needs an API key: pass api_key= or set "
                    "VIGGLE_API_KEY (keys are created at https://portal.viggle.ai/api-keys)")
            headers["Authorization"] = f"Bearer {self.__key}"
        return headers

    async def _call(
        self,
        request: Request,
        parse: Callable[[Response], T],
        *,
        on_upload: Callable[[int], None] | None = None,
        before_last_bytes: Callable[[], Awaitable[None]] | None = None,
        on_attempt: Callable[[], None] | None = None,
    ) -> T:
        """Send with the retry rules above and ``parse`` the final response."""
        headers = self._headers(request)
        url = self.base_url + request.path
        attempt = 0
        while True:
            if on_attempt is not None:
                on_attempt()
            try:
                response = await self._transport.send(
                    request, url=url, headers=headers,
                    observer=UploadObserver(_deltas(on_upload), before_last_bytes))
            except ConnectError as exc:
                cause: BaseException = exc
                retry_after = None
            except TransportError as exc:
                if request.kind == "create":
                    logger.warning("%s %s failed and may have reached the API; not resent: %s",
                                   request.method, request.path, exc)
                    raise
                cause, retry_after = exc, None
            else:
                retryable = response.status == 429 or (
                    response.status >= 500 and request.kind != "create")
                if not retryable:
                    return parse(response)
                error = error_from_response(response, now=self.now())
                cause = error
                retry_after = error.retry_after if isinstance(error, RateLimitError) else None
            if any(getattr(fp.source, "consumed_once", False) for fp in request.files):
                raise cause  # a one-shot stream was read: resending would send nothing
            delay = self.retry.delay(attempt, retry_after=retry_after, rand=self._rand)
            if delay is None:
                raise cause
            attempt += 1
            logger.info("retrying %s %s (retry %d) in %.2f s after %s: %s", request.method,
                        request.path, attempt, delay, type(cause).__name__, cause)
            if self._on_retry is not None:
                self._on_retry(RetryEvent(request.method, request.path, attempt, delay, cause))
            await self.clock.sleep_until(self.clock.now() + delay)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def parse_as(self, cls: type[T], **defaults: Any) -> Callable[[Response], T]:
        from ._protocol import parse_model

        return lambda r: parse_model(r, cls, self._converter, now=self.now(), defaults=defaults)

    # --- account and downloads ---------------------------------------------------

    async def get_credits(self) -> Any:
        """The account's credit balance (``GET /api/credits``, §2.14)."""
        from ._endpoints import credits
        from ._models import Credits

        return await self._call(credits(), self.parse_as(Credits))

    async def download(self, url: str, dest: str | os.PathLike[str], *,
                       on_progress: Callable[[int, int | None], None] | None = None,
                       retry: RetryPolicy | None = None,
                       refresh: Callable[[], Awaitable[str]] | None = None,
                       job_id: str | None = None, segments: int = 1) -> Path:
        """Stream an output (``cdn_url`` / ``mask_cdn_url``) to ``dest``; returns ``dest``.

        Written to a temporary file beside ``dest``, checked against the length the CDN
        announced, fsynced and renamed; an existing ``dest`` is replaced only by a
        complete file. The URL is sent byte for byte as given (signed URLs), with no API
        key. CDN hiccups (5xx, 404, 429, dropped connections) are retried with ``retry``
        (default: 8 attempts, 0.5-10 s jittered backoff, Retry-After honoured); a dropped
        body resumes with a Range request where the CDN allows it.
        ``refresh`` (async, returns a fresh URL) is called after 403/404/410, e.g. an
        expired signature; prefer ``download_render``, which does that for you.
        ``segments`` > 1 fetches a large file over that many connections at once (Range
        requests; for CDNs that cap each connection), falling back to one on any surprise.
        ``on_progress(received_bytes, total_bytes_or_None)``. Raises InvalidInputError
        (bad ``url``/``dest``, before anything is sent) or DownloadError, whose message
        says how to fetch the output again (it is still on the server).
        """
        from ._download import DOWNLOAD_RETRY, download_to

        check_url("url", url)
        target = await _checked_download_args(dest, segments)

        def on_retry(attempt: int, delay: float, cause: Exception) -> None:
            if self._on_retry is not None:
                self._on_retry(RetryEvent("GET", urlsplit(url).path, attempt, delay, cause))

        await download_to(self._transport, url, target, retry=retry or DOWNLOAD_RETRY,
                          clock=self.clock, rand=self._rand, now=self.now, refresh=refresh,
                          on_progress=on_progress, on_retry=on_retry, job_id=job_id,
                          segments=segments)
        return target

    async def download_render(self, job_id: str, dest: str | os.PathLike[str], *,
                              mask: bool = False,
                              on_progress: Callable[[int, int | None], None] | None = None,
                              retry: RetryPolicy | None = None, segments: int = 1) -> Path:
        """Download a finished render's output (``mask=True``: its mask video) to ``dest``.

        Reads the job's status for the URL, and reads it again for a freshly signed URL
        whenever the CDN answers 403, 404 or 410 (signed output URLs expire). Otherwise
        as ``download``. Raises InvalidInputError when the render has no such output
        (not complete yet, or no mask: only ``background_mode="transparent"`` has one),
        APIError/TransportError from the status read, DownloadError as ``download``.
        """
        async def current_url() -> str:
            status = await self.renders.get(job_id)
            url = status.mask_cdn_url if mask else status.cdn_url
            if url is None:
                if not status.is_complete:
                    raise InvalidInputError(
                        "job_id", f"render {job_id} is {status.status}: no output yet",
                        f"wait for it first (client.renders.wait({job_id!r}) or "
                        f"`viggle-async wait {job_id}`)")
                raise InvalidInputError(
                    "mask", f"render {job_id} has no mask output",
                    "only renders with background_mode='transparent' have one; "
                    "pass mask=False")
            return url

        await _checked_download_args(dest, segments)  # before the status read
        return await self.download(await current_url(), dest, on_progress=on_progress,
                                   retry=retry, refresh=current_url, job_id=job_id,
                                   segments=segments)


async def _checked_download_args(dest: str | os.PathLike[str], segments: int) -> Path:
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= 16:
        raise InvalidInputError("segments", f"{segments!r} is not a whole number 1-16",
                                "pass segments=1 (one connection) up to 16")
    target = Path(dest)
    if await anyio.to_thread.run_sync(target.is_dir):
        raise InvalidInputError("dest", f"{str(target)!r} is a directory",
                                "pass a file path, e.g. out/render.mp4")
    if not await anyio.to_thread.run_sync(target.parent.is_dir):
        raise InvalidInputError("dest", f"folder {str(target.parent)!r} does not exist",
                                "create the folder first")
    return target


def _deltas(report: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """The transport reports cumulative bytes per send; ``on_upload`` here takes chunks."""
    if report is None:
        return None
    last = 0

    def progress(total: int) -> None:
        nonlocal last
        report(total - last)
        last = total

    return progress
