"""POST/GET/DELETE /api/render against the fake server, over raw HTTP (docs/api/renders.md,
docs/api/errors.md#error-codes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakeapi import Api, ManualClock

from viggle_async.testing import FakeViggle, make_mp4, make_png

PNG = ("me.png", make_png(), "image/png")
MP4 = ("dance.mp4", make_mp4(10.0), "video/mp4")
FILES: dict[str, tuple[str, tuple[str, bytes, str]]] = {
    "ref": ("ref_image", PNG),
    "drv": ("driving_video", MP4),
    "drv_png": ("driving_video", ("dance.mp4", make_png(), "video/mp4")),
    "drv_long": ("driving_video", ("long.mp4", make_mp4(301.0), "video/mp4")),
    "drv_huge": ("driving_video", ("big.mp4", make_mp4(5.0, width=5000), "video/mp4")),
    "drv_broken": ("driving_video", ("bad.mp4", make_mp4(5.0)[:40], "video/mp4")),
    "drv_empty": ("driving_video", ("empty.mp4", b"", "video/mp4")),
    "ref_text": ("ref_image", ("me.txt", b"hello, not an image", "image/png")),
    "stray": ("image", PNG),
}
URL_PAIR = {"ref_image_url": "https://x.test/c.png", "driving_video_url": "https://x.test/d.mp4"}


async def _assets(api: Api, clock: ManualClock) -> dict[str, str]:
    """A ready character and scenes in every state the render checks care about."""
    ids = {"char": await api.ready_character(clock), "scene": await api.ready_scene(clock)}
    ids["v3scene"] = await api.ready_scene(clock, model="V3_Preview")
    for name, template in (("tmpl", "tmpl-duo-dance"), ("video_tmpl", "tmpl-video-wave")):
        code, body = await api.call("POST", "/api/scenes/import", json={"template_id": template})
        assert code == 200
        ids[name] = body["id"]
    clock.advance(60)
    code, body = await api.post(
        "/api/scenes/preprocess", {"name": "late"}, {"video": ("d.mp4", make_mp4(3.0), "v/mp4")}
    )
    ids["pending"] = body["scene_id"]
    return ids


ERROR_CASES: list[tuple[str, dict[str, str], list[str], str]] = [
    ("nothing", {}, [], "CS-ORIV-001"),
    ("video only", {}, ["drv"], "CS-ORIV-001"),
    ("scene only", {"scene_id": "{scene}"}, [], "CS-ORIV-001"),
    ("image only", {}, ["ref"], "CS-ORIV-002"),
    ("character without scene", {"character_id": "{char}"}, [], "CS-ORIV-002"),
    ("mapping without scene", {"character_mapping": '{"a": "b"}'}, [], "CS-ORIV-002"),
    ("not a video", {}, ["ref", "drv_png"], "CS-ORIV-003"),
    ("too long", {}, ["ref", "drv_long"], "CS-ORIV-004"),
    ("resolution", {}, ["ref", "drv_huge"], "CS-ORIV-006"),
    ("truncated header", {}, ["ref", "drv_broken"], "CS-ORIV-007"),
    ("empty video", {}, ["ref", "drv_empty"], "CS-ORIV-007"),
    ("unknown character", {"character_id": "nope", "scene_id": "{scene}"}, [], "CS-ORIV-008"),
    ("unknown scene", {"character_id": "{char}", "scene_id": "nope"}, [], "CS-ORIV-009"),
    ("scene pending", {"character_id": "{char}", "scene_id": "{pending}"}, [], "CS-ORIV-010"),
    ("bad mode", {"background_mode": "neon"}, ["ref", "drv"], "CS-ORIV-011"),
    (
        "mapping not json",
        {"scene_id": "{tmpl}", "character_mapping": "{person_a1b2c3d4: x"},
        [],
        "CS-ORIV-012",
    ),
    (
        "mapping unknown character",
        {"scene_id": "{tmpl}", "character_mapping": '{"person_a1b2c3d4": "nope"}'},
        [],
        "CS-ORIV-008",
    ),
    ("two images", {"ref_image_url": "https://x.test/c.png"}, ["ref", "drv"], "CS-UORC01-002"),
    (
        "two videos",
        {"driving_video_url": "https://x.test/d.mp4"},
        ["ref", "drv"],
        "CS-UORC01-002",
    ),
    ("ftp url", {**URL_PAIR, "ref_image_url": "ftp://x.test/c.png"}, [], "CS-UORC01-002"),
    ("relative url", {**URL_PAIR, "driving_video_url": "/d.mp4"}, [], "CS-UORC01-002"),
    ("image not image", {}, ["ref_text", "drv"], "CS-UORC01-002"),
    ("bg_color without solid", {"bg_color": "0,255,0"}, ["ref", "drv"], "CS-UORC01-002"),
    (
        "bg_color hex",
        {"background_mode": "solid", "bg_color": "#00ff00"},
        ["ref", "drv"],
        "CS-UORC01-002",
    ),
    (
        "bg_color range",
        {"background_mode": "solid", "bg_color": "0,256,0"},
        ["ref", "drv"],
        "CS-UORC01-002",
    ),
    ("unknown model", {"model": "V9_Preview"}, ["ref", "drv"], "CS-UORC01-002"),
    ("bad boolean", {"fast": "yes"}, ["ref", "drv"], "CS-UORC01-002"),
    ("fast with url video", {**URL_PAIR, "fast": "true"}, [], "CS-UORC01-002"),
    (
        "character and image",
        {"character_id": "{char}", "scene_id": "{scene}"},
        ["ref"],
        "CS-UORC01-002",
    ),
    ("character and video", {"character_id": "{char}"}, ["drv"], "CS-UORC01-002"),
    ("video and scene", {"scene_id": "{scene}"}, ["ref", "drv"], "CS-UORC01-002"),
    (
        "mapping and character",
        {"scene_id": "{tmpl}", "character_id": "{char}", "character_mapping": "{}"},
        [],
        "CS-UORC01-002",
    ),
    (
        "mapping on video template",
        {"scene_id": "{video_tmpl}", "character_mapping": '{"person_a1b2c3d4": "{char}"}'},
        [],
        "CS-UORC01-002",
    ),
    (
        "mapping unknown segment",
        {"scene_id": "{tmpl}", "character_mapping": '{"person_zzz": "{char}"}'},
        [],
        "CS-UORC01-002",
    ),
    ("mapping not object", {"scene_id": "{tmpl}", "character_mapping": "[1]"}, [], "CS-UORC01-002"),
    (
        "model conflicts with scene",
        {"character_id": "{char}", "scene_id": "{v3scene}", "model": "V4_Preview"},
        [],
        "CS-UORC01-002",
    ),
    ("unexpected file part", {}, ["ref", "drv", "stray"], "CS-UORC01-002"),
]


@pytest.mark.parametrize(
    ("fields", "files", "expected"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
async def test_render_validation_errors(
    api: Api,
    clock: ManualClock,
    fake: FakeViggle,
    fields: dict[str, str],
    files: list[str],
    expected: str,
) -> None:
    ids = await _assets(api, clock)
    concrete = {k: _fill(v, ids) for k, v in fields.items()}
    balance = fake.balance()
    code, body = await api.render(concrete, dict(FILES[f] for f in files))
    assert (code, api.code(body)) == (400, expected)
    assert fake.balance() == balance  # a rejected render costs nothing
    assert fake.creates[-1].status == 400
    assert fake.creates[-1].error_code == expected


def _fill(value: str, ids: dict[str, str]) -> str:
    for name, ident in ids.items():
        value = value.replace("{" + name + "}", ident)
    return value


async def test_on_demand_upload_creates_a_queued_job(api: Api, fake: FakeViggle) -> None:
    code, body = await api.on_demand(10.0)
    assert code == 200
    assert set(body) == {"job_id", "status", "mode", "enqueued_at"}
    assert body["status"] == "queued"
    assert body["mode"] == "full_pipeline"
    assert body["enqueued_at"].endswith("Z")
    assert fake.balance() == 10_000 - 10
    record = fake.creates[-1]
    assert (record.kind, record.api_key, record.result_id) == (
        "render",
        fake.api_key,
        body["job_id"],
    )
    parts = {p.name: p for p in record.files}
    assert parts["ref_image"].filename == "me.png"
    assert parts["ref_image"].content_type == "image/png"
    assert parts["ref_image"].size == len(make_png())
    assert parts["driving_video"].size == len(make_mp4(10.0))
    assert {p.transfer for p in record.files} == {"content-length"}


async def test_url_inputs_are_billed_with_the_url_seconds_knob(api: Api, fake: FakeViggle) -> None:
    fake.settings.url_video_seconds = 7.2
    code, body = await api.render(URL_PAIR, urlencoded=True)
    assert code == 200, body
    assert fake.balance() == 10_000 - 8  # ceil(7.2)


@pytest.mark.parametrize(
    ("value", "fast"), [("true", True), ("True", True), ("1", True), ("false", False), ("0", False)]
)
async def test_fast_string_booleans(api: Api, fake: FakeViggle, value: str, fast: bool) -> None:
    code, body = await api.on_demand(4.5, fast=value)
    assert code == 200, body
    assert body["mode"] == ("fast" if fast else "full_pipeline")
    assert fake.balance() == 10_000 - 5 * (2 if fast else 1)


async def test_preprocessed_render_form_urlencoded(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    char, scene = await api.ready_character(clock), await api.ready_scene(clock, seconds=6.5)
    code, body = await api.render({"character_id": char, "scene_id": scene}, urlencoded=True)
    assert code == 200, body
    assert body["mode"] == "preprocessed"
    assert fake.balance() == 10_000 - 1 - 7  # the character, then ceil(6.5) s
    assert fake.creates[-1].fields == {"character_id": char, "scene_id": scene}


async def test_multi_character_render_with_partial_mapping(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    char = await api.ready_character(clock)
    code, imported = await api.call(
        "POST", "/api/scenes/import", json={"template_id": "tmpl-duo-dance"}
    )
    clock.advance(60)
    segment = imported["segments"][0]["uuid"]
    mapping = json.dumps({segment: char})
    code, body = await api.render({"scene_id": imported["id"], "character_mapping": mapping})
    assert code == 200, body
    assert body["mode"] == "preprocessed"


async def test_reference_image_on_a_stored_scene(api: Api, clock: ManualClock) -> None:
    scene = await api.ready_scene(clock)
    code, body = await api.render({"scene_id": scene, "fast": "true"}, {"ref_image": PNG})
    assert code == 200, body
    assert body["mode"] == "fast"


async def test_upload_over_the_size_limit_is_cut_off(api: Api, fake: FakeViggle) -> None:
    fake.settings.max_upload_bytes = 256 * 1024
    big = ("big.mp4", make_mp4(5.0, payload=2 * 1024 * 1024), "video/mp4")
    code, body = await api.render({}, {"ref_image": PNG, "driving_video": big})
    assert (code, api.code(body)) == (400, "CS-ORIV-005")
    part = fake.creates[-1].files[-1]
    # Reading stopped at the limit: far less than the 2 MiB sent was consumed.
    assert fake.settings.max_upload_bytes < part.size < 1024 * 1024


async def test_json_body_is_rejected(api: Api) -> None:
    code, body = await api.call("POST", "/api/render", json={"character_id": "x"})
    assert (code, api.code(body)) == (400, "CS-UORC01-002")


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("object", {"detail": {"error_code": "CS-UORC01-006"}}),
        ("string", {"detail": "API key required. Use Authorization: Bearer sk-xxx"}),
    ],
)
async def test_missing_key(api: Api, fake: FakeViggle, style: Any, expected: Any) -> None:
    fake.settings.auth_error_style = style
    code, body = await api.render({}, {"ref_image": PNG, "driving_video": MP4}, key=None)
    assert code == 401
    if style == "object":
        assert api.code(body) == "CS-UORC01-006"
    else:
        assert body == expected
    code, body = await api.call("GET", "/api/credits", key=None)
    assert code == 401


async def test_missing_key_is_401_without_reading_the_body(api: Api) -> None:
    code, body = await api.render({}, {"ref_image": PNG, "driving_video": MP4}, key=None)
    assert (code, api.code(body)) == (401, "CS-UORC01-006")


@pytest.mark.parametrize("header", ["Bearer sk-wrong", "Basic sk-test-fake", "sk-test-fake"])
async def test_invalid_key(api: Api, header: str) -> None:
    code, body = await api.call("GET", "/api/credits", key=None, headers={"Authorization": header})
    assert (code, api.code(body)) == (401, "CS-UORC01-007")


async def test_status_needs_no_key_and_unknown_ids_are_404(api: Api, fake: FakeViggle) -> None:
    _, created = await api.on_demand()
    status = await api.status(created["job_id"])
    assert set(status) == {
        "job_id", "status", "mode", "checkpoint", "progress_pct", "cdn_url", "mask_cdn_url",
        "error", "error_code", "error_message", "progress", "download_url", "chunks",
        "created_at", "completed_at",
    }  # fmt: skip
    code, body = await api.call("GET", "/api/render/job_nope", key=None)
    assert code == 404 and isinstance(body["detail"], str)
    fake.settings.not_found_status = 400
    code, _ = await api.call("GET", "/api/render/job_nope", key=None)
    assert code == 400


async def test_cancel_refunds_and_terminal_cancel_conflicts(
    api: Api, clock: ManualClock, fake: FakeViggle
) -> None:
    _, created = await api.on_demand(10.0)
    job_id = created["job_id"]
    assert fake.balance() == 10_000 - 10
    code, body = await api.call("DELETE", f"/api/render/{job_id}", key=None)
    assert code == 401
    code, body = await api.call("DELETE", f"/api/render/{job_id}", key="sk-other")
    assert code == 401
    code, body = await api.call("DELETE", f"/api/render/{job_id}")
    assert code == 200
    assert body["status"] == "cancelled" and body["completed_at"] is not None
    assert fake.balance() == 10_000
    code, body = await api.call("DELETE", f"/api/render/{job_id}")
    assert (code, api.code(body)) == (409, "CS-UORC01-002")
    clock.advance(3600)
    assert (await api.status(job_id))["status"] == "cancelled"
    _, done = await api.on_demand(1.0)
    clock.advance(3600)
    code, body = await api.call("DELETE", f"/api/render/{done['job_id']}")
    assert code == 409 and "complete" in body["detail"]["message"]
    assert fake.balance() == 10_000 - 1  # a finished render is not refunded
    code, _ = await api.call("DELETE", "/api/render/job_nope")
    assert code == 404


async def test_unknown_route_answers_json_404(api: Api) -> None:
    code, body = await api.call("GET", "/api/unknown")
    assert (code, body) == (404, {"detail": "Not Found"})
    assert api.fake.count("GET", "<unmatched>") == 1
