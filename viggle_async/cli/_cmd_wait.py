"""``viggle-async wait JOB``: poll a render job until it ends; download it with ``-o``."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import anyio

from .. import RenderStatus, WaitTimeoutError
from ._common import EXIT_FAILED, EXIT_OK, CliError, Command, Ctx, positive_float
from ._options import add_poll_interval
from ._paths import require_writable
from ._preflight import reach
from ._progress import EventView
from ._texts import download, status_text

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("-o", "--output", metavar="PATH")
    p.add_argument("--mask-output", metavar="PATH")
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                   help="give up waiting after this long (the job goes on)")
    add_poll_interval(p)


async def run(ctx: Ctx) -> int:
    args = ctx.args
    # Before waiting, perhaps for minutes: an output that cannot be saved fails now.
    output = Path(args.output) if args.output else None
    mask = Path(args.mask_output) if args.mask_output else None
    await anyio.to_thread.run_sync(functools.partial(
        require_writable, ("-o/--output", output), ("--mask-output", mask)))
    view = EventView(ctx.out, ctx.stats, title=args.job_id, single=True)

    def show(status: RenderStatus) -> None:
        view.handle_status(status)

    async with ctx.client(view) as client:
        try:
            with view:
                final = await reach(ctx, client, lambda: client.renders.wait(
                    args.job_id, poll_interval=ctx.poll_interval, timeout=args.timeout,
                    on_progress=show), job_id=args.job_id)
        except WaitTimeoutError as exc:
            raise CliError(f"{exc}; the job goes on: run 'viggle-async wait {args.job_id}' "
                           "again later", EXIT_FAILED) from None
        ctx.out.emit(final, status_text(final))
        for url, dest in ((final.cdn_url, args.output), (final.mask_cdn_url, args.mask_output)):
            if url and dest:
                await download(ctx, client, view, url, Path(dest), args.job_id)
    return EXIT_OK


COMMAND = Command("wait", "wait for a render job to finish; download it with -o",
                  configure, run)
