"""Jobs, characters and scenes of the fake server, and their lazily computed lifecycles.

Pure: no I/O. Each record stores simulated times fixed at creation; its status at any moment
is a function of the simulated clock (docs/api/lifecycles.md).
"""

from __future__ import annotations

from typing import Any

import attrs

from ._clock import SimClock

__all__ = ["Character", "RenderJob", "Scene", "render_body"]

# Processing fractions at which each checkpoint is reached (docs/api/renders.md#render-status;
# order inferred, docs/api/lifecycles.md#render-statuses).
_MARKS = (0.2, 0.4, 0.6, 0.9)
_CHECKPOINT_NAMES = ("ref_done", "dri_done", "bg_done", "render_done")
# A failing render fails half-way through processing.
_FAIL_FRACTION = 0.5


@attrs.define
class RenderJob:
    job_id: str
    api_key: str
    mode: str
    fast: bool
    background_mode: str
    video_seconds: float
    cost: int
    created: float
    started: float
    finished: float
    fails: bool
    cancelled_at: float | None = None
    refunded: bool = False
    #: A pause in progress (Faults.stall_*): from ``stall_start`` for ``stall_s`` simulated
    #: seconds, included in ``finished``.
    stall_start: float = 0.0
    stall_s: float = 0.0
    #: Processing fractions at which each checkpoint is reached (Faults.uneven_checkpoints).
    marks: tuple[float, ...] = _MARKS

    @property
    def fail_at(self) -> float:
        return self.started + (self.finished - self.started) * _FAIL_FRACTION

    def ended_at(self) -> float | None:
        """Simulated time the job reached (or will reach) a terminal state, ignoring cancel."""
        return self.fail_at if self.fails else self.finished

    def status(self, now: float) -> str:
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return "cancelled"
        if now < self.started:
            return "queued"
        if self.fails and now >= self.fail_at:
            return "failed"
        if now >= self.finished:
            return "complete"
        return "processing"

    def is_terminal(self, now: float) -> bool:
        return self.status(now) in ("complete", "failed", "cancelled")

    def fraction(self, now: float) -> float:
        """Processing progress in [0, 1] at ``now`` (frozen at cancel or failure)."""
        if self.cancelled_at is not None:
            now = min(now, self.cancelled_at)
        if self.fails:
            now = min(now, self.fail_at)
        span = self.finished - self.started - self.stall_s
        if span <= 0:
            return 1.0 if now >= self.finished else 0.0
        elapsed = now - self.started
        if self.stall_s > 0 and now > self.stall_start:
            elapsed -= min(now, self.stall_start + self.stall_s) - self.stall_start
        return min(1.0, max(0.0, elapsed / span))


def _checkpoint(fraction: float, marks: tuple[float, ...]) -> str | None:
    reached = None
    for at, name in zip(marks, _CHECKPOINT_NAMES, strict=True):
        if fraction >= at:
            reached = name
    return reached


def render_body(
    job: RenderJob, now: float, clock: SimClock, cdn_base: str, legacy: bool
) -> dict[str, Any]:
    """The docs/api/renders.md#render-status status object with every field, as the job stands at
    simulated ``now``."""
    status = job.status(now)
    fraction = job.fraction(now)
    checkpoint = _checkpoint(fraction, job.marks) if status != "queued" else None
    pct: int = 0 if status == "queued" else min(99, int(fraction * 100))
    cdn_url = mask_url = None
    error = error_code = error_message = None
    completed_at = None
    shown = status
    if status == "complete":
        pct, checkpoint = 100, "render_done"
        cdn_url = f"{cdn_base}/outputs/{job.job_id}/output.mp4"
        if job.background_mode == "transparent":
            mask_url = f"{cdn_base}/outputs/{job.job_id}/mask.mp4"
        completed_at = clock.iso(job.finished)
    elif status == "failed":
        # docs/api/renders.md#render-status / docs/api/errors.md#job-status-codes: a failed job
        # carries CS-UORC01-009 and its message; urls stay null.
        error, error_code = "render_failed", "CS-UORC01-009"
        error_message = "Rendering failed in the pipeline; credits were refunded"
        completed_at = clock.iso(job.fail_at)
    elif status == "cancelled":
        assert job.cancelled_at is not None
        completed_at = clock.iso(job.cancelled_at)
    elif status == "processing" and legacy:
        # The older overview's wording (docs/api/lifecycles.md#render-statuses): frames generated,
        # then final video assembled.
        if fraction >= 0.9:
            shown = "merging"
        elif fraction >= 0.4:
            shown = "rendering"
    return {
        "job_id": job.job_id,
        "status": shown,
        "mode": job.mode,
        "checkpoint": checkpoint,
        "progress_pct": pct,
        "cdn_url": cdn_url,
        "mask_cdn_url": mask_url,
        "error": error,
        "error_code": error_code,
        "error_message": error_message,
        "progress": {"completed_chunks": int(pct == 100), "total_chunks": 1, "percent": pct},
        "download_url": cdn_url,
        "chunks": [],
        "created_at": clock.iso(job.created),
        "completed_at": completed_at,
    }


@attrs.define
class Character:
    """A character: ``pending`` -> ``processing`` -> ``ready`` | ``failed``
    (docs/api/lifecycles.md#character-statuses)."""

    id: str
    job_id: str
    api_key: str
    name: str
    created: float
    processing_at: float
    ready_at: float
    fails: bool
    deleted: bool = False
    refunded: bool = False

    def status(self, now: float) -> str:
        if now < self.processing_at:
            return "pending"
        if now < self.ready_at:
            return "processing"
        return "failed" if self.fails else "ready"

    def body(self, now: float, clock: SimClock) -> dict[str, Any]:
        status = self.status(now)
        done = status in ("ready", "failed")
        return {
            "id": self.id,
            "name": self.name,
            "status": status,
            "job_id": self.job_id,
            "error": "preprocess_failed" if status == "failed" else None,
            "error_message": "Character preprocessing failed" if status == "failed" else None,
            "thumbnail_url": None,
            # docs/api/credits.md#costs: a character costs 1 credit (refunded when it fails, like a
            # render).
            "credits_used": 0 if status == "failed" else 1,
            "created_at": clock.iso(self.created),
            "completed_at": clock.iso(self.ready_at) if done else None,
        }


@attrs.define
class Scene:
    """A scene: ``pending`` -> ``ready`` | ``failed`` (docs/api/lifecycles.md#scene-statuses)."""

    id: str
    job_id: str
    api_key: str
    name: str
    model: str
    background_mode: str
    duration_s: float
    fps: float
    width: int | None
    height: int | None
    created: float
    ready_at: float
    fails: bool
    segments: tuple[str, ...] = ()
    template_id: str | None = None
    deleted: bool = False

    def status(self, now: float) -> str:
        if now < self.ready_at:
            return "pending"
        return "failed" if self.fails else "ready"

    def body(self, now: float, clock: SimClock) -> dict[str, Any]:
        status = self.status(now)
        return {
            "id": self.id,
            "name": self.name,
            "status": status,
            "duration_seconds": round(self.duration_s, 2),
            "fps": self.fps,
            "total_frames": round(self.duration_s * self.fps),
            "width": self.width,
            "height": self.height,
            "job_id": self.job_id,
            "error_message": "Scene preprocessing failed" if status == "failed" else None,
            # The docs/api/assets.md#get-scene example shows credits_used equal to
            # duration_seconds, although scene
            # creation is free (docs/api/credits.md#costs): we echo the example and charge nothing.
            "credits_used": round(self.duration_s, 2) if status == "ready" else None,
            "created_at": clock.iso(self.created),
            "completed_at": clock.iso(self.ready_at) if status != "pending" else None,
        }
