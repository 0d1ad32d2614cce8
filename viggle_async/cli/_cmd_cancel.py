"""``viggle-async cancel JOB``: cancel a running render (docs/api/renders.md#cancel; the API
refunds it)."""

from __future__ import annotations

import argparse

from ._common import EXIT_OK, Command, Ctx
from ._texts import status_text

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", metavar="JOB")


async def run(ctx: Ctx) -> int:
    ctx.require_key()
    async with ctx.client() as client:
        status = await client.renders.cancel(ctx.args.job_id)
    ctx.out.emit(status, status_text(status) + " (the API refunds its credits)")
    return EXIT_OK


COMMAND = Command("cancel", "cancel a running render job (the API refunds it)", configure, run)
