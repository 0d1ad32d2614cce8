"""What the fake server saw, kept as plain attributes for tests to assert on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = ["CdnRequest", "CreateRecord", "FilePart", "Observations"]


@attrs.frozen
class FilePart:
    """One uploaded file part as it arrived.

    ``transfer`` is how the whole request body was framed: "content-length" or "chunked".
    ``size`` counts the bytes read (less than the file when the upload was cut short);
    ``sha256`` is the hex digest of exactly those bytes, so a test can prove which bytes
    were sent and how many times.
    """

    name: str
    filename: str | None
    size: int
    content_type: str | None
    transfer: Literal["content-length", "chunked"]
    sha256: str = ""


@attrs.frozen
class CdnRequest:
    """One request the CDN received, as it arrived.

    ``raw_path`` is the path *and query* exactly as sent on the request line (no decoding),
    so a test can check a signed URL was passed through untouched. ``headers`` holds the
    ``Range``, ``If-Range`` and ``Authorization`` values that were present; ``status`` the
    status answered.
    """

    method: str
    raw_path: str
    headers: dict[str, str]
    status: int


@attrs.define
class CreateRecord:
    """One create request (render, character, scene or import), accepted or not.

    ``status`` is the HTTP status the server decided (0 when the connection was dropped);
    ``result_id`` the job, character or scene id created. When a fault replaced a committed
    answer (``Faults.create_fail_after_commit``), ``answered_status`` and ``answer_fault``
    say what the client got instead: the job still exists and was charged.
    """

    kind: Literal["render", "character", "scene", "import"]
    api_key: str | None
    fields: dict[str, str]
    files: list[FilePart]
    transfer: Literal["content-length", "chunked"]
    status: int = 0
    result_id: str | None = None
    error_code: str | None = None
    answered_status: int | None = None
    answer_fault: str | None = None


@attrs.define
class Observations:
    """Counters and logs; ``reset()`` clears them all."""

    #: (method, route template) -> requests received, e.g. ("GET", "/api/render/{job_id}").
    request_counts: Counter[tuple[str, str]] = attrs.field(factory=Counter)
    #: (method, route template) -> the most requests in flight at once.
    peak_concurrency: dict[tuple[str, str], int] = attrs.field(factory=dict)
    creates: list[CreateRecord] = attrs.field(factory=list)
    #: Fast submissions answered CS-UORC01-001.
    capacity_rejections: int = 0
    #: Create requests whose connection was aborted mid-upload (Faults.drop_uploads).
    dropped_uploads: int = 0
    #: Requests answered 429 / injected 5xx.
    rate_limited: int = 0
    injected_errors: int = 0
    # : Every Authorization header value the CDN received (a client must send none,
    # docs/api/client-rules.md#downloads).
    cdn_auth_headers: list[str] = attrs.field(factory=list)
    #: CDN downloads started / cut short by Faults.truncate_downloads.
    cdn_downloads: int = 0
    truncated_downloads: int = 0
    #: Every CDN request in arrival order (method, raw path and query, status).
    cdn_requests: list[CdnRequest] = attrs.field(factory=list)
    #: CDN bodies cut off by Faults.cdn_drop_first_n; CDN answers failed on purpose.
    cdn_dropped: int = 0
    cdn_failed: int = 0
    #: CDN bodies the client stopped reading before their end (it closed the connection).
    cdn_client_closed: int = 0
    #: Creates committed but answered with a fault (Faults.create_fail_after_commit*).
    failed_after_commit: int = 0
    #: Status polls answered with Faults.status_error_next.
    status_errors: int = 0
    _in_flight: Counter[tuple[str, str]] = attrs.field(factory=Counter)

    def enter(self, route: tuple[str, str]) -> None:
        self.request_counts[route] += 1
        self._in_flight[route] += 1
        current = self._in_flight[route]
        if current > self.peak_concurrency.get(route, 0):
            self.peak_concurrency[route] = current

    def leave(self, route: tuple[str, str]) -> None:
        self._in_flight[route] -= 1

    def snapshot(self) -> dict[str, Any]:
        """Everything above as plain JSON data (served at ``GET /__fake__/stats``), for
        tests and benchmarks that run the fake server in another process."""
        def routes(counts: Mapping[tuple[str, str], int]) -> dict[str, int]:
            return {f"{m} {r}": n for (m, r), n in sorted(counts.items())}

        return {
            "request_counts": routes(self.request_counts),
            "peak_concurrency": routes(self.peak_concurrency),
            "creates": [
                {"kind": c.kind, "status": c.status, "result_id": c.result_id,
                 "error_code": c.error_code, "fields": dict(c.fields),
                 "answered_status": c.answered_status, "answer_fault": c.answer_fault,
                 "files": [{"name": f.name, "size": f.size, "sha256": f.sha256}
                           for f in c.files]}
                for c in self.creates
            ],
            "capacity_rejections": self.capacity_rejections,
            "dropped_uploads": self.dropped_uploads,
            "rate_limited": self.rate_limited,
            "injected_errors": self.injected_errors,
            "cdn_auth_headers": len(self.cdn_auth_headers),
            "cdn_downloads": self.cdn_downloads,
            "truncated_downloads": self.truncated_downloads,
            "cdn_requests": [
                {"method": r.method, "raw_path": r.raw_path, "status": r.status}
                for r in self.cdn_requests
            ],
            "cdn_dropped": self.cdn_dropped,
            "cdn_failed": self.cdn_failed,
            "cdn_client_closed": self.cdn_client_closed,
            "failed_after_commit": self.failed_after_commit,
            "status_errors": self.status_errors,
        }

    def creates_of(self, kind: str) -> list[CreateRecord]:
        return [c for c in self.creates if c.kind == kind]

    def reset(self) -> None:
        in_flight = self._in_flight
        self.__init__()  # type: ignore[misc]
        self._in_flight = in_flight
