"""Asset reuse, executed: the supervisor's side of ``reuse_assets=`` (issue 15).

Renders registered with local ``ref_image`` + ``driving_video`` files are *held* (their
handles exist, nothing is sent) until the plan is made: ``await sup.start()`` or the end of
the ``async with`` body. Then the files are hashed (``_reuse.content_hash``, on a worker
thread), ``_reuse.plan_reuse`` decides, and:

- each chosen (video, model) group becomes one scene, each of its distinct images one
  character, created once through the runner's journaled asset flow under a key derived from
  the content hash and a fingerprint of the API key (a rerun with the same journal reuses
  them; another API key never does);
- an asset from an earlier run is checked with a ``get`` first; one that is gone is
  recreated (once: the journal entry goes back to ``intent``);
- a reused render goes out as ``character_id`` + ``scene_id`` (``model`` moved to the scene;
  ``background_mode``, ``fast`` and the rest stay on the render); every other render goes
  out on demand, unchanged;
- each file is hashed again just before it is uploaded: a file edited since the plan is
  refused (``not_submitted``), never silently sent;
- a failed asset fails only its dependents, with its reason; with ``fallback=True`` the rows
  of a scene that could not be made go out on demand instead;
- a render the journal already knows is not planned again: finished with its outputs on
  disk, it is skipped; sent by an earlier run, it is resumed with the inputs it was sent
  with (whichever of on-demand or ID-only-with-the-journaled-ids matches its fingerprint).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from ._errors import InvalidInputError, NotFoundError, ViggleError
from ._events import CharacterHandle, Handle, Outcome, RenderHandle, SceneHandle
from ._journal import JournalError, request_fingerprint
from ._protocol import Hook
from ._reuse import ReusableRender, ReusePlan, ReuseRule, content_hash, plan_reuse
from ._runner import Runner, cost_of
from ._segments_cache import key_fingerprint
from ._submitter import fingerprint

if TYPE_CHECKING:
    from ._client import ViggleClient

__all__ = ["ReuseRun", "estimate_reuse", "key_scope", "reusable_inputs"]

# Inputs that already name a remote asset or URL: such a render is never rewritten.
_NOT_REUSABLE = ("ref_image_url", "driving_video_url", "character_id", "scene_id",
                 "character_mapping")


def reusable_inputs(inputs: Mapping[str, Any]) -> bool:
    """True when a render's inputs can be planned: local ``ref_image`` and
    ``driving_video`` files (str or PathLike), and no URL, character or scene."""
    return (isinstance(inputs.get("ref_image"), str | os.PathLike)
            and isinstance(inputs.get("driving_video"), str | os.PathLike)
            and all(inputs.get(name) is None for name in _NOT_REUSABLE))


def key_scope(client: ViggleClient) -> str:
    """The fingerprint of the client's API key (``_segments_cache.key_fingerprint``: salted,
    not reversible; never the key): asset journal keys carry it, so assets made under one
    key are never reused under another."""
    http = getattr(client, "_http", None)
    headers = getattr(http, "_authed", None) or {}
    auth = headers.get("Authorization") if isinstance(headers, Mapping) else None
    if not auth:
        return "nokey"
    return key_fingerprint(str(auth).removeprefix("Bearer "))


class ContentChangedError(InvalidInputError):
    """A file changed between the plan (when it was hashed) and its upload."""


@attrs.define
class _Held:
    key: str
    inputs: dict[str, Any]
    output: str | Path | None
    mask_output: str | Path | None
    est_seconds: float | None
    ready: anyio.Event = attrs.field(factory=anyio.Event)
    # Filled by the plan:
    image: tuple[str, int] | None = None
    video: tuple[str, int] | None = None
    duration_s: float | None = None
    scene: SceneHandle | None = None
    character: CharacterHandle | None = None
    done: Outcome | None = None  # settled before planning (e.g. finished in an earlier run)
    resume: dict[str, Any] | None = None  # sent by an earlier run with these inputs
    planned: bool = False


async def _hash(path: str | os.PathLike[str]) -> tuple[str, int]:
    return await anyio.to_thread.run_sync(content_hash, path)


class _Hashes:
    """Content hashes for planning, each file read once per plan however many rows use it
    (200 rows on one 40 MB video read 40 MB, not 8 GB). Keyed by the file's identity and
    modification time; the upload-time check (``_unchanged``) always reads the file again.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[int, int, int, int], tuple[str, int]] = {}

    async def of(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        st = await anyio.to_thread.run_sync(os.stat, path)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        found = self._known.get(ident)
        if found is None:
            found = self._known[ident] = await _hash(path)
        return found


async def _price(client: ViggleClient, inputs: Mapping[str, Any],
                 est_seconds: float | None) -> tuple[float, float | None]:
    """(credits, video seconds) of an on-demand render; InvalidInputError on bad input."""
    prepared = await client.renders.prepare(**inputs)
    cost = cost_of(prepared, est_seconds)
    return float(cost or 0), prepared.duration_s


async def estimate_reuse(client: ViggleClient, renders: Mapping[str, Mapping[str, Any]],
                         rule: ReuseRule) -> ReusePlan:
    """Both plans for ``renders`` (key -> render inputs), sending nothing.

    Only renders with local ``ref_image`` + ``driving_video`` files are planned; the others
    are left out of both plans. Raises ``InvalidInputError`` (naming the field) on bad
    input and ``OSError`` when a file cannot be read.
    """
    rows, hashes = [], _Hashes()
    for key, inputs in renders.items():
        if not reusable_inputs(inputs):
            continue
        extra = dict(inputs)
        est = extra.pop("estimated_seconds", None)
        credits, _ = await _price(client, extra, est)
        rows.append(ReusableRender(key, await hashes.of(extra["ref_image"]),
                                   await hashes.of(extra["driving_video"]), credits,
                                   extra.get("model")))
    return plan_reuse(rows, rule)


class ReuseRun:
    """The held renders of one supervisor and the shared assets made for them."""

    def __init__(self, client: ViggleClient, runner: Runner, rule: ReuseRule, *,
                 fallback: bool,
                 start: Callable[[Handle, Callable[[], Awaitable[Outcome]]], None]):
        self.client = client
        self.rule = rule
        self.fallback = fallback
        self._runner = runner
        self._journal = runner.ctx.journal
        self._account = runner.ctx.account
        self._start = start
        self._scope = key_scope(client)
        self._held: list[_Held] = []
        self._scenes: dict[tuple[str, str | None], SceneHandle] = {}
        self._characters: dict[str, CharacterHandle] = {}
        self._plan: ReusePlan | None = None
        self._lock = anyio.Lock()

    def asset_outcomes(self) -> tuple[Outcome, ...]:
        """The outcomes of the scenes and characters made (or found) so far."""
        handles: list[Handle] = [*self._scenes.values(), *self._characters.values()]
        return tuple(h.outcome for h in handles if h.done)

    # --- registering ----------------------------------------------------------------

    def hold(self, handle: RenderHandle, inputs: dict[str, Any], output: str | Path | None,
             mask_output: str | Path | None,
             est_seconds: float | None) -> Callable[[], Awaitable[Outcome]]:
        """Hold a render until the plan is made; returns its work for the supervisor."""
        held = _Held(handle.key, dict(inputs), output, mask_output, est_seconds)
        self._held.append(held)
        self._plan = None
        return lambda: self._render(held)

    # --- planning --------------------------------------------------------------------

    async def plan(self) -> ReusePlan:
        """Hash and plan the renders not yet released; sends nothing."""
        async with self._lock:
            return await self._make_plan()

    async def _make_plan(self) -> ReusePlan:
        if self._plan is not None:
            return self._plan
        rows, hashes = [], _Hashes()
        for held in self._held:
            if held.planned or held.done is not None or held.resume is not None:
                continue
            if await self._finished_before(held):
                continue
            try:
                credits, held.duration_s = await _price(self.client, held.inputs,
                                                        held.est_seconds)
                held.image = await hashes.of(held.inputs["ref_image"])
                held.video = await hashes.of(held.inputs["driving_video"])
            except (ViggleError, OSError):
                # Left on demand: the render flow reports the problem, naming the field.
                continue
            if await self._sent_before(held):
                continue
            rows.append(ReusableRender(held.key, held.image, held.video, credits,
                                       held.inputs.get("model")))
        self._plan = plan_reuse(rows, self.rule)
        return self._plan

    async def _finished_before(self, held: _Held) -> bool:
        """True (and settled) when the journal says this render finished in an earlier run
        with its outputs still on disk: it needs no asset at all."""
        try:
            entry = await self._journal.get(held.key)
        except JournalError:
            return False  # the render flow reports it
        if (entry is not None and entry.state == "final" and entry.kind == "render"
                and entry.final_status == "complete"
                and await anyio.to_thread.run_sync(_all_exist, entry.outputs)):
            held.done = Outcome(held.key, "render", "skipped", job_id=entry.job_id,
                                status=entry.final_status,
                                outputs=tuple(Path(p) for p in entry.outputs),
                                downloaded=bool(entry.outputs))
            return True
        return False

    async def _sent_before(self, held: _Held) -> bool:
        """True when an earlier run sent this render (its journal entry is past ``intent``):
        it is resumed with the inputs it was sent with, on demand or ID-only with the ids
        the asset journal entries hold, whichever matches its fingerprint; it is left out of
        the plan, so no asset is made (or remade) for it."""
        assert held.image is not None and held.video is not None
        try:
            entry = await self._journal.get(held.key)
            if entry is None or entry.state == "intent":
                return False
            model = held.inputs.get("model")
            char = await self._journal.get(self._asset_key("character", held.image[0]))
            scene = await self._journal.get(self._asset_key("scene", held.video[0], model))
        except JournalError:
            return False  # the render flow reports it
        candidates = [held.inputs]
        if char is not None and char.job_id and scene is not None and scene.job_id:
            candidates.insert(0, {**_id_only(held.inputs), "character_id": char.job_id,
                                  "scene_id": scene.job_id})
        for inputs in candidates:
            try:
                prepared = await self.client.renders.prepare(**inputs)
            except ViggleError:
                continue
            if fingerprint(prepared) == entry.fingerprint:
                held.resume = inputs
                return True
        return False

    async def start(self) -> ReusePlan:
        """Plan the held renders, schedule their scenes and characters, release them."""
        async with self._lock:
            plan = await self._make_plan()
            by_key = {h.key: h for h in self._held if not h.planned}
            for group in plan.scenes:
                scene = self._scene(group.video, group.model, by_key[str(group.keys[0])])
                for key in group.keys:
                    held = by_key[str(key)]
                    assert held.image is not None
                    held.scene = scene
                    held.character = self._character(held.image, held)
            for held in by_key.values():
                held.planned = True
                held.ready.set()
            self._plan = None
            return plan

    def _asset_key(self, kind: str, digest: str, model: str | None = None) -> str:
        tail = "" if kind == "character" else f"-{model or 'default'}"
        return f"reuse-{kind}-{digest[:32]}{tail}-{self._scope}"

    def _scene(self, video: tuple[str, int], model: str | None, first: _Held) -> SceneHandle:
        found = self._scenes.get((video[0], model))
        if found is not None:
            return found
        handle = SceneHandle(self._asset_key("scene", video[0], model))
        self._scenes[(video[0], model)] = handle
        path = first.inputs["driving_video"]
        scenes = self.client.scenes
        name = f"reuse {video[0][:12]}"
        fp = request_fingerprint({"reuse": "scene", "sha256": video[0], "size": video[1],
                                  "model": model})

        async def prepare() -> str:
            await _unchanged(path, video, "driving_video")
            await scenes.prepare(name=name, video=path, model=model)  # checks the file
            return fp

        def create(hook: Hook) -> Awaitable[Any]:
            async def go() -> Any:
                await _unchanged(path, video, "driving_video")
                return await scenes.create(name=name, video=path, model=model,
                                           before_last_bytes=hook)
            return go()

        self._start(handle, lambda: self._asset(handle, 0, fp, prepare, create, scenes.get,
                                                scenes.wait))
        return handle

    def _character(self, image: tuple[str, int], first: _Held) -> CharacterHandle:
        found = self._characters.get(image[0])
        if found is not None:
            return found
        handle = CharacterHandle(self._asset_key("character", image[0]))
        self._characters[image[0]] = handle
        path = first.inputs["ref_image"]
        chars = self.client.characters
        name = f"reuse {image[0][:12]}"
        fp = request_fingerprint({"reuse": "character", "sha256": image[0], "size": image[1]})

        async def prepare() -> str:
            await _unchanged(path, image, "ref_image")
            await chars.prepare(name=name, image=path)
            return fp

        def create(hook: Hook) -> Awaitable[Any]:
            async def go() -> Any:
                await _unchanged(path, image, "ref_image")
                return await chars.create(name=name, image=path, before_last_bytes=hook)
            return go()

        self._start(handle, lambda: self._asset(handle, 1, fp, prepare, create, chars.get,
                                                chars.wait))
        return handle

    # --- running ---------------------------------------------------------------------

    async def _asset(self, handle: Handle, cost: int, fp: str,
                     prepare: Callable[[], Awaitable[str]],
                     create: Callable[[Hook], Awaitable[Any]],
                     get: Callable[[str], Awaitable[Any]],
                     wait: Callable[..., Awaitable[Any]]) -> Outcome:
        try:
            await self._recreate_if_gone(handle, fp, get)
        except JournalError as exc:
            return Outcome(handle.key, handle.kind, "not_submitted", error=f"not sent: {exc}")
        try:
            return await self._runner.asset(handle, cost, prepare, create, get, wait)
        except ContentChangedError as exc:
            # Raised just before the upload, after the credit was reserved: nothing was sent.
            await self._account.refund(cost)
            return Outcome(handle.key, handle.kind, "not_submitted", error=str(exc))

    async def _recreate_if_gone(self, handle: Handle, fp: str,
                                get: Callable[[str], Awaitable[Any]]) -> None:
        """An asset journaled by an earlier run is looked up before use; when the API no
        longer has it, its entry goes back to ``intent`` so the runner creates it again."""
        entry = await self._journal.get(handle.key)
        if (entry is None or entry.state != "final" or entry.job_id is None
                or entry.fingerprint != fp):
            return
        try:
            await get(entry.job_id)
        except NotFoundError:
            await self._journal.record_intent(handle.key, handle.kind, fp)
        except ViggleError:
            return  # not known to be gone: the runner's own lookup reports the error

    async def _render(self, held: _Held) -> Outcome:
        await held.ready.wait()
        if held.done is not None:
            return held.done
        if held.resume is not None:
            est = held.est_seconds if held.est_seconds is not None else held.duration_s
            return await self._runner.render(held.key, held.resume, {}, held.output,
                                             held.mask_output, est)
        if held.scene is not None and held.character is not None:
            scene = await held.scene
            if scene.ok or not self.fallback:
                inputs = _id_only(held.inputs)
                est = held.est_seconds if held.est_seconds is not None else held.duration_s
                return await self._runner.render(
                    held.key, inputs, {"character_id": held.character, "scene_id": held.scene},
                    held.output, held.mask_output, est)
        # On demand: the files go up with the render; refuse any edited since the plan.
        for field, planned in (("ref_image", held.image), ("driving_video", held.video)):
            if planned is not None:
                try:
                    await _unchanged(held.inputs[field], planned, field)
                except ContentChangedError as exc:
                    return Outcome(held.key, "render", "not_submitted", error=str(exc))
        return await self._runner.render(held.key, held.inputs, {}, held.output,
                                         held.mask_output, held.est_seconds)


def _id_only(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A render's inputs without its files and model: the scene carries the model (a
    preprocessed render may not); everything else (background_mode, fast...) stays."""
    return {k: v for k, v in inputs.items() if k not in ("ref_image", "driving_video", "model")}


def _all_exist(paths: tuple[str, ...]) -> bool:
    return all(Path(p).exists() for p in paths)


async def _unchanged(path: str | os.PathLike[str], planned: tuple[str, int],
                     field: str) -> None:
    """Raise ContentChangedError when ``path`` no longer has the planned content."""
    try:
        now = await _hash(path)
    except OSError as exc:
        raise ContentChangedError(field, f"{os.fspath(path)!r} cannot be read any more "
                                  f"({exc.strerror or exc})",
                                  "restore the file, then run again") from None
    if now != planned:
        raise ContentChangedError(
            field, f"{os.fspath(path)!r} changed after the reuse plan was made "
                   f"({planned[1]} -> {now[1]} bytes)",
            "leave input files unchanged while a run is going; run again to plan the new "
            "content")

