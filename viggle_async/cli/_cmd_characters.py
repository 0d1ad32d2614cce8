"""``viggle-async characters create|get|list|delete`` (docs/api/assets.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._assets import Action, add_actions, list_assets, wait_asset
from ._common import EXIT_OK, Command, Ctx, asset_credits, credits_text
from ._texts import asset_text

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    def creators(action: Action) -> list[argparse.ArgumentParser]:
        create = action("create", "create a character and wait until it is ready")
        create.add_argument("--name", required=True)
        src = create.add_mutually_exclusive_group(required=True)
        src.add_argument("--image", metavar="PATH",
                         help=f"PNG/JPG/WebP ({credits_text(asset_credits('character'))})")
        src.add_argument("--image-url", metavar="URL")
        return [create]

    add_actions(p, "characters", creators)


async def run(ctx: Ctx) -> int:
    args = ctx.args
    ctx.require_key()
    async with ctx.client() as client:
        chars = client.characters
        if args.action == "create":
            image = Path(args.image) if args.image else None
            await chars.prepare(name=args.name, image=image, image_url=args.image_url)
            created = await chars.create(name=args.name, image=image, image_url=args.image_url)
            return await wait_asset(ctx, "character", chars.wait, created)
        if args.action == "get":
            found = await chars.get(args.id)
            ctx.out.emit(found, asset_text("character", found))
        elif args.action == "list":
            await list_assets(ctx, "character", chars)
        else:
            await chars.delete(args.id)
            ctx.out.emit({"deleted": args.id}, f"deleted character {args.id}")
    return EXIT_OK


COMMAND = Command("characters", "create, get, list or delete characters", configure, run)
