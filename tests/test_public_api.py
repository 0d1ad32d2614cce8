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


def test_manual_clock_moved_to_testing_with_a_deprecated_root_alias() -> None:
    # Issue 12.12: ManualClock is a test helper; the root name works for one release.
    import warnings

    from viggle_async.testing import ManualClock

    assert "ManualClock" not in viggle_async.__all__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        alias = viggle_async.ManualClock
    assert alias is ManualClock
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "viggle_async.testing.ManualClock" in str(caught[0].message)


def test_the_pure_core_imports_without_aiohttp_and_every_name_resolves() -> None:
    # Issue 12: the package loads lazily (PEP 562), so the pure core stays free of I/O
    # libraries; `from viggle_async import *` and every name in __all__ still work.
    import subprocess
    import sys

    code = ("import sys, viggle_async._protocol, viggle_async._endpoints, viggle_async; "
            "assert 'aiohttp' not in sys.modules, sorted(m for m in sys.modules if 'aio' in m); "
            "from viggle_async import *; import viggle_async as v; "
            "assert all(getattr(v, n) is not None for n in v.__all__); "
            "assert 'aiohttp' in sys.modules")
    run = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
