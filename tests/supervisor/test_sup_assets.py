"""Characters and scenes through the supervisor: template imports feeding a multi-character
render, journaled asset creates (skipped on rerun, ambiguous never resent), and a create
cancelled after its last bytes went out still has its job id recorded."""

from __future__ import annotations

from pathlib import Path

import anyio
from suphelp import RENDER_KW, serve_routes

from viggle_async import (
    CharacterHandle,
    MemoryJournal,
    SceneHandle,
    SQLiteJournal,
    Supervisor,
    ViggleClient,
)
from viggle_async._submitter import fingerprint
from viggle_async.testing import FakeViggle, Faults, ManualClock


async def test_template_scene_feeds_a_multi_character_render(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path, tmp_path: Path,
) -> None:
    async with clock.autojump(), Supervisor(client, **RENDER_KW) as sup:
        duo = sup.scene(key="duo", template_id="tmpl-duo-dance", name="Duo")
        a = sup.character(key="a", name="Ann", image=png)
        b = sup.character(key="b", name="Bo", image=png)
        scene, ann, bo = await duo, await a, await b
        segments = [seg.uuid for seg in duo.value.segments]
        mapping = dict(zip(segments, [ann.asset_id, bo.asset_id], strict=True))
        render = sup.render(key="duet", scene=duo, character_mapping=mapping,
                            estimated_seconds=10, output=tmp_path / "duet.mp4")
    assert scene.state == "complete" and scene.kind == "scene" and scene.credits == 0
    assert segments == ["person_a1b2c3d4", "person_e5f6g7h8"]
    done = render.outcome
    assert done.state == "complete", done
    assert done.outputs == (tmp_path / "duet.mp4",)
    (record,) = [c for c in fake.creates if c.kind == "render"]
    assert record.fields["scene_id"] == scene.asset_id
    assert ann.asset_id in record.fields["character_mapping"]
    assert bo.asset_id in record.fields["character_mapping"]
    assert fake.count("POST", "/api/scenes/import") == 1


async def test_a_failed_scene_fails_its_renders_without_a_create(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
) -> None:
    fake.faults = Faults(asset_failure_rate=1.0)
    async with clock.autojump(), Supervisor(client, **RENDER_KW) as sup:
        scene = sup.scene(key="s", template_id="tmpl-video-wave")
        char = sup.character(key="c", name="C", image=png)
        render = sup.render(key="r", scene=scene, character=char)
    assert scene.outcome.state == "failed"
    assert render.outcome.state == "failed"
    assert render.outcome.error is not None and " failed: " in render.outcome.error
    assert fake.count("POST", "/api/render") == 0


async def test_rerun_reuses_journaled_characters_and_scenes(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"

    async def run() -> tuple[CharacterHandle, SceneHandle, list[str]]:
        async with await SQLiteJournal.open(path) as journal:
            sup = Supervisor(client, journal=journal, **RENDER_KW)
            async with clock.autojump(), sup:
                char = sup.character(key="alice", name="Alice", image=png)
                scene = sup.scene(key="moves", name="Moves", video=videos[2])
                renders = [sup.render(key=f"r{i}", character=char, scene=scene,
                                      estimated_seconds=2, output=tmp_path / f"r{i}.mp4")
                           for i in range(3)]
            return char, scene, [r.outcome.state for r in renders]

    char1, scene1, states1 = await run()
    assert (char1.outcome.state, scene1.outcome.state, states1) == (
        "complete", "complete", ["complete"] * 3)
    balance = fake.balance()
    char2, scene2, states2 = await run()
    assert (char2.outcome.state, scene2.outcome.state) == ("skipped", "skipped")
    assert char2.outcome.asset_id == char1.outcome.asset_id
    assert char2.value is not None and char2.value.id == char1.outcome.asset_id
    assert states2 == ["skipped"] * 3
    assert fake.count("POST", "/api/characters/preprocess") == 1
    assert fake.count("POST", "/api/scenes/preprocess") == 1
    assert fake.balance() == balance  # nothing paid twice


async def test_ambiguous_character_is_not_recreated_unless_asked(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
) -> None:
    journal = MemoryJournal()
    fp = fingerprint(await client.characters.prepare(name="Alice", image=png))
    await journal.record_intent("alice", "character", fp)
    await journal.mark_sending("alice")  # an earlier run died with the bytes on the wire
    async with clock.autojump(), Supervisor(client, journal=journal, **RENDER_KW) as sup:
        char = sup.character(key="alice", name="Alice", image=png)
        render = sup.render(key="r", character=char, scene_id="scene-x", estimated_seconds=1)
    assert char.outcome.state == "ambiguous"
    assert "resubmit_ambiguous" in (char.outcome.error or "")
    assert render.outcome.state == "failed" and "'alice'" in (render.outcome.error or "")
    assert fake.count("POST", "/api/characters/preprocess") == 0

    sup = Supervisor(client, journal=journal, resubmit_ambiguous=True, **RENDER_KW)
    async with clock.autojump(), sup:
        again = sup.character(key="alice", name="Alice", image=png)
    assert again.outcome.state == "complete"
    assert fake.count("POST", "/api/characters/preprocess") == 1


async def _cancel_once_sending(journal: MemoryJournal, scope: anyio.CancelScope) -> None:
    while True:
        entry = await journal.get("r")
        if entry is not None and entry.state == "sending":
            scope.cancel()
            return
        await anyio.sleep(0.005)


async def test_cancel_after_the_last_bytes_still_records_the_job_id(
    fake: FakeViggle, png: Path, videos: dict[int, Path],
) -> None:
    """Cancelled while the server holds the answer: the create finishes (shielded), so the
    rerun resumes the job instead of calling it ambiguous; nothing is created twice."""
    fake.faults = Faults(latency_s=0.3, latency_routes=frozenset({"POST /api/render"}))
    journal = MemoryJournal()
    async with ViggleClient(fake.api_key, base_url=fake.base_url) as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg, Supervisor(
                    client, journal=journal, **RENDER_KW) as sup:
                tg.start_soon(_cancel_once_sending, journal, scope)
                handle = sup.render(key="r", ref_image=png, driving_video=videos[1])
    assert scope.cancelled_caught
    # The job exists and renders on: the outcome says so, with its id (issue 14.6).
    assert handle.outcome.state == "running"
    entry = await journal.get("r")
    assert entry is not None and entry.state == "submitted"
    (record,) = fake.creates
    assert entry.job_id == record.result_id == handle.outcome.job_id


async def test_cancel_remote_after_the_last_bytes_cancels_the_new_job(
    fake: FakeViggle, png: Path, videos: dict[int, Path],
) -> None:
    fake.faults = Faults(latency_s=0.3, latency_routes=frozenset({"POST /api/render"}))
    journal = MemoryJournal()
    async with ViggleClient(fake.api_key, base_url=fake.base_url) as client:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg, Supervisor(
                    client, journal=journal, cancel_remote=True, **RENDER_KW) as sup:
                tg.start_soon(_cancel_once_sending, journal, scope)
                sup.render(key="r", ref_image=png, driving_video=videos[1])
    (record,) = fake.creates
    assert record.result_id is not None
    assert fake.render_status(record.result_id)["status"] == "cancelled"
    entry = await journal.get("r")
    assert entry is not None and (entry.state, entry.final_status, entry.job_id) == (
        "final", "cancelled", record.result_id)
    assert fake.balance() == 10_000  # refunded


async def test_an_asset_whose_wait_fails_is_resumed_not_paid_for_again(
    clock: ManualClock, png: Path,
) -> None:
    """Only the API saying ``failed`` ends a character for good; a status that could not be
    fetched leaves its id in the journal, and the rerun resumes it (1 credit, once)."""
    from aiohttp import web

    from viggle_async import MemoryJournal, RetryPolicy

    state = {"creates": 0, "outage": True}

    async def create(request: web.Request) -> web.Response:
        await request.read()
        state["creates"] += 1
        return web.json_response({"character_id": "char_1", "status": "pending"})

    async def get(request: web.Request) -> web.Response:
        if state["outage"]:
            return web.Response(status=503, text="<html>unavailable</html>",
                                content_type="text/html")
        return web.json_response({"id": "char_1", "name": "Alice", "status": "ready"})

    journal = MemoryJournal()
    async with (serve_routes(("POST", "/api/characters/preprocess", create),
                             ("GET", "/api/characters/{character_id}", get)) as url,
                ViggleClient("sk-test", base_url=url, clock=clock,
                             retry=RetryPolicy(max_attempts=1)) as client):
        outcomes = []
        for _ in range(2):
            async with clock.autojump(), Supervisor(client, journal=journal,
                                                    **RENDER_KW) as sup:
                handle = sup.character(key="alice", name="Alice", image=png)
            outcomes.append(handle.outcome)
            state["outage"] = False
    first, second = outcomes
    assert first.state == "failed" and first.asset_id == "char_1"
    assert "rerun resumes it" in (first.error or "")
    assert second.state == "complete" and second.asset_id == "char_1"
    assert state["creates"] == 1
