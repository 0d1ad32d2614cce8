"""A file that changes size while it uploads fails at once, locally, before its last bytes
go out (issue 11.6): too few bytes would hang the request until the read timeout (then be
reported ambiguous), too many would corrupt the body. Either way no job can exist, so the
error is an InvalidInputError naming the field and both byte counts, and
``before_last_bytes`` (the journal's ``sending`` step) never runs."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio
import loophelp
import pytest
from aiohttp import web

from viggle_async import InvalidInputError, Timeouts, ViggleClient
from viggle_async.testing import make_png, write_mp4

PAYLOAD = 3 * 2**20  # a dozen upload chunks


def _video(tmp_path: Path) -> Path:
    path = tmp_path / "dance.mp4"
    write_mp4(path, 4.0, size=PAYLOAD)
    return path


class Server:
    """Loopback API that records every request whose body arrived whole."""

    def __init__(self) -> None:
        self.complete: list[int] = []  # body sizes
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except ConnectionResetError:  # the client gave up mid-body: not a request
            raise web.HTTPBadRequest() from None
        self.complete.append(len(body))
        return web.json_response({"job_id": "job_1", "status": "queued"})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    async with loophelp.serve(srv.handle, "POST", client_max_size=64 * 2**20) as url:
        srv.base_url = url
        yield srv


def _shrink(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 3)


def _grow(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"\x00" * 2**20)


@pytest.mark.parametrize("change", [_shrink, _grow], ids=["shrinks", "grows"])
@pytest.mark.parametrize("as_file", [False, True], ids=["path", "file object"])
async def test_a_file_changing_size_mid_upload_fails_before_its_last_bytes(
        server: Server, tmp_path: Path, change: object, as_file: bool) -> None:
    video = _video(tmp_path)
    declared = video.stat().st_size
    changed = False
    reached_last: list[bool] = []

    def on_upload(sent: int, total: int | None) -> None:
        nonlocal changed
        if not changed and sent > 2**20:  # an editor re-saves the file mid-upload
            changed = True
            change(video)  # type: ignore[operator]

    async def before_last_bytes() -> None:
        reached_last.append(True)

    opened: BinaryIO | None = video.open("rb") if as_file else None
    try:
        # A read timeout far beyond the test's guard: a hang would show as a failure.
        async with ViggleClient("k", base_url=server.base_url, trust_env=False,
                                timeouts=Timeouts(read=120)) as client:
            with anyio.fail_after(20), pytest.raises(InvalidInputError) as info:
                await client.renders.create(
                    ref_image=make_png(), driving_video=opened or video,
                    on_upload=on_upload, before_last_bytes=before_last_bytes)
    finally:
        if opened is not None:
            opened.close()
    error = info.value
    assert changed and error.field == "driving_video"
    assert f"{declared} bytes declared" in error.problem
    match = re.search(r"(\d+) read", error.problem)
    assert match is not None
    read = int(match[1])
    if change is _shrink:
        assert "shrank" in error.problem and read < declared
    else:
        assert "grew" in error.problem and read > declared
    assert reached_last == []  # the request never became complete, no job exists
    assert server.complete == []  # the server never had a whole request


async def test_an_unchanged_file_goes_out_whole(server: Server, tmp_path: Path) -> None:
    video = _video(tmp_path)
    async with ViggleClient("k", base_url=server.base_url, trust_env=False) as client:
        job = await client.renders.create(ref_image=make_png(), driving_video=video)
    assert job.job_id == "job_1"
    (size,) = server.complete
    assert size > video.stat().st_size + len(make_png())
