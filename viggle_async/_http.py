"""The request path: headers, the retry rules, the loop check and the response parsers,
between the resources (above) and a ``Transport`` (below). No aiohttp here.

Retry rules (docs/api/client-rules.md#create-retries, docs/api/client-rules.md#create-retries;
"never spend a credit twice"):

- reads, cancels and deletes are retried on connection errors, timeouts, 429 and 5xx;
- a create is retried only where no job can exist: the connection was never made
  (``ConnectError``), or the API answered 429 (``_protocol.proves_no_job``). Anything
  else after the last bytes went out (a timeout, a 5xx, an unreadable body) is raised
  with ``may_have_reached_server=True`` and never resent;
- delays are fully jittered (``RetryPolicy.base``/``cap``), except that a server's
  ``Retry-After`` (delta-seconds or an HTTP-date, read against the injected wall clock) is
  honoured exactly on every retried status, up to ``RetryPolicy.max_retry_after``: a longer
  one raises at once, the error carrying ``retry_after`` so a scheduler can pause everyone;
- a request that cannot connect is retried at most ``RetryPolicy.max_attempts`` times and
  never later than ``RetryPolicy.connect_deadline`` seconds after its first attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

import attrs
import cattrs

from ._backoff import RetryPolicy
from ._clock import Clock, SystemClock
from ._errors import ConfigurationError, ConnectError, TransportError
from ._models import Page
from ._protocol import (
    Request,
    Response,
    Transport,
    UploadObserver,
    check_ok,
    error_from_response,
    parse_model,
    parse_page,
    proves_no_job,
)

__all__ = ["RequestPath", "RetryEvent"]

T = TypeVar("T")
# The running asyncio loop or None (no exception when there is none): the loop check
# runs on every request.
_running_loop = asyncio.events._get_running_loop
logger = logging.getLogger("viggle_async")


@attrs.frozen
class RetryEvent:
    """Passed to ``on_retry`` before each retry sleep.

    ``attempt`` is 1 for the first retry; ``delay`` is the sleep in seconds; ``cause`` the
    error that made the attempt fail (a ``TransportError`` or an ``APIError``).
    """

    method: str
    path: str
    attempt: int  # 1 for the first retry
    delay: float
    cause: BaseException


class RequestPath:
    """Sends ``Request``s through one ``Transport`` with the retry rules above.

    ``api_key`` is held privately and only ever put in the Authorization header;
    ``clock`` (monotonic seconds) times the sleeps, ``wall_clock`` (an aware datetime)
    reads HTTP-date Retry-After headers, ``rand`` jitters.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        base_url: str,
        api_key: str | None,
        retry: RetryPolicy,
        clock: Clock,
        wall_clock: Callable[[], datetime],
        rand: Callable[[], float],
        on_retry: Callable[[RetryEvent], None] | None,
        converter: cattrs.Converter,
    ):
        self.transport = transport
        self.base_url = base_url
        self.retry = retry
        self.clock = clock
        self.wall_clock = wall_clock
        self.converter = converter
        self._rand = rand
        self._on_retry = on_retry
        # Observers added by code that shares the client (the supervisor's create pauses);
        # a tuple, rebuilt on change, so a retry iterates it without a copy.
        self._observers: tuple[Callable[[RetryEvent], None], ...] = ()
        self._has_key = api_key is not None
        # Built once (a status poll is cheap and thousands add up, benchmarks B5); the
        # key lives only inside this mapping, never in a repr or a message.
        self._plain = {"Accept": "application/json", "User-Agent": "viggle-async"}
        self._authed = ({**self._plain, "Authorization": f"Bearer {api_key}"}
                        if api_key is not None else self._plain)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._system_clock = type(clock) is SystemClock

    def __repr__(self) -> str:
        key = "set" if self._has_key else "none"
        return f"RequestPath(base_url={self.base_url!r}, api_key=<{key}>)"

    @property
    def has_api_key(self) -> bool:
        return self._has_key

    def headers(self, request: Request) -> Mapping[str, str]:
        """The headers for ``request``; ConfigurationError when it needs a key we lack."""
        if not request.auth:
            return self._plain
        if not self._has_key:
            raise ConfigurationError(
                f"{request.method} {request.path} needs an API key: pass api_key= or set "
                "VIGGLE_API_KEY (keys are created at https://portal.viggle.ai/api-keys)")
        return self._authed

    def observe_retries(self, observer: Callable[[RetryEvent], None]) -> Callable[[], None]:
        """Call ``observer`` before each retry sleep, after ``on_retry``; returns the
        function that removes it. For code that shares this client and must act on every
        retry as it happens (a create's 429 pauses every create of the account)."""
        self._observers = (*self._observers, observer)

        def remove() -> None:
            self._observers = tuple(o for o in self._observers if o is not observer)

        return remove

    def unbind_loop(self) -> None:
        """Forget the event loop (after ``aclose``: the next use may be in another loop)."""
        self._loop = None

    def _check_loop(self) -> asyncio.AbstractEventLoop | None:
        # A transport's connections belong to the loop that opened them (aiohttp). Used from
        # a second loop (a second ``asyncio.run``) they fail with a bare "Event loop is
        # closed" deep inside; say what to do instead, before anything is sent.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None  # another async library: the transport will speak for itself
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            # Drop the old loop's connections quietly (the transport's own business).
            loop_changed = getattr(self.transport, "loop_changed", None)
            if loop_changed is not None:
                loop_changed()
            raise ConfigurationError(
                "this ViggleClient was first used in another event loop (e.g. an earlier "
                "asyncio.run); its connections cannot move. Create the client inside the loop "
                "that uses it (async with ViggleClient() as client: ...), or await "
                "client.aclose() before using it from a new loop")
        return loop

    async def call(
        self,
        request: Request,
        parse: Callable[[Response], T],
        *,
        on_upload: Callable[[int], None] | None = None,
        before_last_bytes: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        """Send ``request`` with the retry rules and ``parse`` the final response.

        ``on_upload(sent)`` gets the file bytes sent so far in the current attempt (the
        ``UploadObserver.on_progress`` contract); ``before_last_bytes`` is awaited just
        before the body could be complete at the server. Raises what ``parse`` raises,
        the last ``TransportError`` or ``APIError`` once retries are spent, and
        ConfigurationError (no key; another event loop).
        """
        # The usual case inline (same loop as before): one call less per poll (issue 13).
        loop = _running_loop()
        if loop is None or loop is not self._loop:
            loop = self._check_loop()
        headers = self.headers(request)
        url = self.base_url + request.path
        observer = (None if on_upload is None and before_last_bytes is None
                    else UploadObserver(on_progress=on_upload,
                                        before_last_bytes=before_last_bytes))
        policy, clock = self.retry, self.clock
        # SystemClock reads this very loop's clock, through anyio's backend lookup (about
        # 1 µs): read the loop directly, as every poll pays it (issue 13).
        started = loop.time() if loop is not None and self._system_clock else clock.now()
        attempt = 0
        while True:
            connect_failed = False
            retry_after: float | None = None
            try:
                response = await self.transport.send(request, url=url, headers=headers,
                                                     observer=observer)
            except ConnectError as exc:
                cause: BaseException = exc
                connect_failed = True
            except TransportError as exc:
                if request.kind == "create":
                    logger.warning("%s %s failed and may have reached the API; not resent: %s",
                                   request.method, request.path, exc)
                    raise
                cause = exc
            else:
                status = response.status
                # A create is resent only after a 429 (it proves no job exists); every other
                # answer to it is final, ambiguous or not (parse raises with the flag set).
                if not (status == 429 or (status >= 500 and request.kind != "create")):
                    if request.kind == "create" and status >= 300 and not proves_no_job(response):
                        logger.warning("%s %s answered HTTP %d, which does not prove that no "
                                       "job exists; not resent", request.method, request.path,
                                       status)
                    return parse(response)
                error = error_from_response(response, now=self.wall_clock)
                cause, retry_after = error, error.retry_after
            if any(getattr(fp.source, "consumed_once", False) for fp in request.files):
                raise cause  # a one-shot stream was read: resending would send nothing
            delay = policy.delay(attempt, retry_after=retry_after, rand=self._rand)
            if delay is None:
                raise cause
            now = clock.now()
            if connect_failed and now + delay - started > policy.connect_deadline:
                raise cause
            attempt += 1
            logger.info("retrying %s %s (retry %d) in %.2f s after %s: %s", request.method,
                        request.path, attempt, delay, type(cause).__name__, cause)
            if self._on_retry is not None or self._observers:
                event = RetryEvent(request.method, request.path, attempt, delay, cause)
                if self._on_retry is not None:
                    self._on_retry(event)
                for watch in self._observers:
                    watch(event)
            await clock.sleep_until(now + delay)

    # --- parsers: Response -> model or error ---------------------------------------

    def parser(self, cls: type[T], **defaults: Any) -> Callable[[Response], T]:
        """A parser for ``cls``; ``defaults`` fill fields the answer left out."""
        return _ModelParser(cls, self.converter, self.wall_clock, defaults)

    def page_parser(self, key: str, cls: type[T], *, limit: int, offset: int
                    ) -> Callable[[Response], Page[T]]:
        """A parser for one page of a list endpoint (items under ``key``)."""
        conv, wall = self.converter, self.wall_clock
        return lambda r: parse_page(r, key, cls, conv, limit=limit, offset=offset, now=wall)

    def ok_parser(self) -> Callable[[Response], None]:
        """A parser for answers whose success body carries nothing we need (deletes)."""
        wall = self.wall_clock
        return lambda r: check_ok(r, now=wall)


class _ModelParser(Generic[T]):
    """``parse_model`` with its arguments bound. One slotted object, not a closure: a
    closure costs a function, its cells and their tuple on every poll, and at 32 polls in
    flight those live objects drive the cyclic GC twice as often (issue 13, B5)."""

    __slots__ = ("cls", "converter", "defaults", "now")

    def __init__(self, cls: type[T], converter: cattrs.Converter,
                 now: Callable[[], datetime], defaults: Mapping[str, Any]):
        self.cls = cls
        self.converter = converter
        self.now = now
        self.defaults = defaults

    def __call__(self, response: Response) -> T:
        return parse_model(response, self.cls, self.converter, now=self.now,
                           defaults=self.defaults)
