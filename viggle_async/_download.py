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
- Bytes go to a temporary file beside ``dest``, each chunk written where it arrives
  (``os.pwrite`` into the page cache, no batching, no copy), checked against the total
  length, fsynced once in a worker thread, then renamed over ``dest``. Each 8 MiB block
  the download completes is handed to the disk at once (``posix_fadvise(DONTNEED)``
  starts its writeback), so the disk writes while the network reads and the final
  fsync finds little left to do. Should the disk
  push back (writes that block, as writeback throttling does), the rest goes through a
  writer thread fed by a bounded queue, so the event loop stops waiting on the disk.
  A failed or cancelled download leaves no file behind, and an existing ``dest``
  untouched.

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
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from functools import partial
from pathlib import Path
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
_PROGRESS_STEP = 1024 * 1024  # bytes between progress events (a progress bar's resolution)
_MIN_SEGMENT = 4 * 1024 * 1024  # bytes: smaller files are not worth more connections
# A write into the page cache takes tens of microseconds (256 KiB: median 60 us, p99
# 160 us on the benchmark machine). One that takes _SLOW_WRITE or more was either
# preempted (a busy machine: several per GiB at load 3-5, all involuntary switches) or
# put to sleep by the kernel (writeback throttling when the disk is slower than the
# network, a filesystem journal). Only the second is the disk, and only a thread helps
# there: so a slow write opens a _SLOW_WINDOW during which each write is bracketed by
# the thread's count of voluntary context switches, and a slow write that slept moves
# all later writes to the writer thread.
_SLOW_WRITE = 0.01  # seconds
_SLOW_WINDOW = 1.0  # seconds
# Bytes per block handed to the disk as soon as it is complete (a power of two). Without
# it, Linux starts writeback only past dirty_background_ratio (10% of memory: GiBs),
# so a 1 GiB download waited for most of its bytes in the final fsync (B2: 0.5 s of
# 1.6 s); with it, writing overlaps receiving. One call per block: 128 per GiB, about
# 0.5 ms each, the work the fsync would otherwise do.
_WRITE_BEHIND = 8 * 1024 * 1024


try:
    import resource

    _RUSAGE_THREAD: int | None = resource.RUSAGE_THREAD  # Linux only
except (ImportError, AttributeError):  # elsewhere: a write that stays slow is enough
    _RUSAGE_THREAD = None


def _thread_sleeps() -> int:
    """How many times this thread has slept in the kernel (voluntary context switches)."""
    assert _RUSAGE_THREAD is not None
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw


_SLEEPS: Callable[[], int] | None = _thread_sleeps if _RUSAGE_THREAD is not None else None
WriteBack = Callable[[int, int, int], None]  # (fd, offset, length): start writing it out


def _fadvise_writeback(fd: int, offset: int, length: int) -> None:
    # On Linux, DONTNEED starts writeback of the range's dirty pages without waiting for
    # it, then drops the pages already clean (those still being written stay cached).
    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


# Elsewhere (macOS, Windows) nothing starts writeback early: the final fsync does it all.
_WRITEBACK: WriteBack | None = _fadvise_writeback if hasattr(os, "posix_fadvise") else None
_NEVER = 1024  # a shift past any file's size: write-behind off
_QUEUED = 16  # chunks (one socket read each, <= 256 KiB) queued for the writer thread
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
                      segments: int = 1,
                      write_timer: Callable[[], float] = time.perf_counter,
                      write_sleeps: Callable[[], int] | None = _SLEEPS,
                      write_behind: int = _WRITE_BEHIND,
                      writeback: WriteBack | None = _WRITEBACK) -> int:
    """Download ``url`` to ``dest``; returns the file's size in bytes.

    ``segments`` > 1 fetches a large file (at least ``segments`` x 4 MiB) over that many
    connections at once with ``Range`` requests, for CDNs that cap each connection's
    speed; it needs a CDN that announces ``Accept-Ranges: bytes`` and a validator, and
    falls back to one connection (resuming what is contiguous) on any surprise.

    ``refresh`` (async, returns a fresh URL) is awaited after a 403, 404 or 410.
    ``on_progress(received, total)`` reports bytes (total None when unknown; received
    goes back to 0 when a download has to restart): each time another MiB is written,
    when an attempt ends, and at the end. ``on_retry(attempt, delay_s,
    cause)`` is called before each backoff sleep. Raises DownloadError when every
    attempt failed or the CDN refused for good; its message says the output is still on
    the server and how to fetch it again (``job_id`` names the render in that hint).
    ``write_timer`` (seconds) times the writes into the temporary file and
    ``write_sleeps`` counts the thread's sleeps in the kernel, to notice a disk slower
    than the network (see ``_Sink``). ``writeback(fd, offset, length)`` starts writing
    each completed ``write_behind``-byte block (a power of two; 0: never) to the disk.
    """
    # A process killed mid-download leaves its temporary file behind: clear those first.
    await anyio.to_thread.run_sync(_remove_stale_parts, dest)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{_PART}")
    try:
        sink = await anyio.to_thread.run_sync(partial(
            _Sink, tmp, timer=write_timer, sleeps=write_sleeps,
            write_behind=write_behind, writeback=writeback))
    except OSError as exc:
        raise DownloadError(f"cannot write beside {str(dest)!r}: {exc}") from None
    state = _State()
    attempt = 0
    placed = False  # renamed over dest: nothing left to clean up
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
        placed = True
        return state.received
    except OSError as exc:  # the disk, not the network: retrying would not help
        raise DownloadError(f"writing {str(dest)!r} failed: {exc}") from None
    finally:
        # Shielded in place (not a detached task): a cancelled download returns only
        # once its writer thread has stopped and its temporary file is gone.
        with anyio.CancelScope(shield=True):
            await sink.abort()
            if not placed:
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
    reported = state.received  # at the last progress event
    if resuming:
        headers["Range"] = f"bytes={state.received}-"
        headers["If-Range"] = state.validator or ""
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
                # The hot loop (benchmark B2): each chunk goes to the file as it comes,
                # with no batching, joining or copying, and nothing else per chunk but a
                # sum and a comparison. state.received stays exact, so a drop resumes
                # from the last byte written.
                async for chunk in body:
                    if not sink.write(chunk, state.received):
                        await sink.put(chunk, state.received)  # the writer is behind
                    state.received += len(chunk)
                    if on_progress is not None and state.received - reported >= _PROGRESS_STEP:
                        reported = state.received
                        on_progress(reported, state.total)
            finally:
                # Closed now (an async generator's aclose), even if the disk failed.
                close = getattr(body, "aclose", None)
                if close is not None:
                    await close()
            if on_progress is not None and (state.received != reported or not reported):
                on_progress(state.received, state.total)
    except TransportError as exc:
        # The bytes received are written: keep them and resume from there.
        if on_progress is not None and state.received != reported:
            on_progress(state.received, state.total)
        raise _Retry(str(exc)) from None
    if state.total is not None and state.received != state.total:
        if state.received > state.total:
            # More than announced: which bytes are wrong is unknown, so none are kept.
            received, state.received = state.received, 0
            await sink.truncate()
            raise _Retry(f"the body ran to {received} bytes, past the {state.total} "
                         "announced")
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
    reported = [0]  # bytes written, over every segment, at the last progress event

    def report(force: bool = False) -> None:
        if on_progress is None:
            return
        got = sum(d - b for d, b in zip(done, bounds, strict=False))
        if force or got - reported[0] >= _PROGRESS_STEP:
            reported[0] = got
            on_progress(got, total)

    async def copy(i: int, resp: StreamedResponse) -> None:
        end = bounds[i + 1]
        body = resp.chunks()
        try:
            async for chunk in body:
                room = end - done[i]
                if len(chunk) > room:
                    chunk = chunk[:room]  # segment 0's answer runs on to the end of the file
                if not sink.write(chunk, done[i]):
                    await sink.put(chunk, done[i])
                done[i] += len(chunk)
                report()
                if done[i] >= end:
                    break
        finally:
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
    report(force=True)
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


_Item = tuple[int, bytes] | int | None  # (offset, chunk), a size to truncate to, the end


def _seek_write(fd: int, data: bytes | memoryview, offset: int) -> int:
    os.lseek(fd, offset, os.SEEK_SET)
    return os.write(fd, data)


# Windows has no positional write; a sink has one writer at a time, so seek + write will do.
_pwrite: Callable[[int, bytes | memoryview, int], int] = getattr(os, "pwrite", _seek_write)


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    done = _pwrite(fd, data, offset)
    while done < len(data):  # a short write (rare: a signal, a nearly full disk)
        done += _pwrite(fd, memoryview(data)[done:], offset + done)


class _Sink:
    """The temporary file: each chunk written at its offset as it arrives.

    ``os.pwrite`` from the event loop is one copy into the page cache, the cheapest way
    there (the benchmark's floor writes the same way); offsets make one path for
    sequential and segmented downloads. A write that takes ``slow_write`` seconds or
    more (by ``timer``) opens a ``slow_window``: a write in it that is slow too and slept
    (``sleeps``, a count of the thread's voluntary context switches, went up; without
    ``sleeps``, slow is enough) hands every later write to a dedicated thread through a
    bounded queue: ``write`` then returns False when that queue is full, and the caller
    awaits ``put``. The final fsync always runs off the event loop.

    A write that completes a ``write_behind``-byte block (aligned; a power of two) hands
    that block to ``writeback`` (by the same path, inside the same timing): the kernel
    writes it out while the download goes on. Blocks are aligned to the file, not to a
    connection, so segmented downloads need no bookkeeping: a block shared with the
    previous segment may be handed over before all of it is written, which only leaves
    its late pages to the final fsync.
    """

    def __init__(self, path: Path, *, slow_write: float = _SLOW_WRITE,
                 slow_window: float = _SLOW_WINDOW,
                 timer: Callable[[], float] = time.perf_counter,
                 sleeps: Callable[[], int] | None = _SLEEPS,
                 write_behind: int = _WRITE_BEHIND,
                 writeback: WriteBack | None = _WRITEBACK):
        # Opened by the caller's worker thread, so the event loop never blocks on it.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        self._fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
        self._slow, self._window = slow_write, slow_window
        self._watch_until = -float("inf")  # end of the window opened by a slow write
        self._timer, self._sleeps = timer, sleeps
        if write_behind & (write_behind - 1):
            raise ValueError(f"write_behind must be a power of two, not {write_behind}")
        # A block is offset >> shift; "never" is a shift no file reaches, so the hot
        # path's test is one comparison either way.
        self._shift = write_behind.bit_length() - 1 if write_behind > 0 else _NEVER
        self._writeback = writeback
        if writeback is None:
            self._shift = _NEVER
        self._queue: queue.Queue[_Item] | None = None  # set once the writer thread runs
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None
        self._aborted = False
        self._closed = False

    def write(self, chunk: bytes, offset: int) -> bool:
        """Write ``chunk`` at byte ``offset`` (or queue it for the writer thread); False
        when that queue is full: nothing was taken, ``await put(chunk, offset)``.
        Raises OSError from the disk."""
        q = self._queue
        if q is None:
            start = self._timer()
            if start > self._watch_until:  # the usual case: only the clock, twice
                done = _pwrite(self._fd, chunk, offset)
                if done != len(chunk):
                    _write_all(self._fd, memoryview(chunk)[done:], offset + done)
                if offset >> self._shift != (offset + len(chunk)) >> self._shift:
                    self._write_behind(offset, offset + len(chunk))
                if self._timer() - start >= self._slow:
                    self._watch_until = start + self._window
                return True
            slept = self._sleeps() if self._sleeps is not None else 0
            _write_all(self._fd, chunk, offset)
            if offset >> self._shift != (offset + len(chunk)) >> self._shift:
                self._write_behind(offset, offset + len(chunk))
            if self._timer() - start >= self._slow and (
                    self._sleeps is None or self._sleeps() > slept):
                self._start_thread()
            return True
        if self._error is not None:
            raise self._error
        try:
            q.put_nowait((offset, chunk))
        except queue.Full:
            return False
        return True

    async def put(self, chunk: bytes, offset: int) -> None:
        """Queue ``chunk`` for the writer thread, waiting (in a worker thread: the event
        loop stays free) until there is room; that wait is what bounds memory."""
        await self._enqueue((offset, chunk))

    async def truncate(self, size: int = 0) -> None:
        if self._queue is None:
            await anyio.to_thread.run_sync(os.ftruncate, self._fd, size)
        else:
            await self._enqueue(size)

    async def finish(self) -> None:
        """Wait for every write, fsync and close; raises the first OSError."""
        if self._thread is None:
            self._closed = True
            await anyio.to_thread.run_sync(self._sync_and_close)
        else:
            await self._enqueue(None)
            await anyio.to_thread.run_sync(self._thread.join)
            self._closed = True
        if self._error is not None:
            raise self._error

    async def abort(self) -> None:
        """Stop (no fsync) and close; never raises. A no-op after ``finish``."""
        if self._closed:
            return
        self._closed = self._aborted = True
        if self._thread is None:
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(os.close, self._fd)
        elif self._thread.is_alive():
            await anyio.to_thread.run_sync(self._stop_writer)

    def _write_behind(self, offset: int, end: int) -> None:
        """Hand the blocks a write at ``offset`` up to ``end`` completed to the disk."""
        assert self._writeback is not None
        shift = self._shift
        first, last = offset >> shift, end >> shift  # the block it began in; the first after
        try:
            self._writeback(self._fd, first << shift, (last - first) << shift)
        except OSError as exc:  # advice only: a filesystem that refuses it is left alone
            logger.debug("no early writeback for downloads here: %s", exc)
            self._shift = _NEVER

    def _sync_and_close(self) -> None:
        try:
            os.fsync(self._fd)  # once, at the end: the rename must follow the data
        except OSError as exc:
            self._error = exc
        finally:
            os.close(self._fd)

    def _start_thread(self) -> None:
        logger.debug("download writes go to a writer thread: the disk is slower than "
                     "the network")
        self._queue = queue.Queue(maxsize=_QUEUED)
        self._thread = threading.Thread(target=self._run, name="viggle-download-writer",
                                        daemon=True)
        self._thread.start()

    async def _enqueue(self, item: _Item) -> None:
        assert self._queue is not None
        if self._error is not None and item is not None:
            raise self._error
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            await anyio.to_thread.run_sync(self._queue.put, item)
        if self._error is not None and item is not None:
            raise self._error

    def _stop_writer(self) -> None:
        assert self._queue is not None and self._thread is not None
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        assert self._queue is not None
        fd, get = self._fd, self._queue.get
        try:
            while (item := get()) is not None:
                if self._error is not None or self._aborted:
                    continue  # drain, so a producer never blocks on a full queue
                try:
                    if isinstance(item, int):
                        os.ftruncate(fd, item)
                    else:
                        offset, chunk = item
                        _write_all(fd, chunk, offset)
                        if offset >> self._shift != (offset + len(chunk)) >> self._shift:
                            self._write_behind(offset, offset + len(chunk))
                except OSError as exc:
                    self._error = exc
            if self._error is None and not self._aborted:
                os.fsync(fd)  # once, at the end: the rename must follow the data
        except OSError as exc:
            self._error = exc
        finally:
            os.close(fd)


def _remove_stale_parts(dest: Path) -> None:
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.{'[0-9a-f]' * 8}{_PART}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _origin(url: str) -> str:
    # Never echo query strings: signed CDN URLs carry credentials there.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
