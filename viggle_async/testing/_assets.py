"""Characters (docs/api/assets.md), scenes (docs/api/assets.md#create-scene, docs/api/assets.md),
template import (docs/api/assets.md#import-template) and credits."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ._common import (
    MODELS,
    check_image,
    check_url,
    check_video,
    create_request,
    field,
    ok,
    parse_background_mode,
)
from ._errors import api_error, not_found
from ._forms import Form
from ._malform import malform
from ._records import Character, Scene
from ._store import STORE, Store, new_id

__all__ = [
    "create_character",
    "create_scene",
    "delete_character",
    "delete_scene",
    "get_character",
    "get_credits",
    "get_scene",
    "import_scene",
    "list_characters",
    "list_scenes",
]

_MAX_LIMIT = 100
_DEFAULT_LIMIT = 20


def _only_files(form: Form, allowed: str) -> None:
    for name in form.files:
        if name != allowed:
            raise api_error("CS-UORC01-002", f"Unexpected file part {name!r}")
    if allowed in form.fields:
        raise api_error("CS-UORC01-002", f"{allowed} must be sent as a file")


def _name(form: Form) -> str:
    name = field(form, "name")
    if name is None:
        raise api_error("CS-UORC01-002", "name is required")
    return name


def _model(form: Form) -> str:
    model = field(form, "model") or "V4_Preview"
    if model not in MODELS:
        raise api_error("CS-UORC01-002", f"Unknown model {model!r}; use one of {sorted(MODELS)}")
    return model


async def create_character(request: web.Request) -> web.Response:
    store = request.app[STORE]
    key = store.authenticate(request)
    async with create_request(request, store, "character", key) as (form, record):
        _only_files(form, "image")
        name = _name(form)
        image, url = form.files.get("image"), field(form, "image_url")
        if image and url:
            raise api_error("CS-UORC01-002", "Send image or image_url, not both")
        if image:
            check_image(image)
        elif url:
            check_url("image_url", url)
        else:
            raise api_error("CS-ORIV-001", "An image or image_url is required")
        # A third-party client sends `model`; characters serve both models
        # (docs/api/conventions.md#models), so we
        # only check that it names one.
        if field(form, "model") is not None:
            _model(form)
        ident, job_id = new_id(), new_id("char_")
        now = store.now()
        if not store.ledger.charge(key, 1, "character", ident, store.clock.iso(now)):
            raise api_error("CS-UORC01-008", "Creating a character needs 1 credit")
        s = store.settings
        processing_at = now + s.character_pending_s
        char = Character(
            id=ident,
            job_id=job_id,
            api_key=key,
            name=name,
            created=now,
            processing_at=processing_at,
            ready_at=processing_at + s.character_processing_s,
            fails=store.fails(store.faults.asset_failure_rate),
        )
        store.characters[ident] = char
        if char.fails:
            store.schedule_refund(char.ready_at, "character", ident)
        record.status, record.result_id = 200, ident
        return ok(
            store,
            {
                "character_id": ident,
                "job_id": job_id,
                "status": "pending",
                "enqueued_at": store.clock.iso(now),
            },
        )


async def create_scene(request: web.Request) -> web.Response:
    store = request.app[STORE]
    key = store.authenticate(request)
    async with create_request(request, store, "scene", key) as (form, record):
        _only_files(form, "video")
        name = _name(form)
        background_mode = parse_background_mode(form)
        model = _model(form)
        video, url = form.files.get("video"), field(form, "video_url")
        s = store.settings
        if video and url:
            raise api_error("CS-UORC01-002", "Send video or video_url, not both")
        if video:
            facts = check_video(store, video)
            duration, width, height = facts.duration_s, facts.width, facts.height
        elif url:
            check_url("video_url", url)
            duration, width, height = s.url_video_seconds, None, None
        else:
            raise api_error("CS-ORIV-002", "A video or video_url is required")
        # docs/api/limits.md#limits: a scene video must be at least 0.5 s long and 64x64 pixels.
        if duration < s.min_scene_seconds:
            raise api_error(
                "CS-UORC01-002", f"Scene video must be at least {s.min_scene_seconds}s long"
            )
        if min(width or s.min_scene_pixels, height or s.min_scene_pixels) < s.min_scene_pixels:
            raise api_error(
                "CS-UORC01-002",
                f"Scene video must be at least {s.min_scene_pixels}x{s.min_scene_pixels}",
            )
        now = store.now()
        scene = Scene(
            id=new_id(),
            job_id=new_id("scene_"),
            api_key=key,
            name=name,
            model=model,
            background_mode=background_mode,
            duration_s=duration,
            fps=s.scene_fps,
            width=width,
            height=height,
            created=now,
            ready_at=now + s.scene_base_s + s.scene_s_per_video_s * duration,
            fails=store.fails(store.faults.asset_failure_rate),
        )
        store.scenes[scene.id] = scene
        record.status, record.result_id = 200, scene.id
        # Scene creation is free (docs/api/credits.md#costs).
        return ok(
            store,
            {
                "scene_id": scene.id,
                "job_id": scene.job_id,
                "status": "pending",
                "enqueued_at": store.clock.iso(now),
            },
        )


async def import_scene(request: web.Request) -> web.Response:
    store = request.app[STORE]
    key = store.authenticate(request)
    async with create_request(request, store, "import", key, read_body=False) as (_, record):
        body = await _json_object(request)
        record.fields.update({k: str(v) for k, v in body.items()})
        # The docs send template_id; a third-party client sends template_uuid
        # (docs/api/assets.md#import-template).
        ids = {body.get("template_id"), body.get("template_uuid")} - {None, ""}
        if not ids:
            raise api_error("CS-UORC01-002", "template_id is required")
        if len(ids) > 1:
            raise api_error("CS-UORC01-002", "template_id and template_uuid disagree")
        template_id = ids.pop()
        template = (
            store.settings.templates.get(template_id) if isinstance(template_id, str) else None
        )
        if template is None:
            raise api_error("CS-UORC01-002", f"Template {template_id!r} not found")
        name = body.get("name")
        now = store.now()
        s = store.settings
        scene = Scene(
            id=new_id(),
            job_id=new_id("scene_"),
            api_key=key,
            name=name if isinstance(name, str) and name else f"Template {template_id}",
            model="V4_Preview",
            background_mode="original",
            duration_s=template.duration_s,
            fps=template.fps,
            width=template.width,
            height=template.height,
            created=now,
            ready_at=now + s.scene_base_s,
            fails=store.fails(store.faults.asset_failure_rate),
            segments=template.segments,
            template_id=template_id,
        )
        store.scenes[scene.id] = scene
        record.status, record.result_id = 200, scene.id
        if s.import_response_style == "third_party":
            return ok(
                store,
                {
                    "scene_id": scene.id,
                    "job_id": scene.job_id,
                    "status": "pending",
                    "character_uuids": list(template.segments),
                },
            )
        # credits_reserved is undocumented (docs/api/credits.md#costs): we report ceil(duration)
        # and charge nothing.
        return ok(
            store,
            {
                "id": scene.id,
                "status": "pending",
                "credits_reserved": math.ceil(template.duration_s),
                "segments": [{"uuid": u, "type": "human"} for u in template.segments],
            },
        )


async def _json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise api_error("CS-UORC01-002", "Send a JSON body (Content-Type: application/json)")
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        raise api_error("CS-UORC01-002", f"Body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise api_error("CS-UORC01-002", "Body must be a JSON object")
    return body


def _owned(store: Store, request: web.Request, kind: str) -> Character | Scene:
    key = store.authenticate(request)
    ident = request.match_info["character_id" if kind == "Character" else "scene_id"]
    found = store.character_of(key, ident) if kind == "Character" else store.scene_of(key, ident)
    if found is None:
        raise not_found(kind, ident, store.settings.not_found_status)
    return found


def _asset_body(store: Store, item: Character | Scene) -> dict[str, Any]:
    kind = "character" if isinstance(item, Character) else "scene"
    return malform(kind, item.body(store.now(), store.clock), store.faults.malformed_fields)


async def get_character(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return ok(store, _asset_body(store, _owned(store, request, "Character")))


async def get_scene(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return ok(store, _asset_body(store, _owned(store, request, "Scene")))


async def delete_character(request: web.Request) -> web.Response:
    """Soft delete (docs/api/assets.md#delete-character): later GETs answer 404 and renders
    CS-ORIV-008."""
    store = request.app[STORE]
    _owned(store, request, "Character").deleted = True
    return ok(store, {"success": True})


async def delete_scene(request: web.Request) -> web.Response:
    store = request.app[STORE]
    _owned(store, request, "Scene").deleted = True
    return ok(store, {"success": True})


def _page(request: web.Request) -> tuple[int, int]:
    try:
        limit = int(request.query.get("limit", _DEFAULT_LIMIT))
        offset = int(request.query.get("offset", 0))
    except ValueError as exc:
        raise api_error("CS-UORC01-002", "limit and offset must be integers") from exc
    # docs/api/assets.md#list-characters: the third-party schema allows limit 1-100 and offset >= 0.
    if not 1 <= limit <= _MAX_LIMIT or offset < 0:
        raise api_error("CS-UORC01-002", f"Need 1 <= limit <= {_MAX_LIMIT} and offset >= 0")
    return limit, offset


def _listing(
    store: Store, request: web.Request, items: Sequence[Character | Scene], label: str
) -> web.Response:
    key = store.authenticate(request)
    limit, offset = _page(request)
    mine = [i for i in items if i.api_key == key and not i.deleted]
    # Newest first (undocumented); `total` is the full count, not the page size
    # (docs/api/open-questions.md#list-endpoints).
    mine.reverse()  # the dicts keep creation order
    cap = store.faults.list_page_cap
    if cap is not None:  # a server-side page size that wins over `limit`
        limit = min(limit, cap)
    page = [_asset_body(store, i) for i in mine[offset : offset + limit]]
    return ok(store, {label: page, "total": len(mine)})


async def list_characters(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return _listing(store, request, list(store.characters.values()), "characters")


async def list_scenes(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return _listing(store, request, list(store.scenes.values()), "scenes")


async def get_credits(request: web.Request) -> web.Response:
    store = request.app[STORE]
    key = store.authenticate(request)
    return ok(store, malform("credits", store.ledger.summary(key), store.faults.malformed_fields))
