"""Asset reuse through the supervisor (issue 15): renders of shared local files go out as one
scene per driving video and one character per image, then ID-only renders; reruns reuse the
journaled assets; failures stay with their dependents."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from suphelp import RENDER_KW

from viggle_async import SQLiteJournal, Supervisor, ViggleClient
from viggle_async._reuse import ReuseRule
from viggle_async.testing import CreateRecord, FakeViggle, Faults, ManualClock, make_png, write_mp4


def images(tmp_path: Path, n: int) -> list[Path]:
    """``n`` PNGs with distinct content (and one more name for the first one's bytes)."""
    out = []
    for i in range(n):
        path = tmp_path / f"person{i}.png"
        path.write_bytes(make_png(rgb=(i, 100, 200)))
        out.append(path)
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def creates_of(fake: FakeViggle, kind: str) -> list[CreateRecord]:
    return [c for c in fake.creates if c.kind == kind]


def sent_hashes(fake: FakeViggle) -> list[str]:
    return [f.sha256 for c in fake.creates if c.status == 200 for f in c.files]


async def test_one_video_twenty_images_uploads_the_video_once(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, tmp_path: Path,
) -> None:
    video = tmp_path / "dance.mp4"
    write_mp4(video, 2.0)
    people = images(tmp_path, 20)
    async with clock.autojump(), Supervisor(client, reuse_assets=True, **RENDER_KW) as sup:
        handles = [sup.render(key=f"row-{i}", ref_image=img, driving_video=video,
                              background_mode="transparent", fast=(i % 2 == 0),
                              output=tmp_path / "out" / f"row-{i}.mp4")
                   for i, img in enumerate(people)]
        plan = await sup.plan_reuse()
    assert plan is not None
    assert (plan.reuse.scenes, plan.reuse.characters, plan.reuse.renders) == (1, 20, 20)
    assert plan.on_demand.upload_bytes - plan.reuse.upload_bytes == 19 * video.stat().st_size
    assert len(creates_of(fake, "scene")) == 1
    assert len(creates_of(fake, "character")) == 20
    renders = creates_of(fake, "render")
    assert len(renders) == 20
    (scene,) = creates_of(fake, "scene")
    for record in renders:  # ID-only: no file, no model; per-render options kept
        assert record.files == []
        assert record.fields["scene_id"] == scene.result_id
        assert "character_id" in record.fields and "model" not in record.fields
        assert record.fields["background_mode"] == "transparent"
    assert sorted(r.fields.get("fast", "false") for r in renders).count("true") == 10
    # The fake's upload log: the video's bytes went up once, each image's bytes once.
    hashes = sent_hashes(fake)
    assert hashes.count(sha(video)) == 1
    assert all(hashes.count(sha(img)) == 1 for img in people)
    for i, handle in enumerate(handles):
        done = handle.outcome
        assert done.state == "complete", done
        assert done.outputs == (tmp_path / "out" / f"row-{i}.mp4",)
        assert done.outputs[0].stat().st_size == 256  # the fake's output_bytes


async def test_rows_below_the_threshold_go_on_demand(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, tmp_path: Path,
) -> None:
    # 3 videos x 4 images; with min_renders=3 the third video (2 rows) stays on demand.
    vids = []
    for v in range(3):
        path = tmp_path / f"v{v}.mp4"
        write_mp4(path, 1.0 + v)
        vids.append(path)
    people = images(tmp_path, 4)
    rows = {f"{v}-{i}": (vids[v], people[i]) for v in range(3) for i in range(4)
            if v < 2 or i < 2}
    rule = ReuseRule(min_renders=3)
    async with clock.autojump(), Supervisor(client, reuse_assets=rule, **RENDER_KW) as sup:
        estimate = await sup.estimate_reuse({k: {"ref_image": img, "driving_video": vid}
                                             for k, (vid, img) in rows.items()})
        handles = {k: sup.render(key=k, ref_image=img, driving_video=vid)
                   for k, (vid, img) in rows.items()}
        plan = await sup.start()
    assert plan is not None and plan == estimate
    assert {str(k) for k in plan.reused} == {k for k in rows if not k.startswith("2-")}
    assert (plan.reuse.scenes, plan.reuse.characters) == (2, 4)
    assert plan.extra_credits == 4
    # Credits: ceil(seconds) per render either way, plus 1 per character.
    assert plan.on_demand.credits == 4 * 1 + 4 * 2 + 2 * 3
    assert len(creates_of(fake, "scene")) == 2 and len(creates_of(fake, "character")) == 4
    on_demand = [r for r in creates_of(fake, "render") if r.files]
    assert len(on_demand) == 2
    assert all(h.outcome.state == "complete" for h in handles.values())
    hashes = sent_hashes(fake)
    assert hashes.count(sha(vids[0])) == 1 and hashes.count(sha(vids[2])) == 2


async def test_rerun_creates_no_asset_and_a_deleted_scene_is_recreated_once(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, tmp_path: Path,
) -> None:
    video = tmp_path / "dance.mp4"
    write_mp4(video, 1.0)
    people = images(tmp_path, 3)
    path = tmp_path / "j.sqlite"

    async def run(keys: Sequence[int]) -> list[str]:
        async with await SQLiteJournal.open(path) as journal:
            sup = Supervisor(client, journal=journal, reuse_assets=True, **RENDER_KW)
            async with clock.autojump(), sup:
                handles = [sup.render(key=f"row-{k}", ref_image=people[k % 3],
                                      driving_video=video, output=tmp_path / f"r{k}.mp4")
                           for k in keys]
        return [h.outcome.state for h in handles]

    assert await run(range(3)) == ["complete"] * 3
    assert (len(creates_of(fake, "scene")), len(creates_of(fake, "character"))) == (1, 3)
    # Same rows again: nothing is created, not even a lookup's worth of assets.
    assert await run(range(3)) == ["skipped"] * 3
    # New rows on the same files: the journaled scene and characters are reused.
    assert await run(range(3, 6)) == ["complete"] * 3
    assert (len(creates_of(fake, "scene")), len(creates_of(fake, "character"))) == (1, 3)
    assert len(creates_of(fake, "render")) == 6
    # The scene is deleted at the API: the next run checks, recreates it once, goes on.
    (scene,) = creates_of(fake, "scene")
    assert scene.result_id is not None
    await client.scenes.delete(scene.result_id)
    # Row 0's output is gone too: it is fetched again from its job, under the inputs it was
    # sent with (the old scene id), with no create at all.
    (tmp_path / "r0.mp4").unlink()
    assert await run([0, 6, 7, 8]) == ["complete"] * 4
    assert (tmp_path / "r0.mp4").exists()
    assert (len(creates_of(fake, "scene")), len(creates_of(fake, "character"))) == (2, 3)
    assert len(creates_of(fake, "render")) == 9
    assert await run(range(9, 12)) == ["complete"] * 3
    assert len(creates_of(fake, "scene")) == 2


async def test_assets_are_never_shared_across_api_keys(
    clock: ManualClock, tmp_path: Path,
) -> None:
    video = tmp_path / "dance.mp4"
    write_mp4(video, 1.0)
    people = images(tmp_path, 2)
    path = tmp_path / "j.sqlite"
    async with FakeViggle(clock=clock.now, output_bytes=64,
                          api_keys={"key-one": 1000, "key-two": 1000}) as fake:
        for n, api_key in enumerate(("key-one", "key-two", "key-one")):
            async with ViggleClient(api_key, base_url=fake.base_url, clock=clock) as client, \
                    await SQLiteJournal.open(path) as journal:
                sup = Supervisor(client, journal=journal, reuse_assets=True, **RENDER_KW)
                async with clock.autojump(), sup:
                    handles = [sup.render(key=f"{n}-{k}", ref_image=people[k],
                                          driving_video=video) for k in range(2)]
            assert all(h.outcome.state == "complete" for h in handles)
        # Key two made its own scene and characters; key one's rerun reused its own.
        assert [c.api_key for c in creates_of(fake, "scene")] == ["key-one", "key-two"]
        assert len(creates_of(fake, "character")) == 4
        with path.open("rb") as f:
            stored = f.read()
        assert b"key-one" not in stored and b"key-two" not in stored


async def test_a_failing_character_fails_only_its_rows(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, tmp_path: Path,
) -> None:
    video = tmp_path / "dance.mp4"
    write_mp4(video, 1.0)
    people = images(tmp_path, 3)
    async with clock.autojump(), Supervisor(client, reuse_assets=True, **RENDER_KW) as sup:
        handles = [sup.render(key=f"row-{k}", ref_image=people[k % 3], driving_video=video)
                   for k in range(6)]
        await sup.start()
        # Edited after the plan hashed it: its character is refused before any upload.
        people[1].write_bytes(make_png(rgb=(9, 9, 9)))
    failed = {h.key for h in handles if h.outcome.state != "complete"}
    assert failed == {"row-1", "row-4"}
    for key in failed:
        error = next(h.outcome.error for h in handles if h.key == key)
        assert error is not None and "character" in error
        assert "ref_image" in error and "changed after the reuse plan" in error
    assert len(creates_of(fake, "character")) == 2
    assert sha(people[1]) not in sent_hashes(fake)
    assert len(creates_of(fake, "render")) == 4


async def test_a_failed_scene_fails_its_rows_or_falls_back_on_demand(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, tmp_path: Path,
) -> None:
    video = tmp_path / "dance.mp4"
    write_mp4(video, 1.0)
    people = images(tmp_path, 2)
    fake.faults = Faults(asset_failure_rate=1.0)  # every scene and character fails
    for fallback in (False, True):
        sup = Supervisor(client, reuse_assets=True, reuse_fallback=fallback, **RENDER_KW)
        async with clock.autojump(), sup:
            handles = [sup.render(key=f"{fallback}-{k}", ref_image=people[k % 2],
                                  driving_video=video) for k in range(4)]
        states = {h.outcome.state for h in handles}
        if fallback:
            assert states == {"complete"}
        else:
            assert states == {"failed"}
            assert all("scene" in (h.outcome.error or "") or "character" in
                       (h.outcome.error or "") for h in handles)
    on_demand = [r for r in creates_of(fake, "render") if r.files]
    assert len(on_demand) == 4  # only the fallback run's rows uploaded their files


async def test_renders_that_cannot_be_reused_are_sent_as_asked(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, tmp_path: Path,
) -> None:
    video = tmp_path / "dance.mp4"
    write_mp4(video, 1.0)
    (img,) = images(tmp_path, 1)
    async with clock.autojump(), Supervisor(client, reuse_assets=True, **RENDER_KW) as sup:
        solo = sup.render(key="solo", ref_image=img, driving_video=video)
        missing = sup.render(key="missing", ref_image=tmp_path / "nope.png",
                             driving_video=video)
    assert solo.outcome.state == "complete"
    assert missing.outcome.state == "not_submitted"
    assert "ref_image" in (missing.outcome.error or "")
    assert creates_of(fake, "scene") == [] and creates_of(fake, "character") == []


def test_reuse_assets_takes_a_bool_or_a_rule(client: ViggleClient) -> None:
    with pytest.raises(TypeError, match="reuse_assets"):
        Supervisor(client, reuse_assets="yes")  # type: ignore[arg-type]


async def test_rows_sent_on_demand_earlier_resume_as_sent(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, tmp_path: Path,
) -> None:
    # A first run without reuse; the rerun turns reuse on: rows the journal knows are
    # resumed (outputs fetched again) with the inputs they were sent with, not re-planned.
    video = tmp_path / "dance.mp4"
    write_mp4(video, 1.0)
    people = images(tmp_path, 3)
    path = tmp_path / "j.sqlite"
    for reuse in (False, True):
        async with await SQLiteJournal.open(path) as journal:
            sup = Supervisor(client, journal=journal, reuse_assets=reuse, **RENDER_KW)
            async with clock.autojump(), sup:
                handles = [sup.render(key=f"row-{k}", ref_image=people[k],
                                      driving_video=video, output=tmp_path / f"r{k}.mp4")
                           for k in range(3)]
        expected = ["complete"] * 3 if not reuse else ["complete", "complete", "skipped"]
        assert [h.outcome.state for h in handles] == expected
        (tmp_path / "r0.mp4").unlink()
        (tmp_path / "r1.mp4").unlink()
    assert len(creates_of(fake, "render")) == 3
    assert creates_of(fake, "scene") == [] and creates_of(fake, "character") == []


async def test_files_edited_after_the_plan_are_never_sent(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, tmp_path: Path,
) -> None:
    # Every upload path re-hashes its file: a scene's video, and an on-demand row's image
    # (its video is used by one row only, so it is not reused).
    shared, solo_video = tmp_path / "shared.mp4", tmp_path / "solo.mp4"
    write_mp4(shared, 1.0)
    write_mp4(solo_video, 2.0)
    people = images(tmp_path, 3)
    async with clock.autojump(), Supervisor(client, reuse_assets=True,
                                            reuse_fallback=True, **RENDER_KW) as sup:
        grouped = [sup.render(key=f"g{k}", ref_image=people[k], driving_video=shared)
                   for k in range(2)]
        solo = sup.render(key="solo", ref_image=people[2], driving_video=solo_video)
        plan = await sup.start()
        assert plan is not None and plan.reuse.scenes == 1
        write_mp4(shared, 3.0)
        people[2].write_bytes(make_png(rgb=(1, 2, 3)))
    assert solo.outcome.state == "not_submitted"
    assert "ref_image" in (solo.outcome.error or "")
    for handle in grouped:
        # The scene was refused, and the fallback re-checks the files too.
        assert handle.outcome.state == "not_submitted", handle.outcome
        assert "driving_video" in (handle.outcome.error or "")
        assert "changed after the reuse plan" in (handle.outcome.error or "")
    assert creates_of(fake, "scene") == [] and creates_of(fake, "render") == []
