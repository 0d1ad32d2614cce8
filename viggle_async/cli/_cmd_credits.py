"""``viggle-async credits``: the account's balance (docs/api/credits.md#credits-endpoint)."""

from __future__ import annotations

import argparse

from ._common import EXIT_OK, Command, Ctx, credits_text
from ._preflight import reach

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    del p  # no arguments of its own


async def run(ctx: Ctx) -> int:
    ctx.require_key()
    async with ctx.client() as client:
        credits = await reach(ctx, client, client.get_credits)
    ctx.out.emit(credits, f"balance: {credits_text(credits.balance)}")
    return EXIT_OK


COMMAND = Command("credits", "show the account's credit balance", configure, run)
