"""``ViggleClient``: configuration, composed of the request path (``_http``) and the
resources (``renders``, ``characters``, ``scenes``), plus downloads.

The retry rules live in ``_http`` (its docstring); the resources know only the request
path, so nothing here is imported back from below.
"""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio

from ._backoff import RetryPolicy
from ._clock import Clock, SystemClock
from ._converter import get_converter
from ._download import DOWNLOAD_RETRY, download_to
from ._endpoints import credits
from ._errors import ConfigurationError, InvalidInputError
from ._http import RequestPath, RetryEvent
from ._models import Credits
from ._protocol import Transport, check_url
from ._resources import Characters, Renders, Scenes
from ._segments_cache import SegmentsCache
from ._transport import AiohttpTransport, Timeouts
from ._uploads import Limits

if TYPE_CHECKING:
    import aiohttp

__all__ = ["DEFAULT_BASE_URL", "RetryEvent", "ViggleClient"]

DEFAULT_BASE_URL = "https://apis.viggle.ai"


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
    """``localhost``, 127.0.0.0/8 and ``::1``. An IPv4-mapped IPv6 address
    (``::ffff:127.0.0.1``) is *not* loopback here, on every Python: ``ipaddress`` changed
    its answer in 3.13 (issue 11.13), and a spelling that only some resolvers and socket
    stacks take to this machine is a lookalike, so plain http to it is refused."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return False
    return address.is_loopback


class ViggleClient:
    """An async client for the Viggle API. Use ``async with ViggleClient() as client``.

    ``api_key`` defaults to ``$VIGGLE_API_KEY``, ``base_url`` to ``$VIGGLE_BASE_URL``
    or ``https://apis.viggle.ai`` (plain http only to loopback unless
    ``allow_insecure_http``). Pass ``session`` to share your aiohttp session (it is used,
    never closed), or ``transport`` for any ``Transport`` (e.g.
    ``viggle_async.testing.MockTransport``). ``retry`` sets the retry rules, ``timeouts``
    and ``limits`` the transport's and the uploads'. ``clock`` (monotonic seconds),
    ``wall_clock`` (an aware datetime, for HTTP-date Retry-After) and ``rand`` exist so
    tests are exact. ``segments_cache``: where template segments are kept across processes
    (Get Scene does not return them): True (default) for the per-user cache under
    ``$XDG_CACHE_HOME/viggle-async/segments`` unless ``VIGGLE_ASYNC_NO_CACHE=1``; False
    for none; or a ``SegmentsCache``. A client belongs to the event loop that first uses it (until
    ``aclose``); use from another raises ConfigurationError.
    Raises ConfigurationError for a refused ``base_url``.
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
        transport: Transport | None = None,
        wall_clock: Callable[[], datetime] | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        segments_cache: SegmentsCache | bool = True,
    ):
        key = api_key if api_key is not None else os.environ.get("VIGGLE_API_KEY")
        self.base_url = _check_base_url(
            base_url or os.environ.get("VIGGLE_BASE_URL") or DEFAULT_BASE_URL,
            allow_insecure_http)
        self.timeouts = timeouts
        self.retry = retry
        self.limits = limits
        self.clock: Clock = clock or SystemClock()
        self._rand = rand  # kept for the download path (it shares the jitter source)
        self._on_retry = on_retry
        # Proxies: ``proxy`` for every request, else HTTP(S)_PROXY/ALL_PROXY/NO_PROXY,
        # read once here; ``trust_env=False`` ignores the environment.
        self._transport: Transport = transport or AiohttpTransport(
            session, timeouts=timeouts, proxy=proxy, trust_env=trust_env)
        self._http = RequestPath(
            self._transport, base_url=self.base_url, api_key=key or None, retry=retry,
            clock=self.clock, wall_clock=wall_clock or _utcnow, rand=rand, on_retry=on_retry,
            converter=get_converter())
        self._renders = Renders(self._http, limits=limits)
        self._characters = Characters(self._http, limits=limits)
        cache: SegmentsCache | None
        if isinstance(segments_cache, SegmentsCache):
            cache = segments_cache
        else:  # per user and account; VIGGLE_ASYNC_NO_CACHE=1 turns the default off
            cache = SegmentsCache.from_env(key or None) if segments_cache else None
        self._scenes = Scenes(self._http, limits=limits, segments_cache=cache)

    @property
    def renders(self) -> Renders:
        """Render jobs: ``create``, ``prepare``/``submit``, ``get``, ``cancel``,
        ``wait``."""
        return self._renders

    @property
    def characters(self) -> Characters:
        """Characters: ``create``, ``get``, ``list``, ``iterate``, ``delete``,
        ``wait``."""
        return self._characters

    @property
    def scenes(self) -> Scenes:
        """Scenes: ``create``, ``import_template``, ``get``, ``list``,
        ``iterate``, ``delete``, ``wait``."""
        return self._scenes

    def __repr__(self) -> str:
        key = "set" if self._http.has_api_key else "none"
        return f"ViggleClient(base_url={self.base_url!r}, api_key=<{key}>)"

    @property
    def has_api_key(self) -> bool:
        """Whether an API key was given (the key itself is never exposed)."""
        return self._http.has_api_key

    async def __aenter__(self) -> ViggleClient:
        # Open the HTTP session now (it builds TLS contexts: ~80 ms), not in the first request.
        opener = getattr(self._transport, "open", None)
        if callable(opener):
            opener()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's own HTTP session (a caller's session is left open). The
        client may then be used again, from any event loop."""
        await self._transport.aclose()
        self._http.unbind_loop()

    def _now(self) -> datetime:
        """The injected wall clock (an aware datetime), e.g. for HTTP-date Retry-After."""
        return self._http.wall_clock()

    async def get_credits(self) -> Credits:
        """The account's credit balance (``GET /api/credits``), in credits.

        Raises AuthenticationError (bad key), ConfigurationError (no key), TransportError.
        """
        return await self._http.call(credits(), self._http.parser(Credits))

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
        check_url("url", url)
        target = await _checked_download_args(dest, segments)

        def on_retry(attempt: int, delay: float, cause: Exception) -> None:
            if self._on_retry is not None:
                self._on_retry(RetryEvent("GET", urlsplit(url).path, attempt, delay, cause))

        await download_to(self._transport, url, target, retry=retry or DOWNLOAD_RETRY,
                          clock=self.clock, rand=self._rand, now=self._now, refresh=refresh,
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


def _utcnow() -> datetime:
    return datetime.now(UTC)
