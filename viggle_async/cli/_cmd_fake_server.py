"""``viggle-async fake-server``: the fake Viggle API on loopback, in the foreground until
Ctrl-C / SIGTERM. Runs ``FakeViggle`` directly (no second parser)."""

from __future__ import annotations

import argparse
import signal

import anyio

from ..testing import DEFAULT_API_KEY, FakeSettings, FakeViggle
from ._common import EXIT_OK, Command, Ctx, positive_float, positive_int

__all__ = ["COMMAND"]

EPILOG = """\
It prints base_url=, cdn_base_url= and api_key= lines, then a line to paste into another
shell so every viggle-async command there uses it:
  export VIGGLE_BASE_URL=http://127.0.0.1:PORT VIGGLE_API_KEY=...
The key is the fake server's own; no real credits are involved.
"""


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0: any free port)")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=_port, default=0, help="API port (default 0: any free port)")
    p.add_argument("--cdn-port", type=_port, default=0, help="CDN port (default 0: any)")
    p.add_argument("--time-scale", type=positive_float, default=1.0,
                   help="simulated seconds per real second (e.g. 50: renders finish fast)")
    p.add_argument("--balance", type=int, default=10_000, help="starting credits")
    p.add_argument("--output-bytes", type=positive_int, metavar="BYTES",
                   help="size of every output file")


async def run(ctx: Ctx) -> int:
    args = ctx.args
    settings = FakeSettings(api_keys={DEFAULT_API_KEY: args.balance},
                            time_scale=args.time_scale)
    if args.output_bytes is not None:
        settings.output_bytes = args.output_bytes
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with FakeViggle(settings, port=args.port, cdn_port=args.cdn_port) as fake:
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
    return EXIT_OK


COMMAND = Command("fake-server", "run the fake Viggle API on loopback for local development",
                  configure, run, uses_api=False, epilog=EPILOG)
