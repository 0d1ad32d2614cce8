"""The asset-reuse planner (issue 15): which renders share a scene and characters, and what
each plan costs in credits, upload bytes and creates."""

from __future__ import annotations

from pathlib import Path

import pytest

from viggle_async._reuse import ReusableRender, ReuseRule, content_hash, plan_reuse

MB = 1_000_000


def video(n: int, size: int = 40 * MB) -> tuple[str, int]:
    return (f"video-{n}", size)


def image(n: int, size: int = 1 * MB) -> tuple[str, int]:
    return (f"image-{n}", size)


def test_one_video_twenty_images_becomes_one_scene_and_twenty_characters() -> None:
    renders = [ReusableRender(i, image(i), video(0), credits=10) for i in range(20)]
    plan = plan_reuse(renders)
    assert plan.on_demand.credits == 200
    assert plan.on_demand.upload_bytes == 20 * (40 * MB + MB)
    assert (plan.reuse.scenes, plan.reuse.characters, plan.reuse.renders) == (1, 20, 20)
    assert plan.reuse.creates == 41
    assert plan.reuse.credits == 220  # one credit per character; renders cost the same
    assert plan.reuse.upload_bytes == 40 * MB + 20 * MB  # the video once, each image once
    assert plan.reused == frozenset(range(20))
    assert plan.extra_credits == 20


def test_rows_below_the_threshold_stay_on_demand() -> None:
    # 3 videos x 4 images, but the third video is used by one row only.
    renders = [ReusableRender((v, i), image(i), video(v), credits=5)
               for v in range(2) for i in range(4)]
    renders.append(ReusableRender(("solo", 0), image(0), video(2), credits=5))
    plan = plan_reuse(renders, ReuseRule(min_renders=2))
    assert {g.video for g in plan.scenes} == {video(0), video(1)}
    assert ("solo", 0) not in plan.reused
    # Images shared by both scenes become one character each, not two.
    assert plan.reuse.characters == 4
    assert plan.reuse.upload_bytes == (2 * 40 * MB + 4 * MB) + (40 * MB + MB)
    high = plan_reuse(renders, ReuseRule(min_renders=5))
    assert high.scenes == () and high.reuse == high.on_demand


def test_same_video_under_two_models_is_two_scenes() -> None:
    # A scene is bound to one model for good: the model moves to the scene.
    renders = [ReusableRender(i, image(i), video(0), credits=1,
                              model="V4_Preview" if i % 2 else "V3_Preview")
               for i in range(6)]
    plan = plan_reuse(renders)
    assert sorted(str(g.model) for g in plan.scenes) == ["V3_Preview", "V4_Preview"]
    assert all(len(g.keys) == 3 for g in plan.scenes)


def test_credit_cap_keeps_the_groups_that_save_most_per_credit() -> None:
    # Video A: 10 renders of one image (1 credit saves 9 uploads of 40 MB).
    # Video B: 3 renders of 3 different images (3 credits save 2 uploads of 40 MB).
    renders = [ReusableRender(("a", i), image(0), video(0), credits=10) for i in range(10)]
    renders += [ReusableRender(("b", i), image(10 + i), video(1), credits=10) for i in range(3)]
    plan = plan_reuse(renders, ReuseRule(max_extra_credits=2))
    assert [g.video for g in plan.scenes] == [video(0)]
    assert [g.video for g in plan.skipped] == [video(1)]
    assert plan.extra_credits == 1
    uncapped = plan_reuse(renders)
    assert uncapped.extra_credits == 4 and not uncapped.skipped
    percent = plan_reuse(renders, ReuseRule(max_extra_percent=1.0))  # 1 % of 130 credits
    assert percent.extra_credits == 1


def test_a_group_whose_images_are_already_characters_is_free_under_a_cap() -> None:
    renders = [ReusableRender(("a", i), image(i), video(0), credits=1) for i in range(3)]
    renders += [ReusableRender(("b", i), image(i), video(1), credits=1) for i in range(3)]
    plan = plan_reuse(renders, ReuseRule(max_extra_credits=3))
    assert len(plan.scenes) == 2 and plan.extra_credits == 3


def test_bad_rules_and_duplicate_keys_are_refused() -> None:
    for bad in (dict(min_renders=1), dict(min_renders=True), dict(max_extra_credits=-1),
                dict(max_extra_percent=float("nan")), dict(max_extra_credits="5")):
        with pytest.raises(ValueError, match="ReuseRule"):
            ReuseRule(**bad)  # type: ignore[arg-type]
    r = ReusableRender("k", image(0), video(0), credits=1)
    with pytest.raises(ValueError, match="unique"):
        plan_reuse([r, r])


def test_content_hash_depends_on_bytes_not_names(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.mp4", tmp_path / "copy-of-a.mov", tmp_path / "c.mp4"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"x" * 3_000_000)
    c.write_bytes(b"x" * 2_999_999 + b"y")
    assert content_hash(a) == content_hash(b)
    assert content_hash(a)[1] == 3_000_000
    assert content_hash(a) != content_hash(c)


def test_a_zero_cap_keeps_every_render_on_demand() -> None:
    # Every scene needs at least one new character (1 credit): a cap of 0 takes none, and
    # the reuse plan is the on-demand plan, with the shared groups listed as skipped.
    renders = [ReusableRender(i, image(i % 2), video(i % 3), credits=3) for i in range(12)]
    plan = plan_reuse(renders, ReuseRule(max_extra_credits=0))
    assert plan.scenes == () and plan.reused == frozenset()
    assert plan.reuse == plan.on_demand and plan.extra_credits == 0
    assert len(plan.skipped) == 3
    assert plan_reuse(renders, ReuseRule(max_extra_percent=0)).reuse == plan.on_demand
