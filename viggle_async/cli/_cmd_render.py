"""``viggle-async render``: one clip, through the supervisor (the same retries, fast
fallback and events as ``bulk``), waited for and downloaded."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import anyio

from .. import RenderHandle, Supervisor
from .._protocol import BACKGROUND_MODES
from ._common import (
    DEFAULT_CAPACITY_BACKOFF,
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Command,
    Ctx,
    cli_words,
    credits_text,
    is_interrupt,
    number,
    parse_backoff,
    parse_fast_fallback,
    positive_float,
)
from ._options import BACKOFF_HELP, FAST_FALLBACK_HELP, add_poll_interval
from ._paths import require_writable
from ._preflight import preflight
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
    p.add_argument("--capacity-backoff", type=parse_backoff, default=DEFAULT_CAPACITY_BACKOFF,
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
    # The outcome is this command's result (stdout): the live log does not repeat it.
    # Before anything is sent: a render paid for and then not saved is lost.
    require_writable(("-o/--output", output), ("--mask-output", mask),
                     after="; nothing was sent")
    view = EventView(ctx.out, ctx.stats, title="render", log_outcomes=False, single=True)
    async with ctx.client(view) as client:
        sup = Supervisor(client, fast_fallback=args.fast_fallback, poll_policy=ctx.poll_policy(),
                         cancel_remote=args.cancel_remote, render_timeout=args.timeout,
                         capacity_backoff=args.capacity_backoff)
        # Check everything locally first: bad input exits 2 with nothing sent.
        estimate = await sup.estimate(**inputs)
        ctx.require_key()
        await preflight(ctx, client, view)
        for path in (output, mask):
            if path is not None:
                await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        if estimate.credits is not None:
            ctx.out.note(f"estimated cost: {credits_text(estimate.credits)}")
        key = output.stem or "render"
        view.expect_costs({key: estimate.credits})
        handle: RenderHandle | None = None
        try:
            with view:
                async with view.supervising(sup):
                    handle = sup.render(key=key, output=output, mask_output=mask, **inputs)
        except BaseException as exc:
            _explain_stop(ctx, handle, estimate.credits, interrupted=is_interrupt(exc))
            raise
        outcome = await handle
    if outcome.state == "not_submitted" and outcome.error_type == "ConnectError":
        # As every command says it when the API cannot be reached: one line, exit 2.
        raise CliError(f"{cli_words(outcome.error or 'cannot reach the API')} (API at "
                       f"{client.base_url}); check --base-url / VIGGLE_BASE_URL")
    if outcome.state == "timed_out" and outcome.job_id is not None:
        # The API has no deadline: the job renders on and is charged (docs/api/credits.md#costs).
        ctx.out.json({"event": "timeout", "key": key, "job_id": outcome.job_id,
                      "timeout_s": args.timeout, "exit_code": EXIT_FAILED})
        ctx.out.error(f"{key}: still rendering after --timeout {number(args.timeout)} s "
                      f"(job {outcome.job_id}); the job goes on and is charged. Wait for it "
                      f"again: {_wait_command(outcome.job_id, output, mask)}; or cancel it "
                      f"(refunded): viggle-async cancel {outcome.job_id}")
        return EXIT_FAILED
    summary = ctx.stats.summary([outcome], extra={"outcome": outcome})
    if outcome.ok:
        ctx.out.emit(summary, outcome_text(outcome))
    else:
        ctx.out.json(summary)
        ctx.out.error(outcome_text(outcome, output))
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _wait_command(job_id: str, output: Path, mask: Path | None) -> str:
    words = ["viggle-async", "wait", job_id, "-o", str(output)]
    if mask is not None:
        words += ["--mask-output", str(mask)]
    return shlex.join(words)


def _explain_stop(ctx: Ctx, handle: RenderHandle | None, credits: int | None, *,
                  interrupted: bool) -> None:
    """The run stopped (Ctrl-C, SIGTERM, or an error the caller prints): is the job still
    running (and costing), and how to get it or cancel it. After an interrupt this is the
    closing line, which says what stopped the run (``main`` then adds no bare
    "interrupted"); after an error, the error line is the closing one."""
    outcome = handle.outcome if handle is not None and handle.done else None
    stop = f"{ctx.stop_word}: " if interrupted else ""
    ctx.explained_stop = interrupted
    if outcome is None or outcome.job_id is None:
        if interrupted:
            ctx.out.error(f"{ctx.stop_word} before the job was created: nothing is running")
        return
    job_id = outcome.job_id
    if outcome.state != "running":
        ctx.out.error(f"{stop}job {job_id} {outcome.state} "
                      f"({outcome.error or outcome.status})")
        return
    args = ctx.args
    credits = outcome.credits if outcome.credits is not None else credits
    cost = f" (about {credits_text(credits)})" if credits is not None else ""
    ctx.out.json({"event": "running", "key": outcome.key, "job_id": job_id,
                  "credits": credits})
    ctx.out.error(f"{stop}job {job_id} is still running on the server{cost} and is charged "
                  f"unless cancelled.\n  get it when done: "
                  f"{_wait_command(job_id, Path(args.output), _mask(args))}\n"
                  f"  cancel it (refunded): viggle-async cancel {job_id}")


def _mask(args: Any) -> Path | None:
    return Path(args.mask_output) if args.mask_output else None


COMMAND = Command("render", "render one clip, wait for it and download it", configure, run)
