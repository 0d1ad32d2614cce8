"""Pure request builders, one per documented endpoint (docs/api/README.md).

Each checks the documented rules before anything is sent and produces exactly the
fields the docs show. Uploads are prepared (sniffed, size- and duration-checked) by
``_uploads`` and passed in as ``FilePart``s; the text-field checks here run first so
a conflicting call fails before any file is opened.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ._errors import InvalidInputError
from ._protocol import BACKGROUND_MODES, MODELS, FilePart, Request, build_request, check_url

__all__ = [
    "CHARACTERS",
    "RENDERS",
    "SCENES",
    "cancel_render",
    "character_create_fields",
    "create_character",
    "create_render",
    "create_scene",
    "credits",
    "delete_character",
    "delete_scene",
    "get_character",
    "get_render",
    "get_scene",
    "import_scene",
    "list_characters",
    "list_page",
    "list_scenes",
    "multipart_create",
    "render_create_fields",
    "scene_create_fields",
]

MAX_PAGE = 100  # docs/api/assets.md#list-characters: limit 1–100 in the only schema seen
# The collections (docs/api/README.md): every path below is built from these, in this module only.
RENDERS = "/api/render"
CHARACTERS = "/api/characters"
SCENES = "/api/scenes"


# --- the rules, shared by the builders below ---------------------------------------

def job_path(prefix: str, ident: str, field: str) -> str:
    """``prefix/ident`` with the id checked and percent-encoded (ids are opaque,
    docs/api/conventions.md#ids)."""
    if type(ident) is str and _UNRESERVED(ident):
        # The usual id (letters, digits, "-", "_", "."; not "." or ".."): quote would
        # return it unchanged, at ten times the cost of this match (a path per poll).
        return f"{prefix}/{ident}"
    if not isinstance(ident, str) or not ident.strip():
        raise InvalidInputError(field, "must be a non-empty string",
                                f"pass the {field} the API returned")
    if ident in (".", ".."):
        # A dot segment cannot be percent-encoded away (RFC 3986 treats "%2E" as "."):
        # URL normalisation would turn /api/render/.. into /api/, another resource.
        raise InvalidInputError(field, f"{ident!r} is a relative path segment, not an id",
                                f"pass the {field} the API returned")
    return f"{prefix}/{quote(ident, safe='')}"


# RFC 3986 unreserved characters, never percent-encoded; "." and ".." excluded as whole ids
# (a path segment of dots is a relative reference; they go through quote like the rest).
_UNRESERVED = re.compile(r"(?!\.{1,2}\Z)[A-Za-z0-9_.~-]+\Z").match


def check_choice(field: str, value: str, allowed: Sequence[str], code: str) -> str:
    if value not in allowed:
        raise InvalidInputError(field, f"{value!r} is not supported",
                                f"use one of {', '.join(allowed)}", error_code=code)
    return str(value)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("name", "is required and must be a non-empty string",
                                "pass a display name, e.g. name='My Character'")
    return name


def format_bg_color(value: str | Sequence[int]) -> str:
    """``"R,G,B"`` with each value 0–255 (docs/api/conventions.md#background-modes: not hex)."""
    fix = "pass 'R,G,B' with values 0-255, e.g. '0,255,0', or a 3-tuple of ints"
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise InvalidInputError("bg_color", f"unsupported type {type(value).__name__}", fix)
    if len(items) != 3:
        raise InvalidInputError("bg_color", f"{value!r} does not have three components", fix)
    out = []
    for item in items:
        if isinstance(item, bool):
            raise InvalidInputError("bg_color", f"{value!r} has a non-integer component", fix)
        try:
            number = int(item.strip()) if isinstance(item, str) else int(item)
        except (TypeError, ValueError):
            raise InvalidInputError("bg_color", f"{value!r} has a non-integer component",
                                    fix) from None
        if isinstance(item, float) or not 0 <= number <= 255:
            raise InvalidInputError("bg_color", f"{value!r} has a component outside 0-255", fix)
        out.append(str(number))
    return ",".join(out)


def format_mapping(value: Mapping[str, str] | str) -> str:
    """``character_mapping`` serialised to a JSON string (docs/api/renders.md#multi-character)."""
    fix = "pass a dict of segment uuid -> character id, e.g. {'person_a1b2c3d4': 'char_x'}"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidInputError("character_mapping", "is not valid JSON", fix,
                                    error_code="CS-ORIV-012") from None
    if not isinstance(value, Mapping) or not value:
        raise InvalidInputError("character_mapping", "must be a non-empty JSON object", fix,
                                error_code="CS-ORIV-012")
    for key, char in value.items():
        if not (isinstance(key, str) and key and isinstance(char, str) and char):
            raise InvalidInputError("character_mapping",
                                    "keys and values must be non-empty strings", fix,
                                    error_code="CS-ORIV-012")
    return json.dumps(dict(value))



def _conflict(a: str, b: str) -> InvalidInputError:
    return InvalidInputError(a, f"cannot be combined with {b}", f"pass either {a} or {b}",
                             error_code="CS-UORC01-002")


def _check_id(field: str, value: str | None) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise InvalidInputError(field, "must be a non-empty string",
                                f"pass the {field} the API returned")
    return value


def render_create_fields(
    *,
    has_ref_image: bool,
    ref_image_url: str | None,
    has_driving_video: bool,
    driving_video_url: str | None,
    character_id: str | None,
    scene_id: str | None,
    character_mapping: Mapping[str, str] | str | None,
    model: str | None,
    background_mode: str | None,
    bg_color: str | Sequence[int] | None,
    fast: bool,
) -> list[tuple[str, str]]:
    """Check a render's inputs (docs/api/renders.md#create-render,
    docs/api/renders.md#multi-character, docs/api/conventions.md#background-modes) and return its
    text fields.

    Accepted combinations: on-demand (ref image + driving video, each a file or a URL),
    preprocessed (character_id + scene_id), multi-character (scene_id +
    character_mapping), and a ref image with a scene_id standing in for the video
    (CS-ORIV-002's own wording). Anything else is refused locally.
    """
    if has_ref_image and ref_image_url is not None:
        raise _conflict("ref_image", "ref_image_url")
    if has_driving_video and driving_video_url is not None:
        raise _conflict("driving_video", "driving_video_url")
    _check_id("character_id", character_id)
    _check_id("scene_id", scene_id)
    has_ref = has_ref_image or ref_image_url is not None
    has_video = has_driving_video or driving_video_url is not None
    if character_mapping is not None:
        if scene_id is None:
            raise InvalidInputError("character_mapping", "needs a scene_id",
                                    "pass the scene_id of an imported multi-person template")
        if character_id is not None:
            raise _conflict("character_mapping", "character_id")
        if has_ref or has_video:
            raise _conflict("character_mapping", "ref_image/driving_video")
    elif character_id is not None:
        if scene_id is None:
            raise InvalidInputError("scene_id", "is required with character_id",
                                    "pass the scene_id of a ready scene", error_code="CS-ORIV-002")
        if has_ref or has_video:
            raise _conflict("character_id", "ref_image/driving_video")
    else:
        if not has_ref:
            raise InvalidInputError(
                "ref_image", "is required (or ref_image_url, or character_id + scene_id)",
                "pass ref_image (PNG/JPG) or ref_image_url", error_code="CS-ORIV-001")
        if not has_video and scene_id is None:
            raise InvalidInputError(
                "driving_video", "is required (or driving_video_url, or a scene_id)",
                "pass driving_video (MP4/MOV), driving_video_url or scene_id",
                error_code="CS-ORIV-002")
        if has_video and scene_id is not None:
            raise _conflict("scene_id", "driving_video/driving_video_url")
    fields: list[tuple[str, str]] = []
    if ref_image_url is not None:
        fields.append(("ref_image_url", check_url("ref_image_url", ref_image_url)))
    if driving_video_url is not None:
        fields.append(("driving_video_url", check_url("driving_video_url", driving_video_url)))
    if character_id is not None:
        fields.append(("character_id", character_id))
    if scene_id is not None:
        fields.append(("scene_id", scene_id))
    if character_mapping is not None:
        fields.append(("character_mapping", format_mapping(character_mapping)))
    if model is not None:
        # docs/api/conventions.md#models: with a scene the model is the scene's; passing one is
        # "ignored or rejected".
        if scene_id is not None:
            raise InvalidInputError("model", "cannot be set when rendering with a scene",
                                    "omit model; pass it when creating the scene instead")
        fields.append(("model", check_choice("model", model, MODELS, "CS-UORC01-002")))
    if background_mode is not None:
        fields.append(("background_mode", check_choice("background_mode", background_mode,
                                                       BACKGROUND_MODES, "CS-ORIV-011")))
    if bg_color is not None:
        # Newer docs: bg_color is "only valid when background_mode=solid, rejected otherwise".
        if background_mode != "solid":
            raise InvalidInputError("bg_color", "is only valid with background_mode='solid'",
                                    "set background_mode='solid' or drop bg_color",
                                    error_code="CS-UORC01-002")
        fields.append(("bg_color", format_bg_color(bg_color)))
    if not isinstance(fast, bool):
        raise InvalidInputError("fast", f"must be True or False, got {fast!r}",
                                "pass fast=True or fast=False")
    if fast:
        # docs/api/renders.md#request-fields: fast "requires a driving_video upload or a scene_id".
        if not has_driving_video and scene_id is None:
            raise InvalidInputError("fast", "needs a driving_video upload or a scene_id",
                                    "upload the video as driving_video, use a scene, or "
                                    "drop fast=True", error_code="CS-UORC01-002")
        fields.append(("fast", "true"))  # string booleans, as the docs' curl sends them
    return fields


def multipart_create(path: str, fields: Sequence[tuple[str, str]],
                     files: Sequence[FilePart]) -> Request:
    """A create as multipart/form-data; files go last so the body ends with them."""
    return build_request("POST", path, "create", fields=fields, files=files)


def create_render(fields: Sequence[tuple[str, str]], files: Sequence[FilePart]) -> Request:
    """docs/api/renders.md#create-render/docs/api/renders.md#multi-character ``POST /api/render``;
    ``fields`` from :func:`render_create_fields`."""
    return multipart_create(RENDERS, fields, files)


def create_character(fields: Sequence[tuple[str, str]], files: Sequence[FilePart]) -> Request:
    """docs/api/assets.md#create-character ``POST /api/characters/preprocess``; ``fields`` from
    :func:`character_create_fields`."""
    return multipart_create(f"{CHARACTERS}/preprocess", fields, files)


def create_scene(fields: Sequence[tuple[str, str]], files: Sequence[FilePart]) -> Request:
    """docs/api/assets.md#create-scene ``POST /api/scenes/preprocess``; ``fields`` from
    :func:`scene_create_fields`."""
    return multipart_create(f"{SCENES}/preprocess", fields, files)


def character_create_fields(*, name: str, has_image: bool, image_url: str | None
                            ) -> list[tuple[str, str]]:
    """docs/api/assets.md#create-character: ``name`` plus one of ``image`` / ``image_url``."""
    fields = [("name", check_name(name))]
    if has_image and image_url is not None:
        raise _conflict("image", "image_url")
    if not has_image and image_url is None:
        raise InvalidInputError("image", "is required (or image_url)",
                                "pass image (PNG/JPG/WebP) or image_url")
    if image_url is not None:
        fields.append(("image_url", check_url("image_url", image_url)))
    return fields


def scene_create_fields(*, name: str, has_video: bool, video_url: str | None,
                        background_mode: str | None, model: str | None) -> list[tuple[str, str]]:
    """docs/api/assets.md#create-scene: ``name``, one of ``video`` / ``video_url``, optional mode
    and model."""
    fields = [("name", check_name(name))]
    if has_video and video_url is not None:
        raise _conflict("video", "video_url")
    if not has_video and video_url is None:
        raise InvalidInputError("video", "is required (or video_url)",
                                "pass video (MP4/MOV/WebM) or video_url",
                                error_code="CS-ORIV-002")
    if video_url is not None:
        fields.append(("video_url", check_url("video_url", video_url)))
    if background_mode is not None:
        fields.append(("background_mode", check_choice("background_mode", background_mode,
                                                       BACKGROUND_MODES, "CS-ORIV-011")))
    if model is not None:
        fields.append(("model", check_choice("model", model, MODELS, "CS-UORC01-002")))
    return fields


def import_scene(template_id: str, name: str | None) -> Request:
    """docs/api/assets.md#import-template: JSON ``{"template_id", "name"?}`` (the documented key,
    not ``template_uuid``)."""
    _check_id("template_id", template_id)
    if template_id is None:
        raise InvalidInputError("template_id", "is required", "pass a template id from viggle.ai")
    body: dict[str, str] = {"template_id": template_id}
    if name is not None:
        body["name"] = check_name(name)
    return build_request("POST", f"{SCENES}/import", "create", json_body=body)


def get_render(job_id: str) -> Request:
    # docs/api/renders.md#render-status: the status endpoint needs no key, so polling works without
    # one.
    return build_request("GET", job_path(RENDERS, job_id, "job_id"), "read", auth=False)


def cancel_render(job_id: str) -> Request:
    return build_request("DELETE", job_path(RENDERS, job_id, "job_id"), "cancel")


def get_character(character_id: str) -> Request:
    return build_request("GET", job_path(CHARACTERS, character_id, "character_id"),
                         "read")


def delete_character(character_id: str) -> Request:
    return build_request("DELETE", job_path(CHARACTERS, character_id, "character_id"),
                         "delete")


def get_scene(scene_id: str) -> Request:
    return build_request("GET", job_path(SCENES, scene_id, "scene_id"), "read")


def delete_scene(scene_id: str) -> Request:
    return build_request("DELETE", job_path(SCENES, scene_id, "scene_id"), "delete")


def list_page(path: str, limit: int, offset: int) -> Request:
    """docs/api/assets.md#list-characters/docs/api/assets.md#list-scenes: ``limit`` 1–100,
    ``offset`` ≥ 0."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError("limit", f"{limit!r} is outside 1-{MAX_PAGE}",
                                f"pass an integer from 1 to {MAX_PAGE}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInputError("offset", f"{offset!r} is negative or not an integer",
                                "pass an integer >= 0")
    return build_request("GET", path, "read", params=[("limit", str(limit)),
                                                      ("offset", str(offset))])


def list_characters(limit: int, offset: int) -> Request:
    """docs/api/assets.md#list-characters ``GET /api/characters?limit&offset``."""
    return list_page(CHARACTERS, limit, offset)


def list_scenes(limit: int, offset: int) -> Request:
    """docs/api/assets.md#list-scenes ``GET /api/scenes?limit&offset``."""
    return list_page(SCENES, limit, offset)


def credits() -> Request:
    return build_request("GET", "/api/credits", "read")
