"""``viggle-async download JOB|URL DEST``: a finished job's output, or any output URL."""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

from ._common import EXIT_FAILED, EXIT_OK, CliError, Command, Ctx
from ._paths import require_writable
from ._preflight import reach
from ._progress import EventView
from ._texts import download

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="JOB|URL")
    p.add_argument("dest", metavar="DEST")
    p.add_argument("--mask", action="store_true", help="the job's mask output instead")


async def run(ctx: Ctx) -> int:
    args = ctx.args
    target: str = args.target
    await anyio.to_thread.run_sync(require_writable, ("DEST", Path(args.dest)))
    view = EventView(ctx.out, ctx.stats, title="download", single=True)
    url: str | None
    async with ctx.client(view) as client:
        if target.startswith(("http://", "https://")):
            url = target
        else:
            status = await reach(ctx, client, lambda: client.renders.get(target),
                                 job_id=target)
            if not status.is_complete:
                raise CliError(_not_downloadable(target, status.status, status.is_terminal),
                               EXIT_FAILED)
            url = status.mask_cdn_url if args.mask else status.cdn_url
            if url is None:
                raise CliError(f"job {target} has no mask output (only transparent renders "
                               "have one)", EXIT_FAILED)
        await download(ctx, client, view, url, Path(args.dest), target)
    return EXIT_OK


def _not_downloadable(job: str, status: str, terminal: bool) -> str:
    if terminal:  # failed or cancelled: waiting will not help
        return (f"job {job} ended {status}, so it has no output: render it again "
                "(viggle-async render ...)")
    return (f"job {job} is {status}, so there is nothing to download yet: run "
            f"'viggle-async wait {job} -o DEST'")


COMMAND = Command("download", "download a finished job's output (or any output URL)",
                  configure, run)
