"""Pure retry timing: full-jitter backoff, Retry-After parsing and a retry policy.

Nothing here sleeps or uses global randomness: the caller passes ``rand`` (a function
returning a float in ``[0, 1)``, e.g. ``random.Random(seed).random``) and ``now``.

The API documents no rate limits or Retry-After header (docs/api/limits.md#limits, open question 9);
we still honour the header if a server (or a proxy in front of it) sends one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import attrs

__all__ = ["RetryPolicy", "full_jitter", "parse_retry_after"]

# RFC 9110 §10.2.3 allows only non-negative integer delta-seconds; we also accept a decimal
# fraction because some servers send one (tolerant on input).
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def full_jitter(attempt: int, *, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Delay before retry ``attempt`` (0 = first retry): ``rand() * min(cap, base * 2**attempt)``.

    Safe for any attempt number: the exponential is capped before it can overflow.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    try:
        ceiling = min(cap, math.ldexp(base, attempt))
    except OverflowError:
        ceiling = cap
    return rand() * ceiling


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or None if missing or garbage.

    Accepts delta-seconds (``"120"``, also ``"1.5"``) and HTTP-dates (IMF-fixdate and the
    obsolete RFC 850 / asctime forms). A date in the past gives ``0.0``. A naive ``now`` is
    taken as UTC. A value too large for a float gives ``math.inf``. Never raises.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # "-0000" and the asctime form carry no zone; HTTP-dates are always GMT (RFC 9110 §5.6.7).
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _positive_int(_inst: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"RetryPolicy.{attribute.name} must be an int >= 1, got {value!r}")


def _positive_finite(_inst: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"RetryPolicy.{attribute.name} must be a finite number > 0 (seconds), got {value!r}"
        )


@attrs.frozen
class RetryPolicy:
    """How often and how long to retry.

    ``max_attempts`` counts every try, the first included (1 = never retry). Delays use full
    jitter with ``base`` and ``cap`` seconds. A server's Retry-After (429, 5xx; delta-seconds
    or an HTTP-date) is honoured exactly (it is the server's word), unless it exceeds
    ``max_retry_after`` seconds: then we fail fast rather than sleep that long, and the
    raised error carries ``retry_after`` for a scheduler to pause on.
    ``connect_deadline`` (seconds, a minute by default) bounds how long a request that
    cannot connect is retried, counted from its first attempt; callers that retry creates
    themselves (the supervisor) stop at the same deadline and raise ``ConnectError``.
    """

    max_attempts: int = attrs.field(default=4, validator=_positive_int)
    base: float = attrs.field(default=0.5, validator=_positive_finite)
    cap: float = attrs.field(default=20.0, validator=_positive_finite)
    max_retry_after: float = attrs.field(default=60.0, validator=_positive_finite)
    connect_deadline: float = attrs.field(default=60.0, validator=_positive_finite)

    def delay(
        self, attempt: int, *, retry_after: float | None, rand: Callable[[], float]
    ) -> float | None:
        """Seconds to wait before retry ``attempt`` (0-based), or None if we must not retry.

        None when the attempts are used up or the server asks for more than
        ``max_retry_after``. ``retry_after`` is seconds, e.g. from :func:`parse_retry_after`.
        """
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        if attempt + 1 >= self.max_attempts:
            return None
        if retry_after is not None and not math.isnan(retry_after):
            if retry_after > self.max_retry_after:
                return None
            return max(0.0, retry_after)
        return full_jitter(attempt, base=self.base, cap=self.cap, rand=rand)
