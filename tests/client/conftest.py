"""Fixtures for the client tests: one manual clock shared by the client and the fake server,
the fake server, a client pointed at it, sample files, and a scripted recording server."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import web
from loophelp import serve

from viggle_async.testing import FakeViggle, ManualClock, make_png, write_mp4


@pytest.fixture
async def fake(clock: ManualClock) -> AsyncIterator[FakeViggle]:
    # The fake's simulated time is the client's manual time: a client sleeping 3 s of
    # manual time sees a job 3 s further on, and ``clock.autojump()`` makes waits instant.
    async with FakeViggle(clock=clock.now) as server:
        yield server


@attrs.frozen
class Media:
    png: Path
    mp4: Path  # 4 s, 64x64


@pytest.fixture
def media(tmp_path: Path) -> Media:
    png = tmp_path / "me.png"
    png.write_bytes(make_png())
    mp4 = tmp_path / "dance.mp4"
    write_mp4(mp4, 4.0)
    return Media(png, mp4)


@attrs.define
class Seen:
    """One request as the scripted server received it."""

    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    content_type: str


@attrs.define
class Reply:
    status: int = 200
    body: Any = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)


class Scripted:
    """A loopback server that answers queued replies (then 200 ``default``) and records
    every request exactly as it arrived, on any aiohttp version."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self.default = Reply()
        self.base_url = ""

    def queue(self, *replies: tuple[Any, ...]) -> None:
        """Queue replies given as ``(status, body[, headers])``."""
        self.replies.extend(Reply(*r) for r in replies)

    def always(self, status: int, body: Any) -> None:
        """Answer every request not queued with this."""
        self.default = Reply(status, body)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers), body,
                              request.content_type))
        reply = self.replies.popleft() if self.replies else self.default
        raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        return web.Response(status=reply.status, body=raw, headers=reply.headers,
                            content_type="application/json")


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    server = Scripted()
    async with serve(server.handle, "*") as server.base_url:
        yield server
