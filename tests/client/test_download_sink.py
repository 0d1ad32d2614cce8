"""The download sink works over any ``Transport`` (issue 12.2): it needs only
``stream(url, headers=...)``. An in-memory transport stands in for the network here, so
the cases are exact: a body cut short resumes, a cancelled download leaves nothing, a
disk error is not retried as a network one, a body of the wrong size never lands.

Each case runs on both write paths (issue 13): chunks written straight from the event
loop, and the writer thread the sink switches to when the disk blocks (forced here with
a write timer under which every write is slow and a count of kernel sleeps that every
write raises)."""

from __future__ import annotations

import errno
import itertools
import logging
import random
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import attrs
import pytest
from loophelp import names

from viggle_async import DownloadError, RetryPolicy, TransportError
from viggle_async._download import _WRITEBACK, download_to
from viggle_async._protocol import StreamedResponse
from viggle_async.testing import ManualClock

BODY = random.Random(5).randbytes(5 * 2**20 + 17)
POLICY = RetryPolicy(max_attempts=3, base=1.0, cap=1.0)


@attrs.define
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    fail_after: int | None = None  # raise TransportError after this many body bytes
    block_after: int | None = None  # wait forever after this many body bytes
    extra: int = 0  # bytes sent beyond the announced length

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.extra:
            self.body += bytes(self.extra)
        for pos in range(0, len(self.body), 100_000):
            if self.fail_after is not None and pos >= self.fail_after:
                raise TransportError("connection reset", may_have_reached_server=True)
            if self.block_after is not None and pos >= self.block_after:
                await anyio.sleep_forever()
            yield self.body[pos:pos + 100_000]


class MemoryTransport:
    """Serves ``BODY`` with an ETag and honours Range; ``script`` shapes each answer."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.script: list[dict[str, int]] = []
        self.blocked = anyio.Event()

    @asynccontextmanager
    async def _open(self, url: str, headers: Mapping[str, str]
                    ) -> AsyncIterator[StreamedResponse]:
        self.requests.append(dict(headers))
        shape = self.script.pop(0) if self.script else {}
        start = 0
        out = {"etag": '"e"'}
        if "Range" in headers and headers.get("If-Range") == '"e"':
            start = int(headers["Range"][6:-1])
            out["content-range"] = f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"
        out["content-length"] = str(len(BODY) - start)
        answer = Answer(206 if start else 200, out, BODY[start:], **shape)
        if answer.block_after is not None:
            self.blocked.set()
        yield answer

    def stream(self, url: str, *, headers: Mapping[str, str]) -> object:
        return self._open(url, headers)


def _blocking_disk() -> dict[str, object]:
    """A disk that blocks every write: each takes 20 ms and sleeps in the kernel, so the
    second moves the writes to the writer thread."""
    return {"write_timer": itertools.count(step=0.02).__next__,
            "write_sleeps": itertools.count().__next__}


TIMERS = {"from-the-loop": None, "writer-thread": _blocking_disk}


@pytest.fixture(params=list(TIMERS))
def write_path(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
               ) -> str:
    caplog.set_level(logging.DEBUG, logger="viggle_async")
    return str(request.param)


def _used_thread(caplog: pytest.LogCaptureFixture) -> bool:
    return "writer thread" in caplog.text


async def _download(transport: MemoryTransport, dest: Path, clock: ManualClock,
                    write_path: str = "from-the-loop", **options: object) -> int:
    make = TIMERS[write_path]
    if make is not None:
        options.update(make())
    return await download_to(transport, "https://cdn.example/o.mp4", dest,  # type: ignore[arg-type]
                             retry=POLICY, clock=clock, rand=lambda: 0.5,
                             now=lambda: datetime.now(UTC), **options)  # type: ignore[arg-type]


async def test_any_transport_downloads_and_resumes(tmp_path: Path, write_path: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    transport = MemoryTransport()
    transport.script = [{"fail_after": 2_000_000}, {"fail_after": 1_000_000}]
    clock = ManualClock()
    progress: list[tuple[int, int | None]] = []
    async with clock.autojump():
        size = await _download(transport, tmp_path / "o.mp4", clock, write_path,
                               on_progress=lambda n, t: progress.append((n, t)))
    assert size == len(BODY) and (tmp_path / "o.mp4").read_bytes() == BODY
    ranges = [r.get("Range") for r in transport.requests]
    assert ranges == [None, "bytes=2000000-", "bytes=3000000-"]
    assert all("Authorization" not in r for r in transport.requests)
    assert names(tmp_path) == ["o.mp4"]
    assert _used_thread(caplog) == (write_path == "writer-thread")
    # Progress bars: an event at least every MiB (plus one chunk), ending at the total.
    steps = [b[0] - a[0] for a, b in itertools.pairwise(progress)]
    assert progress[-1] == (len(BODY), len(BODY))
    assert max(steps) <= 2**20 + 100_000 and min(steps) > 0


@pytest.mark.parametrize("case", ["one-slow-write", "slow-but-never-slept"])
async def test_writes_preempted_on_a_busy_machine_stay_in_the_loop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str) -> None:
    # A write that was slow because the machine is busy (preempted: an involuntary
    # switch) is not a slow disk, and the writer thread would not help it.
    caplog.set_level(logging.DEBUG, logger="viggle_async")
    if case == "one-slow-write":  # then every write takes no time, sleeping or not
        ticks = iter([0.0, 0.5])
        options: dict[str, object] = {"write_timer": lambda: next(ticks, 9.0),
                                      "write_sleeps": itertools.count().__next__}
    else:  # every write takes 20 ms, and the thread never sleeps in the kernel
        options = {"write_timer": itertools.count(step=0.02).__next__,
                   "write_sleeps": lambda: 7}
    clock = ManualClock()
    await download_to(MemoryTransport(), "https://cdn.example/o.mp4",  # type: ignore[arg-type]
                      tmp_path / "o.mp4", retry=POLICY, clock=clock, rand=lambda: 0.5,
                      now=lambda: datetime.now(UTC), **options)  # type: ignore[arg-type]
    assert (tmp_path / "o.mp4").read_bytes() == BODY
    assert not _used_thread(caplog)


async def test_a_cancelled_download_leaves_no_temporary_file(tmp_path: Path,
                                                             write_path: str) -> None:
    transport = MemoryTransport()
    transport.script = [{"block_after": 3_000_000}]
    clock = ManualClock()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_download, transport, tmp_path / "o.mp4", clock, write_path)
        await transport.blocked.wait()
        await anyio.wait_all_tasks_blocked()
        assert len(names(tmp_path)) == 1  # the temporary file, mid-download
        tg.cancel_scope.cancel()
    assert names(tmp_path) == []
    assert not [t for t in threading.enumerate() if t.name == "viggle-download-writer"]


@pytest.mark.parametrize("extra", [1, 250_000])
async def test_a_body_longer_than_announced_never_lands(tmp_path: Path, write_path: str,
                                                        extra: int) -> None:
    transport = MemoryTransport()
    transport.script = [{"extra": extra}] * POLICY.max_attempts
    (tmp_path / "o.mp4").write_bytes(b"the old file")
    clock = ManualClock()
    async with clock.autojump():
        with pytest.raises(DownloadError, match="past the 5242897 announced"):
            await _download(transport, tmp_path / "o.mp4", clock, write_path)
    assert names(tmp_path) == ["o.mp4"]
    assert (tmp_path / "o.mp4").read_bytes() == b"the old file"


async def test_a_disk_error_is_reported_not_retried(tmp_path: Path) -> None:
    transport = MemoryTransport()
    clock = ManualClock()
    missing = tmp_path / "gone" / "o.mp4"  # the folder vanished before the download
    with pytest.raises(DownloadError, match="cannot write"):
        await _download(transport, missing, clock)
    assert transport.requests == []


async def test_a_body_longer_than_announced_is_fetched_again_from_zero(
        tmp_path: Path, write_path: str) -> None:
    transport = MemoryTransport()
    transport.script = [{"extra": 3}]  # then the right length
    clock = ManualClock()
    async with clock.autojump():
        size = await _download(transport, tmp_path / "o.mp4", clock, write_path)
    assert size == len(BODY) and (tmp_path / "o.mp4").read_bytes() == BODY
    assert [r.get("Range") for r in transport.requests] == [None, None]  # not resumed


class HandedToDisk:
    """The write-behind seam: records each range handed to the disk, then starts its
    writeback for real (where the platform can)."""

    def __init__(self, refuse: bool = False) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.refuse = refuse

    def __call__(self, fd: int, offset: int, length: int) -> None:
        self.ranges.append((offset, length))
        if self.refuse:  # a filesystem that takes no advice
            raise OSError(errno.EINVAL, "Invalid argument")
        if _WRITEBACK is not None:
            _WRITEBACK(fd, offset, length)


async def test_each_completed_block_goes_to_the_disk_once_while_downloading(
        tmp_path: Path, write_path: str) -> None:
    # 100,000-byte chunks straddle the 1 MiB blocks, and two drops resume mid-block
    # (at 2,000,000 and 3,000,000): each whole block is handed over once, in order,
    # as soon as its last byte is written; the tail (17 bytes) is left to the fsync.
    transport = MemoryTransport()
    transport.script = [{"fail_after": 2_000_000}, {"fail_after": 1_000_000}]
    handed = HandedToDisk()
    clock = ManualClock()
    async with clock.autojump():
        size = await _download(transport, tmp_path / "o.mp4", clock, write_path,
                               write_behind=2**20, writeback=handed)
    assert size == len(BODY) and (tmp_path / "o.mp4").read_bytes() == BODY
    assert handed.ranges == [(i * 2**20, 2**20) for i in range(5)]


async def test_a_filesystem_that_refuses_early_writeback_still_gets_the_file(
        tmp_path: Path, write_path: str, caplog: pytest.LogCaptureFixture) -> None:
    handed = HandedToDisk(refuse=True)
    clock = ManualClock()
    async with clock.autojump():
        size = await _download(MemoryTransport(), tmp_path / "o.mp4", clock, write_path,
                               write_behind=2**20, writeback=handed)
    assert size == len(BODY) and (tmp_path / "o.mp4").read_bytes() == BODY
    assert handed.ranges == [(0, 2**20)]  # asked once, then left alone
    assert "no early writeback" in caplog.text
