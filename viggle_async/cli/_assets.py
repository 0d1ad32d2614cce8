"""Shared by ``characters`` and ``scenes``: the get/list/delete actions and waiting."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .. import Character, Scene
from ._common import EXIT_OK, Ctx, positive_int
from ._options import add_poll_interval, common_parent
from ._texts import asset_text

__all__ = ["add_actions", "list_assets", "wait_asset"]

Action = Callable[[str, str], argparse.ArgumentParser]


def add_actions(p: argparse.ArgumentParser, kind: str,
                creators: Callable[[Action], list[argparse.ArgumentParser]],
                extra: argparse.ArgumentParser | None = None) -> None:
    """create (and import, for scenes) via ``creators``; then get, list and delete.
    ``extra``: a parent parser with options every action takes."""
    common = common_parent()
    parents = [common] if extra is None else [common, extra]
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    one = kind[:-1]

    def action(name: str, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=help, description=help, parents=parents)
        return parser

    for waiter in creators(action):
        waiter.add_argument("--no-wait", action="store_true", help="return once created")
        add_poll_interval(waiter)
    action("get", f"show one {one}").add_argument("id", metavar="ID")
    lister = action("list", f"list {kind} (one page, or --all)")
    lister.add_argument("--limit", type=positive_int, default=100, help="1-100")
    lister.add_argument("--offset", type=int, default=0)
    lister.add_argument("--all", action="store_true", help="every page")
    action("delete", f"delete a {one}").add_argument("id", metavar="ID")


async def wait_asset(ctx: Ctx, kind: str, wait: Any, asset: Character | Scene) -> int:
    if ctx.args.no_wait or asset.is_terminal:
        final = asset
    else:
        ctx.out.note(f"{kind} {asset.id} is {asset.status}; waiting until it is ready")
        final = await wait(asset.id, poll_interval=ctx.asset_poll_interval)
        if isinstance(asset, Scene) and isinstance(final, Scene):
            final = final.with_segments(asset.segments)
    ctx.out.emit(final, asset_text(kind, final))
    return EXIT_OK


async def list_assets(ctx: Ctx, kind: str, resource: Any) -> None:
    """One page (--limit/--offset), or every page with --all; one JSON line per item."""
    args = ctx.args
    count = 0
    if args.all:
        async for item in resource.iterate():
            ctx.out.emit(item, asset_text(kind, item))
            count += 1
        total = count
    else:
        page = await resource.list(limit=args.limit, offset=args.offset)
        for item in page.items:
            ctx.out.emit(item, asset_text(kind, item))
        count, total = len(page.items), page.total
    ctx.out.note(f"{count:,} of {total:,} {kind}s" if total is not None and total != count
                 else f"{count:,} {kind}" + ("" if count == 1 else "s"))
