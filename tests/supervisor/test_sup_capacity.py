"""Fast-mode capacity outages (400 CS-UORC01-001, docs/api/errors.md): one probe at a time,
fallback to standard when asked, everyone goes fast once capacity returns."""

from __future__ import annotations

from pathlib import Path

from suphelp import RENDER_KW

from viggle_async import FastFallbackPolicy, Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, Faults, ManualClock

JOBS = 30


async def test_outage_with_fallback_submits_standard(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    fake.faults = Faults(fast_unavailable=True)
    policy = FastFallbackPolicy(after_attempts=2, after_seconds=None)
    sup = Supervisor(client, fast_fallback=policy, rand=lambda: 0.5, **RENDER_KW)
    async with clock.autojump(), sup:
        handles = [sup.render(key=f"r{i}", ref_image=png, driving_video=videos[2],
                              fast=True) for i in range(JOBS)]
    outcomes = [h.outcome for h in handles]
    assert {o.state for o in outcomes} == {"complete"}
    assert all(o.fallback_used and not o.fast for o in outcomes)
    accepted = [c for c in fake.creates if c.kind == "render" and c.status == 200]
    assert len(accepted) == JOBS
    assert {c.fields.get("fast", "false") for c in accepted} == {"false"}
    # Each render gave up on fast after its own 2 rejections, then one standard create.
    assert fake.capacity_rejections == JOBS * 2
    assert all(o.attempts == 3 for o in outcomes)
    # Standard price: 2 s video -> 2 credits, not 4 (docs/api/credits.md#costs), charged and
    # reported alike.
    assert fake.balance() == 10_000 - JOBS * 2
    assert {o.credits for o in outcomes} == {2}
    assert sup.credits_committed == JOBS * 2


async def test_outage_probes_one_at_a_time_then_all_go_fast(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    outage = 60.0
    fake.faults = Faults(fast_unavailable_until=outage)
    policy = FastFallbackPolicy(None, None)
    sup = Supervisor(client, fast_fallback=policy, rand=lambda: 0.5, **RENDER_KW)
    async with clock.autojump(), sup:
        handles = [sup.render(key=f"r{i}", ref_image=png, driving_video=videos[2],
                              fast=True) for i in range(JOBS)]
    outcomes = [h.outcome for h in handles]
    assert {o.state for o in outcomes} == {"complete"}
    assert all(o.fast and not o.fallback_used for o in outcomes)
    accepted = [c for c in fake.creates if c.kind == "render" and c.status == 200]
    assert len(accepted) == JOBS
    assert {c.fields["fast"] for c in accepted} == {"true"}
    # With rand=0.5 and capacity_backoff=(0.5, 2.0) one probe goes out every 1 s of the 60 s
    # outage, plus the (max_uploads=4) creates already in flight when it began; without the
    # shared gate each of the 30 jobs would retry on its own.
    assert fake.capacity_rejections <= 4 + outage / 1.0 + 2
    assert fake.balance() == 10_000 - JOBS * 4
