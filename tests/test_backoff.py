from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from viggle_async._backoff import RetryPolicy, full_jitter, parse_retry_after

NOW = datetime(1994, 11, 6, 8, 49, 7, tzinfo=UTC)


def half() -> float:
    return 0.5


def never() -> float:
    raise AssertionError("rand must not be called when Retry-After decides the delay")


# --- full_jitter ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 0.25), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (7, 10.0)],
)
def test_full_jitter_doubles_then_caps(attempt: int, expected: float) -> None:
    assert full_jitter(attempt, base=0.5, cap=20.0, rand=half) == expected


def test_full_jitter_scales_the_whole_range_with_rand() -> None:
    assert full_jitter(3, base=1.0, cap=100.0, rand=lambda: 0.0) == 0.0
    assert full_jitter(3, base=1.0, cap=100.0, rand=lambda: 0.999) == pytest.approx(7.992)


@pytest.mark.parametrize("attempt", [1023, 1024, 1100, 10_000])
def test_full_jitter_huge_attempts_do_not_overflow(attempt: int) -> None:
    assert full_jitter(attempt, base=0.5, cap=20.0, rand=half) == 10.0


def test_full_jitter_tiny_base_still_grows_to_the_cap() -> None:
    assert full_jitter(10_000, base=1e-300, cap=3.0, rand=lambda: 1.0) == 3.0


def test_full_jitter_rejects_negative_attempt() -> None:
    with pytest.raises(ValueError, match="attempt"):
        full_jitter(-1, base=0.5, cap=20.0, rand=half)


def test_full_jitter_is_reproducible_with_a_seeded_source() -> None:
    a = [full_jitter(i, base=0.5, cap=20.0, rand=random.Random(7).random) for i in range(5)]
    b = [full_jitter(i, base=0.5, cap=20.0, rand=random.Random(7).random) for i in range(5)]
    assert a == b
    assert all(0.0 <= d <= min(20.0, 0.5 * 2**i) for i, d in enumerate(a))


# --- parse_retry_after ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("  7 ", 7.0),
        ("1.5", 1.5),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 30.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:37 GMT", 30.0),  # obsolete RFC 850
        ("Sun Nov  6 08:49:37 1994", 30.0),  # obsolete asctime (no zone: GMT)
        ("Sun, 06 Nov 1994 09:49:37 +0100", 30.0),  # numeric zone
        ("Sun, 06 Nov 1994 08:00:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after_valid(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "-5", "+5", "1e3", "nan", "inf", "5s", "1.", ".5",
     "Sun, 99 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 25:49:37 GMT", "\x00\xff"],
)  # fmt: skip
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_accepts_naive_now_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=naive) == 30.0


def test_parse_retry_after_enormous_delta_is_infinite_not_an_error() -> None:
    assert parse_retry_after("9" * 5000, now=NOW) == math.inf


def test_parse_retry_after_date_uses_now() -> None:
    later = NOW + timedelta(seconds=20)
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=later) == 10.0


# --- RetryPolicy ---------------------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base, policy.cap, policy.max_retry_after) == (
        4,
        0.5,
        20.0,
        60.0,
    )


def test_policy_allows_max_attempts_minus_one_retries() -> None:
    policy = RetryPolicy(max_attempts=4)
    delays = [policy.delay(a, retry_after=None, rand=half) for a in range(5)]
    assert delays == [0.25, 0.5, 1.0, None, None]


def test_policy_single_attempt_never_retries() -> None:
    assert RetryPolicy(max_attempts=1).delay(0, retry_after=None, rand=half) is None


def test_policy_honours_retry_after_exactly() -> None:
    policy = RetryPolicy()
    assert policy.delay(0, retry_after=30.0, rand=never) == 30.0
    assert policy.delay(2, retry_after=0.0, rand=never) == 0.0
    assert policy.delay(0, retry_after=60.0, rand=never) == 60.0


def test_policy_fails_fast_when_server_asks_too_much() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay(0, retry_after=60.5, rand=never) is None
    assert policy.delay(0, retry_after=math.inf, rand=never) is None


def test_policy_exhaustion_wins_over_retry_after() -> None:
    assert RetryPolicy(max_attempts=2).delay(1, retry_after=1.0, rand=never) is None


def test_policy_odd_retry_after_values() -> None:
    policy = RetryPolicy()
    assert policy.delay(0, retry_after=-3.0, rand=never) == 0.0
    assert policy.delay(0, retry_after=math.nan, rand=half) == 0.25  # ignored: jitter


def test_policy_jitter_respects_its_cap() -> None:
    policy = RetryPolicy(max_attempts=100, base=1.0, cap=5.0)
    assert policy.delay(50, retry_after=None, rand=lambda: 1.0) == 5.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"base": 0}, "base"),
        ({"base": -1.0}, "base"),
        ({"cap": math.inf}, "cap"),
        ({"cap": math.nan}, "cap"),
        ({"max_retry_after": 0.0}, "max_retry_after"),
        ({"max_retry_after": "60"}, "max_retry_after"),
    ],
)
def test_policy_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"RetryPolicy.{field} must be"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.max_attempts = 9  # type: ignore[misc]


def test_policy_delay_rejects_negative_attempt() -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().delay(-1, retry_after=None, rand=half)
