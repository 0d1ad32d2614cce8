"""Suite-wide guards."""

from __future__ import annotations

import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from viggle_async import ViggleClient
from viggle_async.testing import ManualClock

# A suite started in the background of a non-interactive shell (`cmd &` in a script) inherits
# SIGINT ignored, and so would every CLI process the tests start: their Ctrl-C tests would
# then send a signal nobody hears. A handler (unlike "ignored") is reset to the default in a
# child, so the CLI processes get Python's own Ctrl-C again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


@pytest.fixture(autouse=True)
def _private_cache_home(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Clients keep template segments under $XDG_CACHE_HOME by default: never the
    # developer's own ~/.cache from a test.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def clock() -> ManualClock:
    """Manual time shared by a test's client and fake (``clock.autojump()`` skips waits)."""
    return ManualClock()


@pytest.fixture
async def client(fake: Any, clock: ManualClock) -> AsyncIterator[ViggleClient]:
    """A client on the requesting folder's ``fake`` server and the shared manual clock."""
    async with ViggleClient(fake.api_key, base_url=fake.base_url, clock=clock) as c:
        yield c


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
