"""Many renders at once: all complete, the limits hold, one create per job."""

from __future__ import annotations

from pathlib import Path

from suphelp import RENDER_KW, ready_scene

from viggle_async import Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, ManualClock


async def test_500_renders_with_characters_all_complete_within_limits(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    scene_id = await ready_scene(client, clock)
    sup = Supervisor(client, max_uploads=4, max_polls=8, **RENDER_KW)
    async with clock.autojump(), sup:
        chars = [sup.character(key=f"c{i}", name=f"dancer {i}", image=png)
                 for i in range(3)]
        handles = []
        for i in range(500):
            video = videos[1 + i % 4]
            if i % 5 == 0:
                handles.append(sup.render(key=f"r{i}", character=chars[i % 3],
                                          scene_id=scene_id))
            else:
                handles.append(sup.render(key=f"r{i}", ref_image=png, driving_video=video))
    outcomes = [h.outcome for h in handles]
    assert {o.state for o in outcomes} == {"complete"}
    assert all(h.outcome.state == "complete" for h in chars)
    assert len({o.job_id for o in outcomes}) == 500
    # Exactly one create per job, and the limits were never exceeded at the server.
    assert fake.count("POST", "/api/render") == 500
    assert fake.count("POST", "/api/characters/preprocess") == 3
    assert all(o.attempts == 1 for o in outcomes)
    assert fake.peak_concurrency[("POST", "/api/render")] <= 4
    assert fake.peak_concurrency[("GET", "/api/render/{job_id}")] <= 8
    # Renders that used a character sent its id and the scene, no files.
    with_char = [c for c in fake.creates if c.kind == "render" and "character_id" in c.fields]
    assert len(with_char) == 100
    assert {c.fields["character_id"] for c in with_char} == {h.outcome.asset_id for h in chars}
    assert all(not c.files and c.fields["scene_id"] == scene_id for c in with_char)
    # Billing (docs/api/credits.md#costs): ceil(video seconds) per render (the scene is 5 s), 1 per
    # character.
    on_demand = sum(1 + i % 4 for i in range(500) if i % 5)
    assert fake.balance() == 10_000 - 3 - 100 * 5 - on_demand
