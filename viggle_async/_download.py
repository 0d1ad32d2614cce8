"""Downloads of outputs over any ``Transport``: retried, resumed, verified, atomic.

A finished render's ``cdn_url`` is a paid output, so a brief CDN hiccup must not lose it
(docs/api/lifecycles.md#render-statuses: poll, then download from ``cdn_url``;
docs/api/client-rules.md#downloads: no Authorization header
to the CDN; docs/api/open-questions.md#retention: signed output URLs are reported to expire):

- 5xx, 408, 425, 429 and a connection that fails are retried with capped, fully
  jittered backoff (``RetryPolicy``), honouring Retry-After; so is 404, which a CDN
  answers for a moment after completion.
- 403, 404 and 410 call ``refresh`` (when given) for a freshly signed URL and go on.
- A body cut short resumes with ``Range: bytes=N-`` and ``If-Range`` (the first
  answer's strong ETag, else its Last-Modified), so a re-signed URL naming a different
  object restarts from zero instead of splicing two files. A 206 is used only when its
  Content-Range starts at N and has the first answer's total; a 200 restarts.
- Bytes go to a temporary file beside ``dest``, written by one thread fed through a
  bounded queue (network and disk overlap; memory stays bounded), checked against the
  total length, fsynced once, then renamed over ``dest``. A failed or cancelled
  download leaves no file behind, and an existing ``dest`` untouched.

Only the caller's headers go out (``Accept-Encoding: identity``, Range, If-Range): the
API key never reaches a CDN.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import queue
import re
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import anyio

from ._backoff import RetryPolicy, parse_retry_after
from ._clock import Clock
from ._errors import DownloadError, TransportError, ViggleError
from ._protocol import StreamedResponse, Transport

__all__ = ["DOWNLOAD_RETRY", "download_to"]

logger = logging.getLogger("viggle_async")

#: Downloads retry longer than API calls: the output is paid for, and a CDN that is not
#: ready yet (404/503 right after completion) needs a second or two. Delays in seconds.
DOWNLOAD_RETRY = RetryPolicy(max_attempts=8, base=0.5, cap=10.0, max_retry_after=60.0)

Progress = Callable[[int, int | None], None]
Refresh = Callable[[], Awaitable[str]]
OnRetry = Callable[[int, float, Exception], None]

_PART = ".part"
_BATCH = 1024 * 1024  # bytes gathered before a hand-off to the writer thread
_MIN_SEGMENT = 4 * 1024 * 1024  # bytes: smaller files are not worth more connections
_QUEUED = 4  # batches queued for the writer: bounds memory to ~(_QUEUED + 1) * _BATCH
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_REFRESH_STATUSES = frozenset({403, 404, 410})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


class _Retry(Exception):
    """One attempt failed in a way worth another (internal)."""

    def __init__(self, problem: str, *, retry_after: float | None = None,
                 refresh: bool = False, stale: bool = False, final: bool = False):
        super().__init__(problem)
        self.retry_after = retry_after
        self.refresh = refresh  # a freshly signed URL may help
        self.stale = stale  # only a freshly signed URL can help
        self.final = final  # a refusal no retry can change


async def download_to(transport: Transport, url: str, dest: Path, *, retry: RetryPolicy,
                      clock: Clock, rand: Callable[[], float], now: Callable[[], datetime],
                      refresh: Refresh | None = None, on_progress: Progress | None = None,
                      on_retry: OnRetry | None = None, job_id: str | None = None,
                      segments: int = 1) -> int:
    """Download ``url`` to ``dest``; returns the file's size in bytes.

    ``segments`` > 1 fetches a large file (at least ``segments`` x 4 MiB) over that many
    connections at once with ``Range`` requests, for CDNs that cap each connection's
    speed; it needs a CDN that announces ``Accept-Ranges: bytes`` and a validator, and
    falls back to one connection (resuming what is contiguous) on any surprise.

    ``refresh`` (async, returns a fresh URL) is awaited after a 403, 404 or 410.
    ``on_progress(received, total)`` reports bytes (total None when unknown; received
    goes back to 0 when a download has to restart). ``on_retry(attempt, delay_s,
    cause)`` is called before each backoff sleep. Raises DownloadError when every
    attempt failed or the CDN refused for good; its message says the output is still on
    the server and how to fetch it again (``job_id`` names the render in that hint).
    """
    # A process killed mid-download leaves its temporary file behind: clear those first.
    await anyio.to_thread.run_sync(_remove_stale_parts, dest)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{_PART}")
    try:
        sink = await anyio.to_thread.run_sync(_Sink, tmp)
    except OSError as exc:
        raise DownloadError(f"cannot write beside {str(dest)!r}: {exc}") from None
    state = _State()
    attempt = 0
    try:
        while True:
            try:
                await _attempt(transport, url, sink, state, now, on_progress,
                               _Segmenting(segments, retry, clock, rand))
                break
            except _Retry as problem:
                failure: Exception = problem
                if state.received > state.high_water:
                    # A resumed attempt that moved forward is not a failed one.
                    state.high_water, attempt = state.received, 0
                final = problem.final or (problem.stale and refresh is None)
                delay = None if final else retry.delay(
                    attempt, retry_after=problem.retry_after, rand=rand)
                if problem.refresh and refresh is not None and delay is not None:
                    try:
                        url = await refresh()
                    except ViggleError as exc:
                        failure = exc  # e.g. the status poll failed: try again later
                if delay is None:
                    raise _gave_up(url, attempt + 1, str(failure), job_id) from None
                attempt += 1
                logger.info("retrying download of %s (retry %d) in %.2f s: %s", _origin(url),
                            attempt, delay, failure)
                if on_retry is not None:
                    on_retry(attempt, delay, failure)
                await clock.sleep_until(clock.now() + delay)
        await sink.finish()
        await anyio.to_thread.run_sync(os.replace, tmp, dest)
        return state.received
    except OSError as exc:  # the disk, not the network: retrying would not help
        raise DownloadError(f"writing {str(dest)!r} failed: {exc}") from None
    finally:
        # Shielded in place (not a detached task): a cancelled download returns only
        # once its writer thread has stopped and its temporary file is gone.
        with anyio.CancelScope(shield=True):
            await sink.abort()
            with contextlib.suppress(FileNotFoundError):
                await anyio.to_thread.run_sync(os.unlink, tmp)


class _State:
    """What one download knows across its attempts."""

    def __init__(self) -> None:
        self.received = 0  # bytes handed to the sink, in order, from offset 0
        self.high_water = 0
        self.total: int | None = None  # the object's length, from the first full answer
        self.validator: str | None = None  # strong ETag or Last-Modified, for If-Range
        self.resumable = False
        self.segmented = False  # tried once: after a fallback, one connection only


class _Segmenting:
    def __init__(self, segments: int, retry: RetryPolicy, clock: Clock,
                 rand: Callable[[], float]):
        self.segments, self.retry, self.clock, self.rand = segments, retry, clock, rand

    def applies(self, headers: Mapping[str, str], state: _State) -> bool:
        return (self.segments > 1 and not state.segmented and state.resumable
                and state.total is not None and state.total >= self.segments * _MIN_SEGMENT
                and headers.get("accept-ranges", "").lower() == "bytes")


async def _attempt(transport: Transport, url: str, sink: _Sink, state: _State,
                   now: Callable[[], datetime], on_progress: Progress | None,
                   segmenting: _Segmenting) -> None:
    # Ask for the file as stored: with a compressed transfer, Content-Length counts
    # encoded bytes and could not be checked against what is written.
    headers = {"Accept-Encoding": "identity", "User-Agent": "viggle-async"}
    resuming = state.received > 0 and state.resumable and state.validator is not None
    if resuming:
        headers["Range"] = f"bytes={state.received}-"
        headers["If-Range"] = state.validator or ""
    batch: list[bytes] = []
    pending = 0  # bytes in batch
    try:
        async with transport.stream(url, headers=headers) as resp:
            status = resp.status
            if status == 206 and resuming and _continues(resp.headers, state):
                pass  # the rest of the same object, from where we stopped
            elif status in (200, 206):
                if status == 206:  # a range we did not ask for, or of another object
                    _forget(state)
                    await sink.truncate()
                    raise _Retry("the CDN answered a range that does not continue the file")
                if state.received:
                    await sink.truncate()  # no Range support, or the object changed
                    state.received = 0
                _learn(resp.headers, state)
                if segmenting.applies(resp.headers, state):
                    await _segmented(transport, url, resp, sink, state, segmenting,
                                     on_progress)
                    return
            else:
                raise _status_problem(status, resp.headers, now)
            body = resp.chunks()
            try:
                async for chunk in body:
                    # Chunks go to the writer as a list (written with writelines): no copy.
                    batch.append(chunk)
                    pending += len(chunk)
                    if pending >= _BATCH:
                        await sink.write(batch, state.received)
                        state.received += pending
                        batch, pending = [], 0
                        if on_progress is not None:
                            on_progress(state.received, state.total)
            finally:
                # Closed now (an async generator's aclose), even if the disk failed.
                close = getattr(body, "aclose", None)
                if close is not None:
                    await close()
            if batch or state.received == 0:
                await sink.write(batch, state.received)
                state.received += pending
                if on_progress is not None:
                    on_progress(state.received, state.total)
    except TransportError as exc:
        # The bytes received are sound: keep them and resume from there.
        if batch:
            await sink.write(batch, state.received)
            state.received += pending
        raise _Retry(str(exc)) from None
    if state.total is not None and state.received != state.total:
        raise _Retry(f"the body ended after {state.received} of {state.total} bytes")


class _Fallback(Exception):
    """Segmented download gave up: go on over one connection (internal)."""


async def _segmented(transport: Transport, url: str, first: StreamedResponse, sink: _Sink,
                     state: _State, how: _Segmenting, on_progress: Progress | None) -> None:
    """Fetch ``state.total`` bytes as ``how.segments`` ranges at once; segment 0 reads on
    from ``first`` (a 200 already open). Each segment resumes its own drops (with
    If-Range); anything else stops them all and the download resumes over one connection
    from the contiguous prefix written so far."""
    total = state.total or 0
    validator = state.validator or ""
    state.segmented = True
    bounds = [total * i // how.segments for i in range(how.segments + 1)]
    done = bounds[:-1]  # next offset to write, per segment
    problems: list[BaseException] = []

    def report() -> None:
        if on_progress is not None:
            on_progress(sum(d - b for d, b in zip(done, bounds, strict=False)), total)

    async def copy(i: int, resp: StreamedResponse) -> None:
        end = bounds[i + 1]
        batch: list[bytes] = []
        size = 0  # bytes in batch
        body = resp.chunks()
        try:
            async for chunk in body:
                room = end - done[i] - size
                batch.append(chunk if len(chunk) <= room else chunk[:room])
                size += len(batch[-1])
                if size >= _BATCH or done[i] + size >= end:
                    await sink.write(batch, done[i])
                    done[i] += size
                    batch, size = [], 0
                    report()
                if done[i] >= end:
                    break  # segment 0's answer runs on to the end of the file: stop here
        finally:
            if batch:  # keep what arrived before a drop
                await sink.write(batch, done[i])
                done[i] += size
            close = getattr(body, "aclose", None)
            if close is not None:
                await close()

    async def run(i: int, opened: StreamedResponse | None) -> None:
        attempt, seen = 0, done[i]
        try:
            while done[i] < bounds[i + 1]:
                try:
                    if opened is not None:
                        resp, opened = opened, None
                        await copy(i, resp)
                    else:
                        headers = {"Accept-Encoding": "identity", "User-Agent": "viggle-async",
                                   "Range": f"bytes={done[i]}-{bounds[i + 1] - 1}",
                                   "If-Range": validator}
                        async with transport.stream(url, headers=headers) as resp:
                            want = f"bytes {done[i]}-{bounds[i + 1] - 1}/{total}"
                            if (resp.status != 206 or
                                    resp.headers.get("content-range", "").strip() != want):
                                raise _Fallback(f"a segment answered HTTP {resp.status} "
                                                f"{resp.headers.get('content-range', '')}")
                            await copy(i, resp)
                    if done[i] < bounds[i + 1]:
                        raise TransportError("a segment ended early",
                                             may_have_reached_server=True)
                except TransportError as exc:
                    if done[i] > seen:
                        attempt, seen = 0, done[i]  # it moved forward: not a failure
                    delay = how.retry.delay(attempt, retry_after=None, rand=how.rand)
                    if delay is None:
                        raise _Fallback(str(exc)) from None
                    attempt += 1
                    await how.clock.sleep_until(how.clock.now() + delay)
        except (_Fallback, OSError) as exc:
            problems.append(exc)
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for i in range(how.segments):
            tg.start_soon(run, i, first if i == 0 else None)
    for problem in problems:
        if isinstance(problem, OSError):
            raise problem
    if problems:
        # The contiguous prefix is sound; the rest is rewritten over one connection.
        prefix = next((d for d, end in zip(done, bounds[1:], strict=False) if d < end), total)
        await sink.truncate(prefix)
        state.received = prefix
        raise _Retry(f"segmented download stopped: {problems[0]}")
    state.received = total


def _continues(headers: Mapping[str, str], state: _State) -> bool:
    value = headers.get("content-range")
    match = _CONTENT_RANGE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        return False
    start, size = int(match[1]), match[3]
    return start == state.received and (state.total is None or size == str(state.total))


def _forget(state: _State) -> None:
    state.received = 0
    state.validator = None
    state.resumable = False


def _learn(headers: Mapping[str, str], state: _State) -> None:
    get = headers.get
    encoded = (get("content-encoding") or "identity").lower() != "identity"
    length = get("content-length")
    # A server that compresses anyway: the transport decodes it and checks the encoded
    # length itself, so the decoded size is unknown and a range could not be resumed.
    state.total = int(length) if length and length.isdigit() and not encoded else None
    etag = get("etag")
    strong = etag if etag and not etag.startswith("W/") else None  # If-Range needs strong
    state.validator = strong or get("last-modified")
    state.resumable = not encoded and state.validator is not None


def _status_problem(status: int, headers: Mapping[str, str],
                    now: Callable[[], datetime]) -> _Retry:
    text = f"the CDN answered HTTP {status}"
    if status in _RETRY_STATUSES:
        return _Retry(text, retry_after=parse_retry_after(headers.get("retry-after"),
                                                          now=now()))
    if status in _REFRESH_STATUSES:
        # 404: a CDN may not have the file for a moment after completion; 403/410: an
        # expired signature, fixed only by a freshly signed URL.
        return _Retry(text, refresh=True, stale=status != 404)
    return _Retry(text, final=True)


def _gave_up(url: str, attempts: int, problem: str, job_id: str | None) -> DownloadError:
    where = _origin(url)
    if job_id is not None:
        hint = (f"the output of render {job_id} is still on the server: fetch it again with "
                f"`viggle-async download {job_id} DEST` or client.download_render("
                f"{job_id!r}, dest)")
    else:
        hint = ("the output is still on the server: fetch it again with "
                "`viggle-async download JOB DEST` or client.download_render(job_id, dest), "
                "which gets a freshly signed URL")
    return DownloadError(f"download of {where} failed after {attempts} attempt"
                         f"{'s' if attempts != 1 else ''} ({problem}); {hint}")


class _Sink:
    """A temporary file written by a dedicated thread (blocking writes never stall the
    event loop, and the next bytes arrive while the last are written)."""

    def __init__(self, path: Path):
        # Opened by the caller's worker thread, so the event loop never blocks on it.
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115
        self._queue: queue.Queue[tuple[int, list[bytes]] | int | None] = queue.Queue(
            maxsize=_QUEUED)
        self._error: OSError | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name="viggle-download-writer",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        f = self._file
        try:
            while (item := self._queue.get()) is not None:
                if self._error is not None:
                    continue  # drain, so a producer never blocks on a full queue
                try:
                    if isinstance(item, int):
                        f.seek(item)
                        f.truncate()
                    else:
                        f.seek(item[0])  # segments write at their own offsets
                        f.writelines(item[1])
                except OSError as exc:
                    self._error = exc
            if self._error is None and not self._done:
                f.flush()
                os.fsync(f.fileno())  # once, at the end: the rename must follow the data
        except OSError as exc:
            self._error = exc
        finally:
            f.close()

    async def _put(self, item: tuple[int, list[bytes]] | int | None) -> None:
        if self._error is not None:
            raise self._error
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            # The disk is behind: wait in a worker thread (the loop stays free), which is
            # also what bounds memory.
            await anyio.to_thread.run_sync(self._queue.put, item)

    async def write(self, chunks: list[bytes], offset: int) -> None:
        """Write ``chunks`` (in order) at byte ``offset``."""
        if chunks:
            await self._put((offset, chunks))

    async def truncate(self, size: int = 0) -> None:
        await self._put(size)

    async def finish(self) -> None:
        """Flush, fsync and close; raises the writer's OSError if any."""
        await self._put(None)
        await anyio.to_thread.run_sync(self._thread.join)
        self._done = True
        if self._error is not None:
            raise self._error

    async def abort(self) -> None:
        if self._done or not self._thread.is_alive():
            self._done = True
            return
        self._done = True  # the writer skips the fsync
        await anyio.to_thread.run_sync(self._queue.put, None)
        await anyio.to_thread.run_sync(self._thread.join)


def _remove_stale_parts(dest: Path) -> None:
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.{'[0-9a-f]' * 8}{_PART}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _origin(url: str) -> str:
    # Never echo query strings: signed CDN URLs carry credentials there.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
