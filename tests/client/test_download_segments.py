"""Segmented downloads (issue 13): a large output over several Range connections at
once, still verified and written atomically; any surprise falls back to one connection.
Against a loopback CDN that serves byte ranges and records every request."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from loophelp import names, serve

from viggle_async import InvalidInputError, RetryPolicy, SystemClock, ViggleClient
from viggle_async._download import _WRITEBACK, download_to
from viggle_async._transport import AiohttpTransport

BODY = random.Random(11).randbytes(17 * 2**20 + 3)  # 4 segments of over 4 MiB
ETAG = '"s1"'
FAST = RetryPolicy(max_attempts=4, base=0.001, cap=0.002)


class RangeCDN:
    def __init__(self) -> None:
        self.ranges: list[str | None] = []
        self.sent = 0
        self.drop_range_once: set[int] = set()  # range starts to cut halfway, once
        self.ignore_ranges = False
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        wanted = request.headers.get("Range")
        self.ranges.append(wanted)
        headers = {"ETag": ETAG, "Accept-Ranges": "bytes"}
        start, end, status = 0, len(BODY) - 1, 200
        if wanted and not self.ignore_ranges and request.headers.get("If-Range") == ETAG:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end, status = int(first), int(last or len(BODY) - 1), 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(BODY)}"
        data = BODY[start:end + 1]
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(data)
        await resp.prepare(request)
        cut = len(data)
        if wanted and start in self.drop_range_once:
            self.drop_range_once.discard(start)
            cut //= 2
        try:
            for pos in range(0, cut, 256 * 1024):
                piece = data[pos:min(cut, pos + 256 * 1024)]
                await resp.write(piece)
                self.sent += len(piece)
        except ConnectionError:  # the client stopped reading (segment 0's first answer)
            return resp
        if cut < len(data):
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp


@pytest.fixture
async def cdn() -> AsyncIterator[RangeCDN]:
    server = RangeCDN()
    async with serve(server.handle, "GET") as server.base_url:
        yield server


@pytest.fixture
async def client(cdn: RangeCDN) -> AsyncIterator[ViggleClient]:
    async with ViggleClient("k", base_url=cdn.base_url, trust_env=False,
                            rand=random.Random(2).random) as c:
        yield c


def _sha(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def _bounds(n: int) -> list[int]:
    return [len(BODY) * i // n for i in range(n + 1)]


async def test_four_segments_fetch_disjoint_ranges(client: ViggleClient, cdn: RangeCDN,
                                                   tmp_path: Path) -> None:
    progress: list[tuple[int, int | None]] = []
    dest = await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4", segments=4,
                                 retry=FAST, on_progress=lambda n, t: progress.append((n, t)))
    assert _sha(dest) == hashlib.sha256(BODY).digest()
    b = _bounds(4)
    assert cdn.ranges[0] is None  # the first answer learns the size and validator
    assert sorted(r for r in cdn.ranges[1:] if r) == sorted(
        f"bytes={b[i]}-{b[i + 1] - 1}" for i in range(1, 4))
    assert progress[-1] == (len(BODY), len(BODY))
    assert names(tmp_path) == ["o.mp4"]


async def test_a_dropped_segment_resumes_only_itself(client: ViggleClient, cdn: RangeCDN,
                                                     tmp_path: Path) -> None:
    b = _bounds(3)
    cdn.drop_range_once.add(b[1])
    dest = await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4", segments=3,
                                 retry=FAST)
    assert _sha(dest) == hashlib.sha256(BODY).digest()
    resumed = [r for r in cdn.ranges if r and r.startswith("bytes=") and
               b[1] < int(r[6:].split("-")[0]) < b[2]]
    assert len(resumed) == 1 and resumed[0].endswith(f"-{b[2] - 1}")
    assert len(cdn.ranges) == 4


async def test_a_cdn_that_ignores_ranges_falls_back_to_one_connection(
        client: ViggleClient, cdn: RangeCDN, tmp_path: Path) -> None:
    cdn.ignore_ranges = True  # but still says Accept-Ranges: the segments get 200s
    dest = await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4", segments=4,
                                 retry=FAST)
    assert _sha(dest) == hashlib.sha256(BODY).digest()
    assert names(tmp_path) == ["o.mp4"]


async def test_small_files_use_one_connection(client: ViggleClient, cdn: RangeCDN,
                                              tmp_path: Path) -> None:
    dest = await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4", segments=16,
                                 retry=FAST)  # 17 MiB / 16 < 4 MiB per segment
    assert _sha(dest) == hashlib.sha256(BODY).digest() and cdn.ranges == [None]


@pytest.mark.parametrize("segments", [0, 17, 2.0, True, "4"])
async def test_bad_segment_counts_fail_before_sending(client: ViggleClient, cdn: RangeCDN,
                                                      tmp_path: Path, segments: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4",
                              segments=segments)  # type: ignore[arg-type]
    assert info.value.field == "segments" and cdn.ranges == []


@pytest.mark.parametrize("case", ["dropped-segment", "ignored-ranges"])
async def test_segments_through_the_writer_thread(cdn: RangeCDN, tmp_path: Path,
                                                  case: str) -> None:
    # A disk slower than the network (every write timed at 20 ms, sleeping in the
    # kernel) moves the writes to the writer thread mid-download: offsets, resumes and
    # the fallback's truncation still give the exact file.
    if case == "dropped-segment":
        cdn.drop_range_once.add(_bounds(4)[2])
    else:
        cdn.ignore_ranges = True
    transport = AiohttpTransport(trust_env=False)
    try:
        size = await download_to(
            transport, f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4", retry=FAST,
            clock=SystemClock(), rand=random.Random(3).random,
            now=lambda: datetime.now(UTC), segments=4,
            write_timer=itertools.count(step=0.02).__next__,  # type: ignore[arg-type]
            write_sleeps=itertools.count().__next__)
    finally:
        await transport.aclose()
    assert size == len(BODY) and _sha(tmp_path / "o.mp4") == hashlib.sha256(BODY).digest()
    assert names(tmp_path) == ["o.mp4"]


async def test_a_cancelled_segmented_download_leaves_the_old_file_alone(
        client: ViggleClient, cdn: RangeCDN, tmp_path: Path) -> None:
    (tmp_path / "o.mp4").write_bytes(b"the old file")
    with anyio.CancelScope() as scope:
        # Cancelled at the first progress event (1 MiB in): the segments are under way.
        await client.download(f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4", segments=4,
                              retry=FAST, on_progress=lambda n, t: scope.cancel())
    assert scope.cancelled_caught
    assert names(tmp_path) == ["o.mp4"]
    assert (tmp_path / "o.mp4").read_bytes() == b"the old file"


async def test_segments_hand_each_block_to_the_disk_once(cdn: RangeCDN,
                                                         tmp_path: Path) -> None:
    # Blocks are aligned to the file, not to the segments: the block a segment boundary
    # falls in is handed over by the later segment, none twice, and the file is exact.
    handed: list[tuple[int, int]] = []

    def writeback(fd: int, offset: int, length: int) -> None:
        handed.append((offset, length))
        if _WRITEBACK is not None:
            _WRITEBACK(fd, offset, length)

    transport = AiohttpTransport(trust_env=False)
    try:
        size = await download_to(
            transport, f"{cdn.base_url}/o.mp4", tmp_path / "o.mp4", retry=FAST,
            clock=SystemClock(), rand=random.Random(3).random,
            now=lambda: datetime.now(UTC), segments=4, write_behind=2**20,
            writeback=writeback)
    finally:
        await transport.aclose()
    assert size == len(BODY) and _sha(tmp_path / "o.mp4") == hashlib.sha256(BODY).digest()
    blocks = sorted(b for offset, length in handed
                    for b in range(offset >> 20, (offset + length) >> 20))
    assert blocks == list(range(len(BODY) >> 20))
