"""A journal that cannot be written never costs a job id (issue 11.2).

The id that came back stays in the outcome and in the ``JournalError`` raised from the
``async with`` block (not an ExceptionGroup, not a raw sqlite3 error); new creates stop,
because the journal is what keeps a rerun from paying twice; work already created goes on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from suphelp import RENDER_KW

from viggle_async import JournalError, MemoryJournal, Submitted, Supervisor, ViggleClient
from viggle_async._journal import JournalEntry
from viggle_async.testing import FakeViggle, ManualClock


class BrokenJournal(MemoryJournal):
    """Fails one named step, from its ``fail_after``-th call on, with ``error``."""

    def __init__(self, step: str, error: Exception, fail_after: int = 0) -> None:
        super().__init__()
        self.step, self.error, self.fail_after = step, error, fail_after
        self.calls = 0

    def _maybe_fail(self, step: str) -> None:
        if step == self.step:
            self.calls += 1
            if self.calls > self.fail_after:
                raise self.error

    async def record_submitted(self, key: str, job_id: str) -> JournalEntry:
        self._maybe_fail("record_submitted")
        return await super().record_submitted(key, job_id)

    async def record_final(self, key: str, status: str, outputs: object = (),
                           error: str | None = None) -> JournalEntry:
        self._maybe_fail("record_final")
        return await super().record_final(key, status, outputs, error)  # type: ignore[arg-type]

    async def mark_sending(self, key: str) -> JournalEntry:
        self._maybe_fail("mark_sending")
        return await super().mark_sending(key)

    async def record_intent(self, key: str, kind: str, fingerprint: str, *,
                            replace: bool = False) -> JournalEntry:
        self._maybe_fail("record_intent")
        return await super().record_intent(key, kind, fingerprint, replace=replace)


@pytest.mark.parametrize("error", [
    sqlite3.OperationalError("disk I/O error"),
    OSError(28, "No space left on device"),
    JournalError("the store refused"),
], ids=["sqlite3", "oserror", "journalerror"])
async def test_an_unrecorded_job_id_is_kept_and_the_run_ends_with_journal_error(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path, error: Exception,
) -> None:
    journal = BrokenJournal("record_submitted", error)
    sup = Supervisor(client, journal=journal, max_uploads=1, **RENDER_KW)
    # (autojump's own task group would wrap anything leaving it: raises() sits inside it.)
    async with clock.autojump():
        with pytest.raises(JournalError) as info:
            async with sup:
                handles = [sup.render(key=f"r{i}", ref_image=png, driving_video=videos[1],
                                      output=tmp_path / f"r{i}.mp4") for i in range(3)]
    assert not isinstance(info.value, BaseExceptionGroup)
    created = [h for h in handles if h.outcome.job_id is not None]
    # One upload slot: the first create came back, its id could not be journaled, and the
    # run stopped sending before the others.
    assert len(created) == 1
    lost = created[0]
    assert lost.outcome.state == "complete"  # paid for: still polled and downloaded
    assert lost.outcome.outputs and lost.outcome.outputs[0].exists()
    assert f"{lost.key}={lost.outcome.job_id}" in str(info.value)
    assert fake.count("POST", "/api/render") == 1
    for other in handles:
        if other is not lost:
            assert other.outcome.state == "not_submitted"
            assert "journal" in (other.outcome.error or "")
    assert fake.api_key not in str(info.value)


async def test_a_failed_final_record_ends_the_run_but_keeps_the_outcome(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    journal = BrokenJournal("record_final", sqlite3.DatabaseError("database disk image is "
                                                                  "malformed"))
    sup = Supervisor(client, journal=journal, **RENDER_KW)
    async with clock.autojump():
        with pytest.raises(JournalError, match="malformed"):
            async with sup:
                handle = sup.render(key="r", ref_image=png, driving_video=videos[1])
    assert handle.outcome.state == "complete"
    entry = await journal.get("r")
    assert entry is not None and entry.job_id == handle.outcome.job_id  # resumable


@pytest.mark.parametrize("step", ["record_intent", "mark_sending"])
async def test_a_journal_that_cannot_record_the_send_sends_nothing(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], step: str,
) -> None:
    journal = BrokenJournal(step, sqlite3.OperationalError("database is locked"))
    sup = Supervisor(client, journal=journal, **RENDER_KW)
    async with clock.autojump():
        with pytest.raises(JournalError, match="locked"):
            async with sup:
                render = sup.render(key="r", ref_image=png, driving_video=videos[1])
                char = sup.character(key="c", name="Alice", image=png)
    assert render.outcome.state == "not_submitted"
    assert char.outcome.state == "not_submitted"
    assert [c for c in fake.creates if c.status == 200] == []


async def test_the_blocks_own_error_wins_and_carries_the_unjournaled_ids(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    journal = BrokenJournal("record_submitted", sqlite3.OperationalError("disk I/O error"))
    sup = Supervisor(client, journal=journal, **RENDER_KW)
    async with clock.autojump():
        # (anyio groups an error raised in the block; the group carries the note.)
        with pytest.raises(ExceptionGroup) as info:
            async with sup:
                events = sup.events()
                sup.render(key="r", ref_image=png, driving_video=videos[1])
                async for event in events:
                    if isinstance(event, Submitted):
                        raise LookupError("the caller's own bug")
    assert info.group_contains(LookupError)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "r=job_" in notes and "could not be written" in notes
