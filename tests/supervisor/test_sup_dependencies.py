"""A render that waits on a character shares its fate without sending anything."""

from __future__ import annotations

from pathlib import Path

from suphelp import RENDER_KW, ready_scene

from viggle_async import Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, Faults, ManualClock


async def test_failed_character_fails_its_renders_without_creates(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    scene_id = await ready_scene(client, clock)
    fake.faults = Faults(asset_failure_rate=1.0)
    async with clock.autojump(), Supervisor(client, **RENDER_KW) as sup:
        char = sup.character(key="hero", name="hero", image=png)
        dependents = [sup.render(key=f"r{i}", character=char, scene_id=scene_id)
                      for i in range(5)]
        independent = sup.render(key="solo", ref_image=png, driving_video=videos[1])
    assert char.outcome.state == "failed"
    assert char.outcome.error
    for h in dependents:
        assert h.outcome.state == "failed"
        assert "'hero'" in (h.outcome.error or "")
        assert char.outcome.error in (h.outcome.error or "")
        assert h.outcome.job_id is None and h.outcome.attempts == 0
    assert independent.outcome.state == "complete"
    # Only the independent render reached the create route.
    assert fake.count("POST", "/api/render") == 1
