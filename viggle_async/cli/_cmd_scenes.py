"""``viggle-async scenes create|import|get|list|delete`` (docs/api/assets.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._protocol import BACKGROUND_MODES
from .._segments_cache import NO_CACHE_ENV
from ._assets import Action, add_actions, list_assets, wait_asset
from ._common import EXIT_OK, Command, Ctx, asset_credits, credits_text
from ._texts import asset_text

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    def creators(action: Action) -> list[argparse.ArgumentParser]:
        create = action("create", "create a scene and wait until it is ready")
        create.add_argument("--name", required=True)
        src = create.add_mutually_exclusive_group(required=True)
        cost = asset_credits("scene")
        src.add_argument("--video", metavar="PATH",
                         help=f"MP4/MOV/WebM ({credits_text(cost) if cost else 'free'})")
        src.add_argument("--video-url", metavar="URL")
        create.add_argument("--background-mode", metavar="MODE",
                            help=", ".join(BACKGROUND_MODES))
        create.add_argument("--model")
        imp = action("import", "import a viggle.ai template as a scene")
        imp.add_argument("template_id", metavar="TEMPLATE_ID")
        imp.add_argument("--name")
        return [create, imp]

    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--no-cache", action="store_true",
                       help="do not keep or read template segments on disk (also: "
                            f"{NO_CACHE_ENV}=1)")
    add_actions(p, "scenes", creators, extra=cache)


CACHE_HELP = """\
Get Scene does not return a template's segments (the people a --character-mapping
names), so 'scenes import' keeps them on disk for 'scenes get' in a later shell:
$XDG_CACHE_HOME/viggle-async/segments/ (~/.cache when unset), one folder per API key
fingerprint (never the key). --no-cache or VIGGLE_ASYNC_NO_CACHE=1 turns it off.
"""


async def run(ctx: Ctx) -> int:
    args = ctx.args
    ctx.require_key()
    # The client keeps template segments on disk at import, adds them back on get, and
    # forgets them on delete (unless --no-cache or VIGGLE_ASYNC_NO_CACHE=1).
    no_cache = getattr(args, "no_cache", False)
    async with ctx.client(segments_cache=not no_cache) as client:
        scenes = client.scenes
        if args.action == "create":
            video = Path(args.video) if args.video else None
            kw = dict(name=args.name, video=video, video_url=args.video_url,
                      background_mode=args.background_mode, model=args.model)
            await scenes.prepare(**kw)
            return await wait_asset(ctx, "scene", scenes.wait, await scenes.create(**kw))
        if args.action == "import":
            imported = await scenes.import_template(args.template_id, args.name)
            return await wait_asset(ctx, "scene", scenes.wait, imported)
        if args.action == "get":
            found = await scenes.get(args.id)
            ctx.out.emit(found, asset_text("scene", found))
        elif args.action == "list":
            await list_assets(ctx, "scene", scenes)
        else:
            await scenes.delete(args.id)
            ctx.out.emit({"deleted": args.id}, f"deleted scene {args.id}")
    return EXIT_OK


COMMAND = Command("scenes", "create, import, get, list or delete scenes", configure, run,
                  epilog=CACHE_HELP)
