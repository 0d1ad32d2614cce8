"""The fake server's state: settings, faults, records, credits and observations.

Pure apart from the temp directory path it carries; handlers reach it through the app.
"""

from __future__ import annotations

import heapq
import random
import uuid

from aiohttp import web

from ._clock import SimClock
from ._config import FakeSettings, Faults
from ._errors import ApiError, api_error
from ._ledger import Ledger
from ._observe import Observations
from ._records import Character, RenderJob, Scene

__all__ = ["STORE", "Store", "new_id"]


def new_id(prefix: str = "") -> str:
    """An opaque id; the docs show several shapes (docs/api/conventions.md#ids), clients must not
    parse them."""
    if not prefix:
        return str(uuid.uuid4())
    return f"{prefix}{uuid.uuid4().hex[:16]}"


class Store:
    """Everything the handlers share. Lifecycles are lazy; :meth:`settle` books refunds."""

    def __init__(self, settings: FakeSettings, faults: Faults, tmpdir: str) -> None:
        self.settings = settings
        self.clock = SimClock(settings)
        self.ledger = Ledger()
        self.obs = Observations()
        self.tmpdir = tmpdir
        self.cdn_base = ""
        self.jobs: dict[str, RenderJob] = {}
        self.characters: dict[str, Character] = {}
        self.scenes: dict[str, Scene] = {}
        # (simulated time, kind, id) of failures still to refund.
        self._pending_refunds: list[tuple[float, str, str]] = []
        # Token buckets: key -> (tokens, clock time of last refill).
        self.buckets: dict[str, tuple[float, float]] = {}
        # CDN object path -> (simulated time of its first request, requests, body tries).
        self.cdn_objects: dict[str, list[float]] = {}
        # job id -> status polls answered while complete (Faults.complete_without_cdn_url_n).
        self.complete_polls: dict[str, int] = {}
        # Key of the fake CDN's URL signatures (Faults.url_ttl_s); fixed, it is no secret.
        self.cdn_secret = b"viggle-fake-cdn-signing-key"
        self.faults = faults
        self.reseed()
        for key in settings.api_keys:
            self.account(key)

    def reseed(self) -> None:
        """Fresh random sources from ``faults.seed``: one per purpose, so they don't interact."""
        self.error_rng = random.Random(self.faults.seed)
        self.failure_rng = random.Random(self.faults.seed + 1)
        self.commit_rng = random.Random(self.faults.seed + 2)
        self.progress_rng = random.Random(self.faults.seed + 3)

    def now(self) -> float:
        return self.clock.now()

    def iso_now(self) -> str:
        return self.clock.iso(self.now())

    def account(self, key: str) -> None:
        self.ledger.open(key, self.settings.api_keys.get(key, 0), self.iso_now())

    def authenticate(self, request: web.Request) -> str:
        """The request's API key; 401 when missing or unknown
        (docs/api/conventions.md#authentication, docs/api/errors.md#error-codes)."""
        header = request.headers.get("Authorization")
        if not header:
            if self.settings.auth_error_style == "string":
                raise ApiError(401, "API key required. Use Authorization: Bearer sk-xxx")
            raise api_error("CS-UORC01-006")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or key not in self.settings.api_keys:
            raise api_error("CS-UORC01-007")
        self.account(key)
        return key

    def fails(self, rate: float) -> bool:
        return rate > 0 and self.failure_rng.random() < rate

    def fast_unavailable(self) -> bool:
        """Whether this fast submission meets no capacity (Faults.fast_unavailable*)."""
        f = self.faults
        if f.fast_unavailable:
            return True
        if f.fast_unavailable_next > 0:
            f.fast_unavailable_next -= 1
            return True
        return f.fast_unavailable_until is not None and (
            self.settings.clock() < f.fast_unavailable_until
        )

    def schedule_refund(self, at: float, kind: str, ident: str) -> None:
        heapq.heappush(self._pending_refunds, (at, kind, ident))

    def settle(self) -> None:
        """Refund every render and character that has failed by now (docs/api/credits.md#costs)."""
        now = self.now()
        heap = self._pending_refunds
        while heap and heap[0][0] <= now:
            at, kind, ident = heapq.heappop(heap)
            if kind == "render":
                job = self.jobs[ident]
                if not job.refunded:
                    job.refunded = True
                    self.ledger.refund(job.api_key, job.cost, ident, self.clock.iso(at))
            else:
                char = self.characters[ident]
                if not char.refunded:
                    char.refunded = True
                    self.ledger.refund(char.api_key, 1, ident, self.clock.iso(at))

    def cancel(self, job: RenderJob) -> None:
        now = self.now()
        job.cancelled_at = now
        if not job.refunded:
            job.refunded = True
            self.ledger.refund(job.api_key, job.cost, job.job_id, self.clock.iso(now))

    def character_of(self, key: str, ident: str) -> Character | None:
        char = self.characters.get(ident)
        if char is None or char.deleted or char.api_key != key:
            return None
        return char

    def scene_of(self, key: str, ident: str) -> Scene | None:
        scene = self.scenes.get(ident)
        if scene is None or scene.deleted or scene.api_key != key:
            return None
        return scene


STORE = web.AppKey("viggle_fake_store", Store)
