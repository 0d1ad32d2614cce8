"""Faults.malformed_fields: informational fields with values a strict parser chokes on.

Pure. Fields a client acts on are never touched (the conventions: only ``job_id``,
``status`` and, when complete, ``cdn_url`` are load-bearing in a status; a failed render's
error fields say what to do).
"""

from __future__ import annotations

from typing import Any

__all__ = ["INFORMATIONAL", "malform"]

# kind -> the informational fields malformed, and what type each normally has.
INFORMATIONAL: dict[str, dict[str, str]] = {
    "render": {
        "mode": "str",
        "checkpoint": "str",
        "progress_pct": "num",
        "progress": "obj",
        "chunks": "list",
        "created_at": "date",
        "completed_at": "date",
    },
    "character": {
        "thumbnail_url": "str",
        "credits_used": "num",
        "created_at": "date",
        "completed_at": "date",
    },
    "scene": {
        "duration_seconds": "num",
        "fps": "num",
        "total_frames": "num",
        "width": "num",
        "height": "num",
        "credits_used": "num",
        "created_at": "date",
        "completed_at": "date",
    },
    "credits": {"total_purchased": "num", "total_used": "num", "updated_at": "date"},
}

_WRONG_TYPE: dict[str, Any] = {
    "str": 12345,
    "num": "12.5%",
    "date": 1764470000,
    "obj": [50, 100],
    "list": {"0": "chunk"},
}
_GARBAGE: dict[str, Any] = {
    "str": "\x00?",
    "num": "NaN%",
    "date": "yesterday",
    "obj": "half done",
    "list": "none",
}


def malform(kind: str, body: dict[str, Any], style: str | None) -> dict[str, Any]:
    """``body`` with its informational fields replaced as ``style`` says (None: as is)."""
    if style is None:
        return body
    for name, typ in INFORMATIONAL[kind].items():
        if style == "empty":
            body[name] = ""
        elif style == "null":
            body[name] = None
        elif style == "wrong_type":
            body[name] = _WRONG_TYPE[typ]
        else:
            body[name] = _GARBAGE[typ]
    return body
