"""Shared by the CLI commands: the run context, usage errors, option parsers."""

from __future__ import annotations

import argparse
import os
from typing import Any

import attrs

from .._client import ViggleClient
from .._scheduler import PollPolicy
from .._supervisor import FastFallbackPolicy
from ._progress import EventView, Output, RunStats

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CliError", "Ctx",
           "parse_backoff", "parse_fast_fallback",
           "positive_float", "positive_int"]

EXIT_OK = 0          # everything done (complete or skipped)
EXIT_FAILED = 1      # some work failed, was not submitted, or is ambiguous
EXIT_USAGE = 2       # nothing ran: usage, manifest, API key or configuration error
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), the shell convention


class CliError(Exception):
    """A problem to report in one line, with the exit code to return."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


@attrs.define
class Ctx:
    """One command run: parsed arguments, the output, and the run's counters."""

    args: argparse.Namespace
    out: Output
    stats: RunStats = attrs.field(factory=RunStats)

    def require_key(self) -> None:
        """Refuse before sending anything when the command needs a key and none is set."""
        if not os.environ.get("VIGGLE_API_KEY"):
            raise CliError("VIGGLE_API_KEY is not set: export your API key (created at "
                           "https://portal.viggle.ai/api-keys) and try again")

    def client(self, view: EventView | None = None) -> ViggleClient:
        """A client on $VIGGLE_API_KEY and --base-url / $VIGGLE_BASE_URL."""
        on_retry = view.on_retry if view is not None else None
        return ViggleClient(base_url=self.args.base_url, on_retry=on_retry)

    @property
    def poll_interval(self) -> float:
        value: float = getattr(self.args, "poll_interval", 3.0)
        return value

    @property
    def asset_poll_interval(self) -> float:
        # §4: renders every 3 s, characters and scenes every 5 s: keep that ratio.
        return self.poll_interval * 5.0 / 3.0

    def poll_policy(self) -> PollPolicy:
        """The scheduler's default shape (3 s first, 1-20 s), scaled to --poll-interval."""
        p = self.poll_interval
        return PollPolicy(first_delay=p, min_interval=p / 3.0, max_interval=p * 20.0 / 3.0)


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
