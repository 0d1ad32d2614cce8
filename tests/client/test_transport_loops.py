"""One client, two event loops (issue 11.11, the transport side).

A client used from a second ``asyncio.run`` is refused with ConfigurationError; the first
loop's aiohttp session and its kept-alive sockets must then go quietly: no "Unclosed
client session", no ResourceWarning when they are garbage-collected.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from viggle_async import ConfigurationError, ViggleClient

STATUS = {"job_id": "job_1", "status": "processing", "progress_pct": 40}


class _Status(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client keeps its socket open

    def do_GET(self) -> None:
        body = json.dumps(STATUS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    # A server outside any event loop: each asyncio.run below has its own.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _collect_leaks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Everything a dropped session or socket reported while being garbage-collected."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    return leaks + [r.getMessage() for r in caplog.records if "nclosed" in r.getMessage()]


def test_second_asyncio_run_is_refused_and_the_first_loops_session_goes_quietly(
        base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    box = [ViggleClient(base_url=base_url)]  # emptied below, so the client can be collected

    async def poll() -> str:
        return (await box[0].renders.get("job_1")).status

    assert asyncio.run(poll()) == "processing"  # leaves a kept-alive connection behind
    with pytest.raises(ConfigurationError, match="event loop"):
        asyncio.run(poll())
    box.clear()
    assert _collect_leaks(caplog) == []


def test_client_never_closed_leaks_nothing_when_its_loop_ends(
        base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")

    async def main() -> list[str]:
        client = ViggleClient(base_url=base_url)  # no async with, no aclose
        return [(await client.renders.get("job_1")).status for _ in range(3)]

    assert asyncio.run(main()) == ["processing"] * 3
    assert _collect_leaks(caplog) == []


def test_after_the_refusal_aclose_in_the_new_loop_makes_the_client_usable_there(
        base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    box = [ViggleClient(base_url=base_url)]  # emptied below, so the client can be collected

    async def poll() -> str:
        return (await box[0].renders.get("job_1")).status

    async def reopen_and_poll() -> str:
        with pytest.raises(ConfigurationError):
            await poll()
        await box[0].aclose()  # what the error message tells the user to do
        async with box[0]:
            return await poll()

    assert asyncio.run(poll()) == "processing"
    assert asyncio.run(reopen_and_poll()) == "processing"
    box.clear()
    assert _collect_leaks(caplog) == []
