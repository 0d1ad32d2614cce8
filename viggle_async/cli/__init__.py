"""``viggle-async``: the command line (``pip install 'viggle-async[cli]'``).

The only part of the package that prints. Layout: ``_app`` parses arguments and maps
errors to exit codes; one module per command (``cmd_*.py``, its arguments beside its
handler); ``_progress`` is the output; ``_manifest*`` parse bulk manifests; ``_demo`` runs
the demo. This module imports none of them until ``main`` runs, so a missing ``rich`` (the
``[cli]`` extra) is one line naming the fix instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

#: What the command line needs beyond the library; all come with the ``[cli]`` extra.
_CLI_REQUIREMENTS = ("rich",)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``viggle-async`` command; returns the exit code (see ``--help``).

    Exit 2 with one line when the ``[cli]`` extra is not installed.
    """
    try:
        for name in _CLI_REQUIREMENTS:
            try:
                __import__(name)
            except ImportError:
                sys.stderr.write(
                    f"error: the viggle-async command needs the '{name}' package, which "
                    "comes with the cli extra: pip install 'viggle-async[cli]'\n")
                return 2
        from ._app import main as run
    except KeyboardInterrupt:
        # Ctrl-C while the command still loads (a busy machine takes a moment): nothing
        # was read or sent yet, so one line, not an import traceback.
        sys.stderr.write("interrupted while starting: nothing was sent\n")
        return 130
    return run(argv)
