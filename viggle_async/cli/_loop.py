"""Which event loop the command line runs on: ``VIGGLE_ASYNC_LOOP`` (``auto``, the default:
uvloop when it is installed, the ``[uvloop]`` extra; ``asyncio``; ``uvloop``).

Only the command line picks a loop; the library runs on whatever loop its caller runs
(library users who want uvloop call ``uvloop.run(main())`` themselves).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from ._common import CliError

__all__ = ["LOOP_ENV", "LOOP_HELP", "loop_factory", "run"]

LOOP_ENV = "VIGGLE_ASYNC_LOOP"
_CHOICES = ("auto", "asyncio", "uvloop")
LOOP_HELP = (f"  {LOOP_ENV:<17} the event loop: auto (uvloop when installed, the default), "
             "asyncio or uvloop\n")

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(environ: Mapping[str, str] = os.environ) -> LoopFactory | None:
    """The event loop factory ``VIGGLE_ASYNC_LOOP`` asks for; None means asyncio's own loop.

    Raises CliError (exit 2) when the variable holds anything but auto, asyncio or uvloop,
    or asks for uvloop where it is not installed.
    """
    raw = environ.get(LOOP_ENV, "")
    choice = raw.strip().lower() or "auto"
    if choice not in _CHOICES:
        raise CliError(f"{LOOP_ENV}={raw!r} is not a known event loop; use "
                       "auto, asyncio or uvloop")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise CliError(f"{LOOP_ENV}=uvloop but uvloop is not installed: "
                           "pip install 'viggle-async[uvloop]'") from None
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], factory: LoopFactory | None) -> T:
    """``main`` to completion on a new loop from ``factory`` (asyncio's when None).

    asyncio.Runner on both loops, so Ctrl-C is handled the same way on each: the main task
    is cancelled, and KeyboardInterrupt is raised once it has unwound.
    """
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
