"""Credits: a 402 stops new submissions; a credit budget refuses work beyond it
(docs/api/credits.md#costs)."""

from __future__ import annotations

from pathlib import Path

from suphelp import RENDER_KW

from viggle_async import Supervisor, ViggleClient
from viggle_async.testing import FakeViggle, ManualClock


async def test_402_mid_run_stops_later_submissions_and_finishes_the_rest(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    # 10 000 - 9 995 leaves 5 credits: two 2-credit renders fit, the third gets a 402.
    fake.store.ledger.charge(fake.api_key, 9_995, "render", "job_other", "2024-01-01T00:00:00Z")
    assert fake.balance() == 5
    async with clock.autojump(), Supervisor(client, max_uploads=1, **RENDER_KW) as sup:
        handles = [sup.render(key=f"r{i}", ref_image=png, driving_video=videos[2])
                   for i in range(8)]
    states = [h.outcome.state for h in handles]
    assert states.count("complete") == 2
    assert states.count("not_submitted") == 6
    for h in handles:
        if h.outcome.state == "not_submitted":
            assert "402" in (h.outcome.error or "")
            assert h.outcome.job_id is None
    accepted = [c for c in fake.creates if c.kind == "render" and c.status == 200]
    assert len(accepted) == 2
    # After the first 402 nothing else was sent.
    refused = [c for c in fake.creates if c.kind == "render" and c.status == 402]
    assert len(refused) == 1
    assert fake.balance() == 1


async def test_credit_budget_refuses_work_beyond_it(
    clock: ManualClock, fake: FakeViggle, client: ViggleClient, png: Path,
    videos: dict[int, Path],
) -> None:
    budget = 20  # 3-credit renders: 6 fit (18), the other 4 would overspend
    async with clock.autojump(), Supervisor(client, credit_budget=budget, **RENDER_KW) as sup:
        handles = [sup.render(key=f"r{i}", ref_image=png, driving_video=videos[3])
                   for i in range(10)]
    states = [h.outcome.state for h in handles]
    assert states.count("complete") == 6
    assert states.count("not_submitted") == 4
    assert all("credit_budget" in (h.outcome.error or "") for h in handles
               if h.outcome.state == "not_submitted")
    assert fake.count("POST", "/api/render") == 6
    spent = 10_000 - fake.balance()
    assert spent == 18 <= budget
