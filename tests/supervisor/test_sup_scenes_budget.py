"""The README's supervisor run, made runnable (issue 14.3): scene renders under a
``credit_budget`` are priced from the scene's own length (asked once per scene), output
folders are made before anything is paid for, and one render's failure is its outcome,
never an exception group out of the block."""

from __future__ import annotations

from pathlib import Path

from suphelp import RENDER_KW, ready_scene

from viggle_async import Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, ManualClock


async def test_scene_renders_are_priced_from_the_scene_and_fill_the_budget(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path, tmp_path: Path,
) -> None:
    # 5 s: 5 credits a render (docs/api/credits.md#costs)
    scene_id = await ready_scene(client, clock)
    out = tmp_path / "out"  # does not exist yet
    gets = fake.count("GET", "/api/scenes/{scene_id}")
    async with clock.autojump(), Supervisor(client, credit_budget=12, max_uploads=1,
                                            **RENDER_KW) as sup:
        alice = sup.character(key="alice", name="Alice", image=png)  # 1 credit
        handles = [sup.render(key=f"clip-{i}", character=alice, scene_id=scene_id,
                              output=out / f"clip-{i}.mp4") for i in range(3)]
    states = sorted(h.outcome.state for h in handles)
    assert states == ["complete", "complete", "not_submitted"]
    assert {h.outcome.credits for h in handles} == {5}
    refused = next(h for h in handles if h.outcome.state == "not_submitted")
    assert "over credit_budget" in (refused.outcome.error or "")
    for h in handles:
        if h.outcome.state == "complete":
            assert h.outcome.outputs[0].parent == out and h.outcome.outputs[0].exists()
    # One Get Scene for three renders of it.
    assert fake.count("GET", "/api/scenes/{scene_id}") == gets + 1
    assert fake.count("POST", "/api/render") == 2


async def test_a_scene_handle_prices_its_renders_without_asking_again(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path, tmp_path: Path,
) -> None:
    async with clock.autojump(), Supervisor(client, credit_budget=100, **RENDER_KW) as sup:
        alice = sup.character(key="alice", name="Alice", image=png)
        wave = sup.scene(key="wave", template_id="tmpl-video-wave")
        handles = [sup.render(key=f"r{i}", character=alice, scene=wave,
                              output=tmp_path / f"r{i}.mp4") for i in range(2)]
    assert [h.outcome.state for h in handles] == ["complete", "complete"]
    assert [h.outcome.credits for h in handles] == [5, 5]


async def test_an_output_folder_that_cannot_be_made_fails_that_render_before_it_is_paid(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    async with clock.autojump(), Supervisor(client, **RENDER_KW) as sup:
        bad = sup.render(key="bad", ref_image=png, driving_video=videos[1],
                         output=blocker / "clip.mp4")
        into_dir = sup.render(key="dir", ref_image=png, driving_video=videos[1],
                              output=tmp_path)
        good = sup.render(key="good", ref_image=png, driving_video=videos[1],
                          output=tmp_path / "deep" / "er" / "clip.mp4")
    assert bad.outcome.state == "not_submitted"
    assert "output" in (bad.outcome.error or "") and "Fix" in (bad.outcome.error or "")
    assert into_dir.outcome.state == "not_submitted"
    assert "directory" in (into_dir.outcome.error or "")
    assert good.outcome.state == "complete"
    assert (tmp_path / "deep" / "er" / "clip.mp4").exists()
    assert fake.count("POST", "/api/render") == 1  # nothing paid for the two refused


async def test_an_unexpected_error_in_one_render_is_its_outcome(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    """An ``output`` object the library cannot use breaks that render only."""
    async with clock.autojump(), Supervisor(client, **RENDER_KW) as sup:
        broken = sup.render(key="broken", ref_image=png, driving_video=videos[1],
                            output=42)  # type: ignore[arg-type]
        fine = sup.render(key="fine", ref_image=png, driving_video=videos[1],
                          output=tmp_path / "fine.mp4")
    assert broken.outcome.state == "failed"
    assert "TypeError" in (broken.outcome.error or "")
    assert fine.outcome.state == "complete"
