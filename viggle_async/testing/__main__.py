"""``python -m viggle_async.testing``: run the fake server in the foreground.

Prints one line per URL and the key, then serves until SIGINT or SIGTERM. Outputs are
playable MP4 clips unless ``--placeholder-outputs``. The options are the same as
``viggle-async fake-server``'s (``add_server_options``). Fault knobs are
set with ``--fault NAME=VALUE`` (repeatable; VALUE is JSON, or else a plain string), e.g.
``--fault url_ttl_s=60 --fault create_fail_shape=html``.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

import attrs

from ._config import DEFAULT_API_KEY, FakeSettings, Faults
from ._server import FakeViggle

# Outputs as the demo writes them: real H.264 clips a player opens (one per job); 160 KiB
# holds all 24 frames of a 64x64 clip.
PLAYABLE_OUTPUT_BYTES = 160 * 1024


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0: any free port)")
    return value


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The fake server's options, shared by ``python -m viggle_async.testing`` and
    ``viggle-async fake-server`` (read them back with ``settings_from``/``faults_from``)."""
    parser.add_argument("--port", type=_port, default=0, help="API port (default 0: any free port)")
    parser.add_argument("--cdn-port", type=_port, default=0, help="CDN port (default 0: any)")
    parser.add_argument("--time-scale", type=_positive(float), default=1.0,
                        help="simulated seconds per real second (e.g. 50: renders finish fast)")
    parser.add_argument("--balance", type=int, default=10_000, help="starting credits")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY,
                        help=f"the key the fake accepts (default {DEFAULT_API_KEY})")
    parser.add_argument("--output-bytes", type=_positive(int), default=None, metavar="BYTES",
                        help="size of every output file (default "
                             f"{PLAYABLE_OUTPUT_BYTES // 1024} KiB, or "
                             f"{FakeSettings().output_bytes // 1024} KiB with "
                             "--placeholder-outputs)")
    parser.add_argument("--placeholder-outputs", action="store_true",
                        help="serve the same placeholder bytes for every output instead of "
                             "playable MP4 clips (cheaper, not playable)")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=VALUE",
                        help="set a Faults knob; VALUE is JSON or a plain string (repeatable), "
                             "e.g. --fault url_ttl_s=60")


def settings_from(args: argparse.Namespace) -> FakeSettings:
    """The ``FakeSettings`` the options of ``add_server_options`` ask for."""
    playable = not args.placeholder_outputs
    settings = FakeSettings(api_keys={args.api_key: args.balance}, time_scale=args.time_scale,
                            output_mp4=playable)
    if args.output_bytes is not None:
        settings.output_bytes = args.output_bytes
    elif playable:
        settings.output_bytes = PLAYABLE_OUTPUT_BYTES
    return settings


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m viggle_async.testing", description="Run the fake Viggle API server."
    )
    add_server_options(parser)
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


async def _serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    faults = faults_from(args.fault)
    fake = FakeViggle(settings, faults=faults, port=args.port, cdn_port=args.cdn_port)
    try:
        await fake.start()
    except OSError as exc:
        print(f"error: {bind_problem(args, fake, exc)}", file=sys.stderr)
        return 2
    try:
        print(f"base_url={fake.base_url}", flush=True)
        print(f"cdn_base_url={fake.cdn_base_url}", flush=True)
        print(f"api_key={fake.api_key}", flush=True)
        await stop.wait()
    finally:
        await fake.close()
    return 0


def bind_problem(args: argparse.Namespace, fake: FakeViggle, exc: OSError) -> str:
    """One line for a port ``fake.start()`` could not listen on, naming the option and the
    fix. The API binds first: with its URL set, the CDN's port is the one that failed."""
    flag, port = ("--cdn-port", args.cdn_port) if fake.base_url else ("--port", args.port)
    if exc.errno == errno.EADDRINUSE:
        why = "is already in use (another fake-server or program listens there)"
    elif exc.errno == errno.EACCES:
        why = "needs privileges (ports below 1024 are reserved)"
    else:
        why = f"cannot be listened on ({exc.strerror or exc})"
    return (f"{flag} {port}: 127.0.0.1:{port} {why}. Fix: pass another {flag}, or {flag} 0 "
            "for any free port")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        faults_from(args.fault)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2  # a usage error, as argparse's own
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
