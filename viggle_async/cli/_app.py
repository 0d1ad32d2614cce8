"""``viggle-async``: the command line (``pip install 'viggle-async[cli]'``).

Argument parsing, the exit codes, and turning errors into one clear line. The commands
live in ``_cli_commands`` and ``_cli_bulk``; all printing goes through ``_cli_progress``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

from .. import ConfigurationError, InvalidInputError, ViggleError, __version__
from ._bulk import cmd_bulk
from ._commands import COMMANDS
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    Ctx,
    parse_backoff,
    parse_fast_fallback,
    positive_float,
    positive_int,
)
from ._progress import Mode, Output

__all__ = ["build_parser", "main"]

EPILOG = """\
environment:
  VIGGLE_API_KEY    your API key (never printed; there is deliberately no --api-key
                    option, so the key stays out of shell history and process lists)
  VIGGLE_BASE_URL   the API's base URL (default https://apis.viggle.ai); --base-url wins

exit codes:
  0    all done (every row complete, or skipped as finished in an earlier run)
  1    some work failed, was not submitted, or is ambiguous (see the report)
  2    nothing ran: usage error, bad manifest, missing API key, configuration error
  130  interrupted (Ctrl-C)

Try it without a key: viggle-async demo
"""

BULK_DESCRIPTION = """\
Render a CSV or JSON-lines manifest: one row per render, character or scene.

columns: key (unique, required), kind (render | character | scene; default render),
  the API's field names (ref_image, ref_image_url, driving_video, driving_video_url,
  character_id, scene_id, character_mapping, model, background_mode, bg_color, fast;
  name, image, image_url for characters; name, video, video_url or template_id for
  scenes), output, mask_output and estimated_seconds (prices URL and scene renders).
A render's character_id / scene_id (or a character_mapping value) that is the key of a
character / scene row uses the asset that row creates; write @key to insist on a key.
Relative paths resolve against the manifest's folder. Every row is checked before
anything is sent; problems are listed as FILE:LINE: row N, FIELD: problem. Fix: ...
"""
BACKOFF_HELP = ("wait between fast-capacity probes: full jitter from BASE seconds, doubling "
                "up to CAP (default 2:60)")
FAST_FALLBACK_HELP = ("when a fast render gives up on fast capacity and goes standard: "
                      "attempts:N, seconds:S, both (attempts:5,seconds:300, the default) "
                      "or never")


def _common(parser: argparse.ArgumentParser, *, default: Any) -> None:
    """Options accepted before or after the command (``default=SUPPRESS`` on commands, so a
    command's parser does not overwrite what was given before it)."""
    same = default is argparse.SUPPRESS
    parser.add_argument("--base-url", default=default if same else None,
                        help="API base URL (default: $VIGGLE_BASE_URL or the real API)")
    parser.add_argument("--json", action="store_true", default=default if same else False,
                        help="print JSON lines on stdout (one per event, then a summary)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        default=default if same else False,
                        help="print nothing but errors; the exit code tells")


def _poll(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poll-interval", type=positive_float, default=3.0, metavar="SECONDS",
                        help="first status poll after this long (default 3, the documented "
                             "interval; assets poll at 5/3 of it)")


def _render_inputs(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to render (on-demand: image + video; preprocessed: "
                             "--character-id + --scene-id; multi-person: --scene-id + "
                             "--character-mapping)")
    g.add_argument("--ref-image", metavar="PATH", help="character image (PNG/JPG)")
    g.add_argument("--ref-image-url", metavar="URL")
    g.add_argument("--driving-video", metavar="PATH", help="driving video (MP4/MOV)")
    g.add_argument("--driving-video-url", metavar="URL")
    g.add_argument("--character-id")
    g.add_argument("--scene-id")
    g.add_argument("--character-mapping", metavar="JSON",
                   help='segment uuid -> character id, e.g. \'{"person_a1": "char_x"}\'')
    o = p.add_argument_group("options")
    o.add_argument("--model", help="V4_Preview (default) or V3_Preview; not with a scene")
    o.add_argument("--background-mode", help="original, solid, transparent")
    o.add_argument("--bg-color", metavar="R,G,B", help="with --background-mode solid")
    o.add_argument("--fast", action="store_true", help="twice the speed for twice the credits")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="viggle-async", formatter_class=fmt, epilog=EPILOG,
        description="Render with the Viggle avatar API: one clip, a bulk manifest, jobs, "
                    "characters, scenes and credits.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser, default=None)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common],
                              formatter_class=fmt, epilog=EPILOG, **kw)

    p = command("render", "render one clip, wait for it and download it")
    _render_inputs(p)
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="where to save it")
    p.add_argument("--mask-output", metavar="PATH", help="the mask (transparent mode)")
    p.add_argument("--fast-fallback", type=parse_fast_fallback, default="attempts:5,seconds:300",
                   metavar="SPEC", help=FAST_FALLBACK_HELP)
    p.add_argument("--capacity-backoff", type=parse_backoff, default="2:60",
                   metavar="BASE:CAP", help=BACKOFF_HELP)
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                   help="give up waiting after this long (the job goes on)")
    p.add_argument("--cancel-remote", action="store_true",
                   help="on Ctrl-C, cancel the job on the server (refunded)")
    _poll(p)

    p = command("status", "show a render job's status (needs no API key)")
    p.add_argument("job_id", metavar="JOB")
    p = command("wait", "wait for a render job to finish; download it with -o")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("-o", "--output", metavar="PATH")
    p.add_argument("--mask-output", metavar="PATH")
    p.add_argument("--timeout", type=positive_float, metavar="SECONDS")
    _poll(p)
    p = command("cancel", "cancel a running render job (the API refunds it)")
    p.add_argument("job_id", metavar="JOB")
    p = command("download", "download a finished job's output (or any output URL)")
    p.add_argument("target", metavar="JOB|URL")
    p.add_argument("dest", metavar="DEST")
    p.add_argument("--mask", action="store_true", help="the job's mask output instead")

    for kind in ("characters", "scenes"):
        group = command(kind, f"create, get, list or delete {kind}")
        actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

        def action(name: str, help: str, actions: Any = actions) -> argparse.ArgumentParser:
            parser: argparse.ArgumentParser = actions.add_parser(
                name, help=help, description=help, parents=[common])
            return parser

        create = action("create", f"create a {kind[:-1]} and wait until it is ready")
        create.add_argument("--name", required=True)
        src = create.add_mutually_exclusive_group(required=True)
        if kind == "characters":
            src.add_argument("--image", metavar="PATH", help="PNG/JPG/WebP (1 credit)")
            src.add_argument("--image-url", metavar="URL")
        else:
            src.add_argument("--video", metavar="PATH", help="MP4/MOV/WebM (free)")
            src.add_argument("--video-url", metavar="URL")
            create.add_argument("--background-mode")
            create.add_argument("--model")
        waiters = [create]
        if kind == "scenes":
            imp = action("import", "import a viggle.ai template as a scene")
            imp.add_argument("template_id", metavar="TEMPLATE_ID")
            imp.add_argument("--name")
            waiters.append(imp)
        for w in waiters:
            w.add_argument("--no-wait", action="store_true", help="return once created")
            _poll(w)
        action("get", f"show one {kind[:-1]}").add_argument("id", metavar="ID")
        lister = action("list", f"list {kind} (one page, or --all)")
        lister.add_argument("--limit", type=positive_int, default=100, help="1-100")
        lister.add_argument("--offset", type=int, default=0)
        lister.add_argument("--all", action="store_true", help="every page")
        action("delete", f"delete a {kind[:-1]}").add_argument("id", metavar="ID")

    command("credits", "show the account's credit balance")

    p = command("bulk", "render a CSV/JSONL manifest of renders, characters and scenes")
    p.description = BULK_DESCRIPTION
    p.add_argument("manifest", metavar="MANIFEST", help="a .csv or .jsonl file (see README)")
    p.add_argument("--dry-run", action="store_true",
                   help="check every row and total the estimated credits; send nothing")
    p.add_argument("--journal", metavar="PATH",
                   help="SQLite journal: a rerun skips finished rows and resumes jobs")
    p.add_argument("--report", metavar="PATH", help="write one outcome per row as JSON")
    p.add_argument("--budget", type=positive_float, metavar="CREDITS",
                   help="submit nothing past this many credits")
    p.add_argument("--fast-fallback", type=parse_fast_fallback, default="attempts:5,seconds:300",
                   metavar="SPEC", help=FAST_FALLBACK_HELP)
    p.add_argument("--capacity-backoff", type=parse_backoff, default="2:60",
                   metavar="BASE:CAP", help=BACKOFF_HELP)
    p.add_argument("--resubmit-ambiguous", action="store_true",
                   help="resubmit creates an earlier run sent without an answer (may pay "
                        "twice)")
    p.add_argument("--cancel-remote", action="store_true",
                   help="on Ctrl-C, cancel running jobs on the server (refunded)")
    p.add_argument("--max-uploads", type=positive_int, default=4, metavar="N",
                   help="creates (uploads) in flight at once (default 4)")
    p.add_argument("--max-polls", type=positive_int, default=8, metavar="N",
                   help="status requests in flight at once (default 8)")
    p.add_argument("--max-active-jobs", type=positive_int, default=100, metavar="N",
                   help="rows being worked on at once, submitted or uploading (default 100)")
    p.add_argument("--poll-rate", type=positive_float, default=20.0, metavar="N",
                   help="at most N status polls started per second, for all jobs (default 20)")
    _poll(p)

    p = command("fake-server", "run the fake Viggle API on loopback for local development")
    p.add_argument("--port", type=int, default=0, help="API port (0: any free port)")
    p.add_argument("--cdn-port", type=int, default=0)
    p.add_argument("--time-scale", type=positive_float, default=1.0,
                   help="simulated seconds per real second (e.g. 50: renders finish fast)")
    p.add_argument("--balance", type=int, default=10_000, help="starting credits")
    p.add_argument("--output-bytes", type=positive_int, help="size of every output file")

    p = command("demo", "bulk-render ~20 sample clips on an embedded fake server (no key)")
    p.add_argument("--out", default="viggle-demo", metavar="DIR", help="default ./viggle-demo")
    return parser


def _handler(args: argparse.Namespace) -> Any:
    return cmd_bulk if args.command == "bulk" else COMMANDS[args.command]


def _leaf(exc: BaseException) -> BaseException:
    """The error inside task-group wrappers (a group of one is the usual case)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        viggle = [e for e in exc.exceptions if isinstance(_leaf(e), (ViggleError, CliError))]
        exc = viggle[0] if viggle else exc.exceptions[0]
    return exc


def _interrupted(out: Output) -> int:
    out.json({"event": "interrupted", "exit_code": EXIT_INTERRUPTED})
    out.error("interrupted")
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (documented in ``--help``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    mode: Mode = "json" if args.json else "quiet" if args.quiet else "human"
    out = Output(mode, stdout=sys.stdout, stderr=sys.stderr,
                 secrets=[os.environ.get("VIGGLE_API_KEY")])
    if args.json and args.quiet:
        out.error("error: --json and --quiet cannot be combined")
        return EXIT_USAGE
    ctx = Ctx(args, out)
    try:
        result = _handler(args)(ctx)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except KeyboardInterrupt:
        return _interrupted(out)
    except BaseException as raised:
        error = _leaf(raised)
        if isinstance(error, KeyboardInterrupt):
            return _interrupted(out)
        if isinstance(error, CliError):
            code = error.code
        elif isinstance(error, (ConfigurationError, InvalidInputError)):
            code = EXIT_USAGE  # found before anything was sent
        elif isinstance(error, ViggleError):
            code = EXIT_FAILED
        else:
            raise
        out.json({"event": "error", "error": str(error), "type": type(error).__name__,
                  "exit_code": code})
        out.error(f"error: {error}")
        return code
