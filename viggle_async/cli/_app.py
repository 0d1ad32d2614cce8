"""The ``viggle-async`` parser, built from the commands' own modules, and ``main``: run
the command and turn any error into one line and the exit code (``exit_code_for``)."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from .. import ViggleError, __version__
from . import (
    _cmd_bulk,
    _cmd_cancel,
    _cmd_characters,
    _cmd_credits,
    _cmd_demo,
    _cmd_download,
    _cmd_fake_server,
    _cmd_render,
    _cmd_scenes,
    _cmd_status,
    _cmd_wait,
    _cmd_worker,
)
from ._common import (
    EXIT_CODES_HELP,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CliError,
    Command,
    Ctx,
    cli_words,
    exit_code_for,
)
from ._loop import LOOP_HELP, loop_factory
from ._loop import run as run_on_loop
from ._options import add_output_options, common_parent
from ._progress import Mode, Output

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: tuple[Command, ...] = tuple(m.COMMAND for m in (
    _cmd_render, _cmd_status, _cmd_wait, _cmd_cancel, _cmd_download, _cmd_characters,
    _cmd_scenes, _cmd_credits, _cmd_bulk, _cmd_fake_server, _cmd_demo, _cmd_worker))

ENVIRONMENT_HELP = """\
environment:
  VIGGLE_API_KEY    your API key (never printed; there is deliberately no --api-key
                    option, so the key stays out of shell history and process lists)
  VIGGLE_BASE_URL   the API's base URL (default https://apis.viggle.ai); --base-url wins
""" + LOOP_HELP
TRY = "\nTry it without a key: viggle-async demo\n"


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="viggle-async", formatter_class=fmt,
        epilog=f"{ENVIRONMENT_HELP}\n{EXIT_CODES_HELP}{TRY}",
        description="Render with the Viggle avatar API: one clip, a bulk manifest, jobs, "
                    "characters, scenes and credits.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_output_options(parser, default=None)
    parents = {True: common_parent(uses_api=True), False: common_parent(uses_api=False)}
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        epilog = command.epilog + ("\n" if command.epilog else "")
        if command.uses_api:
            epilog += ENVIRONMENT_HELP + "\n"
        p = sub.add_parser(command.name, help=command.help,
                           description=command.description or command.help,
                           parents=[parents[command.uses_api]], formatter_class=fmt,
                           epilog=epilog + command.exit_codes)
        p.set_defaults(run=command.run, uses_api=command.uses_api)
        command.configure(p)
    return parser


def _leaf(exc: BaseException) -> BaseException:
    """The error inside task-group wrappers (a group of one is the usual case)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        viggle = [e for e in exc.exceptions if isinstance(_leaf(e), (ViggleError, CliError))]
        exc = viggle[0] if viggle else exc.exceptions[0]
    return exc


def _interrupted(ctx: Ctx) -> int:
    code = ctx.interrupt_code
    ctx.out.json({"event": "interrupted", "exit_code": code})
    if not ctx.explained_stop:
        ctx.out.error(ctx.stop_word)
    return code


async def _stop_on_sigterm(ctx: Ctx, run: Coroutine[Any, Any, Any]) -> Any:
    """SIGTERM (a service manager, ``kill``, a CI timeout) stops the run as Ctrl-C does:
    asyncio.Runner cancels the main task on SIGINT, so cancel it here too, and the command
    reports what still runs and writes its report on the way out."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_term() -> None:
        ctx.interrupt_code = EXIT_TERMINATED
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_term)
    except (NotImplementedError, RuntimeError, ValueError):
        # Windows, or not the main thread (tests run main() in a worker): default SIGTERM.
        return await run
    try:
        return await run
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (documented in ``--help``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    mode: Mode = "json" if args.json else "quiet" if args.quiet else "human"
    # Commands that never use the real API never hold its key; fake-server prints its own
    # fake key, which may well be the one exported in this shell.
    secrets = [os.environ.get("VIGGLE_API_KEY")] if args.uses_api else []
    out = Output(mode, stdout=sys.stdout, stderr=sys.stderr, secrets=secrets)
    if args.json and args.quiet:
        out.error("error: --json and --quiet cannot be combined")
        return EXIT_USAGE
    ctx = Ctx(args, out, argv=tuple(sys.argv[1:] if argv is None else argv))
    try:
        factory = loop_factory()  # a bad VIGGLE_ASYNC_LOOP fails before anything runs
        result = args.run(ctx)
        if inspect.iscoroutine(result):
            result = run_on_loop(_stop_on_sigterm(ctx, result), factory)
        return int(result)
    except KeyboardInterrupt:
        return _interrupted(ctx)
    except BaseException as raised:
        error = _leaf(raised)
        if isinstance(error, KeyboardInterrupt) or (
                isinstance(error, asyncio.CancelledError)
                and ctx.interrupt_code == EXIT_TERMINATED):
            return _interrupted(ctx)
        code = exit_code_for(error)
        if code is None:
            raise
        # Manifest rows use the API's field names; everything else names --flags.
        text = str(error) if args.command == "bulk" else cli_words(str(error))
        out.json({"event": "error", "error": text, "type": type(error).__name__,
                  "exit_code": code})
        out.error(f"error: {text}")
        return code
