"""``/api/render`` handlers: create (docs/api/renders.md#create-render,
docs/api/renders.md#multi-character), status (docs/api/renders.md#render-status) and cancel
(docs/api/renders.md#cancel)."""

from __future__ import annotations

import json
from typing import Any

import attrs
from aiohttp import web

from ._cdn import cdn_url
from ._common import (
    MODELS,
    billable,
    check_image,
    check_url,
    check_video,
    create_request,
    field,
    ok,
    parse_background_mode,
    parse_bool,
)
from ._errors import api_error, not_found
from ._forms import Form
from ._malform import malform
from ._records import RenderJob, Scene, render_body
from ._store import STORE, Store, new_id

__all__ = ["cancel_render", "create_render", "get_render", "status_body"]

_FILE_FIELDS = frozenset({"ref_image", "driving_video"})


@attrs.define
class _Plan:
    mode: str
    seconds: float


async def create_render(request: web.Request) -> web.Response:
    store = request.app[STORE]
    key = store.authenticate(request)
    async with create_request(request, store, "render", key) as (form, record):
        fast = parse_bool(form, "fast")
        background_mode = parse_background_mode(form)
        plan = _validate(store, key, form, fast, background_mode)
        cost = billable(plan.seconds, fast)
        # Capacity is checked before credits: a fast request that cannot run costs nothing.
        if fast and store.fast_unavailable():
            store.obs.capacity_rejections += 1
            raise api_error("CS-UORC01-001")
        job_id = new_id("job_")
        now = store.now()
        if not store.ledger.charge(key, cost, "render", job_id, store.clock.iso(now)):
            raise api_error(
                "CS-UORC01-008",
                f"This render needs {cost} credits; the balance is {store.ledger.balance(key)}",
            )
        s = store.settings
        processing = (s.render_base_s + s.render_s_per_video_s * plan.seconds) / (2 if fast else 1)
        shape = _progress_shape(store, key, now, processing)
        started = now + shape.queue_s
        job = RenderJob(
            job_id=job_id,
            api_key=key,
            mode="fast" if fast else plan.mode,
            fast=fast,
            background_mode=background_mode,
            video_seconds=plan.seconds,
            cost=cost,
            created=now,
            started=started,
            finished=started + shape.processing_s + shape.stall_s,
            fails=store.fails(store.faults.render_failure_rate),
            stall_start=started + shape.stall_at * shape.processing_s,
            stall_s=shape.stall_s,
            marks=shape.marks,
        )
        store.jobs[job_id] = job
        if job.fails:
            store.schedule_refund(job.fail_at, "render", job_id)
        record.status, record.result_id = 200, job_id
        return ok(
            store,
            {
                "job_id": job_id,
                "status": "queued",
                "mode": job.mode,
                "enqueued_at": store.clock.iso(now),
            },
        )


@attrs.frozen
class _Shape:
    queue_s: float
    processing_s: float
    stall_at: float = 0.0  # fraction of processing
    stall_s: float = 0.0
    marks: tuple[float, ...] = (0.2, 0.4, 0.6, 0.9)


_MARK_JITTER = 0.08  # less than half the 0.2 gap between marks, so they stay in order


def _progress_shape(store: Store, key: str, now: float, processing: float) -> _Shape:
    """Queue delay and progress of a new job: linear by default, uneven with the
    Faults progress knobs (seeded; nothing is drawn while they are all off)."""
    f, s = store.faults, store.settings
    rng = store.progress_rng
    queue = s.queue_delay_s
    if f.queue_jitter > 0:
        queue *= 1 + rng.uniform(-f.queue_jitter, f.queue_jitter)
    if f.queue_s_per_active_job > 0:
        active = sum(
            1 for j in store.jobs.values() if j.api_key == key and not j.is_terminal(now)
        )
        queue += f.queue_s_per_active_job * active
    if f.render_rate_jitter > 0:
        processing *= 1 + rng.uniform(-f.render_rate_jitter, f.render_rate_jitter)
    stall_at = stall_s = 0.0
    if f.stall_fraction > 0 and rng.random() < f.stall_fraction:
        stall_at = rng.uniform(0.1, 0.9)
        stall_s = rng.uniform(0.0, f.stall_max) * processing
    marks: tuple[float, ...] = (0.2, 0.4, 0.6, 0.9)
    if f.uneven_checkpoints:
        marks = tuple(m + rng.uniform(-_MARK_JITTER, _MARK_JITTER) for m in marks)
    return _Shape(max(0.0, queue), processing, stall_at, stall_s, marks)


def _validate(store: Store, key: str, form: Form, fast: bool, background_mode: str) -> _Plan:
    """Pick the documented combination the form uses; reject the rest with CS-UORC01-002."""
    for name in form.files:
        if name not in _FILE_FIELDS:
            raise api_error("CS-UORC01-002", f"Unexpected file part {name!r}")
    for name in _FILE_FIELDS & form.fields.keys():
        raise api_error("CS-UORC01-002", f"{name} must be sent as a file")
    _check_bg_color(store, form, background_mode)
    model = field(form, "model")
    if model is not None and model not in MODELS:
        raise api_error("CS-UORC01-002", f"Unknown model {model!r}; use one of {sorted(MODELS)}")

    ref_file, ref_url = form.files.get("ref_image"), field(form, "ref_image_url")
    drv_file, drv_url = form.files.get("driving_video"), field(form, "driving_video_url")
    character_id, scene_id = field(form, "character_id"), field(form, "scene_id")
    mapping = field(form, "character_mapping")
    if ref_file and ref_url:
        raise api_error("CS-UORC01-002", "Send ref_image or ref_image_url, not both")
    if drv_file and drv_url:
        raise api_error("CS-UORC01-002", "Send driving_video or driving_video_url, not both")
    has_ref, has_drv = bool(ref_file or ref_url), bool(drv_file or drv_url)
    if ref_url:
        check_url("ref_image_url", ref_url)
    if drv_url:
        check_url("driving_video_url", drv_url)
    if fast and not (drv_file or scene_id):
        # docs/api/conventions.md#background-modes / docs/api/renders.md#request-fields: fast needs
        # a driving_video upload or a scene_id.
        raise api_error("CS-UORC01-002", "fast=true needs a driving_video upload or a scene_id")

    if mapping is not None:  # multi-character render (docs/api/renders.md#multi-character)
        if character_id or has_ref or has_drv:
            raise api_error(
                "CS-UORC01-002",
                "character_mapping goes with scene_id only (no character_id, image or video)",
            )
        if not scene_id:
            raise api_error("CS-ORIV-002", "character_mapping needs the scene_id of a template")
        scene = _ready_scene(store, key, scene_id, model)
        _check_mapping(store, key, scene, mapping)
        return _Plan("preprocessed", scene.duration_s)
    if character_id:  # preprocessed render (docs/api/renders.md#render-modes, mode 2)
        if has_ref:
            raise api_error("CS-UORC01-002", "Send character_id or a reference image, not both")
        if has_drv:
            # Undocumented combination (docs/api/open-questions.md#mixed-inputs): a preprocessed
            # character needs a scene.
            raise api_error("CS-UORC01-002", "character_id goes with scene_id, not a video")
        if not scene_id:
            raise api_error("CS-ORIV-002", "character_id needs a scene_id")
        _ready_character(store, key, character_id)
        scene = _ready_scene(store, key, scene_id, model)
        return _Plan("preprocessed", scene.duration_s)
    if not has_ref:
        raise api_error("CS-ORIV-001")
    if ref_file:
        check_image(ref_file)
    if scene_id:  # reference image on a stored scene: CS-ORIV-002's "or provide scene_id"
        if has_drv:
            raise api_error("CS-UORC01-002", "Send a driving video or a scene_id, not both")
        scene = _ready_scene(store, key, scene_id, model)
        return _Plan("full_pipeline", scene.duration_s)
    if drv_file:
        return _Plan("full_pipeline", check_video(store, drv_file).duration_s)
    if drv_url:
        return _Plan("full_pipeline", store.settings.url_video_seconds)
    raise api_error("CS-ORIV-002")


def _check_bg_color(store: Store, form: Form, background_mode: str) -> None:
    color = field(form, "bg_color")
    if color is None:
        return
    if background_mode != "solid":
        if store.settings.strict_bg_color:  # newer render-options page: "rejected otherwise"
            raise api_error("CS-UORC01-002", "bg_color is only valid with background_mode=solid")
        return
    parts = color.split(",")
    try:
        values = [int(p.strip()) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise api_error("CS-UORC01-002", f'bg_color must be "R,G,B" with 0-255, got {color!r}')


def _ready_character(store: Store, key: str, ident: str) -> None:
    char = store.character_of(key, ident)
    if char is None:
        raise api_error("CS-ORIV-008", f"Character {ident} not found")
    status = char.status(store.now())
    if status != "ready":
        # Not documented: the docs only say the character must be ready
        # (docs/api/renders.md#create-render).
        raise api_error("CS-UORC01-002", f"Character {ident} is {status}, not ready")


def _ready_scene(store: Store, key: str, ident: str, model: str | None) -> Scene:
    scene = store.scene_of(key, ident)
    if scene is None:
        raise api_error("CS-ORIV-009", f"Scene {ident} not found")
    status = scene.status(store.now())
    if status != "ready":
        raise api_error("CS-ORIV-010", f"Scene {ident} is {status}, not ready")
    if model is not None and model != scene.model:
        # docs/api/conventions.md#models: the scene's model is final; a conflicting model is
        # rejected (code undocumented).
        raise api_error(
            "CS-UORC01-002", f"Scene {ident} was preprocessed with {scene.model}, not {model}"
        )
    return scene


def _check_mapping(store: Store, key: str, scene: Scene, raw: str) -> None:
    try:
        mapping = json.loads(raw)
    except ValueError as exc:
        raise api_error("CS-ORIV-012", f"character_mapping is not valid JSON: {exc}") from exc
    if (
        not isinstance(mapping, dict)
        or not mapping
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
    ):
        raise api_error(
            "CS-UORC01-002", "character_mapping must map segment UUIDs to character ids"
        )
    if not scene.segments:
        raise api_error(
            "CS-UORC01-002", "This scene has no person segments: render it with character_id"
        )
    unknown = sorted(set(mapping) - set(scene.segments))
    if unknown:
        raise api_error("CS-UORC01-002", f"Unknown segment UUIDs for this scene: {unknown}")
    for character_id in mapping.values():
        _ready_character(store, key, character_id)


def _job_or_404(store: Store, request: web.Request) -> RenderJob:
    job_id = request.match_info["job_id"]
    job = store.jobs.get(job_id)
    if job is None:
        raise not_found("Job", job_id, store.settings.not_found_status)
    return job


async def get_render(request: web.Request) -> web.Response:
    """No authentication: the docs say status may be polled without a key
    (docs/api/conventions.md#authentication, docs/api/renders.md#render-status)."""
    store = request.app[STORE]
    job = _job_or_404(store, request)
    return ok(store, status_body(store, job, poll=True))


_URL_FIELDS = ("cdn_url", "mask_cdn_url", "download_url")
# Faults.complete_without_cdn_url_n: the shapes of a missing URL, in turn.
_MISSING_URL = ("absent", None, "")


def status_body(store: Store, job: RenderJob, *, poll: bool = False) -> dict[str, Any]:
    """The status object with the status faults applied; ``poll`` counts it as a poll."""
    now = store.now()
    body = render_body(job, now, store.clock, store.cdn_base, store.settings.legacy_statuses)
    faults = store.faults
    if faults.url_ttl_s is not None:
        base = store.cdn_base
        for name in _URL_FIELDS:  # a fresh signature on every answer
            value = body[name]
            if isinstance(value, str) and value.startswith(base):
                body[name] = cdn_url(store, value[len(base) :], now)
    if body["status"] == "complete" and faults.complete_without_cdn_url_n > 0:
        seen = store.complete_polls.get(job.job_id, 0)
        if poll:
            store.complete_polls[job.job_id] = seen + 1
        if seen < faults.complete_without_cdn_url_n:
            missing = _MISSING_URL[seen % len(_MISSING_URL)]
            for name in ("cdn_url", "download_url"):
                if missing == "absent":
                    del body[name]
                else:
                    body[name] = missing
    return malform("render", body, faults.malformed_fields)


def _body(store: Store, job: RenderJob) -> dict[str, Any]:
    return status_body(store, job)


async def cancel_render(request: web.Request) -> web.Response:
    """Cancel a queued or processing job and refund it (docs/api/renders.md#cancel; shape is our
    choice)."""
    store = request.app[STORE]
    key = store.authenticate(request)
    job = _job_or_404(store, request)
    if job.api_key != key:
        raise not_found("Job", job.job_id, store.settings.not_found_status)
    status = job.status(store.now())
    if job.is_terminal(store.now()):
        raise api_error(
            "CS-UORC01-002",
            f"Job {job.job_id} is already {status} and cannot be cancelled",
            status=store.settings.cancel_conflict_status,
        )
    store.cancel(job)
    return ok(store, _body(store, job))
