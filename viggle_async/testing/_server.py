"""FakeViggle: the fake API server and its CDN, on loopback, with what they observed."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections import Counter
from types import TracebackType
from typing import Any

import attrs
from aiohttp import web

from ._app import api_app
from ._cdn import cdn_app
from ._config import FakeSettings, Faults
from ._ledger import BalanceEntry
from ._observe import CreateRecord, Observations
from ._records import RenderJob
from ._render import status_body
from ._store import Store

__all__ = ["FakeViggle"]

# Graceful-shutdown wait for in-flight requests (a test may leave a download open).
_SHUTDOWN_TIMEOUT = 0.5


class FakeViggle:
    """A fake Viggle ``/api`` server on 127.0.0.1 and its CDN on ``localhost``.

    ``FakeViggle(time_scale=1000, faults=Faults(...))``: keyword arguments override
    :class:`FakeSettings` fields. Use ``async with``, or ``await start()`` / ``await close()``.
    ``settings`` and ``faults`` may be changed while it runs. Observations (request counts,
    creates, concurrency peaks, credit history, CDN auth headers) are in ``observations``,
    with shortcuts below.
    """

    def __init__(
        self,
        settings: FakeSettings | None = None,
        *,
        faults: Faults | None = None,
        port: int = 0,
        cdn_port: int = 0,
        **overrides: Any,
    ) -> None:
        self._settings = attrs.evolve(settings or FakeSettings(), **overrides)
        self._faults = faults or Faults()
        self._port, self._cdn_port = port, cdn_port
        self._store: Store | None = None
        self._runners: list[web.AppRunner] = []
        self._tmpdir: str | None = None
        self.base_url = ""
        self.cdn_base_url = ""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._store is not None:
            raise RuntimeError("FakeViggle is already running")
        self._tmpdir = tempfile.mkdtemp(prefix="viggle-fake-")
        store = Store(self._settings, self._faults, self._tmpdir)
        self._store = store
        try:
            api = api_app(store)
            api_runner = await self._serve(api, [("127.0.0.1", self._port)])
            port = _port_of(api_runner)
            self.base_url = f"http://127.0.0.1:{port}"
            # A different host name and port, so a client that leaks its Authorization
            # header to "the same origin" is caught (docs/api/client-rules.md#downloads).
            cdn_runner = await self._serve(cdn_app(api), [("127.0.0.1", self._cdn_port)])
            cdn_port = _port_of(cdn_runner)
            await _try_ipv6(cdn_runner, cdn_port)
            self.cdn_base_url = f"http://localhost:{cdn_port}"
            store.cdn_base = self.cdn_base_url
        except BaseException:
            await self.close()
            raise

    async def _serve(self, app: web.Application, binds: list[tuple[str, int]]) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        self._runners.append(runner)
        for host, port in binds:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        return runner

    async def close(self) -> None:
        """Stop both servers and delete the upload directory. Safe to call twice."""
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self._store = None

    async def __aenter__(self) -> FakeViggle:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- configuration ---------------------------------------------------------------------

    @property
    def settings(self) -> FakeSettings:
        """The live settings: change their fields, the next request sees them."""
        return self._settings

    @property
    def api_key(self) -> str:
        """The first configured key (default ``"sk-test-fake"``)."""
        return self.settings.default_api_key

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        """Replace every fault at once; random sources restart from ``faults.seed``."""
        self._faults = faults
        if self._store is not None:
            self._store.faults = faults
            self._store.reseed()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("FakeViggle is not running")
        return self._store

    # -- observations ----------------------------------------------------------------------

    @property
    def observations(self) -> Observations:
        return self.store.obs

    @property
    def request_counts(self) -> Counter[tuple[str, str]]:
        """(method, route template) -> count, e.g. ``("POST", "/api/render")``."""
        return self.store.obs.request_counts

    def count(self, method: str, route: str) -> int:
        return self.store.obs.request_counts[(method, route)]

    @property
    def creates(self) -> list[CreateRecord]:
        """Every create request, accepted or not, in arrival order."""
        return self.store.obs.creates

    @property
    def peak_concurrency(self) -> dict[tuple[str, str], int]:
        return self.store.obs.peak_concurrency

    @property
    def capacity_rejections(self) -> int:
        return self.store.obs.capacity_rejections

    @property
    def dropped_uploads(self) -> int:
        return self.store.obs.dropped_uploads

    @property
    def cdn_auth_headers(self) -> list[str]:
        return self.store.obs.cdn_auth_headers

    def balance(self, api_key: str | None = None) -> int:
        """Current balance of ``api_key`` (default: :attr:`api_key`)."""
        store = self.store
        store.settle()
        key = api_key or self.api_key
        store.account(key)
        return store.ledger.balance(key)

    def balance_history(self, api_key: str | None = None) -> list[BalanceEntry]:
        """Every balance change (start, render, character, refund, topup), oldest first."""
        store = self.store
        store.settle()
        history = store.ledger.history
        return history if api_key is None else [e for e in history if e.api_key == api_key]

    def top_up(self, credits: int, api_key: str | None = None) -> None:
        store = self.store
        key = api_key or self.api_key
        store.account(key)
        store.ledger.top_up(key, credits, store.iso_now())

    # -- inspection ------------------------------------------------------------------------

    def now(self) -> float:
        """Current simulated time in seconds since start."""
        return self.store.now()

    def job(self, job_id: str) -> RenderJob:
        return self.store.jobs[job_id]

    def render_status(self, job_id: str) -> dict[str, Any]:
        """The body ``GET /api/render/{job_id}`` would answer now (unwrapped)."""
        store = self.store
        return status_body(store, store.jobs[job_id])


def _port_of(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


async def _try_ipv6(runner: web.AppRunner, port: int) -> None:
    """Also serve the CDN on [::1] when possible: ``localhost`` may resolve there first."""
    if not socket.has_ipv6:
        return
    with contextlib.suppress(OSError):
        await web.TCPSite(runner, "::1", port).start()
