"""Suite-wide guards."""

from __future__ import annotations

import aiohttp
import pytest

_AIOHTTP = tuple(int(p) for p in aiohttp.__version__.split(".")[:2])


@pytest.hookimpl(trylast=True)  # after -m has deselected what it will
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # aioresponses 0.7.9 fails every request on aiohttp >= 3.14. Never skip those tests
    # silently: on such an aiohttp they must be deselected explicitly with
    # -m "not aioresponses" (as .ci/run does), otherwise the run stops here.
    if _AIOHTTP < (3, 14):
        return
    marked = [item.nodeid for item in items if item.get_closest_marker("aioresponses")]
    if marked:
        raise pytest.UsageError(
            f"aiohttp {aiohttp.__version__} cannot run the {len(marked)} aioresponses tests; "
            'run them on aiohttp 3.13 (pip install -c ci/constraints-all-tests.txt) or pass '
            '-m "not aioresponses"')
