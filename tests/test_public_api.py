"""The public API is declared once, in ``viggle_async.__all__``."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import viggle_async


def test_all_is_sorted_and_unique() -> None:
    assert viggle_async.__all__ == sorted(set(viggle_async.__all__))


def test_every_exported_name_exists() -> None:
    missing = [n for n in viggle_async.__all__ if not hasattr(viggle_async, n)]
    assert missing == []


def test_no_public_submodules_beyond_testing() -> None:
    # Everything else is private: users import from the package root (``cli`` is the
    # command line's package, its one public name the script's ``main``; ``pg`` needs the
    # optional ``postgres`` extra, so it cannot be re-exported from the root).
    public = [m.name for m in pkgutil.iter_modules(viggle_async.__path__)
              if not m.name.startswith("_")]
    assert public == ["cli", "pg", "testing"]


def test_every_error_is_a_viggle_error() -> None:
    for name in viggle_async.__all__:
        obj = getattr(viggle_async, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, viggle_async.ViggleError), name


def test_only_transport_and_testing_import_aiohttp() -> None:
    # Layering (conventions): aiohttp stays behind one seam on the client side.
    offenders = []
    for mod in pkgutil.iter_modules(viggle_async.__path__):
        if mod.name in ("_transport", "testing", "_client"):
            continue
        module = importlib.import_module(f"viggle_async.{mod.name}")
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        if "import aiohttp" in source or "from aiohttp" in source:
            offenders.append(mod.name)
    assert offenders == []
