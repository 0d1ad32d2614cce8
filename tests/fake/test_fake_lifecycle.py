"""Render lifecycles on a manual clock, outputs on the CDN, and credit accounting
(docs/api/lifecycles.md, docs/api/credits.md#costs)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from fakeapi import Api, ManualClock

from viggle_async.testing import FakeViggle, Faults


async def _trace(
    api: Api, clock: ManualClock, job_id: str, step: float = 1.0
) -> list[dict[str, Any]]:
    """Status bodies every ``step`` simulated seconds until terminal."""
    bodies = []
    for _ in range(500):
        body = await api.status(job_id)
        bodies.append(body)
        if body["status"] in ("complete", "failed", "cancelled"):
            return bodies
        clock.advance(step)
    raise AssertionError("never finished")


async def test_render_goes_through_checkpoints_in_order(api: Api, clock: ManualClock) -> None:
    _, created = await api.on_demand(10.0)
    bodies = await _trace(api, clock, created["job_id"])
    statuses = [b["status"] for b in bodies]
    # queue 2 s, then (5 + 2 x 10) s of processing: the formula in FakeSettings.
    assert statuses[:2] == ["queued", "queued"]
    assert statuses.count("processing") == 25
    assert statuses[-1] == "complete"
    checkpoints = [b["checkpoint"] for b in bodies if b["checkpoint"]]
    order = ["ref_done", "dri_done", "bg_done", "render_done"]
    assert sorted(set(checkpoints), key=order.index) == order
    assert checkpoints == sorted(checkpoints, key=order.index)  # never goes back
    pcts = [b["progress_pct"] for b in bodies]
    assert pcts == sorted(pcts) and pcts[0] == 0 and pcts[-1] == 100
    assert all(p < 100 for p in pcts[:-1])
    final = bodies[-1]
    assert final["cdn_url"] == final["download_url"] is not None
    assert final["mask_cdn_url"] is None  # not transparent
    assert final["progress"] == {"completed_chunks": 1, "total_chunks": 1, "percent": 100}
    assert final["error_code"] is None and final["completed_at"].endswith("Z")
    assert all(b["cdn_url"] is None and b["completed_at"] is None for b in bodies[:-1])


async def test_fast_halves_processing(api: Api, clock: ManualClock) -> None:
    _, created = await api.on_demand(10.0, fast="true")
    statuses = [b["status"] for b in await _trace(api, clock, created["job_id"], step=0.5)]
    assert statuses.count("processing") == 25  # 12.5 s in half-second steps


async def test_transparent_output_has_a_mask_on_the_cdn(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.settings.output_bytes = 3 * 1024 * 1024 + 5
    _, created = await api.on_demand(2.0, background_mode="transparent")
    clock.advance(3600)
    body = await api.status(created["job_id"])
    assert body["mask_cdn_url"] is not None
    assert body["cdn_url"].startswith(fake.cdn_base_url)
    assert fake.cdn_base_url.startswith("http://localhost:")
    assert fake.cdn_base_url.split(":")[-1] != fake.base_url.split(":")[-1]
    async with aiohttp.ClientSession() as session:
        for url in (body["cdn_url"], body["mask_cdn_url"]):
            async with session.get(url) as resp:
                assert resp.status == 200
                assert resp.content_length == fake.settings.output_bytes
                data = await resp.read()
                assert len(data) == fake.settings.output_bytes
                assert data[4:8] == b"ftyp"
        async with session.get(body["cdn_url"], headers={"Authorization": "Bearer x"}) as resp:
            await resp.read()
        assert fake.cdn_auth_headers == ["Bearer x"]
        async with session.get(body["cdn_url"].replace("output", "mask")[:-4] + "x.mp4") as r:
            assert r.status == 404


async def test_cdn_has_nothing_before_completion(api: Api, fake: FakeViggle) -> None:
    _, created = await api.on_demand(2.0)
    url = f"{fake.cdn_base_url}/outputs/{created['job_id']}/output.mp4"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 404


async def test_failed_render_is_refunded_when_it_fails(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.render_failure_rate = 1.0
    _, created = await api.on_demand(10.0)
    assert fake.balance() == 10_000 - 10
    bodies = await _trace(api, clock, created["job_id"])
    final = bodies[-1]
    assert final["status"] == "failed"
    assert (final["error_code"], final["cdn_url"], final["mask_cdn_url"]) == (
        "CS-UORC01-009",
        None,
        None,
    )
    assert final["error_message"] and final["completed_at"]
    assert 0 < final["progress_pct"] < 100
    assert fake.balance() == 10_000
    reasons = [(e.reason, e.delta) for e in fake.balance_history()]
    assert reasons == [("start", 10_000), ("render", -10), ("refund", 10)]


async def test_credit_reservation_and_402(clock: ManualClock) -> None:
    async with FakeViggle(clock=clock, api_keys={"sk-a": 12}) as fake, aiohttp.ClientSession() as s:
        api = Api(fake, s)
        code, _ = await api.on_demand(5.2)  # ceil -> 6
        assert code == 200 and fake.balance() == 6
        code, body = await api.on_demand(3.5, fast="true")  # 4 x 2 = 8 > 6
        assert (code, api.code(body)) == (402, "CS-UORC01-008")
        assert fake.balance() == 6
        code, _ = await api.on_demand(6.0)
        assert code == 200 and fake.balance() == 0
        code, body = await api.on_demand(0.5)
        assert code == 402
        fake.top_up(1)
        code, _ = await api.on_demand(0.5)
        assert code == 200
        assert [e.balance for e in fake.balance_history("sk-a")] == [12, 6, 0, 1, 0]


async def test_time_scale_change_does_not_jump_back(clock: ManualClock) -> None:
    async with FakeViggle(clock=clock, time_scale=10.0) as fake:
        clock.advance(1.0)
        assert fake.now() == pytest.approx(10.0)
        fake.settings.time_scale = 1.0
        clock.advance(1.0)
        assert fake.now() == pytest.approx(11.0)


async def test_legacy_statuses(api: Api, clock: ManualClock, fake: FakeViggle) -> None:
    fake.settings.legacy_statuses = True
    _, created = await api.on_demand(10.0)
    statuses = [b["status"] for b in await _trace(api, clock, created["job_id"])]
    shown = list(dict.fromkeys(statuses))
    assert shown == ["queued", "processing", "rendering", "merging", "complete"]


async def test_many_jobs(clock: ManualClock) -> None:
    async with (
        FakeViggle(clock=clock, faults=Faults(render_failure_rate=0.5, seed=3)) as fake,
        aiohttp.ClientSession() as session,
    ):
        api = Api(fake, session)
        ids = []
        for _ in range(300):
            _code, body = await api.render(
                {"ref_image_url": "https://x.test/a.png", "driving_video_url": "https://x.test/v"},
                urlencoded=True,
            )
            ids.append(body["job_id"])
        clock.advance(3600)
        statuses = [(await api.status(i))["status"] for i in ids]
        failed = statuses.count("failed")
        assert statuses.count("complete") + failed == 300
        assert 100 < failed < 200
        assert fake.balance() == 10_000 - 10 * (300 - failed)
