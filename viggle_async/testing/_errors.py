"""The fake server's error answers, in the documented ``detail`` envelope
(docs/api/conventions.md#error-envelope, docs/api/errors.md#error-codes)."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "api_error", "not_found"]

# Code -> (HTTP status, message, action), paraphrasing the Error Codes page
# (docs/api/errors.md#error-codes).
_CATALOGUE: dict[str, tuple[int, str, str]] = {
    "CS-UORC01-006": (401, "Authentication required", "Add Authorization: Bearer sk-... header"),
    "CS-UORC01-007": (401, "API key invalid or expired", "Check your key or create a new one"),
    "CS-UORC01-008": (402, "Insufficient credits to start this job", "Top up your credits"),
    "CS-UORC01-001": (
        400,
        "Fast mode temporarily unavailable",
        "Retry with fast=false, or wait and retry",
    ),
    "CS-UORC01-002": (400, "Request failed validation", "Check the parameters against the spec"),
    "CS-ORIV-001": (400, "Reference image is required", "Upload a ref_image (PNG/JPG)"),
    "CS-ORIV-002": (400, "Driving video is required", "Upload driving_video or provide scene_id"),
    "CS-ORIV-003": (400, "Video format not supported", "Use MP4, MOV or AVI"),
    "CS-ORIV-004": (400, "Video is too long", "Keep it under 5 minutes"),
    "CS-ORIV-005": (400, "Video file is too large", "Keep it under 500 MB"),
    "CS-ORIV-006": (400, "Video resolution is too high", "Keep it under 4096x4096"),
    "CS-ORIV-007": (400, "Video file cannot be read", "Upload a valid video file"),
    "CS-ORIV-008": (400, "Character not found", "Check that character_id exists"),
    "CS-ORIV-009": (400, "Scene not found", "Check that scene_id exists"),
    "CS-ORIV-010": (400, "Scene preprocessing not finished", "Wait until the scene is ready"),
    "CS-ORIV-011": (400, "Invalid background mode", "Use original, solid or transparent"),
    "CS-ORIV-012": (400, "character_mapping is not valid JSON", "Send a valid JSON object"),
}


class ApiError(Exception):
    """An error answer: raised by handlers, turned into a JSON response by the middleware."""

    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail}


def api_error(code: str, message: str | None = None, *, status: int | None = None) -> ApiError:
    """The documented error ``code``; ``message`` refines the catalogue's text."""
    default_status, default_message, action = _CATALOGUE[code]
    detail = {"error_code": code, "message": message or default_message, "action": action}
    return ApiError(status or default_status, detail)


def not_found(kind: str, ident: str, status: int) -> ApiError:
    """Unknown id on GET/DELETE: a string detail, as docs/api/errors.md#fake-server-errors suggests
    (status is a knob)."""
    return ApiError(status, f"{kind} {ident} not found")
