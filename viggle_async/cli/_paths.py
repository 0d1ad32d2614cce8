"""Output paths checked before anything is sent or paid: a render whose file cannot be
written would be paid for and then lost."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ._common import CliError

__all__ = ["option_path_problem", "output_problem", "require_writable"]


def output_problem(path: Path) -> tuple[str, str] | None:
    """``(problem, fix)`` when a file cannot be saved at ``path``, else None. Creates
    nothing that stays: the nearest existing folder is probed with a temporary folder,
    because permission bits alone do not tell (root, read-only mounts, ``/proc``)."""
    if path.is_dir():
        return f"{str(path)!r} is a folder", "name the file to write, e.g. out/clip.mp4"
    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return (f"cannot create the folder {str(folder)!r}: {str(existing)!r} is a file",
                "choose a path inside a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".viggle-probe-", dir=existing))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        what = "write to" if existing == folder else "create"
        return (f"cannot {what} the folder {str(folder)!r} ({reason})",
                "choose a folder you can write to")
    return None


def option_path_problem(flag: str, path: Path, fix: str) -> str | None:
    """One line for a ``flag`` whose file cannot be written at ``path`` (``output_problem``),
    ending in ``Fix: {fix}``; None when it can. Asked before anything is sent, so a report
    or journal that cannot be written never fails a run after it has paid."""
    problem = output_problem(path)
    return None if problem is None else f"{flag}: {problem[0]}. Fix: {fix}"


def require_writable(*options: tuple[str, Path | None], after: str = "") -> None:
    """Refuse (``CliError``, exit 2) the first ``(flag, path)`` whose file cannot be saved,
    naming the flag and the fix (then ``after``); a None path is not asked for. Called
    before the command sends anything: an output found unwritable after a wait or a paid
    render would be lost."""
    for flag, path in options:
        problem = output_problem(path) if path is not None else None
        if problem is not None:
            raise CliError(f"{flag}: {problem[0]}. Fix: {problem[1]}{after}")
