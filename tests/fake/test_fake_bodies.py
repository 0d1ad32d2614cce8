"""Body faults: malformed informational fields, a complete status without its URL, capped
pages; and the scene fields the spec promises."""

from __future__ import annotations

from typing import Any

import pytest
from fakeapi import Api, ManualClock

from viggle_async.testing import FakeViggle, make_mp4, make_png
from viggle_async.testing._malform import INFORMATIONAL

STYLES = ["empty", "null", "wrong_type", "garbage"]


def _is_bad(value: Any, kind: str) -> bool:
    """Whether ``value`` cannot pass for a well-formed value of type ``kind``."""
    if value is None or value == "":
        return True
    if kind == "num":
        return not isinstance(value, int | float) or isinstance(value, bool)
    if kind == "date":
        return not (isinstance(value, str) and value[:4].isdigit() and value.endswith("Z"))
    if kind == "obj":
        return not isinstance(value, dict)
    if kind == "list":
        return not isinstance(value, list)
    return not isinstance(value, str) or "\x00" in value


def _check(kind: str, body: dict[str, Any]) -> None:
    for name, typ in INFORMATIONAL[kind].items():
        assert _is_bad(body[name], typ), (kind, name, body[name])


@pytest.mark.parametrize("style", STYLES)
async def test_malformed_fields_spare_what_a_client_acts_on(
    api: Api, clock: ManualClock, fake: FakeViggle, style: Any
) -> None:
    char_id = await api.ready_character(clock)
    scene_id = await api.ready_scene(clock)
    code, created = await api.on_demand(2.0, background_mode="transparent")
    assert code == 200
    job_id = created["job_id"]
    clock.advance(600)
    fake.faults.malformed_fields = style

    status = await api.status(job_id)
    _check("render", status)
    assert status["job_id"] == job_id and status["status"] == "complete"
    assert status["cdn_url"].endswith("/output.mp4") and status["mask_cdn_url"]

    _, char = await api.call("GET", f"/api/characters/{char_id}")
    _check("character", char)
    assert (char["id"], char["status"], char["name"]) == (char_id, "ready", "Alice")
    _, scene = await api.call("GET", f"/api/scenes/{scene_id}")
    _check("scene", scene)
    assert (scene["id"], scene["status"]) == (scene_id, "ready")
    _, listed = await api.call("GET", "/api/scenes")
    _check("scene", listed["scenes"][0])
    assert listed["total"] == 1
    _, chars = await api.call("GET", "/api/characters")
    _check("character", chars["characters"][0])
    _, credits = await api.call("GET", "/api/credits")
    _check("credits", credits)
    assert credits["balance"] == credits["credits"] == fake.balance()

    fake.faults.malformed_fields = None
    assert not _is_bad((await api.status(job_id))["created_at"], "date")


async def test_malformed_fields_on_a_failed_render_keep_its_error(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.render_failure_rate = 1.0
    fake.faults.malformed_fields = "wrong_type"
    _, created = await api.on_demand(2.0)
    clock.advance(600)
    status = await api.status(created["job_id"])
    _check("render", status)
    assert status["status"] == "failed" and status["error_code"] == "CS-UORC01-009"
    assert status["error_message"]


async def test_complete_without_cdn_url_for_the_first_polls(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.complete_without_cdn_url_n = 3
    _, created = await api.on_demand(2.0)
    job_id = created["job_id"]
    assert (await api.status(job_id))["status"] == "queued"  # not counted: not complete yet
    clock.advance(600)
    polls = [await api.status(job_id) for _ in range(4)]
    assert [p["status"] for p in polls] == ["complete"] * 4
    assert "cdn_url" not in polls[0] and "download_url" not in polls[0]
    assert polls[1]["cdn_url"] is None and polls[2]["cdn_url"] == ""
    assert polls[3]["cdn_url"].endswith(f"/outputs/{job_id}/output.mp4")
    # Per job: another job starts its own count.
    _, other = await api.on_demand(2.0)
    clock.advance(600)
    assert "cdn_url" not in await api.status(other["job_id"])


async def test_capped_pages_report_the_full_total(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    fake.faults.list_page_cap = 3
    for i in range(7):
        code, _ = await api.post(
            "/api/characters/preprocess",
            {"name": f"c{i}"},
            {"image": ("a.png", make_png(), "image/png")},
        )
        assert code == 200
    seen: list[str] = []
    offset = 0
    while True:
        _, page = await api.call("GET", f"/api/characters?limit=100&offset={offset}")
        assert page["total"] == 7 and len(page["characters"]) <= 3
        if not page["characters"]:
            break
        seen += [c["name"] for c in page["characters"]]
        offset += len(page["characters"])
    assert seen == [f"c{i}" for i in reversed(range(7))]
    _, small = await api.call("GET", "/api/characters?limit=2")
    assert len(small["characters"]) == 2  # a smaller limit still wins


async def test_get_scene_reports_duration_seconds(api: Api, clock: ManualClock) -> None:
    code, created = await api.post(
        "/api/scenes/preprocess",
        {"name": "S"},
        {"video": ("s.mp4", make_mp4(3.25, width=640, height=360), "video/mp4")},
    )
    assert code == 200
    _, pending = await api.call("GET", f"/api/scenes/{created['scene_id']}")
    assert pending["duration_seconds"] == 3.25  # known from the upload's header at once
    clock.advance(60)
    _, ready = await api.call("GET", f"/api/scenes/{created['scene_id']}")
    assert ready["duration_seconds"] == 3.25 and ready["total_frames"] == round(3.25 * 30)
