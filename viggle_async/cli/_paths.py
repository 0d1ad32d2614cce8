"""Output paths checked before anything is sent or paid: a render whose file cannot be
written would be paid for and then lost."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["output_problem"]


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
