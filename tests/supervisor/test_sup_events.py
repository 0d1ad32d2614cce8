"""What a caller sees of one job: its events in order and a complete outcome."""

from __future__ import annotations

from pathlib import Path

import anyio
from suphelp import RENDER_KW

from viggle_async import (
    Completed,
    Downloaded,
    Downloading,
    Event,
    Progress,
    Queued,
    Submitted,
    Supervisor,
    Uploading,
    ViggleClient,
)
from viggle_async.testing import FakeViggle, ManualClock


async def test_events_in_order_and_outcome_fields(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    seen: list[Event] = []
    sup = Supervisor(client, **RENDER_KW)
    async with clock.autojump(), anyio.create_task_group() as tg, sup:
        events = sup.events()

        async def collect() -> None:
            async for event in events:
                seen.append(event)

        tg.start_soon(collect)
        handle = sup.render(key="solo", ref_image=png, driving_video=videos[3],
                            output=tmp_path / "out.mp4")
    mine = [e for e in seen if e.key == "solo"]
    kinds = [type(e) for e in mine if isinstance(e, (Queued, Submitted, Progress, Completed))]
    assert kinds[0] is Queued and kinds[1] is Submitted and kinds[-1] is Completed
    assert Progress in kinds[2:-1] and set(kinds[2:-1]) == {Progress}
    outcome = handle.outcome
    submitted = next(e for e in mine if isinstance(e, Submitted))
    assert outcome.state == "complete" and outcome.key == "solo"
    assert outcome.job_id == submitted.job_id
    assert outcome.credits == 3 and outcome.attempts == 1 and not outcome.fast
    assert outcome.outputs == (tmp_path / "out.mp4",)
    assert outcome.outputs[0].stat().st_size == fake.settings.output_bytes
    assert fake.render_status(outcome.job_id)["status"] == "complete"
    # Download progress for progress bars: growing counts, ending at the file's size.
    size = fake.settings.output_bytes
    progress = [(e.received, e.total) for e in mine if isinstance(e, Downloading)]
    assert progress and progress[-1] == (size, size)
    assert [r for r, _ in progress] == sorted(r for r, _ in progress)
    done = [e for e in mine if isinstance(e, Downloaded)]
    assert [(d.path, d.bytes) for d in done] == [(tmp_path / "out.mp4", size)]


async def test_every_subscriber_sees_every_event_in_order_and_a_leaver_stops_receiving(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    """Many events (more than one read batch) reach two readers alike, one of them
    reading without ever awaiting in its loop; a reader that left early gets nothing more
    and does not hold the run up."""
    first: list[Event] = []
    slow: list[Event] = []
    fast: list[Event] = []
    sup = Supervisor(client, **RENDER_KW)
    async with clock.autojump(), anyio.create_task_group() as tg, sup:
        streams = sup.events(), sup.events(), sup.events()

        async def leave_after_one() -> None:
            async for event in streams[0]:
                first.append(event)
                break
            await streams[0].aclose()

        async def collect(into: list[Event], yield_each: bool) -> None:
            async for event in streams[1 if yield_each else 2]:
                into.append(event)
                if yield_each:
                    await anyio.lowlevel.checkpoint()

        tg.start_soon(leave_after_one)
        tg.start_soon(collect, slow, True)
        tg.start_soon(collect, fast, False)
        for i in range(24):
            sup.render(key=f"r{i}", ref_image=png, driving_video=videos[1 + i % 4])
    assert len(first) == 1 and isinstance(first[0], Queued)
    assert [e async for e in streams[0]] == []  # closed: nothing was kept for it
    assert slow == fast and len(slow) > 64 * 2
    for i in range(24):
        kinds = [type(e) for e in slow if e.key == f"r{i}" and type(e) is not Uploading]
        assert kinds[0] is Queued and kinds[1] is Submitted and kinds[-1] is Completed


async def test_a_stream_dropped_or_closed_stops_buffering(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    """Readers that leave however they leave (break out of a loop over a fresh stream,
    never start one, aclose one) hold no events: a long run's memory stays flat."""
    sup = Supervisor(client, **RENDER_KW)
    async with clock.autojump(), sup:
        kept = sup.events()
        sup.render(key="first", ref_image=png, driving_video=videos[1])
        async for _ in sup.events():
            break  # the stream is dropped here
        sup.events()  # never started, dropped at once
        async for _ in kept:
            break
        await kept.aclose()
        for i in range(6):
            sup.render(key=f"r{i}", ref_image=png, driving_video=videos[1 + i % 4])
        live = sup.events()
    # Only the last reader, still subscribed, buffered the run's events.
    assert sup._subscribers == [live._queue]  # type: ignore[attr-defined]
    assert len([e async for e in live]) > 6
