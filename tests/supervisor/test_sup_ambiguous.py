"""A create whose answer does not prove "no job" is never sent twice (issue 11.1).

A 5xx, an HTML or empty page, or an unreadable 2xx may come from a gateway that already
forwarded the request: the journal entry stays at ``sending``, the outcome is ``ambiguous``,
and a rerun on the same journal sends nothing unless asked (``resubmit_ambiguous``). Only a
documented refusal (4xx validation, 402, 404, 429, fast capacity) puts it back to ``intent``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from suphelp import RENDER_KW, serve_routes

from viggle_async import MemoryJournal, Supervisor, ViggleClient
from viggle_async.testing import ManualClock

HTML = "<html><body><h1>504 Gateway Time-out</h1></body></html>"


class Gateway:
    """A loopback API whose creates read the whole body and then answer ``reply``."""

    def __init__(self) -> None:
        self.reply: tuple[int, str, str] = (502, HTML, "text/html")
        self.posts: list[str] = []
        self.base_url = ""

    async def create(self, request: web.Request) -> web.Response:
        await request.read()  # the whole body arrived: the job may exist upstream
        self.posts.append(request.path)
        status, body, ctype = self.reply
        return web.Response(status=status, text=body, content_type=ctype)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    async with serve_routes(*(("POST", path, gw.create) for path in (
            "/api/render", "/api/characters/preprocess", "/api/scenes/preprocess"))) as url:
        gw.base_url = url
        yield gw


NOT_A_REFUSAL = [
    (500, '{"detail": "Internal server error"}', "application/json"),
    (502, HTML, "text/html"),
    (503, "", "text/plain"),
    (504, HTML, "text/html"),
    (200, HTML, "text/html"),  # a 2xx we cannot read: the job may well exist
    (200, "", "application/json"),
]


@pytest.mark.parametrize("reply", NOT_A_REFUSAL, ids=lambda r: f"{r[0]}-{r[2]}-{len(r[1])}")
async def test_an_unproven_answer_is_ambiguous_and_never_resent(
    gateway: Gateway, clock: ManualClock, png: Path, videos: dict[int, Path],
    reply: tuple[int, str, str],
) -> None:
    gateway.reply = reply
    journal = MemoryJournal()
    async with ViggleClient("sk-test", base_url=gateway.base_url, clock=clock) as client:
        for run in range(2):
            async with clock.autojump(), Supervisor(client, journal=journal,
                                                    **RENDER_KW) as sup:
                render = sup.render(key="r", ref_image=png, driving_video=videos[2])
                char = sup.character(key="c", name="Alice", image=png)
            assert render.outcome.state == "ambiguous", (run, render.outcome)
            assert char.outcome.state == "ambiguous", (run, char.outcome)
            assert "resubmit_ambiguous" in (render.outcome.error or "")
            # Sent once, in the first run only.
            assert sorted(gateway.posts) == ["/api/characters/preprocess", "/api/render"]
        entries = {e.key: e for e in await journal.entries()}
        assert {e.state for e in entries.values()} == {"sending"}


async def test_an_unproven_answer_keeps_its_credits_committed(
    gateway: Gateway, clock: ManualClock, png: Path, videos: dict[int, Path],
) -> None:
    """The job may exist and be billed: the budget keeps counting it."""
    async with (ViggleClient("sk-test", base_url=gateway.base_url, clock=clock) as client,
                clock.autojump(), Supervisor(client, credit_budget=5, **RENDER_KW) as sup):
        first = sup.render(key="a", ref_image=png, driving_video=videos[3])
        await first
        second = sup.render(key="b", ref_image=png, driving_video=videos[3])
    assert first.outcome.state == "ambiguous"
    assert first.outcome.credits == 3
    assert second.outcome.state == "not_submitted"
    assert "credit_budget" in (second.outcome.error or "")
    assert gateway.posts == ["/api/render"]


@pytest.mark.parametrize("reply", [
    (400, '{"detail": {"error_code": "CS-UORC01-002", "message": "bad"}}', "application/json"),
    (402, '{"detail": {"error_code": "CS-UORC01-008", "message": "no credits"}}',
     "application/json"),
    (404, '{"detail": "Not found"}', "application/json"),
], ids=lambda r: str(r[0]))
async def test_a_documented_refusal_is_not_ambiguous_on_rerun(
    gateway: Gateway, clock: ManualClock, png: Path, videos: dict[int, Path],
    reply: tuple[int, str, str],
) -> None:
    gateway.reply = reply
    journal = MemoryJournal()
    async with ViggleClient("sk-test", base_url=gateway.base_url, clock=clock) as client:
        for _ in range(2):
            async with clock.autojump(), Supervisor(client, journal=journal,
                                                    **RENDER_KW) as sup:
                render = sup.render(key="r", ref_image=png, driving_video=videos[1])
            assert render.outcome.state in ("failed", "not_submitted")
    assert gateway.posts == ["/api/render", "/api/render"]  # refused, so sent again
    entry = await journal.get("r")
    assert entry is not None and entry.state == "intent"
