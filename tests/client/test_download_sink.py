"""The download sink works over any ``Transport`` (issue 12.2): it needs only
``stream(url, headers=...)``. An in-memory transport stands in for the network here, so
the cases are exact: a body cut short resumes, a cancelled download leaves nothing, a
disk error is not retried as a network one."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import attrs
import pytest
from loophelp import names

from viggle_async import DownloadError, RetryPolicy, TransportError
from viggle_async._download import download_to
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

    async def chunks(self) -> AsyncIterator[bytes]:
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


async def _download(transport: MemoryTransport, dest: Path, clock: ManualClock) -> int:
    return await download_to(transport, "https://cdn.example/o.mp4", dest,  # type: ignore[arg-type]
                             retry=POLICY, clock=clock, rand=lambda: 0.5,
                             now=lambda: datetime.now(UTC))


async def test_any_transport_downloads_and_resumes(tmp_path: Path) -> None:
    transport = MemoryTransport()
    transport.script = [{"fail_after": 2_000_000}, {"fail_after": 1_000_000}]
    clock = ManualClock()
    async with clock.autojump():
        size = await _download(transport, tmp_path / "o.mp4", clock)
    assert size == len(BODY) and (tmp_path / "o.mp4").read_bytes() == BODY
    ranges = [r.get("Range") for r in transport.requests]
    assert ranges == [None, "bytes=2000000-", "bytes=3000000-"]
    assert all("Authorization" not in r for r in transport.requests)
    assert names(tmp_path) == ["o.mp4"]


async def test_a_cancelled_download_leaves_no_temporary_file(tmp_path: Path) -> None:
    transport = MemoryTransport()
    transport.script = [{"block_after": 3_000_000}]
    clock = ManualClock()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_download, transport, tmp_path / "o.mp4", clock)
        await transport.blocked.wait()
        await anyio.wait_all_tasks_blocked()
        assert len(names(tmp_path)) == 1  # the temporary file, mid-download
        tg.cancel_scope.cancel()
    assert names(tmp_path) == []


async def test_a_disk_error_is_reported_not_retried(tmp_path: Path) -> None:
    transport = MemoryTransport()
    clock = ManualClock()
    missing = tmp_path / "gone" / "o.mp4"  # the folder vanished before the download
    with pytest.raises(DownloadError, match="cannot write"):
        await _download(transport, missing, clock)
    assert transport.requests == []
