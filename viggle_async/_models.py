"""Typed results, in our names. These classes know nothing of JSON; ``_converter``
maps the wire format onto them (docs/api/README.md, docs/api/lifecycles.md).

Statuses stay plain strings so an unknown future status never crashes; the
``*State`` enums hold the documented values and compare equal to those strings.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Generic, TypeVar

import attrs

__all__ = [
    "AssetState",
    "BackgroundMode",
    "Character",
    "Credits",
    "Model",
    "Page",
    "RenderJob",
    "RenderProgress",
    "RenderState",
    "RenderStatus",
    "Scene",
    "Segment",
]


class RenderState(enum.StrEnum):
    """Documented render statuses. ``RENDERING``/``MERGING`` are the older wording."""

    QUEUED = "queued"
    PROCESSING = "processing"
    RENDERING = "rendering"
    MERGING = "merging"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ERROR = "error"  # never documented; some scripts test it, so we treat it as terminal


class AssetState(enum.StrEnum):
    """Documented character and scene statuses."""

    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class Model(enum.StrEnum):
    """Avatar models."""

    V4_PREVIEW = "V4_Preview"
    V3_PREVIEW = "V3_Preview"


class BackgroundMode(enum.StrEnum):
    """Background modes; ``inpaint`` is the API's alias of ``original``."""

    ORIGINAL = "original"
    SOLID = "solid"
    TRANSPARENT = "transparent"
    INPAINT = "inpaint"


T = TypeVar("T")

_RENDER_FAILURES = frozenset({"failed", "cancelled", "error"})


@attrs.frozen
class RenderJob:
    """What ``renders.create`` returns: the new job's id and first status."""

    job_id: str
    status: str
    mode: str | None = None
    enqueued_at: datetime | None = None


@attrs.frozen
class RenderProgress:
    """The "v1 compat" progress object of a render status."""

    completed_chunks: int | None = None
    total_chunks: int | None = None
    percent: float | None = None


@attrs.frozen
class RenderStatus:
    """A render job's state, as ``GET /api/render/{job_id}`` reports it.

    ``is_complete`` (and so ``is_terminal``) needs ``cdn_url``: a ``complete`` status
    without it (``awaiting_output``) means "poll again", never "failed" (issue 11.3).
    ``mask_cdn_url`` comes only in transparent mode. Informational fields the API sent
    in an unreadable form are None.
    """

    job_id: str
    status: str
    mode: str | None = None
    checkpoint: str | None = None
    progress_pct: float | None = None
    cdn_url: str | None = None
    mask_cdn_url: str | None = None
    error: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    progress: RenderProgress | None = None
    download_url: str | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    enqueued_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """True once final: complete with its ``cdn_url``, ``failed``, ``cancelled`` (and the
        undocumented ``error``)."""
        return self.is_complete or self.status in _RENDER_FAILURES

    @property
    def is_complete(self) -> bool:
        """``complete`` with the output URL to fetch (``cdn_url``)."""
        return self.status == "complete" and bool(self.cdn_url)

    @property
    def awaiting_output(self) -> bool:
        """``complete`` but without ``cdn_url`` yet: not final, poll again."""
        return self.status == "complete" and not self.cdn_url

    @property
    def is_failed(self) -> bool:
        """True for ``failed``, ``cancelled`` and ``error``."""
        return self.status in _RENDER_FAILURES


@attrs.frozen
class Character:
    """A reusable character. ``id`` is what renders take as ``character_id``."""

    id: str
    status: str
    name: str | None = None
    job_id: str | None = None
    error: str | None = None
    error_message: str | None = None
    thumbnail_url: str | None = None
    credits_used: float | None = None
    has_v3_encoding: bool | None = None
    has_v4_encoding: bool | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    enqueued_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in ("ready", "failed")

    @property
    def is_ready(self) -> bool:
        return self.status == "ready"


@attrs.frozen
class Segment:
    """A tracked person in a multi-person template scene."""

    uuid: str
    type: str | None = None


@attrs.frozen
class Scene:
    """A scene, from an upload or a template import.

    ``segments`` is only known from the import response; Get Scene does not return it.
    """

    id: str
    status: str
    name: str | None = None
    job_id: str | None = None
    duration_seconds: float | None = None
    fps: float | None = None
    total_frames: int | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    error_message: str | None = None
    credits_used: float | None = None
    credits_reserved: float | None = None
    segments: tuple[Segment, ...] = ()
    created_at: datetime | None = None
    completed_at: datetime | None = None
    enqueued_at: datetime | None = None

    def with_segments(self, segments: tuple[Segment, ...]) -> Scene:
        """This scene with ``segments`` (from its import answer) when it lists none: Get
        Scene does not return a template's segments, which a mapping needs."""
        if self.segments or not segments:
            return self
        return attrs.evolve(self, segments=tuple(segments))

    @property
    def is_terminal(self) -> bool:
        return self.status in ("ready", "failed")

    @property
    def is_ready(self) -> bool:
        return self.status == "ready"


@attrs.frozen
class Page(Generic[T]):
    """One page of a list endpoint. ``total`` is what the API reported."""

    items: tuple[T, ...]
    total: int | None
    limit: int
    offset: int


@attrs.frozen
class Credits:
    """The account's credit balance."""

    balance: float
    total_purchased: float | None = None
    total_used: float | None = None
    updated_at: datetime | None = None
