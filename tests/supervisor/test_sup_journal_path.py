"""``Supervisor(client, journal="run.journal")``: a path opens a SQLite journal for the
block and closes it after (issue 11.9); any other type fails at construction."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from suphelp import RENDER_KW

from viggle_async import JournalBusy, SQLiteJournal, Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, ManualClock


@pytest.mark.parametrize("as_str", [True, False], ids=["str", "pathlike"])
async def test_a_journal_path_is_opened_for_the_block_and_resumes_on_rerun(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path, as_str: bool,
) -> None:
    path = tmp_path / "run.journal"
    where = str(path) if as_str else path
    for expected in ("complete", "skipped"):
        async with clock.autojump(), Supervisor(client, journal=where, **RENDER_KW) as sup:
            handle = sup.render(key="r", ref_image=png, driving_video=videos[1],
                                output=tmp_path / "r.mp4")
        assert handle.outcome.state == expected
    assert fake.count("POST", "/api/render") == 1
    # Closed after the block: the lock is free and the entry is there.
    async with await SQLiteJournal.open(path) as journal:
        entry = await journal.get("r")
    assert entry is not None and entry.final_status == "complete"


@pytest.mark.parametrize("bad", [b"run.journal", 42, object(), ["run.journal"]],
                         ids=["bytes", "int", "object", "list"])
async def test_any_other_journal_type_is_a_type_error_at_construction(
    client: ViggleClient, bad: object,
) -> None:
    with pytest.raises(TypeError, match="journal must be"):
        Supervisor(client, journal=bad)  # type: ignore[arg-type]


async def test_a_busy_journal_store_is_reported_as_an_event(
    clock: ManualClock, client: ViggleClient,
) -> None:
    """``on_journal_busy`` is what a store's ``on_busy`` callback is given (the supervisor
    passes it itself when it opens the journal from a path)."""
    seen: list[JournalBusy] = []
    sup = Supervisor(client, **RENDER_KW)
    async with clock.autojump(), anyio.create_task_group() as tg, sup:
        events = sup.events()

        async def collect() -> None:
            async for event in events:
                if isinstance(event, JournalBusy):
                    seen.append(event)

        tg.start_soon(collect)
        await anyio.lowlevel.checkpoint()
        sup.on_journal_busy(0.25)
    assert seen == [JournalBusy(0.25)]
