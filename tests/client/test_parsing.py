"""Response parsing: documented examples under a strict contract converter, every shape
variant (docs/api/client-rules.md#tolerant-parsing), forward compatibility, and a property test."""

from __future__ import annotations

import contextlib
import json
import string
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from viggle_async import (
    Character,
    Credits,
    RenderJob,
    RenderStatus,
    ResponseFormatError,
    Scene,
    Segment,
    ViggleError,
)
from viggle_async._converter import get_converter, make_converter
from viggle_async._protocol import Response, error_from_response, parse_model, parse_page

NOW = datetime(2024, 1, 1, tzinfo=UTC)
STRICT = make_converter(forbid_extra_keys=True)


def _resp(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status, headers or {}, raw)


def _parse(body: Any, cls: type[Any], converter: Any = None, **defaults: Any) -> Any:
    return parse_model(_resp(body), cls, converter or get_converter(), now=NOW,
                       defaults=defaults or None)


# The documented example bodies, verbatim from viggle-api.md.
DOCUMENTED: list[tuple[str, type[Any], dict[str, Any]]] = [
    ("docs/api/renders.md#create-render render create", RenderJob, {"job_id": "job_abc123xyz",
    "status": "queued",
                                       "mode": "full_pipeline",
                                       "enqueued_at": "2023-11-07T05:31:56Z"}),
    ("docs/api/renders.md#render-status render status", RenderStatus, {
        "job_id": "job_abc123xyz", "status": "complete", "mode": "full_pipeline",
        "checkpoint": "render_done", "progress_pct": 100,
        "cdn_url": "https://<cdn-host>/<path>/output.mp4",
        "mask_cdn_url": "https://<cdn-host>/<path>/mask.mp4",
        "error": None, "error_code": None, "error_message": None,
        "progress": {"completed_chunks": 1, "total_chunks": 1, "percent": 100},
        "download_url": "https://<cdn-host>/<path>/output.mp4", "chunks": [],
        "created_at": "2023-11-07T05:31:56Z", "completed_at": "2023-11-07T05:33:10Z"}),
    ("docs/api/assets.md#create-character character create", Character, {
        "character_id": "550e8400-e29b-41d4-a716-446655440000", "job_id": "char_550e8400e29b",
        "status": "pending", "enqueued_at": "2023-11-07T05:31:56Z"}),
    ("docs/api/assets.md#get-character character get", Character, {
        "id": "550e8400-e29b-41d4-a716-446655440000", "name": "My Character",
        "status": "ready", "job_id": "char_550e8400e29b", "error": None,
        "error_message": None, "thumbnail_url": None, "credits_used": 1,
        "created_at": "2023-11-07T05:31:56Z", "completed_at": None,
        "has_v3_encoding": True, "has_v4_encoding": True}),
    ("docs/api/assets.md#create-scene scene create", Scene, {
        "scene_id": "660e8400-e29b-41d4-a716-446655440000", "job_id": "scene_660e8400e29b",
        "status": "pending", "enqueued_at": "2023-11-07T05:31:56Z"}),
    ("docs/api/assets.md#import-template scene import", Scene, {
        "id": "770e8400-e29b-41d4-a716-446655440000", "status": "pending",
        "credits_reserved": 15, "segments": [{"uuid": "person_a1b2c3d4", "type": "human"}]}),
    ("docs/api/assets.md#import-template third-party import", Scene, {
        "scene_id": "s1", "job_id": "scene_1", "status": "pending",
        "character_uuids": ["person_a1b2c3d4", "person_e5f6g7h8"]}),
    ("docs/api/assets.md#get-scene scene get", Scene, {
        "id": "660e8400-e29b-41d4-a716-446655440000", "name": "Dance Sequence",
        "status": "ready", "duration_seconds": 6.67, "fps": 30, "total_frames": 200,
        "width": 1920, "height": 1080, "job_id": "scene_660e8400e29b", "error_message": None,
        "credits_used": 6.67, "created_at": "2023-11-07T05:31:56Z",
        "completed_at": "2023-11-07T05:33:10Z"}),
    ("docs/api/credits.md#credits-endpoint credits", Credits, {"balance": 985, "credits": 985,
    "total_purchased": 1000,
                                "total_used": 15, "updated_at": "2023-11-07T05:31:56Z"}),
]


@pytest.mark.parametrize(("cls", "body"), [d[1:] for d in DOCUMENTED],
                         ids=[d[0] for d in DOCUMENTED])
def test_documented_examples_parse_with_no_unknown_keys(cls: type[Any],
                                                        body: dict[str, Any]) -> None:
    # Only the keys the converter deliberately drops (chunks, character_id/scene_id aliases,
    # character_uuids, credits) may be absent from the models.
    strict = _parse(body, cls, STRICT)
    assert strict == _parse(body, cls)
    assert _parse({"data": body}, cls, STRICT) == strict


def test_documented_list_examples_parse_strictly() -> None:
    chars = {"characters": [{"id": "c1", "name": "A", "status": "ready",
                             "created_at": "2023-11-07T05:31:56Z", "completed_at": None}],
             "total": 1}
    page = parse_page(_resp(chars), "characters", Character, STRICT, limit=10, offset=0,
                      now=NOW)
    assert page.items[0].id == "c1" and page.total == 1
    scenes = {"scenes": [{"id": "s1", "name": "S", "status": "pending",
                          "duration_seconds": None}], "total": 7}
    page2 = parse_page(_resp({"data": scenes}), "scenes", Scene, STRICT, limit=1, offset=3,
                       now=NOW)
    assert (page2.items[0].id, page2.total, page2.offset) == ("s1", 7, 3)


def test_strict_converter_catches_an_unknown_key() -> None:
    with pytest.raises(ResponseFormatError):
        _parse({"job_id": "j", "status": "queued", "surprise": 1}, RenderJob, STRICT)


def test_shape_variants() -> None:
    assert _parse({"character_id": "c1", "status": "pending"}, Character).id == "c1"
    assert _parse({"id": "c2", "character_id": "c1", "status": "ready"}, Character).id == "c2"
    scene = _parse({"scene_id": "s1", "status": "pending", "character_uuids": ["p1", "p2"]},
                   Scene)
    assert scene.id == "s1" and scene.segments == (Segment("p1"), Segment("p2"))
    docs = _parse({"id": "s2", "status": "pending", "segments": [{"uuid": "p1",
                                                                    "type": "human"}]}, Scene)
    assert docs.segments == (Segment("p1", "human"),)
    assert _parse({"credits": 12}, Credits).balance == 12
    wrapped = _parse({"data": {"job_id": "j", "status": "queued"}}, RenderJob)
    assert wrapped.job_id == "j"
    # A render status whose body omits the id: the id we asked about fills it.
    assert _parse({"status": "queued"}, RenderStatus, job_id="j9").job_id == "j9"


@pytest.mark.parametrize("status", ["rendering", "merging", "upscaling", "QUEUED_V2", ""])
def test_unknown_and_older_statuses_are_running(status: str) -> None:
    parsed = _parse({"job_id": "j", "status": status, "brand_new_field": {"x": [1]},
                     "progress": {"percent": 10, "eta_s": 4}}, RenderStatus)
    assert parsed.status == status
    assert not parsed.is_terminal and not parsed.is_failed
    assert parsed.progress is not None and parsed.progress.percent == 10


def test_unknown_asset_status_and_fields() -> None:
    char = _parse({"id": "c", "status": "queued_for_gpu", "new": True}, Character)
    assert not char.is_terminal
    scene = _parse({"id": "s", "status": "queued", "model": "V4_Preview",
                    "background_mode": "solid"}, Scene)
    assert not scene.is_terminal


def test_error_status_is_terminal_failure() -> None:
    parsed = _parse({"job_id": "j", "status": "error"}, RenderStatus)
    assert parsed.is_terminal and parsed.is_failed


@pytest.mark.parametrize("url", [None, ""])
def test_complete_without_url_means_poll_again(url: str | None) -> None:
    # Issue 11.3: the output is not there yet; that is not a failure (the job was paid).
    parsed = _parse({"job_id": "j", "status": "complete", "cdn_url": url}, RenderStatus)
    assert parsed.awaiting_output
    assert not parsed.is_terminal and not parsed.is_complete and not parsed.is_failed


@pytest.mark.parametrize("body", [
    {"job_id": None, "status": "queued"},
    {"job_id": 5, "status": "queued"},
    {"job_id": "j", "status": 3},
    {"job_id": "j"},
    {"job_id": "j", "status": "complete", "cdn_url": 5},
    {"job_id": "j", "status": "complete", "cdn_url": "https://c/o.mp4", "mask_cdn_url": []},
    [1, 2],
    "job",
    None,
], ids=repr)
def test_wrong_types_are_refused_not_coerced(body: Any) -> None:
    with pytest.raises(ResponseFormatError):
        _parse(body, RenderStatus)


def test_non_json_body_is_a_format_error() -> None:
    with pytest.raises(ResponseFormatError):
        parse_model(Response(200, {}, b"<html>gateway</html>"), RenderJob, get_converter(),
                    now=NOW)


# --- property test ----------------------------------------------------------------------

MODELS: list[type[Any]] = [RenderJob, RenderStatus, Character, Scene, Credits]
FIELD_NAMES = sorted({"id", "job_id", "status", "character_id", "scene_id", "segments",
                      "character_uuids", "created_at", "progress", "cdn_url", "balance",
                      "credits", "total", "characters", "scenes", "data", "detail",
                      "error_code", "message", "error", "action", "loc", "msg", "uuid",
                      "progress_pct", "width", "total_frames", "items"})
scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=8) | st.sampled_from(["complete", "2023-11-07T05:31:56Z"]))
keys = st.sampled_from(FIELD_NAMES) | st.text(string.ascii_lowercase, max_size=4)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(keys, inner, max_size=6), max_leaves=20)
headers = st.dictionaries(st.sampled_from(["retry-after", "x-request-id", "content-type"]),
                          st.text(max_size=30), max_size=3)


# Error envelopes in every documented shape, with arbitrary values inside
# (docs/api/conventions.md#error-envelope).
envelopes = st.fixed_dictionaries({}, optional={
    "detail": json_values | st.lists(st.dictionaries(st.sampled_from(["loc", "msg", "type"]),
                                                     json_values, max_size=3), max_size=3)
    | st.dictionaries(st.sampled_from(["error_code", "message", "action"]), json_values),
    "error": json_values | st.dictionaries(st.sampled_from(["code", "message", "request_id"]),
                                           json_values),
    "error_code": json_values, "message": json_values, "action": json_values})


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(body={"detail": [{"loc": 5, "msg": "x"}]}, status=422, hdrs={}, cls=RenderJob)
@example(body={"job_id": "j", "status": "queued", "created_at": 1e300}, status=200, hdrs={},
         cls=RenderStatus)
@given(body=json_values | envelopes | st.binary(max_size=40), status=st.integers(100, 599),
       hdrs=headers, cls=st.sampled_from(MODELS))
def test_only_viggle_errors_escape(body: Any, status: int, hdrs: dict[str, str],
                                   cls: type[Any]) -> None:
    response = _resp(body, status, hdrs)
    conv = get_converter()
    for parse in (lambda: parse_model(response, cls, conv, now=NOW),
                  lambda: parse_model(response, cls, conv, now=NOW, defaults={"job_id": "j"}),
                  lambda: parse_page(response, "characters", cls, conv, limit=5, offset=0,
                                     now=NOW)):
        with contextlib.suppress(ViggleError):
            parse()
    if status >= 400:
        error = error_from_response(response, now=NOW)
        assert error.status == status and isinstance(str(error), str)
