"""The demo: about 20 clips bulk-rendered on the embedded fake server in a few seconds.

One Supervisor runs every kind of work the API has (docs/api/renders.md#create-render,
docs/api/renders.md#multi-character): on-demand renders (image +
video), two characters reused on an uploaded scene, a multi-character template render, and
fast renders through a fast-capacity outage that fall back to standard. Nothing here
prints; the CLI shows the events and the summary.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import attrs

from .._client import ViggleClient
from .._events import Backoff, Event, FastFallback, Handle, Outcome
from .._scheduler import PollPolicy
from .._supervisor import FastFallbackPolicy, Supervisor
from ..testing import FakeViggle, Faults
from ..testing._samples import make_png, write_mp4

__all__ = ["DemoSummary", "run_demo"]

# 40 simulated seconds per real second: a 3 s clip renders in about a third of a second.
TIME_SCALE = 10.0
# A template the fake server knows (FakeSettings.templates), with two tracked people.
DUO_TEMPLATE = "tmpl-duo-dance"
# Fast submissions refused for lack of capacity (400 CS-UORC01-001) before it returns.
# With 4 fast renders and a fallback after 2 refusals each, at least one falls back.
OUTAGE_REFUSALS = 5
FAST_RENDERS = 4

_COLOURS = ((200, 80, 40), (40, 80, 200), (60, 170, 90), (220, 190, 50))


@attrs.frozen
class DemoSummary:
    """What the demo did: every piece of work's outcome (renders, characters, scenes)."""

    outcomes: tuple[Outcome, ...]
    elapsed_s: float
    credits_spent: int  # the fake server's balance before minus after
    retries: int  # Backoff events seen
    fallbacks: int  # FastFallback events seen
    out_dir: Path

    @property
    def done(self) -> int:
        return sum(o.ok for o in self.outcomes)

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.done

    @property
    def clips(self) -> int:
        """Renders that completed (the clips the README promises, about 20)."""
        return sum(o.ok for o in self.outcomes if o.kind == "render")

    @property
    def assets(self) -> int:
        """Characters and scenes that completed (the work the clips reuse)."""
        return sum(o.ok for o in self.outcomes if o.kind != "render")


@attrs.define
class _Samples:
    images: list[Path]
    videos: list[Path]  # 2-5 s each
    scene_video: Path
    scene_seconds: float


def _write_samples(folder: Path) -> _Samples:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, rgb in enumerate(_COLOURS):
        path = folder / f"person-{i}.png"
        path.write_bytes(make_png(64, 64, rgb))
        images.append(path)
    videos = []
    for i in range(4):
        path = folder / f"dance-{i}.mp4"
        write_mp4(path, 2.0 + i, size=32 * 1024, sparse=False)
        videos.append(path)
    scene_video = folder / "studio-dance.mp4"
    write_mp4(scene_video, 3.0, size=32 * 1024, sparse=False)
    return _Samples(images, videos, scene_video, 3.0)


async def run_demo(
    out_dir: Path,
    *,
    on_events: Callable[[AsyncIterator[Event]], Awaitable[None]] | None = None,
    fake: FakeViggle | None = None,
) -> DemoSummary:
    """Render the demo's clips into ``out_dir`` (sample inputs go to ``out_dir/inputs``).

    ``on_events`` receives the supervisor's event stream and runs until it ends. ``fake``:
    a running FakeViggle to use (its time scale and faults are changed) instead of a
    fresh one, for a caller that wants to inspect the server afterwards.
    """
    out_dir = Path(out_dir)
    samples = await anyio.to_thread.run_sync(_write_samples, out_dir / "inputs")
    started = anyio.current_time()
    counts = {"retries": 0, "fallbacks": 0}

    async def count(events: AsyncIterator[Event]) -> None:
        async for event in events:
            if isinstance(event, Backoff):
                counts["retries"] += 1
            elif isinstance(event, FastFallback):
                counts["fallbacks"] += 1

    async with contextlib.AsyncExitStack() as stack:
        if fake is None:
            fake = await stack.enter_async_context(FakeViggle())
        fake.settings.time_scale = TIME_SCALE
        # Real, playable clips (H.264, 64x64, a pattern per job) rather than placeholders,
        # so a user can open what the demo wrote; 160 KiB holds all 24 frames of a clip.
        fake.settings.output_mp4 = True
        fake.settings.output_bytes = 160 * 1024
        fake.faults = Faults(fast_unavailable_next=OUTAGE_REFUSALS)
        client = await stack.enter_async_context(
            ViggleClient(fake.api_key, base_url=fake.base_url))
        balance_before = fake.balance()
        # The event streams end when the supervisor block closes, so their consumers run
        # in a task group outside it.
        async with anyio.create_task_group() as tg, Supervisor(
            client,
            max_uploads=6,
            poll_rate=200.0,  # loopback fake: the default 20/s would be the bottleneck
            poll_policy=PollPolicy(first_delay=0.1, min_interval=0.05, max_interval=0.3),
            asset_poll_interval=0.05,
            fast_fallback=FastFallbackPolicy(after_attempts=2, after_seconds=None),
            capacity_backoff=(0.05, 0.2),
        ) as sup:
            tg.start_soon(count, sup.events())
            if on_events is not None:
                tg.start_soon(_consume, on_events, sup.events())
            handles = await _schedule(sup, samples, out_dir)
        outcomes = tuple([await h for h in handles])
        credits_spent = balance_before - fake.balance()
    return DemoSummary(outcomes, anyio.current_time() - started, credits_spent,
                       counts["retries"], counts["fallbacks"], out_dir)


async def _consume(on_events: Callable[[AsyncIterator[Event]], Awaitable[None]],
                   events: AsyncIterator[Event]) -> None:
    await on_events(events)


async def _schedule(sup: Supervisor, s: _Samples, out: Path) -> list[Handle]:
    """Schedule every piece of work; returns the handles in order."""
    handles: list[Handle] = []

    # 1. On-demand renders: an image and a driving video per clip, nothing stored
    # (docs/api/renders.md#create-render).
    for i in range(8):
        key = f"on-demand-{i}"
        extra: dict[str, Any] = {}
        if i == 6:
            extra = {"background_mode": "transparent", "mask_output": out / f"{key}-mask.mp4"}
        elif i == 7:
            extra = {"background_mode": "solid", "bg_color": "0,0,255"}
        handles.append(sup.render(key=key, ref_image=s.images[i % 4],
                                  driving_video=s.videos[i % 4], output=out / f"{key}.mp4",
                                  **extra))

    # 2. Two characters (1 credit each) reused on one uploaded scene (free): preprocessed
    # renders need character_id + scene_id (docs/api/renders.md#render-modes mode 2); the handles
    # supply both ids.
    alice = sup.character(key="alice", name="Alice", image=s.images[0])
    bob = sup.character(key="bob", name="Bob", image=s.images[1])
    studio = sup.scene(key="studio", name="Studio dance", video=s.scene_video)
    handles += [alice, bob, studio]
    for i in range(6):
        key = f"preprocessed-{i}"
        handles.append(sup.render(key=key, character=(alice, bob)[i % 2], scene=studio,
                                  estimated_seconds=s.scene_seconds, output=out / f"{key}.mp4"))

    # 3. Fast renders (2x credits) while fast capacity is out: the supervisor probes with
    # backoff and, per the fallback policy, submits some of them standard instead.
    for i in range(FAST_RENDERS):
        key = f"fast-{i}"
        handles.append(sup.render(key=key, ref_image=s.images[(i + 2) % 4],
                                  driving_video=s.videos[i % 4], fast=True,
                                  output=out / f"{key}.mp4"))

    # 4. A multi-person template: each tracked person (segment) gets a character through
    # character_mapping (docs/api/renders.md#multi-character). The mapping needs the ids, so wait
    # for those three first.
    duo = sup.scene(key="duo-template", template_id=DUO_TEMPLATE, name="Duo dance")
    handles.append(duo)
    for dep in (duo, alice, bob):
        await dep
    if duo.outcome.ok and alice.outcome.ok and bob.outcome.ok:
        people = [segment.uuid for segment in duo.value.segments]
        seconds = duo.value.duration_seconds
        for key, cast in (("duo", (alice, bob)), ("duo-swapped", (bob, alice))):
            mapping = {uuid: c.outcome.asset_id for uuid, c in zip(people, cast, strict=False)
                       if c.outcome.asset_id is not None}  # ok outcomes always have one
            handles.append(sup.render(key=key, scene=duo, character_mapping=mapping,
                                      estimated_seconds=seconds, output=out / f"{key}.mp4"))
    return handles
