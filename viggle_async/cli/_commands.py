"""The one-shot CLI commands: render, status, wait, cancel, download, characters, scenes,
credits, fake-server and demo. ``bulk`` is in ``_cli_bulk``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio

from .. import (
    Character,
    RenderStatus,
    Scene,
    Supervisor,
    ViggleClient,
    WaitTimeoutError,
)
from ._common import EXIT_FAILED, EXIT_OK, CliError, Ctx
from ._progress import EventView, outcome_text

__all__ = ["COMMANDS"]


def _status_text(s: RenderStatus) -> str:
    parts = [f"job {s.job_id}: {s.status}"]
    if s.progress_pct is not None and not s.is_terminal:
        parts.append(f"{s.progress_pct:.0f}%")
    if s.checkpoint:
        parts.append(f"({s.checkpoint})")
    text = " ".join(parts)
    if s.error_code or s.error_message or s.error:
        text += f"\n  error: {s.error_message or s.error or ''} [{s.error_code or '-'}]".rstrip()
    if s.cdn_url:
        text += f"\n  cdn_url: {s.cdn_url}"
    if s.mask_cdn_url:
        text += f"\n  mask_cdn_url: {s.mask_cdn_url}"
    return text


def _asset_text(kind: str, a: Character | Scene) -> str:
    text = f"{kind} {a.id}: {a.status}"
    if a.name:
        text += f"  name={a.name!r}"
    if isinstance(a, Scene) and a.segments:
        text += "  segments=" + ",".join(s.uuid for s in a.segments)
    if a.error_message or a.error:
        text += f"  error={a.error_message or a.error}"
    return text


# --- render (one clip, through the supervisor: the same retries, fallback and events) ----

def _render_inputs(args: Any) -> dict[str, Any]:
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


async def cmd_render(ctx: Ctx) -> int:
    args = ctx.args
    inputs = _render_inputs(args)
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


# --- jobs ------------------------------------------------------------------------------

async def cmd_status(ctx: Ctx) -> int:
    async with ctx.client() as client:  # §2.3: the status endpoint needs no key
        status = await client.renders.get(ctx.args.job_id)
    ctx.out.emit(status, _status_text(status))
    return EXIT_OK


async def _download(ctx: Ctx, client: ViggleClient, view: EventView, url: str, dest: Path,
                    label: str) -> Path:
    await anyio.Path(dest.parent).mkdir(parents=True, exist_ok=True)
    with view:
        path = await client.download(
            url, dest, on_progress=lambda done, total: view.download_progress(label, done, total))
    size = (await anyio.Path(path).stat()).st_size
    ctx.out.emit({"event": "downloaded", "key": label, "path": path, "bytes": size},
                 f"downloaded {size:,} bytes to {path}")
    return path


async def cmd_wait(ctx: Ctx) -> int:
    args = ctx.args
    view = EventView(ctx.out, ctx.stats, title=args.job_id)

    def show(status: RenderStatus) -> None:
        view.handle_status(status)

    async with ctx.client(view) as client:
        try:
            with view:
                final = await client.renders.wait(args.job_id, poll_interval=ctx.poll_interval,
                                                  timeout=args.timeout, on_progress=show)
        except WaitTimeoutError as exc:
            raise CliError(f"{exc}; the job goes on: run 'viggle-async wait {args.job_id}' "
                           "again later", EXIT_FAILED) from None
        ctx.out.emit(final, _status_text(final))
        for url, dest in ((final.cdn_url, args.output), (final.mask_cdn_url, args.mask_output)):
            if url and dest:
                await _download(ctx, client, view, url, Path(dest), args.job_id)
    return EXIT_OK


async def cmd_cancel(ctx: Ctx) -> int:
    ctx.require_key()
    async with ctx.client() as client:
        status = await client.renders.cancel(ctx.args.job_id)
    ctx.out.emit(status, _status_text(status) + " (the API refunds its credits)")
    return EXIT_OK


async def cmd_download(ctx: Ctx) -> int:
    args = ctx.args
    target: str = args.target
    view = EventView(ctx.out, ctx.stats, title="download")
    url: str | None
    async with ctx.client(view) as client:
        if target.startswith(("http://", "https://")):
            url = target
        else:
            status = await client.renders.get(target)
            if not status.is_complete:
                raise CliError(f"job {target} is {status.status}, so there is nothing to "
                               f"download yet: run 'viggle-async wait {target} -o DEST'",
                               EXIT_FAILED)
            url = status.mask_cdn_url if args.mask else status.cdn_url
            if url is None:
                raise CliError(f"job {target} has no mask output (only transparent renders "
                               "have one)", EXIT_FAILED)
        await _download(ctx, client, view, url, Path(args.dest), target)
    return EXIT_OK


# --- characters and scenes ---------------------------------------------------------------

async def _wait_asset(ctx: Ctx, kind: str, wait: Any, asset: Character | Scene) -> int:
    if ctx.args.no_wait or asset.is_terminal:
        final = asset
    else:
        ctx.out.note(f"{kind} {asset.id} is {asset.status}; waiting until it is ready")
        final = await wait(asset.id, poll_interval=ctx.asset_poll_interval)
        if isinstance(asset, Scene) and isinstance(final, Scene):
            final = final.with_segments(asset.segments)
    ctx.out.emit(final, _asset_text(kind, final))
    return EXIT_OK


async def cmd_characters(ctx: Ctx) -> int:
    args = ctx.args
    ctx.require_key()
    async with ctx.client() as client:
        chars = client.characters
        if args.action == "create":
            image = Path(args.image) if args.image else None
            await chars.prepare(name=args.name, image=image, image_url=args.image_url)
            created = await chars.create(name=args.name, image=image, image_url=args.image_url)
            return await _wait_asset(ctx, "character", chars.wait, created)
        if args.action == "get":
            found = await chars.get(args.id)
            ctx.out.emit(found, _asset_text("character", found))
        elif args.action == "list":
            await _list(ctx, "character", chars)
        else:
            await chars.delete(args.id)
            ctx.out.emit({"deleted": args.id}, f"deleted character {args.id}")
    return EXIT_OK


async def cmd_scenes(ctx: Ctx) -> int:
    args = ctx.args
    ctx.require_key()
    async with ctx.client() as client:
        scenes = client.scenes
        if args.action == "create":
            video = Path(args.video) if args.video else None
            kw = dict(name=args.name, video=video, video_url=args.video_url,
                      background_mode=args.background_mode, model=args.model)
            await scenes.prepare(**kw)
            return await _wait_asset(ctx, "scene", scenes.wait, await scenes.create(**kw))
        if args.action == "import":
            imported = await scenes.import_template(args.template_id, args.name)
            return await _wait_asset(ctx, "scene", scenes.wait, imported)
        if args.action == "get":
            found = await scenes.get(args.id)
            ctx.out.emit(found, _asset_text("scene", found))
        elif args.action == "list":
            await _list(ctx, "scene", scenes)
        else:
            await scenes.delete(args.id)
            ctx.out.emit({"deleted": args.id}, f"deleted scene {args.id}")
    return EXIT_OK


async def _list(ctx: Ctx, kind: str, resource: Any) -> None:
    """One page (--limit/--offset), or every page with --all; one JSON line per item."""
    args = ctx.args
    count = 0
    if args.all:
        async for item in resource.iterate():
            ctx.out.emit(item, _asset_text(kind, item))
            count += 1
        total = count
    else:
        page = await resource.list(limit=args.limit, offset=args.offset)
        for item in page.items:
            ctx.out.emit(item, _asset_text(kind, item))
        count, total = len(page.items), page.total
    ctx.out.note(f"{count} {kind}s" + (f" of {total}" if total is not None else ""))


async def cmd_credits(ctx: Ctx) -> int:
    ctx.require_key()
    async with ctx.client() as client:
        credits = await client.get_credits()
    ctx.out.emit(credits, f"balance: {credits.balance:g} credits")
    return EXIT_OK


# --- local development ---------------------------------------------------------------------

def cmd_fake_server(ctx: Ctx) -> int:
    """Runs in the foreground until Ctrl-C / SIGTERM (not inside the CLI's event loop)."""
    from ..testing.__main__ import main as serve

    args = ctx.args
    ctx.out.note("fake Viggle API on loopback for local development; in another shell run\n"
                 "  export VIGGLE_BASE_URL=<base_url> VIGGLE_API_KEY=<api_key>\n"
                 "with the values printed below. Ctrl-C stops it.")
    argv = ["--port", str(args.port), "--cdn-port", str(args.cdn_port),
            "--time-scale", str(args.time_scale), "--balance", str(args.balance)]
    if args.output_bytes is not None:
        argv += ["--output-bytes", str(args.output_bytes)]
    return serve(argv)


async def cmd_demo(ctx: Ctx) -> int:
    from ._demo import run_demo

    view = EventView(ctx.out, ctx.stats, title="demo")
    with view:
        summary = await run_demo(Path(ctx.args.out), on_events=view.consume)
    code = EXIT_OK if summary.failed == 0 else EXIT_FAILED
    data = {"event": "summary", "total": len(summary.outcomes), "done": summary.done,
            "failed": summary.failed, "credits": summary.credits_spent,
            "retries": summary.retries, "fallbacks": summary.fallbacks,
            "elapsed_s": round(summary.elapsed_s, 3), "out_dir": summary.out_dir,
            "exit_code": code}
    ctx.out.emit(data, f"demo: {summary.done} done, {summary.failed} failed; credits "
                       f"{summary.credits_spent}; retries {summary.retries}; fast fallbacks "
                       f"{summary.fallbacks}; {summary.elapsed_s:.1f} s; outputs in "
                       f"{summary.out_dir}")
    return code


COMMANDS: dict[str, Any] = {
    "render": cmd_render, "status": cmd_status, "wait": cmd_wait, "cancel": cmd_cancel,
    "download": cmd_download, "characters": cmd_characters, "scenes": cmd_scenes,
    "credits": cmd_credits, "fake-server": cmd_fake_server, "demo": cmd_demo,
}
