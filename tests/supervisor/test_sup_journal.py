"""Resuming from a journal: finished work is skipped, submitted jobs are polled again,
and a create that may have reached the server is never silently sent twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from suphelp import RENDER_KW

from viggle_async import SQLiteJournal, Supervisor, ViggleClient
from viggle_async._submitter import fingerprint
from viggle_async.testing import FakeViggle, ManualClock


async def test_rerun_skips_finished_work(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    journal = await SQLiteJournal.open(tmp_path / "j.sqlite")
    sup = Supervisor(client, journal=journal, **RENDER_KW)
    async with journal, clock.autojump(), sup:
        first = [sup.render(key=f"r{i}", ref_image=png, driving_video=videos[1],
                            output=tmp_path / f"r{i}.mp4") for i in range(5)]
    assert {h.outcome.state for h in first} == {"complete"}
    creates = fake.count("POST", "/api/render")
    journal = await SQLiteJournal.open(tmp_path / "j.sqlite")
    sup = Supervisor(client, journal=journal, **RENDER_KW)
    async with journal, clock.autojump(), sup:
        again = [sup.render(key=f"r{i}", ref_image=png, driving_video=videos[1],
                            output=tmp_path / f"r{i}.mp4") for i in range(5)]
    assert {h.outcome.state for h in again} == {"skipped"}
    assert [h.outcome.job_id for h in again] == [h.outcome.job_id for h in first]
    assert [h.outcome.outputs for h in again] == [h.outcome.outputs for h in first]
    assert fake.count("POST", "/api/render") == creates


async def test_submitted_entry_resumes_polling_and_sending_entry_is_ambiguous(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    inputs = {"ref_image": png, "driving_video": videos[1]}
    fp = fingerprint(await client.renders.prepare(**inputs))
    path = tmp_path / "j.sqlite"
    async with await SQLiteJournal.open(path) as journal:
        # An earlier run that died after the server answered "submitted"...
        job = await client.renders.create(**inputs)
        await journal.record_intent("done-remotely", "render", fp)
        await journal.mark_sending("done-remotely")
        await journal.record_submitted("done-remotely", job.job_id)
        # ...and one that died with the create's last bytes on the wire.
        await journal.record_intent("maybe", "render", fp)
        await journal.mark_sending("maybe")
    creates = fake.count("POST", "/api/render")

    async with await SQLiteJournal.open(path) as journal:
        sup = Supervisor(client, journal=journal, **RENDER_KW)
        async with clock.autojump(), sup:
            resumed = sup.render(key="done-remotely", **inputs)
            maybe = sup.render(key="maybe", **inputs)
        assert resumed.outcome.state == "complete"
        assert resumed.outcome.job_id == job.job_id
        assert maybe.outcome.state == "ambiguous"
        assert "resubmit_ambiguous" in (maybe.outcome.error or "")
        assert fake.count("POST", "/api/render") == creates
        entry = await journal.get("done-remotely")
        assert entry is not None and entry.final_status == "complete"

        # Asked explicitly, the ambiguous one is submitted (once).
        sup = Supervisor(client, journal=journal, resubmit_ambiguous=True, **RENDER_KW)
        async with clock.autojump(), sup:
            retried = sup.render(key="maybe", **inputs)
        assert retried.outcome.state == "complete"
        assert fake.count("POST", "/api/render") == creates + 1


async def test_release_lets_an_ended_key_run_again_and_the_journal_still_decides(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    """A long-lived process handed the same key again (the worker, after a re-queue)
    releases the ended handle; the journal then skips what is done, never creating twice."""
    inputs = {"ref_image": png, "driving_video": videos[1]}
    async with await SQLiteJournal.open(tmp_path / "j.sqlite") as journal:
        sup = Supervisor(client, journal=journal, **RENDER_KW)
        async with clock.autojump(), sup:
            first = sup.render(key="r", output=tmp_path / "r.mp4", **inputs)
            with pytest.raises(ValueError, match="still being worked on"):
                sup.release(first)  # two works on one key would race
            assert (await first.wait()).state == "complete"
            creates = fake.count("POST", "/api/render")
            with pytest.raises(ValueError, match="already scheduled"):
                sup.render(key="r", output=tmp_path / "r.mp4", **inputs)
            sup.release(first)
            again = sup.render(key="r", output=tmp_path / "r.mp4", **inputs)
            # The old handle again, ended though it is, would free the key while the new
            # work runs: refused, before and after that work ends.
            with pytest.raises(ValueError, match="already released"):
                sup.release(first)
            assert (await again.wait()).state == "skipped"
            with pytest.raises(ValueError, match="already released"):
                sup.release(first)
            with pytest.raises(ValueError, match="already scheduled"):
                sup.render(key="r", output=tmp_path / "r.mp4", **inputs)
            assert again.outcome.job_id == first.outcome.job_id
        assert fake.count("POST", "/api/render") == creates
    # Without a journal nothing records the first render: released, the key is new work.
    sup = Supervisor(client, **RENDER_KW)
    async with clock.autojump(), sup:
        other = sup.render(key="s", **inputs)
        await other.wait()
        sup.release(other)
        fresh = sup.render(key="s", **inputs)
        assert (await fresh.wait()).state == "complete"
    assert fresh.outcome.job_id != other.outcome.job_id
    assert fake.count("POST", "/api/render") == creates + 2
