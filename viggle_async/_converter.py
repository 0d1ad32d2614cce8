"""The one place that knows the wire format of responses: a cattrs converter that
turns decoded JSON into ``_models`` classes.

Tolerant on input (docs/api/client-rules.md#tolerant-parsing): unknown fields are ignored (unless a
contract
test asks for ``forbid_extra_keys``), unknown statuses stay strings, and every
documented shape variant is accepted (``id`` vs ``character_id``/``scene_id``,
``segments`` vs ``character_uuids``, ``credits`` vs ``balance``). Strict on types:
cattrs' default primitive hooks coerce (``None`` -> ``"None"``, ``"false"`` -> ``True``),
so they are replaced with hooks that refuse a wrong type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

import attrs
import cattrs
import msgspec
from cattrs.gen import make_dict_structure_fn

from ._models import Character, Credits, RenderJob, RenderProgress, RenderStatus, Scene, Segment

__all__ = ["DECISION_FIELDS", "fast_render_status", "get_converter", "make_converter"]

T = TypeVar("T")
logger = logging.getLogger("viggle_async")

# The fields a caller's decision rests on (issue 11.3): only these may fail a parse. Every
# other field is informational: a value that cannot be read becomes None (or its default),
# so one malformed ``created_at`` never fails a finished, paid render. ``cdn_url`` and
# ``mask_cdn_url`` are decision fields only once the status is ``complete`` (see
# ``_decision_fields``); ``segments`` is what a character mapping is built from.
DECISION_FIELDS: Mapping[type, frozenset[str]] = {
    RenderStatus: frozenset({"job_id", "status"}),
    RenderJob: frozenset({"job_id", "status"}),
    Character: frozenset({"id", "status"}),
    Scene: frozenset({"id", "status", "segments"}),
    Credits: frozenset({"balance"}),
    RenderProgress: frozenset(),
    Segment: frozenset({"uuid"}),
}
_COMPLETE_URLS = frozenset({"cdn_url", "mask_cdn_url"})
_logged: set[tuple[str, str]] = set()  # (class, field) already reported at DEBUG


def _decision_fields(cls: type, data: Mapping[str, Any]) -> frozenset[str]:
    fields = DECISION_FIELDS.get(cls, frozenset())
    if cls is RenderStatus and data.get("status") == "complete":
        return fields | _COMPLETE_URLS
    return fields


def _type_error(expected: str, value: Any) -> TypeError:
    return TypeError(f"expected {expected}, got {type(value).__name__} {value!r:.60}")


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    raise _type_error("a string", value)


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, bool):
        raise _type_error("an integer", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _type_error("an integer", value)


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _type_error("a number", value)


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    # Form-style booleans appear in this API's requests
    # (docs/api/conventions.md#request-encodings); accept them back.
    if value in ("true", "false"):
        return bool(value == "true")
    raise _type_error("a boolean", value)


def _structure_datetime(value: Any, _: type) -> datetime:
    # docs/api/conventions.md#timestamps: ISO-8601 UTC such as "2023-11-07T05:31:56Z". A naive
    # value is taken as UTC
    # so every datetime we hand out is aware. Epoch numbers are accepted for tolerance.
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO-8601 date-time: {value!r:.60}") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        parsed = datetime.fromtimestamp(value, tz=UTC)
    else:
        raise _type_error("an ISO-8601 date-time string", value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _alias(data: Any, canonical: str, *aliases: str) -> Any:
    """Copy the first present alias onto ``canonical`` when the canonical key is absent."""
    if not isinstance(data, Mapping) or data.get(canonical) is not None:
        return data
    for alias in aliases:
        if data.get(alias) is not None:
            return {**data, canonical: data[alias]}
    return data


def _scene_shape(data: Any) -> Any:
    data = _alias(data, "id", "scene_id")
    if not isinstance(data, Mapping):
        return data
    # docs/api/assets.md#import-template: segments come as [{"uuid", "type"}] (docs) or
    # "character_uuids": [str]
    # (third-party schema); items given as bare strings are taken as uuids.
    raw = data.get("segments")
    if raw is None:
        raw = data.get("character_uuids")
    if raw is None:
        return {k: v for k, v in data.items() if k != "segments"}
    if not isinstance(raw, list):
        raise _type_error("a list of segments", raw)
    segments = [{"uuid": item} if isinstance(item, str) else item for item in raw]
    return {**data, "segments": segments}


def make_converter(*, forbid_extra_keys: bool = False) -> cattrs.Converter:
    """Build the response converter. ``forbid_extra_keys=True`` is for contract tests."""
    conv = cattrs.Converter(forbid_extra_keys=forbid_extra_keys)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(datetime, _structure_datetime)

    def wrap(cls: type[T], normalize: Callable[[Any], Any], ignore: tuple[str, ...]) -> None:
        # The aliases a normaliser folds in are known keys, so they must not trip
        # forbid_extra_keys in contract tests.
        base = make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=forbid_extra_keys)

        klass: Any = cls
        attrs.resolve_types(klass)
        types = {f.name: f.type for f in attrs.fields(klass)}

        def hook(data: Any, _: type) -> T:
            shaped = normalize(data)
            if not isinstance(shaped, Mapping):
                raise _type_error(f"a JSON object for {cls.__name__}", data)
            if ignore:
                shaped = {k: v for k, v in shaped.items() if k not in ignore}
            try:
                return base(shaped, cls)
            except (cattrs.BaseValidationError, ValueError, TypeError, KeyError):
                # The slow path, only for a bad answer: drop the informational fields
                # that cannot be read, then try once more (a decision field still fails).
                tolerant = _drop_unreadable(conv, cls, shaped, types)
                if tolerant is None:
                    raise
                return base(tolerant, cls)

        conv.register_structure_hook(cls, hook)

    wrap(Character, lambda d: _alias(d, "id", "character_id"), ("character_id",))
    wrap(Scene, _scene_shape, ("scene_id", "character_uuids"))
    wrap(Credits, lambda d: _alias(d, "balance", "credits"), ("credits",))
    for cls in (RenderJob, RenderStatus, RenderProgress, Segment):
        # The v2 render status carries ``chunks`` (always []) only for compatibility.
        wrap(cls, lambda d: d, ("chunks",) if cls is RenderStatus else ())
    return conv


def _drop_unreadable(conv: cattrs.Converter, cls: type, data: Mapping[str, Any],
                     types: Mapping[str, Any]) -> dict[str, Any] | None:
    """``data`` without its unreadable informational fields, or None if none was dropped."""
    keep = _decision_fields(cls, data)
    out = dict(data)
    dropped = False
    for name, value in data.items():
        if name in keep or name not in types or value is None:
            continue
        try:
            conv.structure(value, types[name])
        except Exception as exc:  # any failure of one informational field: drop it
            del out[name]
            dropped = True
            if (cls.__name__, name) not in _logged:
                _logged.add((cls.__name__, name))
                logger.debug("ignoring unreadable %s.%s (%.60r): %s", cls.__name__, name,
                             value, exc)
    return out if dropped else None


@cache
def get_converter() -> cattrs.Converter:
    """The shared production converter (tolerant of unknown fields)."""
    return make_converter()


# --- the fast path for a render status (issue 13: status polls at raw-aiohttp cost) ------
#
# A poll is the library's most frequent call, and structuring through cattrs cost about
# half of its CPU above raw aiohttp. msgspec decodes the body straight into these structs
# (C code, no intermediate dict), strictly: any value of a type other than the plain one
# the docs show (docs/api/renders.md#render-status) fails the decode, and the caller then takes the
# general path
# (``json.loads`` + the converter), which decides the unusual cases. So the fast path only
# ever answers where both agree; tests/client/test_fast_parse.py checks that with
# hypothesis. Datetimes stay strings here and go through the converter's own function.
# ``gc=False``: the structs hold only strings, numbers and each other (no cycles), and a
# poll should not feed the cyclic garbage collector objects it never needs to scan.


class _FastProgress(msgspec.Struct, gc=False):
    completed_chunks: int | None = None
    total_chunks: int | None = None
    percent: float | None = None


class _FastStatus(msgspec.Struct, gc=False):
    status: str
    job_id: str | None = None
    mode: str | None = None
    checkpoint: str | None = None
    progress_pct: float | None = None
    cdn_url: str | None = None
    mask_cdn_url: str | None = None
    error: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    progress: _FastProgress | None = None
    download_url: str | None = None
    created_at: str | None = None
    completed_at: str | None = None
    enqueued_at: str | None = None


_status_decoder = msgspec.json.Decoder(_FastStatus)


def _fast_datetime(value: str | None) -> datetime | None:
    # Same rule as ``_structure_datetime`` (naive means UTC); a string it cannot read
    # raises ValueError, which sends the body to the general path.
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def fast_render_status(body: bytes, job_id: str | None = None) -> RenderStatus | None:
    """``body`` (UTF-8 JSON bytes) as a RenderStatus, or None when it is not the plain shape.

    ``job_id`` fills a missing or null ``job_id``, as ``parse_model``'s defaults do. None
    means "use the general path" (``parse_model`` with the converter), never an error:
    the result, when there is one, is what that path returns for the same body.
    """
    try:
        s = _status_decoder.decode(body)
        if s.job_id is None:
            if job_id is None:
                return None  # the general path says what is missing
            s.job_id = job_id
        created, completed, enqueued = (_fast_datetime(s.created_at),
                                        _fast_datetime(s.completed_at),
                                        _fast_datetime(s.enqueued_at))
    except (msgspec.DecodeError, ValueError):
        return None
    p = s.progress
    return RenderStatus(
        job_id=s.job_id, status=s.status, mode=s.mode,
        checkpoint=s.checkpoint, progress_pct=s.progress_pct, cdn_url=s.cdn_url,
        mask_cdn_url=s.mask_cdn_url, error=s.error, error_code=s.error_code,
        error_message=s.error_message,
        progress=None if p is None else RenderProgress(p.completed_chunks, p.total_chunks,
                                                       p.percent),
        download_url=s.download_url, created_at=created, completed_at=completed,
        enqueued_at=enqueued)
