"""Follow-ups found while merging: the events stream ends when a run is cancelled; a
stopped or timed-out render keeps its job id and says the truth about it."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from suphelp import RENDER_KW

from viggle_async import Event, MemoryJournal, RetryPolicy, Submitted, Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, Faults, ManualClock


@pytest.mark.parametrize("cancel_remote", [False, True])
async def test_a_shielded_events_consumer_ends_when_the_run_is_cancelled(
    cancel_remote: bool, clock: ManualClock, fake: FakeViggle, client: ViggleClient,
    png: Path, videos: dict[int, Path],
) -> None:
    """A consumer that keeps reading while the run stops (to show what stopping does) must
    see the stream end; before the fix it waited forever."""
    fake.settings.render_base_s = 100_000.0
    seen: list[Event] = []
    ended, submitted = anyio.Event(), anyio.Event()

    async def consume(sup: Supervisor) -> None:
        with anyio.CancelScope(shield=True):
            async for event in sup.events():
                seen.append(event)
                if isinstance(event, Submitted):
                    submitted.set()
        ended.set()

    async with clock.autojump():
        with anyio.fail_after(3_600):  # manual seconds: a hang fails instead of blocking
            async with anyio.create_task_group() as outer:
                with anyio.CancelScope() as run:
                    async with anyio.create_task_group() as tg:
                        sup = Supervisor(client, cancel_remote=cancel_remote, **RENDER_KW)
                        tg.start_soon(consume, sup)
                        await anyio.lowlevel.checkpoint()
                        async with sup:
                            sup.render(key="r0", ref_image=png, driving_video=videos[1])
                            await submitted.wait()
                            run.cancel()
                outer.cancel_scope.cancel()
            await ended.wait()
    assert ended.is_set()
    assert any(isinstance(e, Submitted) for e in seen)


async def test_events_after_the_block_ended_yields_nothing(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient,
) -> None:
    async with Supervisor(client, **RENDER_KW) as sup:
        pass
    with anyio.fail_after(5):
        assert [e async for e in sup.events()] == []


@pytest.mark.parametrize("cancel_remote", [False, True])
async def test_renders_stopped_by_cancellation_keep_their_job_ids(
    cancel_remote: bool, clock: ManualClock, fake: FakeViggle, client: ViggleClient,
    png: Path, videos: dict[int, Path],
) -> None:
    """Stopped locally, a submitted job renders on at the API and is charged: "running"
    with its id and credits; with cancel_remote it is "cancelled" on the server, with its
    id, refunded. Work never submitted is "cancelled" without an id."""
    fake.settings.render_base_s = 100_000.0
    journal = MemoryJournal()
    submitted: set[str] = set()
    async with clock.autojump():
        with anyio.CancelScope() as scope:
            async with Supervisor(client, journal=journal, cancel_remote=cancel_remote,
                                  max_uploads=1, max_active_jobs=2, **RENDER_KW) as sup:
                events = sup.events()
                handles = [sup.render(key=f"r{i}", ref_image=png,
                                      driving_video=videos[1 + i % 3])
                           for i in range(4)]
                async for event in events:
                    if isinstance(event, Submitted):
                        submitted.add(event.key)
                        if len(submitted) == 2:
                            scope.cancel()
                            break
    outcomes = {h.key: h.outcome for h in handles}
    for key, outcome in outcomes.items():
        if key not in submitted:
            assert outcome.state == "cancelled" and outcome.job_id is None
            continue
        assert outcome.job_id is not None
        status = fake.render_status(outcome.job_id)["status"]
        entry = await journal.get(key)
        assert entry is not None
        if cancel_remote:
            assert outcome.state == "cancelled" and status == "cancelled"
            assert outcome.credits == 0  # refunded (docs/api/credits.md#costs)
        else:
            assert outcome.state == "running" and status != "cancelled"
            assert outcome.credits == int(key[1:]) % 3 + 1  # ceil(seconds), committed
            assert entry.state == "submitted" and entry.job_id == outcome.job_id
        assert not outcome.ok


async def test_a_render_timeout_is_timed_out_with_its_job_id_and_resumable(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path], tmp_path: Path,
) -> None:
    fake.settings.render_base_s = 1_000.0
    journal = MemoryJournal()
    async with clock.autojump(), Supervisor(client, journal=journal, render_timeout=30.0,
                                            **RENDER_KW) as sup:
        handle = sup.render(key="r", ref_image=png, driving_video=videos[2],
                            output=tmp_path / "r.mp4")
    outcome = handle.outcome
    assert outcome.state == "timed_out" and not outcome.ok
    assert outcome.job_id is not None and outcome.credits == 2
    assert "render_timeout" in (outcome.error or "")
    assert fake.render_status(outcome.job_id)["status"] != "failed"
    entry = await journal.get("r")
    assert entry is not None and entry.state == "submitted"
    # A rerun on the journal resumes the same job (no second create) and downloads it.
    async with clock.autojump(), Supervisor(client, journal=journal, **RENDER_KW) as sup:
        again = sup.render(key="r", ref_image=png, driving_video=videos[2],
                           output=tmp_path / "r.mp4")
    assert again.outcome.state == "complete" and again.outcome.job_id == outcome.job_id
    assert len(fake.creates) == 1


async def test_a_create_that_cannot_connect_stops_at_the_connect_deadline(
    clock: ManualClock, closed_port: int, png: Path, videos: dict[int, Path],
) -> None:
    """Not retried forever: after RetryPolicy.connect_deadline (manual) seconds of refused
    connections the render is not_submitted, marked ConnectError, nothing spent."""
    retry = RetryPolicy(connect_deadline=120.0)
    async with ViggleClient("sk-test", base_url=f"http://127.0.0.1:{closed_port}",
                            clock=clock, retry=retry) as client:
        started = clock.now()
        async with clock.autojump(), Supervisor(client, **RENDER_KW) as sup:
            handle = sup.render(key="r", ref_image=png, driving_video=videos[1])
    outcome = handle.outcome
    assert outcome.state == "not_submitted" and outcome.error_type == "ConnectError"
    assert outcome.job_id is None and outcome.credits == 0
    assert "120 s" in (outcome.error or "") and "nothing was sent" in (outcome.error or "")
    assert clock.now() - started <= 2 * 120.0  # bounded (the client's own retries + ours)


async def test_resubmit_ended_submits_ended_keys_again_and_replaces_their_entries(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    """A journal holds one render that ended cancelled and one that failed; each state is
    resubmitted only when asked, as a new job that replaces the old entry."""
    journal = MemoryJournal()
    fake.faults = Faults(render_failure_rate=1.0)
    async with clock.autojump(), Supervisor(client, journal=journal, **RENDER_KW) as sup:
        broke = sup.render(key="broke", ref_image=png, driving_video=videos[1])
    fake.faults = Faults()
    fake.settings.render_base_s = 100_000.0
    async with clock.autojump(), Supervisor(client, journal=journal, **RENDER_KW) as sup:
        events = sup.events()
        gone = sup.render(key="gone", ref_image=png, driving_video=videos[1])
        async for event in events:
            if isinstance(event, Submitted):
                await client.renders.cancel(event.job_id)
                break
    assert (gone.outcome.state, broke.outcome.state) == ("cancelled", "failed")
    first_gone = gone.outcome.job_id
    fake.settings.render_base_s = 1.0

    async def rerun(states: frozenset[str]) -> dict[str, str]:
        async with clock.autojump(), Supervisor(client, journal=journal, resubmit_ended=states,
                                                **RENDER_KW) as sup:
            handles = [sup.render(key=key, ref_image=png, driving_video=videos[1])
                       for key in ("gone", "broke")]
        return {h.key: h.outcome.state for h in handles}

    assert await rerun(frozenset()) == {"gone": "failed", "broke": "failed"}
    assert len(fake.creates) == 2
    assert await rerun(frozenset({"cancelled"})) == {"gone": "complete", "broke": "failed"}
    assert len(fake.creates) == 3
    entry = await journal.get("gone")
    assert entry is not None and entry.final_status == "complete"
    assert entry.job_id != first_gone
    assert await rerun(frozenset({"cancelled", "failed"})) == {"gone": "skipped",
                                                               "broke": "complete"}
    assert len(fake.creates) == 4


@pytest.mark.parametrize("states", ["cancelled", {"complete"}, {"failed", "ambiguous"}])
def test_resubmit_ended_takes_only_cancelled_and_failed(
    client: ViggleClient, states: object,
) -> None:
    with pytest.raises(ValueError, match="resubmit_ended"):
        Supervisor(client, resubmit_ended=states)  # type: ignore[arg-type]
