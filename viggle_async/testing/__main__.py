"""``python -m viggle_async.testing``: run the fake server in the foreground.

Prints one line per URL and the key, then serves until SIGINT or SIGTERM. Fault knobs are
set with ``--fault NAME=VALUE`` (repeatable; VALUE is JSON, or else a plain string), e.g.
``--fault url_ttl_s=60 --fault create_fail_shape=html``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

import attrs

from ._config import DEFAULT_API_KEY, FakeSettings, Faults
from ._server import FakeViggle


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m viggle_async.testing", description="Run the fake Viggle API server."
    )
    parser.add_argument("--port", type=int, default=0, help="API port (0: any free port)")
    parser.add_argument("--cdn-port", type=int, default=0, help="CDN port (0: any free port)")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="simulated seconds per real second"
    )
    parser.add_argument("--balance", type=int, default=10_000, help="starting credits")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument(
        "--output-bytes", type=int, default=None, help="size of every CDN output file"
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a Faults knob; VALUE is JSON or a plain string (repeatable)",
    )
    return parser.parse_args(argv)


def faults_from(pairs: Sequence[str]) -> Faults:
    """``["url_ttl_s=60", "create_fail_shape=html"]`` -> Faults; ValueError names a bad one."""
    fields = {f.name for f in attrs.fields(Faults)}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--fault {pair!r}: expected NAME=VALUE with NAME a Faults field")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        # Route sets come as JSON lists.
        values[name] = frozenset(value) if isinstance(value, list) else value
    return Faults(**values)


async def _serve(args: argparse.Namespace) -> None:
    settings = FakeSettings(api_keys={args.api_key: args.balance}, time_scale=args.time_scale)
    if args.output_bytes is not None:
        settings.output_bytes = args.output_bytes
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    faults = faults_from(args.fault)
    async with FakeViggle(
        settings, faults=faults, port=args.port, cdn_port=args.cdn_port
    ) as fake:
        print(f"base_url={fake.base_url}", flush=True)
        print(f"cdn_base_url={fake.cdn_base_url}", flush=True)
        print(f"api_key={fake.api_key}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(_serve(_parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
