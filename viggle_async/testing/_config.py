"""Settings and fault knobs of :class:`~viggle_async.testing.FakeViggle`.

Both are mutable attrs classes: tests may change any field while the server runs and the next
request sees it. Where viggle-api.md lists variants or unknowns, the default is the documented
shape and the variant is a knob (see each field's comment).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import attrs

__all__ = ["DEFAULT_API_KEY", "FakeSettings", "Faults", "RateLimit", "Template"]

DEFAULT_API_KEY = "sk-test-fake"


@attrs.define
class Template:
    """A Viggle template that ``POST /api/scenes/import`` knows
    (docs/api/assets.md#import-template).

    ``segments`` lists person UUIDs for a multi-person template; a video template has none.
    """

    segments: tuple[str, ...] = ()
    duration_s: float = 8.0
    width: int = 720
    height: int = 1280
    fps: float = 30.0


def _default_templates() -> dict[str, Template]:
    return {
        "tmpl-duo-dance": Template(segments=("person_a1b2c3d4", "person_e5f6g7h8")),
        "tmpl-trio-walk": Template(
            segments=("person_0a0a0a0a", "person_1b1b1b1b", "person_2c2c2c2c"), duration_s=12.0
        ),
        "tmpl-video-wave": Template(duration_s=5.0),
    }


def _default_keys() -> dict[str, int]:
    return {DEFAULT_API_KEY: 10_000}


def _before_clock_change(instance: FakeSettings, _: object, value: object) -> object:
    # Let each running server read its simulated time with the old clock/scale first, so
    # the change applies from now on and simulated time neither jumps nor goes back.
    for listener in instance._clock_listeners:
        listener()
    return value


@attrs.define
class FakeSettings:
    """Behaviour of the fake server.

    Lifecycle timing is in *simulated* seconds; simulated time runs at ``time_scale`` simulated
    seconds per ``clock()`` second. A render created at simulated time ``t0`` is::

        queued      until t0 + queue_delay_s
        processing  for (render_base_s + render_s_per_video_s * video_seconds) / (2 if fast)
        complete    afterwards (or failed half-way through, see Faults.render_failure_rate)
    """

    #: API key -> starting balance. Keys added while running start with their value here.
    api_keys: dict[str, int] = attrs.field(factory=_default_keys)
    time_scale: float = attrs.field(default=1.0, on_setattr=_before_clock_change)
    clock: Callable[[], float] = attrs.field(
        default=time.monotonic, on_setattr=_before_clock_change
    )

    # Limits (docs/api/limits.md#limits and docs/api/errors.md#error-codes).
    max_video_seconds: float = 300.0
    max_upload_bytes: int = 500 * 1024 * 1024
    max_resolution: int = 4096
    min_scene_seconds: float = 0.5
    min_scene_pixels: int = 64
    #: Max length of one text form field; a bigger one is a validation error (CS-UORC01-002).
    max_field_bytes: int = 64 * 1024
    #: Real seconds a create's body may stall before its declared end (a body shorter than
    #: its Content-Length) before the fake answers 400 CS-UORC01-002; None: wait forever.
    body_stall_s: float | None = 30.0

    #: Size of every CDN output file; streamed from a generator, never held in memory.
    output_bytes: int = 64 * 1024
    #: False: every output is the same byte pattern (an MP4 prelude, then byte i = i % 256).
    #: True: a playable H.264 MP4 per job and per output/mask (a moving pattern seeded by the
    #: job id, 8 fps up to 24 frames, 64x64 or smaller to fit ``output_bytes``) that lasts the
    #: job's duration; at least the smallest playable file (~1.1 KB).
    output_mp4: bool = False
    #: Duration assumed when the fake cannot read one: URL inputs (it never fetches) and WebM.
    url_video_seconds: float = 10.0
    #: Frames per second reported for uploaded scenes (the probe does not read fps).
    scene_fps: float = 30.0

    # Lifecycle timing, simulated seconds.
    queue_delay_s: float = 2.0
    render_base_s: float = 5.0
    render_s_per_video_s: float = 2.0
    character_pending_s: float = 1.0
    character_processing_s: float = 4.0
    scene_base_s: float = 2.0
    scene_s_per_video_s: float = 0.5

    # Documented variants (docs/api/conventions.md#authentication,
    # docs/api/conventions.md#error-envelope, docs/api/lifecycles.md#render-statuses,
    # docs/api/assets.md#import-template, docs/api/open-questions.md).
    # : Wrap every success body in ``{"data": ...}`` as some doc samples read it
    # (docs/api/assets.md#get-character, docs/api/open-questions.md#response-wrapping).
    wrap_data: bool = False
    # : Emit the older ``rendering`` / ``merging`` statuses while processing
    # (docs/api/lifecycles.md#render-statuses).
    legacy_statuses: bool = False
    #: Missing key: "object" -> CS-UORC01-006 envelope; "string" -> the auth page's plain detail.
    auth_error_style: Literal["object", "string"] = "object"
    # : "docs": ``id`` + ``segments``; "third_party": ``scene_id`` + ``character_uuids``
    # (docs/api/assets.md#import-template).
    import_response_style: Literal["docs", "third_party"] = "docs"
    # : HTTP status for an unknown id on GET/DELETE (undocumented,
    # docs/api/open-questions.md#unknown-id-status).
    not_found_status: int = 404
    # : HTTP status when cancelling a job that already ended (undocumented,
    # docs/api/renders.md#cancel).
    cancel_conflict_status: int = 409
    # : Reject ``bg_color`` unless ``background_mode=solid`` (newer docs,
    # docs/api/conventions.md#background-modes); False: ignore it.
    strict_bg_color: bool = True

    templates: dict[str, Template] = attrs.field(factory=_default_templates)
    _clock_listeners: list[Callable[[], object]] = attrs.field(
        factory=list, init=False, repr=False, eq=False
    )

    def on_clock_change(self, listener: Callable[[], object]) -> None:
        """Call ``listener`` just before ``time_scale`` or ``clock`` changes."""
        self._clock_listeners.append(listener)

    @property
    def default_api_key(self) -> str:
        """The first configured key."""
        return next(iter(self.api_keys))


@attrs.define
class RateLimit:
    """A per-key token bucket: ``rate`` requests per clock second, bursts up to ``burst``.

    ``routes`` limits it to some ``"METHOD /route/{template}"`` strings; None means every
    API route. Requests without a key share the bucket of the key ``""``.
    """

    rate: float
    burst: int
    routes: frozenset[str] | None = None


@attrs.define
class Faults:
    """Faults to inject; all off by default. Randomness comes from ``random.Random(seed)``."""

    #: CS-UORC01-001 for every fast submission.
    fast_unavailable: bool = False
    #: CS-UORC01-001 for the next N fast submissions (counts down).
    fast_unavailable_next: int = 0
    #: CS-UORC01-001 for fast submissions while ``clock() < fast_unavailable_until``.
    fast_unavailable_until: float | None = None

    #: 429 with Retry-After when the key's bucket is empty.
    rate_limit: RateLimit | None = None

    #: Fraction of API GETs answered with ``get_error_status`` instead of their result.
    get_error_rate: float = 0.0
    get_error_status: int = 503
    #: Fraction of renders that end ``failed`` with CS-UORC01-009 (decided at create).
    render_failure_rate: float = 0.0
    #: Fraction of characters and scenes whose preprocessing ends ``failed``.
    asset_failure_rate: float = 0.0

    #: Real seconds added before answering (``latency_routes``: None means every API route).
    latency_s: float = 0.0
    latency_routes: frozenset[str] | None = None

    #: Real seconds to hold an answer *after* the request was handled: for a create, the job
    #: exists but the client has no answer yet (the ambiguous window a crash or a read
    #: timeout can fall into). ``answer_delay_routes``: None means every API route.
    answer_delay_s: float = 0.0
    answer_delay_routes: frozenset[str] | None = None

    #: Abort the connection of the next N create requests after ``drop_after_bytes`` of body.
    drop_uploads: int = 0
    drop_after_bytes: int = 64 * 1024

    #: Pace every CDN response body to this many bytes per second (None: as fast as
    #: possible). Per connection, not global: each response is paced on its own, so N
    #: parallel Range requests for segments of one object get N times the rate.
    cdn_bytes_per_s: float | None = None

    #: The first K CDN downloads send the full Content-Length but only part of the body.
    truncate_downloads: int = 0
    truncate_fraction: float = 0.5

    # -- Creates answered badly *after* the job exists ------------------------------------
    # A gateway or load balancer may forward a create, the backend commits (and bills) it,
    # and the client still gets an error page, nothing, or a body it cannot use. Only a
    # documented refusal proves no job exists; these knobs produce every other answer.

    #: The next N accepted creates are committed (job, character or scene exists; credits
    #: are charged; ``CreateRecord.status`` is 200 with its ``result_id``) but answered with
    #: ``create_fail_shape`` / ``create_fail_status`` instead (counts down).
    create_fail_after_commit: int = 0
    #: Fraction (0-1) of accepted creates answered that way (seeded), besides the count.
    create_fail_after_commit_rate: float = 0.0
    #: What the client gets: ``"html"`` a gateway's HTML error page (``text/html``);
    #: ``"empty"`` a status line with an empty body; ``"unparsable"`` an
    #: ``application/json`` body cut off mid-object; ``"no_id"`` a JSON body that lacks the
    #: new id (``job_id`` / ``character_id`` / ``scene_id`` / ``id``).
    create_fail_shape: Literal["html", "empty", "unparsable", "no_id"] = "html"
    #: HTTP status of that answer (500, 502, 503, 504, ...). For ``"no_id"`` it is used only
    #: when it is a 2xx; otherwise ``"no_id"`` answers 200.
    create_fail_status: int = 502
    #: ``"POST /api/render"``-style routes it applies to; None: every create route (render,
    #: character, scene, template import).
    create_fail_routes: frozenset[str] | None = None

    # -- Status endpoint --------------------------------------------------------------------

    #: The next N ``GET /api/render/{job_id}`` polls answer ``status_error_status`` (counts
    #: down) with a JSON ``detail`` body, before the handler runs.
    status_error_next: int = 0
    status_error_status: int = 503
    #: ``Retry-After`` header value sent verbatim with those answers, e.g. ``"2"``
    #: (delta-seconds) or ``"Wed, 21 Oct 2026 07:28:00 GMT"`` (HTTP-date); None: no header.
    status_retry_after: str | None = None
    #: A ``complete`` status lacks its ``cdn_url`` (and ``download_url``) on its first N
    #: polls per job, in turn absent, ``null`` and ``""``; the (N+1)-th poll has it.
    complete_without_cdn_url_n: int = 0
    #: Malform every *informational* field of render statuses, characters, scenes (also in
    #: lists) and credits; the fields a client acts on stay intact (``job_id``, ``id``,
    #: ``status``, ``cdn_url``, ``mask_cdn_url``, ``error*``, ``balance``, ``credits``,
    #: ``name``). ``"empty"``: ``""``; ``"null"``: ``null``; ``"wrong_type"``: numbers as
    #: strings, strings and dates as numbers, objects as lists; ``"garbage"``: strings that
    #: parse as nothing (``"yesterday"``, ``"NaN%"``). None: well-formed.
    malformed_fields: Literal["empty", "null", "wrong_type", "garbage"] | None = None

    #: List endpoints (characters, scenes) return at most N items per page whatever
    #: ``limit`` asked for; ``total`` still counts every item. None: honour ``limit``.
    list_page_cap: int | None = None

    # -- Uploads ------------------------------------------------------------------------------

    #: Read uploaded file parts at most this many bytes per second per request (None: as
    #: fast as they come); the client sees a slow server-side upload.
    upload_bytes_per_s: float | None = None

    # -- CDN ----------------------------------------------------------------------------------
    # "Each object" is one output URL path (``/outputs/<job>/output.mp4`` or ``mask.mp4``);
    # its counters start at its first CDN request. CDN times are simulated seconds.

    #: Sign CDN URLs S3-style: the query carries ``X-Amz-Credential=AKIA...%2F...``,
    #: ``X-Amz-Date``, ``X-Amz-Expires``, an ``X-Amz-Security-Token`` with ``%2B``/``%2F``/
    #: ``%3D`` and ``X-Amz-Signature``, an HMAC of the *raw* path and query as sent. A URL
    #: whose query was re-encoded, or older than this many simulated seconds, answers 403.
    #: Every status poll signs afresh. None: plain unsigned URLs.
    url_ttl_s: float | None = None
    #: The first N requests of each object answer ``cdn_fail_status``.
    cdn_fail_first_n: int = 0
    #: Requests within this many simulated seconds of each object's first request answer
    #: ``cdn_fail_status`` (0: off).
    cdn_fail_for_s: float = 0.0
    #: Status for those answers: 403, 404, 410, 500, 502, 503, ... (a small XML body).
    cdn_fail_status: int = 503
    #: ``Retry-After`` value sent verbatim with them (delta-seconds or HTTP-date); None: none.
    cdn_retry_after: str | None = None
    #: The first N body-serving tries of each object close the connection after
    #: ``cdn_drop_after_bytes`` bytes of the response body (the full length was announced).
    cdn_drop_first_n: int = 0
    cdn_drop_after_bytes: int = 32 * 1024
    #: Honour ``Range: bytes=a-`` / ``a-b`` / ``-n`` with 206 and ``Content-Range`` (416 when
    #: unsatisfiable), and ``If-Range`` (a mismatching validator answers 200 with the full
    #: body). False: ``Range`` is ignored (200, no ``Accept-Ranges``). An ``ETag`` is sent
    #: either way.
    cdn_range_support: bool = False

    # -- Realistic render progress (all off: every render runs at the FakeSettings rate) -------
    # Drawn per job at create from the seeded random source; times are simulated seconds.

    #: Each job's processing time is scaled by a factor drawn from 1 +/- this (0.3: +/-30 %).
    render_rate_jitter: float = 0.0
    #: Fraction (0-1) of jobs whose progress stalls once, at a random point of processing...
    stall_fraction: float = 0.0
    #: ...for up to this fraction of its processing time (0.1: a tenth); the job ends later.
    stall_max: float = 0.1
    #: Move each checkpoint's processing fraction (0.2, 0.4, 0.6, 0.9) by up to +/-0.08 per
    #: job, so checkpoints come at uneven steps (always in order).
    uneven_checkpoints: bool = False
    #: Each job's queue delay is scaled by a factor drawn from 1 +/- this (0.5: +/-50 %)...
    queue_jitter: float = 0.0
    #: ...plus this many simulated seconds per job of the same key still queued or
    #: processing at create time (the queue grows with load).
    queue_s_per_active_job: float = 0.0

    seed: int = 0
