"""Cancelling the supervisor block: local work stops at once; remote jobs are cancelled
(and refunded, docs/api/renders.md#cancel / docs/api/credits.md#costs) only when asked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest
from suphelp import RENDER_KW, ready_scene

from viggle_async import Submitted, Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, ManualClock

JOBS = 6


def _client_tasks() -> set[asyncio.Task[object]]:
    """Running tasks, except the fake server's connection handlers (kept-alive sockets)."""
    return {t for t in asyncio.all_tasks()
            if "RequestHandler" not in getattr(t.get_coro(), "__qualname__", "")}


async def _run_then_cancel(sup_kw: dict[str, object], clock: ManualClock,
                           client: ViggleClient, png: Path, video: Path) -> list[str]:
    """Submit JOBS renders, cancel the block once all are submitted; return job ids."""
    job_ids: list[str] = []
    tasks_before = _client_tasks()
    async with clock.autojump():
        with anyio.CancelScope() as scope:
            async with Supervisor(client, **RENDER_KW, **sup_kw) as sup:  # type: ignore[arg-type]
                events = sup.events()
                handles = [sup.render(key=f"r{i}", ref_image=png, driving_video=video)
                           for i in range(JOBS)]
                async for event in events:
                    if isinstance(event, Submitted):
                        job_ids.append(event.job_id)
                        if len(job_ids) == JOBS:
                            scope.cancel()
                            break
    assert scope.cancelled_caught
    assert not any(h.done and h.outcome.state == "complete" for h in handles)
    # Nothing of ours is left running or sleeping.
    assert clock.sleepers == 0
    assert _client_tasks() == tasks_before
    return job_ids


@pytest.mark.parametrize("cancel_remote", [True, False])
async def test_cancelling_the_block(
    cancel_remote: bool, clock: ManualClock, fake: FakeViggle, client: ViggleClient,
    png: Path, videos: dict[int, Path],
) -> None:
    # Renders far longer than the submissions: on a loaded machine the manual clock may jump
    # ahead while the last creates are still on the wire, and no job may finish first.
    fake.settings.render_base_s = 100_000.0
    job_ids = await _run_then_cancel({"cancel_remote": cancel_remote}, clock, client, png,
                                     videos[4])
    statuses = {fake.render_status(j)["status"] for j in job_ids}
    if cancel_remote:
        assert statuses == {"cancelled"}
        assert fake.count("DELETE", "/api/render/{job_id}") == JOBS
        assert fake.balance() == 10_000  # every 4-credit render refunded
    else:
        assert statuses <= {"queued", "processing"}
        assert fake.count("DELETE", "/api/render/{job_id}") == 0
        assert fake.balance() == 10_000 - JOBS * 4


_IMG, _VID = "https://example.com/a.png", "https://example.com/b.mp4"


def _schedule(sup: Supervisor, kind: str, i: int, scene_id: str) -> object:
    if kind == "render from URLs":
        return sup.render(key=f"r{i}", ref_image_url=_IMG, driving_video_url=_VID)
    if kind == "render from a character and a scene id":
        return sup.render(key=f"r{i}", character_id="char-1", scene_id=scene_id)
    return sup.character(key=f"c{i}", name="Alice", image_url=_IMG)


@pytest.mark.parametrize("journal", [False, True], ids=["no journal", "journal"])
@pytest.mark.parametrize("ending", ["error", "cancel", "duplicate key"])
@pytest.mark.parametrize("kind", ["render from URLs", "render from a character and a scene id",
                                  "character from a URL"])
async def test_a_block_that_ends_right_after_scheduling_sends_no_create(
        kind: str, ending: str, journal: bool, clock: ManualClock, fake: FakeViggle,
        client: ViggleClient, tmp_path: Path) -> None:
    # Work scheduled from URLs or ids has nothing to upload: before, its tasks reached the
    # shielded create without a checkpoint, so a block that failed (or was cancelled) just
    # after scheduling still sent up to every create, and each was charged.
    scene_id = await ready_scene(client, clock) if "scene" in kind else ""
    creates = len(fake.creates)
    balance = fake.balance()
    sup = Supervisor(client, **RENDER_KW,  # type: ignore[arg-type]
                     journal=tmp_path / "j.db" if journal else None)
    handles: list[object] = []
    raised: list[BaseException] = []
    try:
        with anyio.CancelScope() as scope:
            async with clock.autojump(), sup:
                for i in (0, 1, 2, 3, 3) if ending == "duplicate key" else (0, 1, 2):
                    handles.append(_schedule(sup, kind, i, scene_id))
                if ending == "error":
                    raise RuntimeError("the app failed after scheduling")
                scope.cancel()
    except* (RuntimeError, ValueError) as group:
        raised += group.exceptions
    assert len(raised) == (ending != "cancel")
    assert len(fake.creates) == creates and fake.balance() == balance
    assert all(h.outcome.state == "cancelled" and h.outcome.job_id is None  # type: ignore[attr-defined]
               for h in handles)
