"""End-to-end flows against the fake server, in manual time (instant and exact)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from viggle_async import (
    NotFoundError,
    RenderFailedError,
    RenderStatus,
    ViggleClient,
    WaitTimeoutError,
)
from viggle_async.testing import FakeViggle, ManualClock, make_mp4, make_png

if TYPE_CHECKING:
    from loophelp import Media

OUTPUT = 64 * 1024  # FakeSettings.output_bytes


async def test_on_demand_with_files_renders_and_downloads(
        client: ViggleClient, fake: FakeViggle, clock: ManualClock, media: Media,
        tmp_path: Path) -> None:
    start = fake.balance()
    seen: list[str] = []
    job = await client.renders.create(ref_image=media.png, driving_video=media.mp4)
    assert job.status == "queued" and job.mode == "full_pipeline"
    record = fake.creates[-1]
    assert record.fields == {}
    assert [(f.name, f.filename, f.content_type, f.transfer) for f in record.files] == [
        ("ref_image", "me.png", "image/png", "content-length"),
        ("driving_video", "dance.mp4", "video/mp4", "content-length")]
    assert record.files[1].size == media.mp4.stat().st_size
    async with clock.autojump():
        done = await client.renders.wait(job.job_id, on_progress=lambda s: seen.append(s.status))
    assert done.is_complete and done.cdn_url and done.mask_cdn_url is None
    assert seen[0] == "queued" and "processing" in seen and seen[-1] == "complete"
    dest = await client.download(done.cdn_url, tmp_path / "out.mp4")
    assert dest.stat().st_size == OUTPUT
    assert fake.balance() == start - 4  # 4 s video, 1 credit per second (docs/api/credits.md#costs)
    assert fake.cdn_auth_headers == []


async def test_on_demand_with_urls_sends_url_fields(client: ViggleClient, fake: FakeViggle,
                                                    clock: ManualClock) -> None:
    job = await client.renders.create(ref_image_url="https://example.com/me.png",
                                      driving_video_url="https://example.com/d.mp4",
                                      model="V3_Preview")
    record = fake.creates[-1]
    assert record.fields == {"ref_image_url": "https://example.com/me.png",
                             "driving_video_url": "https://example.com/d.mp4",
                             "model": "V3_Preview"}
    assert record.files == []
    async with clock.autojump():
        assert (await client.renders.wait(job.job_id)).is_complete


async def test_preprocessed_render_with_character_and_scene(
        client: ViggleClient, fake: FakeViggle, clock: ManualClock) -> None:
    char = await client.characters.create(name="Alice", image=make_png())
    scene = await client.scenes.create(name="Dance", video=make_mp4(3.0, width=640, height=360),
                                       background_mode="solid", model="V4_Preview")
    assert char.status == "pending" and char.name == "Alice"
    assert scene.status == "pending" and scene.name == "Dance"
    assert fake.creates[-1].fields == {"name": "Dance", "background_mode": "solid",
                                       "model": "V4_Preview"}
    async with clock.autojump():
        char = await client.characters.wait(char.id)
        scene = await client.scenes.wait(scene.id)
        assert char.is_ready and scene.is_ready and scene.duration_seconds == 3.0
        job = await client.renders.create(character_id=char.id, scene_id=scene.id,
                                          bg_color=(0, 255, 0), background_mode="solid")
        assert fake.creates[-1].fields == {"character_id": char.id, "scene_id": scene.id,
                                           "background_mode": "solid", "bg_color": "0,255,0"}
        done = await client.renders.wait(job.job_id)
    assert done.mode == "preprocessed" and done.is_complete


async def test_multi_character_template_with_mapping(client: ViggleClient, fake: FakeViggle,
                                                     clock: ManualClock) -> None:
    scene = await client.scenes.import_template("tmpl-duo-dance", name="Group")
    assert fake.creates[-1].fields == {"template_id": "tmpl-duo-dance", "name": "Group"}
    uuids = [s.uuid for s in scene.segments]
    assert uuids == ["person_a1b2c3d4", "person_e5f6g7h8"]
    a = await client.characters.create(name="A", image=make_png())
    b = await client.characters.create(name="B", image=make_png())
    async with clock.autojump():
        await client.characters.wait(a.id)
        await client.characters.wait(b.id)
        await client.scenes.wait(scene.id)
        mapping = {uuids[0]: a.id, uuids[1]: b.id}
        job = await client.renders.create(scene_id=scene.id, character_mapping=mapping)
        sent = fake.creates[-1].fields
        assert set(sent) == {"scene_id", "character_mapping"}
        # a JSON string (docs/api/renders.md#multi-character)
        assert json.loads(sent["character_mapping"]) == mapping
        assert (await client.renders.wait(job.job_id)).is_complete


async def test_transparent_mode_gives_mask_and_both_download(
        client: ViggleClient, fake: FakeViggle, clock: ManualClock, media: Media,
        tmp_path: Path) -> None:
    job = await client.renders.create(ref_image=media.png, driving_video=media.mp4,
                                      background_mode="transparent")
    async with clock.autojump():
        done = await client.renders.wait(job.job_id)
    assert done.cdn_url and done.mask_cdn_url and done.cdn_url != done.mask_cdn_url
    out = await client.download(done.cdn_url, tmp_path / "out.mp4")
    mask = await client.download(done.mask_cdn_url, tmp_path / "mask.mp4")
    assert out.stat().st_size == mask.stat().st_size == OUTPUT
    assert fake.cdn_auth_headers == []


async def test_cancel_refunds(client: ViggleClient, fake: FakeViggle, media: Media) -> None:
    start = fake.balance()
    job = await client.renders.create(ref_image=media.png, driving_video=media.mp4, fast=True)
    assert fake.balance() == start - 8  # fast costs double (docs/api/credits.md#costs)
    status = await client.renders.cancel(job.job_id)
    assert status.status == "cancelled" and status.job_id == job.job_id
    assert fake.balance() == start
    assert (await client.renders.get(job.job_id)).status == "cancelled"


async def test_wait_raises_render_failed(client: ViggleClient, fake: FakeViggle,
                                         clock: ManualClock, media: Media) -> None:
    fake.faults.render_failure_rate = 1.0
    job = await client.renders.create(ref_image=media.png, driving_video=media.mp4)
    async with clock.autojump():
        with pytest.raises(RenderFailedError) as info:
            await client.renders.wait(job.job_id)
    assert info.value.status.status == "failed"
    assert info.value.status.error_code == "CS-UORC01-009"
    assert "CS-UORC01-009" in str(info.value)


async def test_wait_timeout_carries_last_status(client: ViggleClient, fake: FakeViggle,
                                                clock: ManualClock, media: Media) -> None:
    job = await client.renders.create(ref_image=media.png, driving_video=media.mp4)
    async with clock.autojump():
        with pytest.raises(WaitTimeoutError) as info:
            await client.renders.wait(job.job_id, poll_interval=3, timeout=10)
    # 4 s video: queued 2 s then 5 + 2*4 = 13 s processing; at t=10 it is still running.
    assert clock.now() == 10
    assert isinstance(info.value.last, RenderStatus)
    assert info.value.last.status == "processing"
    assert isinstance(info.value, TimeoutError)
    # Polled at 0, 3, 6, 9 and at the deadline, no more.
    assert fake.count("GET", "/api/render/{job_id}") == 5


async def test_legacy_statuses_are_running_states(client: ViggleClient, fake: FakeViggle,
                                                  clock: ManualClock, media: Media) -> None:
    fake.settings.legacy_statuses = True
    seen: list[str] = []
    job = await client.renders.create(ref_image=media.png, driving_video=media.mp4)
    async with clock.autojump():
        done = await client.renders.wait(job.job_id, poll_interval=1,
                                         on_progress=lambda s: seen.append(s.status))
    assert {"rendering", "merging"} <= set(seen)
    assert done.is_complete


async def test_wrapped_data_and_third_party_import_shapes(
        client: ViggleClient, fake: FakeViggle, clock: ManualClock) -> None:
    fake.settings.wrap_data = True
    fake.settings.import_response_style = "third_party"
    scene = await client.scenes.import_template("tmpl-trio-walk")
    assert len(scene.segments) == 3 and scene.status == "pending"
    char = await client.characters.create(name="C", image=make_png())
    async with clock.autojump():
        assert (await client.characters.wait(char.id)).is_ready
        assert (await client.scenes.wait(scene.id)).is_ready
    assert (await client.get_credits()).balance == fake.balance()


async def test_list_iterate_and_delete(client: ViggleClient, fake: FakeViggle) -> None:
    ids = {(await client.characters.create(name=f"c{i}", image=make_png())).id
           for i in range(5)}
    page = await client.characters.list(limit=2, offset=0)
    assert len(page.items) == 2 and page.total == 5 and page.limit == 2
    before = fake.count("GET", "/api/characters")
    listed = [c.id async for c in client.characters.iterate(page_size=2)]
    assert sorted(listed) == sorted(ids)
    assert fake.count("GET", "/api/characters") - before == 3  # pages of 2, 2, 1
    victim = listed[0]
    await client.characters.delete(victim)
    assert (await client.characters.list()).total == 4
    with pytest.raises(NotFoundError):
        await client.characters.get(victim)

    scenes = [await client.scenes.create(name=f"s{i}", video=make_mp4(1.0)) for i in range(3)]
    got = [s.id async for s in client.scenes.iterate(page_size=2)]
    assert sorted(got) == sorted(s.id for s in scenes)
    await client.scenes.delete(scenes[0].id)
    assert {s.id for s in (await client.scenes.list(limit=10)).items} == {
        s.id for s in scenes[1:]}


async def test_get_credits(client: ViggleClient, fake: FakeViggle, media: Media) -> None:
    credits = await client.get_credits()
    assert credits.balance == fake.balance() == 10_000
    await client.renders.create(ref_image=media.png, driving_video=media.mp4)
    credits = await client.get_credits()
    assert credits.balance == 10_000 - math.ceil(4.0)
    assert credits.total_used == 4
