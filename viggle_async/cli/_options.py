"""Options several commands share, defined once."""

from __future__ import annotations

import argparse

from .._backoff import RetryPolicy
from ._common import DEFAULT_ASSET_POLL, DEFAULT_CAPACITY_BACKOFF, DEFAULT_POLICY, positive_float

__all__ = ["BACKOFF_HELP", "DEFAULT_ASSET_POLL", "DEFAULT_CAPACITY_BACKOFF", "DEFAULT_POLICY",
           "FAST_FALLBACK_HELP", "add_poll_interval"]


BACKOFF_HELP = ("wait between fast-capacity probes: full jitter from BASE seconds, doubling "
                "up to CAP (default {:g}:{:g}, the library's)".format(*DEFAULT_CAPACITY_BACKOFF))
FAST_FALLBACK_HELP = ("when a fast render gives up on fast capacity and goes standard: "
                      "attempts:N, seconds:S, both (attempts:5,seconds:300, the default) "
                      "or never")


def add_poll_interval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--poll-interval", type=positive_float, metavar="SECONDS",
                        help=f"first status poll after this long (default "
                             f"{DEFAULT_POLICY.first_delay:g}, the library's PollPolicy; "
                             "given, the whole policy and the asset polls scale with it)")


def add_output_options(parser: argparse.ArgumentParser, *, default: object,
                       uses_api: bool = True) -> None:
    """Options accepted before or after the command (``default=SUPPRESS`` on commands, so a
    command's parser does not overwrite what was given before it)."""
    same = default is argparse.SUPPRESS
    if uses_api:
        parser.add_argument("--base-url", default=default if same else None,
                            help="API base URL (default: $VIGGLE_BASE_URL or the real API)")
        parser.add_argument("--connect-timeout", type=positive_float,
                            default=default if same else None, metavar="SECONDS",
                            help="keep retrying an API that cannot be reached for up to "
                                 "this long, reads and creates alike (default: a first read "
                                 "gives up after the library's "
                                 f"{RetryPolicy().max_attempts} quick attempts, a few seconds; "
                                 f"a create after {RetryPolicy().connect_deadline:g} s, "
                                 "RetryPolicy.connect_deadline)")
    parser.add_argument("--json", action="store_true", default=default if same else False,
                        help="print JSON lines on stdout (one per event, then a summary)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        default=default if same else False,
                        help="print nothing but errors; the exit code tells")


def common_parent(*, uses_api: bool = True) -> argparse.ArgumentParser:
    """A parent parser with the options every command (or action) accepts."""
    parent = argparse.ArgumentParser(add_help=False)
    add_output_options(parent, default=argparse.SUPPRESS, uses_api=uses_api)
    return parent
