"""``viggle-async status JOB``: one read of a render job (docs/api/renders.md#render-status needs
no API key)."""

from __future__ import annotations

import argparse

from ._common import EXIT_OK, Command, Ctx
from ._preflight import reach
from ._texts import status_text

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", metavar="JOB")


async def run(ctx: Ctx) -> int:
    # docs/api/renders.md#render-status: the status endpoint needs no key
    async with ctx.client() as client:
        job_id = ctx.args.job_id
        status = await reach(ctx, client, lambda: client.renders.get(job_id),
                             job_id=job_id)
    ctx.out.emit(status, status_text(status))
    return EXIT_OK


COMMAND = Command("status", "show a render job's status (needs no API key)", configure, run)
