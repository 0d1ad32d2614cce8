"""``viggle-async render``: one clip, through the supervisor (the same retries, fast
fallback and events as ``bulk``), waited for and downloaded."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import anyio

from .. import Supervisor
from .._protocol import BACKGROUND_MODES
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Command,
    Ctx,
    parse_backoff,
    parse_fast_fallback,
    positive_float,
)
from ._options import BACKOFF_HELP, FAST_FALLBACK_HELP, add_poll_interval
from ._progress import EventView, outcome_text

__all__ = ["COMMAND", "add_render_inputs"]


def add_render_inputs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to render (on-demand: image + video; preprocessed: "
                             "--character-id + --scene-id; multi-person: --scene-id + "
                             "--character-mapping)")
    g.add_argument("--ref-image", metavar="PATH", help="character image (PNG/JPG)")
    g.add_argument("--ref-image-url", metavar="URL")
    g.add_argument("--driving-video", metavar="PATH", help="driving video (MP4/MOV)")
    g.add_argument("--driving-video-url", metavar="URL")
    g.add_argument("--character-id")
    g.add_argument("--scene-id")
    g.add_argument("--character-mapping", metavar="JSON",
                   help='segment uuid -> character id, e.g. \'{"person_a1": "char_x"}\'')
    o = p.add_argument_group("options")
    o.add_argument("--model", help="V4_Preview (default) or V3_Preview; not with a scene")
    o.add_argument("--background-mode", metavar="MODE", help=", ".join(BACKGROUND_MODES))
    o.add_argument("--bg-color", metavar="R,G,B", help="with --background-mode solid")
    o.add_argument("--fast", action="store_true", help="twice the speed for twice the credits")


def configure(p: argparse.ArgumentParser) -> None:
    add_render_inputs(p)
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="where to save it")
    p.add_argument("--mask-output", metavar="PATH", help="the mask (transparent mode)")
    p.add_argument("--fast-fallback", type=parse_fast_fallback, default="attempts:5,seconds:300",
                   metavar="SPEC", help=FAST_FALLBACK_HELP)
    p.add_argument("--capacity-backoff", type=parse_backoff, default="2:60",
                   metavar="BASE:CAP", help=BACKOFF_HELP)
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                   help="give up waiting after this long (the job goes on)")
    p.add_argument("--cancel-remote", action="store_true",
                   help="on Ctrl-C, cancel the job on the server (refunded)")
    add_poll_interval(p)


def render_inputs(args: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for name in ("ref_image", "driving_video"):
        if getattr(args, name) is not None:
            inputs[name] = Path(getattr(args, name))
    for name in ("ref_image_url", "driving_video_url", "character_id", "scene_id", "model",
                 "background_mode", "bg_color"):
        if getattr(args, name) is not None:
            inputs[name] = getattr(args, name)
    if args.character_mapping is not None:
        try:
            inputs["character_mapping"] = json.loads(args.character_mapping)
        except ValueError:
            raise CliError("--character-mapping is not valid JSON: pass an object like "
                           '\'{"person_a1b2c3d4": "char_x"}\'') from None
    if args.fast:
        inputs["fast"] = True
    return inputs


async def run(ctx: Ctx) -> int:
    args = ctx.args
    inputs = render_inputs(args)
    output = Path(args.output)
    mask = Path(args.mask_output) if args.mask_output else None
    view = EventView(ctx.out, ctx.stats, title="render")
    async with ctx.client(view) as client:
        sup = Supervisor(client, fast_fallback=args.fast_fallback, poll_policy=ctx.poll_policy(),
                         cancel_remote=args.cancel_remote, render_timeout=args.timeout,
                         capacity_backoff=args.capacity_backoff)
        # Check everything locally first: bad input exits 2 with nothing sent.
        estimate = await sup.estimate(**inputs)
        ctx.require_key()
        for path in (output, mask):
            if path is not None:
                await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        if estimate.credits is not None:
            ctx.out.note(f"estimated cost: {estimate.credits} credits")
        with view:
            async with anyio.create_task_group() as tg, sup:
                tg.start_soon(view.consume, sup.events())
                handle = sup.render(key=output.stem or "render", output=output,
                                    mask_output=mask, **inputs)
        outcome = await handle
    summary = ctx.stats.summary([outcome], extra={"outcome": outcome})
    ctx.out.emit(summary, outcome_text(outcome))
    return EXIT_OK if outcome.ok else EXIT_FAILED


COMMAND = Command("render", "render one clip, wait for it and download it", configure, run)
