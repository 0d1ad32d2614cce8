"""``viggle-async fake-server``: the fake Viggle API on loopback, in the foreground until
Ctrl-C / SIGTERM. Runs ``FakeViggle`` directly (no second parser)."""

from __future__ import annotations

import argparse
import signal

import anyio

from ..testing import FakeViggle
from ..testing.__main__ import add_server_options, bind_problem, faults_from, settings_from
from ._common import EXIT_OK, CliError, Command, Ctx

__all__ = ["COMMAND"]

EPILOG = """\
It prints base_url=, cdn_base_url= and api_key= lines, then a line to paste into another
shell so every viggle-async command there uses it:
  export VIGGLE_BASE_URL=http://127.0.0.1:PORT VIGGLE_API_KEY=...
The key is the fake server's own; no real credits are involved. Outputs are playable
MP4 clips (--placeholder-outputs: identical placeholder bytes instead).
"""

EXIT_CODES = """\
exit codes:
  0    stopped with Ctrl-C or SIGTERM
  2    usage error (a bad option or --fault)
"""


def configure(p: argparse.ArgumentParser) -> None:
    # One set of options for both entry points (python -m viggle_async.testing too).
    add_server_options(p)


async def run(ctx: Ctx) -> int:
    args = ctx.args
    settings = settings_from(args)
    try:
        faults = faults_from(args.fault)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    fake = FakeViggle(settings, faults=faults, port=args.port, cdn_port=args.cdn_port)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            await fake.start()
        except OSError as exc:
            raise CliError(bind_problem(args, fake, exc)) from None
        try:
            ctx.out.emit({"event": "listening", "base_url": fake.base_url,
                          "cdn_base_url": fake.cdn_base_url, "api_key": fake.api_key},
                         f"base_url={fake.base_url}\ncdn_base_url={fake.cdn_base_url}\n"
                         f"api_key={fake.api_key}")
            ctx.out.note("fake Viggle API on loopback for local development; in another "
                         "shell run:")
            ctx.out.result(f"export VIGGLE_BASE_URL={fake.base_url} "
                           f"VIGGLE_API_KEY={fake.api_key}")
            ctx.out.note("Ctrl-C stops it.")
            async for _ in signals:
                break
        finally:
            await fake.close()
    return EXIT_OK


COMMAND = Command("fake-server", "run the fake Viggle API on loopback for local development",
                  configure, run, uses_api=False, epilog=EPILOG, exit_codes=EXIT_CODES)
