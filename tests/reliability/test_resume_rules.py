"""What a rerun with the same journal does with creates the API answered with a refusal.

A definite answer (402, or a 4xx naming bad input) proves no job was made, so the key is not
*ambiguous* on the next run: only a create whose answer never came is (README, "Journal").
"""

from __future__ import annotations

from pathlib import Path

from viggle_async import PollPolicy, SQLiteJournal, Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, ManualClock, make_png, write_mp4

POLICY = PollPolicy(first_delay=2.0, min_interval=2.0, max_interval=2.0, jitter=0.0)


async def test_a_refused_create_is_not_ambiguous_on_rerun(
        tmp_path: Path, clock: ManualClock) -> None:
    png = tmp_path / "me.png"
    png.write_bytes(make_png())
    clip = tmp_path / "clip.mp4"
    write_mp4(clip, 4.0)  # 4 credits
    path = tmp_path / "run.journal"
    async with (FakeViggle(clock=clock.now, api_keys={"sk-k": 3}) as fake,
                ViggleClient("sk-k", base_url=fake.base_url, clock=clock) as client):

        async def run() -> dict[str, str]:
            journal = await SQLiteJournal.open(path)
            sup = Supervisor(client, journal=journal, poll_policy=POLICY)
            async with journal, clock.autojump(), sup:
                handles = [
                    sup.render(key="dear", ref_image=png, driving_video=clip),
                    sup.render(key="refused", character_id="char-missing",
                               scene_id="scene-missing"),
                ]
            return {h.key: h.outcome.state for h in handles}

        first = await run()
        assert first == {"dear": "not_submitted", "refused": "failed"}  # 402; 404
        assert [c.result_id for c in fake.creates] == [None, None]
        fake.top_up(10)
        again = await run()
        assert again["dear"] == "complete"  # the 402 proved it was never made
        assert again["refused"] != "ambiguous"
