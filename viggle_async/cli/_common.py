"""Shared by the CLI commands: the run context, usage errors, option parsers."""

from __future__ import annotations

import argparse
import inspect
import os
import re
from collections.abc import Callable
from typing import Any

import anyio
import attrs

from .. import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    InvalidInputError,
    ViggleError,
)
from .._backoff import RetryPolicy
from .._client import ViggleClient
from .._scheduler import DEFAULT_POLICY, PollPolicy
from .._supervisor import FastFallbackPolicy, Supervisor
from ._progress import EventView, Output, RunStats, credits_text, number, plural

__all__ = ["DEFAULT_ASSET_POLL", "DEFAULT_CAPACITY_BACKOFF", "DEFAULT_POLICY", "DEFAULT_POLL_RATE",
           "EXIT_CODES_HELP", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_TERMINATED",
           "EXIT_USAGE",
           "CliError", "Command", "Ctx", "asset_credits", "credits_text", "exit_code_for",
           "is_interrupt", "number", "parse_backoff", "parse_fast_fallback", "plural",
           "positive_float", "positive_int"]


def _supervisor_default(name: str) -> Any:
    return inspect.signature(Supervisor.__init__).parameters[name].default

# The library's benchmarked defaults, read from it (never restated here), so the CLI and a
# plain ``Supervisor(client)`` poll and back off alike (``DEFAULT_POLICY``, predictive, is
# the scheduler's).
DEFAULT_CAPACITY_BACKOFF: tuple[float, float] = _supervisor_default("capacity_backoff")
DEFAULT_ASSET_POLL: float = _supervisor_default("asset_poll_interval")
DEFAULT_POLL_RATE: float = _supervisor_default("poll_rate")

EXIT_OK = 0          # everything done (complete or skipped)
EXIT_FAILED = 1      # some work failed, timed out, was not submitted, or is ambiguous
EXIT_USAGE = 2       # nothing ran: usage, input, API key, configuration, API unreachable
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), the shell convention
EXIT_TERMINATED = 143   # SIGTERM (128 + 15): stopped like Ctrl-C, told apart by the code

EXIT_CODES_HELP = """\
exit codes:
  0    all done (for bulk: every row complete, or finished in an earlier run)
  1    some work failed, timed out, was not submitted, or is ambiguous
  2    nothing ran: usage error, bad input or manifest, missing or rejected API key,
       configuration error, or the API cannot be reached
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM), handled like Ctrl-C
"""


def exit_code_for(error: BaseException) -> int | None:
    """The one mapping from an error to the process's exit code (``EXIT_CODES_HELP``);
    None for an error the CLI does not expect (a bug: let it raise)."""
    if isinstance(error, CliError):
        return error.code
    # Found before anything was sent, or nothing could be sent: "nothing ran".
    if isinstance(error, (ConfigurationError, InvalidInputError, AuthenticationError,
                          ConnectError)):
        return EXIT_USAGE
    if isinstance(error, ViggleError):
        return EXIT_FAILED
    return None


def asset_credits(kind: str) -> int:
    """Credits a character or scene costs to create (docs/api/credits.md#costs): a character 1 (the
    docs contradict themselves; ``credits_used: 1`` on the character settles it), an
    uploaded or imported scene 0."""
    return 1 if kind == "character" else 0


# Library argument -> command-line flag, for messages the library words for Python
# callers (``fast=True``, ``background_mode='solid'``). Only these names are translated.
FLAGS = {name: "--" + name.replace("_", "-") for name in (
    "ref_image", "ref_image_url", "driving_video", "driving_video_url", "character_id",
    "scene_id", "character_mapping", "model", "background_mode", "bg_color", "fast",
    "image", "image_url", "video", "video_url", "name", "output", "mask_output",
    "base_url", "estimated_seconds")} | {"connect_deadline": "--connect-timeout"}
_NAMES = "|".join(sorted(FLAGS, key=len, reverse=True))
_PY_VALUE = re.compile(rf"\b({_NAMES})=(True|False|'[^']*'|\"[^\"]*\"|[\w.]+)")
# Bare names only when they cannot be ordinary words ("image", "name" can).
_UNDERSCORED = "|".join(sorted((n for n in FLAGS if "_" in n), key=len, reverse=True))
_BARE = re.compile(rf"(?<![\w.'-])({_UNDERSCORED})(?![\w'])")


def cli_words(text: str) -> str:
    """A library message in command-line words: ``fast=True`` -> ``--fast``,
    ``background_mode='solid'`` -> ``--background-mode solid``, ``bg_color`` ->
    ``--bg-color``, "a 3-tuple of ints" dropped (the CLI takes R,G,B only)."""
    def value(m: re.Match[str]) -> str:
        flag, raw = FLAGS[m.group(1)], m.group(2)
        if raw == "True":
            return flag
        if raw == "False":
            return f"no {flag}"
        return f"{flag} {raw.strip(chr(39)).strip(chr(34))}"

    text = _PY_VALUE.sub(value, text)
    if isinstance(text, str) and text.startswith(tuple(f"{n}: " for n in FLAGS)):
        field, _, rest = text.partition(": ")
        text = f"{FLAGS[field]}: {rest}"
    text = _BARE.sub(lambda m: FLAGS[m.group(1)], text)
    text = text.replace(", or a 3-tuple of ints", "")
    text = text.replace("pass allow_insecure_http=True if you really mean it",
                        "use https, or a loopback address (127.0.0.1, localhost)")
    return text


class CliError(Exception):
    """A problem to report in one line, with the exit code to return."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


@attrs.frozen
class Command:
    """One ``viggle-async`` command: its arguments (``configure``) beside its handler.

    ``run`` returns the exit code (or a coroutine that does); ``uses_api``: False for
    commands that never talk to the real API (no ``--base-url`` for them)."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Ctx], Any]
    description: str | None = None
    uses_api: bool = True
    epilog: str = ""
    #: The "exit codes:" help for a command whose codes are not the shared table's.
    exit_codes: str = EXIT_CODES_HELP


@attrs.define
class Ctx:
    """One command run: parsed arguments, the output, and the run's counters."""

    args: argparse.Namespace
    out: Output
    stats: RunStats = attrs.field(factory=RunStats)
    #: The command line as given (without the program name), to print resume commands.
    argv: tuple[str, ...] = ()
    #: The exit code if the run is stopped: 130 (Ctrl-C), or 143 once SIGTERM arrived.
    interrupt_code: int = EXIT_INTERRUPTED
    #: Set once a command has said what a stop left behind (no bare "interrupted" then).
    explained_stop: bool = False

    @property
    def stop_word(self) -> str:
        """What stopped the run, as the closing line says it: Ctrl-C or SIGTERM."""
        return "terminated (SIGTERM)" if self.interrupt_code == EXIT_TERMINATED else "interrupted"

    def require_key(self) -> None:
        """Refuse before sending anything when the command needs a key and none is set."""
        if not os.environ.get("VIGGLE_API_KEY"):
            raise CliError("VIGGLE_API_KEY is not set: export your API key (created at "
                           "https://portal.viggle.ai/api-keys) and try again")

    def client(self, view: EventView | None = None, *,
               segments_cache: bool = True) -> ViggleClient:
        """A client on $VIGGLE_API_KEY and --base-url / $VIGGLE_BASE_URL (with
        --connect-timeout); ``segments_cache=False`` keeps no template segments on disk."""
        on_retry = view.on_retry if view is not None else None
        connect = getattr(self.args, "connect_timeout", None)
        retry = RetryPolicy() if connect is None else RetryPolicy(connect_deadline=connect)
        return ViggleClient(base_url=getattr(self.args, "base_url", None), on_retry=on_retry,
                            retry=retry, segments_cache=segments_cache)

    @property
    def poll_interval(self) -> float:
        """Seconds to the first status poll: ``--poll-interval``, else the library's."""
        value: float | None = getattr(self.args, "poll_interval", None)
        return DEFAULT_POLICY.first_delay if value is None else value

    @property
    def asset_poll_interval(self) -> float:
        """Seconds between asset polls: the Supervisor's default, scaled like the rest."""
        return DEFAULT_ASSET_POLL * self._poll_scale

    def poll_policy(self) -> PollPolicy:
        """The library's ``PollPolicy()``; with ``--poll-interval``, the same shape scaled
        so its first poll comes after that many seconds."""
        scale = self._poll_scale
        if scale == 1.0:
            return DEFAULT_POLICY
        return attrs.evolve(DEFAULT_POLICY, first_delay=self.poll_interval,
                            min_interval=DEFAULT_POLICY.min_interval * scale,
                            max_interval=DEFAULT_POLICY.max_interval * scale)

    @property
    def _poll_scale(self) -> float:
        return self.poll_interval / DEFAULT_POLICY.first_delay


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C or SIGTERM (a cancellation), possibly inside task-group wrappers; not an
    error."""
    if isinstance(exc, BaseExceptionGroup):
        return any(is_interrupt(e) for e in exc.exceptions)
    return isinstance(exc, (KeyboardInterrupt, anyio.get_cancelled_exc_class()))


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def parse_backoff(text: str) -> tuple[float, float]:
    """``BASE:CAP`` seconds, e.g. ``2:60``."""
    base, sep, cap = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not BASE:CAP, e.g. 2:60")
    low, high = positive_float(base), positive_float(cap)
    if low > high:
        raise argparse.ArgumentTypeError(f"{text!r}: BASE must not exceed CAP")
    return low, high


def parse_fast_fallback(text: str) -> FastFallbackPolicy:
    """``attempts:N``, ``seconds:S``, both comma-separated, or ``never``."""
    if text.strip() == "never":
        return FastFallbackPolicy(after_attempts=None, after_seconds=None)
    fields: dict[str, Any] = {"after_attempts": None, "after_seconds": None}
    for part in text.split(","):
        name, _, value = part.strip().partition(":")
        try:
            if name == "attempts":
                fields["after_attempts"] = positive_int(value)
                continue
            if name == "seconds":
                fields["after_seconds"] = positive_float(value)
                continue
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{part.strip()!r}: {exc}") from None
        raise argparse.ArgumentTypeError(
            f"{part.strip()!r} is not attempts:N, seconds:S or never")
    return FastFallbackPolicy(**fields)

