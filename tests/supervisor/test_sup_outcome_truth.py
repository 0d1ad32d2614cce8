"""``Outcome.downloaded`` tells the truth: True only for a render whose outputs are on disk
(written and verified in this run, or recorded by an earlier run and still there); False
for a job still running, a timed-out or failed one, a character or scene, a render run
without ``output``, and a complete render whose CDN never answered. ``ok`` stays "finished,
every asked-for output on disk"."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from suphelp import RENDER_KW

from viggle_async import MemoryJournal, Outcome, Submitted, Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, Faults, ManualClock


async def test_a_render_written_to_disk_is_downloaded_and_one_without_output_is_not(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    dest = tmp_path / "out" / "r.mp4"
    async with clock.autojump(), Supervisor(client, **RENDER_KW) as sup:
        saved = sup.render(key="saved", ref_image=png, driving_video=videos[1], output=dest)
        unsaved = sup.render(key="unsaved", ref_image=png, driving_video=videos[1])
    assert saved.outcome.state == "complete" and saved.outcome.ok
    assert saved.outcome.downloaded and saved.outcome.outputs == (dest,)
    assert dest.stat().st_size == 256
    # Finished (ok), but nothing was asked to be written, so nothing is "downloaded".
    assert unsaved.outcome.state == "complete" and unsaved.outcome.ok
    assert not unsaved.outcome.downloaded and unsaved.outcome.outputs == ()
    assert unsaved.outcome.download_error is None


async def test_characters_and_scenes_are_never_downloaded(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    async with clock.autojump(), Supervisor(client, **RENDER_KW) as sup:
        char = sup.character(key="c", name="C", image=png)
        scene = sup.scene(key="s", name="S", video=videos[2])
        template = sup.scene(key="t", template_id="tmpl-video-wave")
    for handle in (char, scene, template):
        assert handle.outcome.state == "complete" and handle.outcome.ok, handle.outcome
        assert not handle.outcome.downloaded, handle.outcome


async def test_running_timed_out_and_failed_renders_are_not_downloaded(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    # A failed render (every job fails half-way through).
    fake.faults = Faults(render_failure_rate=1.0)
    async with clock.autojump(), Supervisor(client, **RENDER_KW) as sup:
        failed = sup.render(key="f", ref_image=png, driving_video=videos[1],
                            output=tmp_path / "f.mp4")
    assert failed.outcome.state == "failed" and not failed.outcome.downloaded

    fake.faults = Faults()
    fake.settings.render_base_s = 1_000.0
    async with clock.autojump(), Supervisor(client, render_timeout=30.0, **RENDER_KW) as sup:
        late = sup.render(key="t", ref_image=png, driving_video=videos[1],
                          output=tmp_path / "t.mp4")
    assert late.outcome.state == "timed_out" and not late.outcome.downloaded

    # Stopped while the job renders on at the API: "running", nothing on disk.
    async with clock.autojump():
        with anyio.CancelScope() as scope:
            async with Supervisor(client, **RENDER_KW) as sup:
                events = sup.events()
                running = sup.render(key="r", ref_image=png, driving_video=videos[1],
                                     output=tmp_path / "r.mp4")
                async for event in events:
                    if isinstance(event, Submitted):
                        scope.cancel()
                        break
    assert running.outcome.state == "running" and running.outcome.job_id is not None
    assert not running.outcome.downloaded
    for handle in (failed, late, running):
        assert not handle.outcome.ok and handle.outcome.outputs == ()
        assert not await anyio.Path(tmp_path / f"{handle.key}.mp4").exists()


@pytest.mark.parametrize("cdn_status", [503, 404])
async def test_a_complete_render_whose_cdn_keeps_failing_is_not_downloaded(
    cdn_status: int, clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    fake.faults = Faults(cdn_fail_first_n=10_000, cdn_fail_status=cdn_status)
    async with clock.autojump(), Supervisor(client, **RENDER_KW) as sup:
        handle = sup.render(key="r", ref_image=png, driving_video=videos[1],
                            output=tmp_path / "r.mp4")
    outcome = handle.outcome
    assert outcome.state == "complete" and outcome.job_id is not None
    assert not outcome.downloaded and not outcome.ok and outcome.outputs == ()
    assert str(cdn_status) in (outcome.download_error or "")


async def test_a_render_skipped_from_the_journal_is_downloaded_only_with_its_file(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    journal = MemoryJournal()
    dest = tmp_path / "r.mp4"
    for _ in range(2):
        async with clock.autojump(), Supervisor(client, journal=journal, **RENDER_KW) as sup:
            saved = sup.render(key="saved", ref_image=png, driving_video=videos[1],
                               output=dest)
            unsaved = sup.render(key="unsaved", ref_image=png, driving_video=videos[2])
    assert saved.outcome.state == "skipped" and saved.outcome.downloaded
    assert saved.outcome.outputs == (dest,) and saved.outcome.ok
    assert unsaved.outcome.state == "skipped" and not unsaved.outcome.downloaded
    assert unsaved.outcome.ok
    assert len(fake.creates) == 2  # the second run sent nothing


@pytest.mark.parametrize("state", ["running", "timed_out", "failed", "not_submitted",
                                   "ambiguous", "cancelled", "complete", "skipped"])
def test_an_outcome_cannot_claim_a_download_it_did_not_make(state: str) -> None:
    with pytest.raises(ValueError, match="downloaded=True"):
        Outcome("k", "render", state, downloaded=True)  # type: ignore[arg-type]
    if state not in ("complete", "skipped"):
        with pytest.raises(ValueError, match="downloaded=True"):
            Outcome("k", "render", state, outputs=(Path("x.mp4"),),  # type: ignore[arg-type]
                    downloaded=True)
        with pytest.raises(ValueError, match="download_error"):
            Outcome("k", "render", state, download_error="CDN 503")  # type: ignore[arg-type]
    assert not Outcome("k", "character", state).downloaded  # type: ignore[arg-type]


async def test_with_reuse_assets_a_render_skipped_from_the_journal_is_downloaded(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    """``reuse_assets`` settles renders finished in an earlier run before planning; the same
    truth holds there: downloaded with its file, not without one."""
    journal = MemoryJournal()
    saved, unsaved = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for run in range(2):
        async with clock.autojump(), Supervisor(client, journal=journal, reuse_assets=True,
                                                **RENDER_KW) as sup:
            handles = [sup.render(key=dest.stem, ref_image=png, driving_video=videos[1],
                                  output=dest) for dest in (saved, unsaved)]
        if run == 0:
            assert [h.outcome.downloaded for h in handles] == [True, True]
            unsaved.unlink()  # gone before the rerun: fetched again, not "skipped"
    first, second = (h.outcome for h in handles)
    assert first.state == "skipped" and first.downloaded and first.outputs == (saved,)
    assert second.state == "complete" and second.downloaded and unsaved.exists()
    assert len([c for c in fake.creates if c.kind == "render"]) == 2  # resumed, not re-sent
