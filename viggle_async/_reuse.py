"""Asset reuse, planned: which on-demand renders of a bulk run should become one scene per
distinct driving video and one character per distinct image (issue 15).

Pure: the caller hashes the files (``content_hash`` below does it, on a worker thread if the
caller is async) and passes what it learned; nothing here sends, sleeps or reads a clock.

The rule (docs/api notes on costs and preprocessed renders):

- A render costs the same either way: 1 credit per second of output, 2x when fast.
- A scene is free; a character costs 1 credit. So reuse never lowers the credits of a run:
  it adds one credit per distinct image it turns into a character, and saves the upload of
  the driving video (and of the image) for every render after the first.
- A scene is bound to one model for good, and a preprocessed render may not carry ``model``:
  renders are grouped by (video content, model), and the model moves to the scene.
  ``background_mode`` stays per render; ``fast`` is allowed with a scene.
- A (video, model) group becomes a scene when at least ``ReuseRule.min_renders`` renders use
  it. Groups are taken in order of upload bytes saved per credit added, while the credit
  increase stays within the rule's caps (in credits and in percent of the on-demand plan);
  a group whose images are already characters (of a group taken before) adds no credit.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Hashable, Sequence

import attrs

__all__ = [
    "PlanTotals",
    "ReusePlan",
    "ReuseRule",
    "ReusableRender",
    "SceneGroup",
    "content_hash",
    "plan_reuse",
]

_HASH_CHUNK = 1024 * 1024  # bytes read per step: bounded memory for any file size


def content_hash(path: str | os.PathLike[str]) -> tuple[str, int]:
    """``(sha256 hex digest, size in bytes)`` of a file's content (the name never counts).

    Blocking I/O: call it from a worker thread in async code. Raises ``OSError`` when the
    file cannot be read.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _non_negative(_: object, attribute: attrs.Attribute[float | None],
                  value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not math.isfinite(value) or value < 0):
        raise ValueError(f"ReuseRule.{attribute.name} must be a number >= 0, not {value!r}")


@attrs.frozen
class ReuseRule:
    """When renders of a bulk run share a driving video, and how much reuse may cost.

    ``min_renders``: a driving video (per model) used by at least this many renders becomes
    a scene (default 2: every shared video). ``max_extra_credits`` / ``max_extra_percent``:
    caps on the credit increase over the on-demand plan (characters cost 1 credit each), in
    credits and in percent of the on-demand plan's credits; ``None`` means no cap.
    """

    min_renders: int = attrs.field(default=2)
    max_extra_credits: float | None = attrs.field(default=None, validator=_non_negative)
    max_extra_percent: float | None = attrs.field(default=None, validator=_non_negative)

    @min_renders.validator
    def _check_min(self, _: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"ReuseRule.min_renders must be an int >= 2, not {value!r}")


@attrs.frozen
class ReusableRender:
    """One on-demand render as the planner sees it.

    ``image`` / ``video``: ``(sha256, size in bytes)`` of the uploaded files (from
    ``content_hash``). ``credits``: what the render itself costs (the same either way).
    ``model``: the model asked for (``None``: the API's default, which a scene takes too).
    """

    key: Hashable
    image: tuple[str, int]
    video: tuple[str, int]
    credits: float
    model: str | None = None


@attrs.frozen
class SceneGroup:
    """Renders that will share one scene: the video's hash and size, its model, the rows."""

    video: tuple[str, int]
    model: str | None
    keys: tuple[Hashable, ...]
    images: frozenset[tuple[str, int]]


@attrs.frozen
class PlanTotals:
    """One plan's cost: ``credits``, ``upload_bytes`` (bytes), and creates by kind."""

    credits: float
    upload_bytes: int
    renders: int
    scenes: int = 0
    characters: int = 0

    @property
    def creates(self) -> int:
        return self.renders + self.scenes + self.characters


@attrs.frozen
class ReusePlan:
    """Both plans side by side, and what reuse would create.

    ``scenes``: the groups taken, in the order they were chosen. ``characters``: every
    distinct image that becomes a character. ``reused``: keys of the renders sent as
    ``character_id`` + ``scene_id``; every other render stays on demand. ``skipped``: shared
    groups left on demand because a credit cap would have been exceeded.
    """

    on_demand: PlanTotals
    reuse: PlanTotals
    scenes: tuple[SceneGroup, ...]
    characters: frozenset[tuple[str, int]]
    reused: frozenset[Hashable]
    skipped: tuple[SceneGroup, ...] = ()

    @property
    def extra_credits(self) -> float:
        return self.reuse.credits - self.on_demand.credits

    @property
    def saved_upload_bytes(self) -> int:
        return self.on_demand.upload_bytes - self.reuse.upload_bytes


def plan_reuse(renders: Sequence[ReusableRender], rule: ReuseRule = ReuseRule()) -> ReusePlan:
    """Decide which renders share scenes and characters (the rule is in the module docstring).

    Raises ``ValueError`` if two renders share a key.
    """
    keys = [r.key for r in renders]
    if len(set(keys)) != len(keys):
        raise ValueError("plan_reuse: render keys must be unique")
    on_demand = PlanTotals(
        credits=sum(r.credits for r in renders),
        upload_bytes=sum(r.image[1] + r.video[1] for r in renders),
        renders=len(renders))

    by_video: dict[tuple[tuple[str, int], str | None], list[ReusableRender]] = {}
    for r in renders:
        by_video.setdefault((r.video, r.model), []).append(r)
    candidates: list[SceneGroup] = []
    saved: dict[int, int] = {}  # id(group) -> upload bytes it saves, its characters aside
    for (video, model), rows in by_video.items():
        if len(rows) >= rule.min_renders:
            group = SceneGroup(video, model, tuple(r.key for r in rows),
                               frozenset(r.image for r in rows))
            candidates.append(group)
            # The video goes up once instead of once per render; the images go up once per
            # distinct image (as characters) instead of once per render.
            saved[id(group)] = ((len(rows) - 1) * video[1] + sum(r.image[1] for r in rows)
                                - sum(size for _, size in group.images))

    cap = _credit_cap(rule, on_demand.credits)
    chosen: list[SceneGroup] = []
    skipped: list[SceneGroup] = []
    characters: set[tuple[str, int]] = set()
    remaining = candidates
    while remaining:
        # Greedy by bytes saved per credit added, recomputed as characters accumulate: a
        # group whose images are already characters becomes free to take.
        best = max(remaining, key=lambda g: (
            saved[id(g)] / max(len(g.images - characters), 1e-9), saved[id(g)]))
        remaining = [g for g in remaining if g is not best]
        added = len(best.images - characters)
        if cap is not None and len(characters) + added > cap + 1e-9:
            skipped.append(best)
            continue
        chosen.append(best)
        characters |= best.images

    reused = frozenset(k for g in chosen for k in g.keys)
    kept = [r for r in renders if r.key not in reused]
    reuse = PlanTotals(
        credits=on_demand.credits + len(characters),
        upload_bytes=(sum(r.image[1] + r.video[1] for r in kept)
                      + sum(g.video[1] for g in chosen) + sum(size for _, size in characters)),
        renders=len(renders), scenes=len(chosen), characters=len(characters))
    return ReusePlan(on_demand, reuse, tuple(chosen), frozenset(characters), reused,
                     tuple(skipped))


def _credit_cap(rule: ReuseRule, on_demand_credits: float) -> float | None:
    caps = [c for c in (
        rule.max_extra_credits,
        None if rule.max_extra_percent is None
        else on_demand_credits * rule.max_extra_percent / 100.0) if c is not None]
    return min(caps) if caps else None
