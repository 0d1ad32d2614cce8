"""The poll scheduler's vocabulary: what a poll result looks like to it (``PollView``),
how intervals behave (``PollPolicy``), its counters and its errors."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import attrs

from ._errors import ViggleError, WaitTimeoutError

__all__ = [
    "PollDeadlineExceeded",
    "PollModel",
    "PollPolicy",
    "PollState",
    "PollSchedulerClosed",
    "PollStats",
    "PollView",
]

R = TypeVar("R")


@attrs.frozen
class PollView:
    """What the scheduler needs to know about one poll result.

    ``fingerprint`` is any hashable summary of the observed state (status, checkpoint,
    progress); a change in it counts as movement.
    """

    terminal: bool
    progress_pct: float | None = None
    fingerprint: Hashable = None


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attr.name} must be > 0, got {value!r}")


@attrs.frozen
class PollState:
    """What a ``PollPolicy`` remembers about one job between polls.

    ``interval`` is the last interval chosen (seconds); ``p0`` the first ``progress_pct``
    sample of the current run of progress and ``t0`` its clock time (seconds).
    """

    interval: float
    p0: float | None = None
    t0: float = 0.0
    #: Predictive policies only: the clock time the wait began (about when the job was
    #: created), the last positive ``progress_pct`` sample and its time, whether the last
    #: interval aimed at the predicted end, how many such aims missed, and whether
    #: this job already taught the shared ``PollModel`` its queue delay.
    since: float | None = None
    pp: float | None = None
    tp: float = 0.0
    aimed: bool = False
    misses: int = 0
    taught: bool = False
    #: The last clock time the job showed no progress (queued): it started after that.
    idle_at: float | None = None
    #: Predictive policies only: the clock time of the last result (None before any).
    seen_at: float | None = None
    #: Predictive policies only: the caller's hint of how long the job renders for, as the
    #: seconds of its driving video (None: no hint). Render time grows with it, so the
    #: ``PollModel`` learns durations per hint.
    hint: float | None = None


# Below this progress a single sample (against the learned queue delay) is too rough to aim
# at the end: its error grows as (1 - pct) / pct times the queue delay's.
_SHARP_FROM = 0.2
# A single sample this soon after the (uncertain) start says too little to predict from.
_MIN_RUN = 1.0
# Queue delays learned from fewer jobs than this do not show their spread yet: unused.
_MIN_QUEUES = 8
_COLD_AIM = 0.5
# The longest plain-backoff interval of a predictive policy (PollPolicy().max_interval).
_BACKOFF_MAX = 20.0
# The longest stall (a pause in progress) guarded against, as a share of the render.
_STALL_SHARE = 0.1
_KEEP = 32  # recent jobs a PollModel remembers: recent ones reflect today's load
# Hinted durations a PollModel keeps, and how many it needs before it predicts from them.
_KEEP_HINTED = 64
_MIN_HINTED = 6
# Past the longest hint learned, the envelope grows at this share of the learned rate: a
# slope fitted to short jobs alone is rough, and too long a guess would poll late.
_EXTRAPOLATE = 0.8
# The envelope is drawn from a few dozen jobs: a faster one may still come. Trust this
# share of it.
_ENVELOPE_TRUST = 0.9
# A job is seen done up to ``tolerance`` after it ended: its duration is learned as this
# share of that gap earlier than seen (measured on B3-like batches: 0 biases the envelope
# late, 1 early).
_DEBIAS = 0.5


@attrs.frozen
class PollModel:
    """What a predictive ``PollPolicy`` has learned from the jobs already seen (shared by the
    jobs of one scheduler; pure: ``PollPolicy.learn`` returns a new one).

    ``queues``: recent queue delays (seconds from the start of a wait to the start of
    progress), one per job that showed two progress samples; ``totals``: recent
    wait-to-terminal durations (seconds). Both keep the last ``_KEEP`` values.
    """

    queues: tuple[float, ...] = ()
    totals: tuple[float, ...] = ()
    #: Recent (hint, wait-to-terminal seconds) pairs of hinted jobs (the last
    #: ``_KEEP_HINTED``), and the lower envelope fitted to them: ``shortest(hint)``.
    hinted: tuple[tuple[float, float], ...] = ()
    #: The envelope ``factor * (base + per_hint * hint)`` (seconds), fitted by ``learn``;
    #: ``reach`` is the longest hint learned (0 before any fit).
    base: float = 0.0
    per_hint: float = 0.0
    factor: float = 0.0
    reach: float = 0.0
    low: float = 0.0  # the shortest hint learned

    def shortest(self, hint: float | None) -> float | None:
        """The shortest wait (seconds, start of wait to terminal) a job with this hint is
        expected to take, or None (no hint, or too few hinted jobs learned yet).

        Stalls and slow queues only make jobs longer, so this is a lower envelope: the
        least-squares line through (hint, duration) scaled down to the fastest job seen.
        Past the longest hint learned it grows at ``_EXTRAPOLATE`` of the learned rate per
        hint second, and below the shortest it shrinks in proportion (both err early).
        """
        if hint is None or not self.factor:
            return None
        h = min(hint, self.reach)
        envelope = self.factor * (self.base + self.per_hint * h)
        if hint > self.reach:
            envelope += self.factor * self.per_hint * (hint - self.reach) * _EXTRAPOLATE
        if h < self.low:
            envelope *= max(h, 0.0) / self.low
        return envelope

    @property
    def queue_s(self) -> float | None:
        """The longest recent queue delay in seconds (None before any): a start taken
        late errs towards early polls. Stalls make single estimates short, never long."""
        return max(self.queues) if self.queues else None


@attrs.frozen
class PollPolicy:
    """Polling intervals, in seconds.

    The first poll comes ``first_delay`` after ``wait`` (the docs poll every 3 s).
    While nothing changes the interval is multiplied by ``growth``; on a change it drops to at
    most ``first_delay``. Once ``progress_pct`` has moved, the next poll comes after ``aim``
    times the estimated remaining time. Every interval is clamped to
    [``min_interval``, ``max_interval``] and then scaled by a random factor in
    [1 - ``jitter``, 1 + ``jitter``]. Polls due within ``coalesce`` seconds are sent together
    (up to that much early), which saves a wake-up per poll; 0 sends each exactly when due.
    """

    first_delay: float = attrs.field(default=3.0, validator=_positive)
    # 2.5 s and aim 0.7 (benchmarks B3): half the status requests of the documented 3 s loop
    # at a better p99 detection latency; lower them to detect sooner at more requests.
    min_interval: float = attrs.field(default=2.5, validator=_positive)
    max_interval: float = attrs.field(default=20.0, validator=_positive)
    growth: float = attrs.field(default=1.5, validator=_positive)
    jitter: float = attrs.field(default=0.1, validator=attrs.validators.and_(
        attrs.validators.ge(0.0), attrs.validators.lt(1.0)))
    aim: float = attrs.field(default=0.7, validator=_positive)
    coalesce: float = attrs.field(default=0.1, validator=attrs.validators.ge(0.0))
    #: Predict each job's end from its progress and what earlier jobs taught (``PollModel``);
    #: see ``predictive()``.
    predict: bool = False
    #: Predictive only: seconds added past the predicted end, and how many missed aims
    #: make the job fall back to plain backoff (from ``min_interval``, times ``growth``).
    margin: float = attrs.field(default=0.3, validator=attrs.validators.ge(0.0))
    max_misses: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    #: Predictive only: poll this many seconds after the soonest the job could end (the
    #: worst detection latency of a poll that finds it done); not done, that poll is a
    #: sample close to the end. When the end is known closer than that, aim at it.
    tolerance: float = attrs.field(default=0.8, validator=_positive)

    @classmethod
    def predictive(cls, **overrides: float) -> PollPolicy:
        """A policy that aims each job's last poll just past its predicted end.

        Each result bounds the job's end from both sides, from its ``progress_pct`` samples,
        the queue delays learned from earlier jobs of the same scheduler (``PollModel``)
        and, for a job waited on with a hint (its video's seconds), the shortest duration
        learned for that hint. The soonest end allows for the longest stall
        (``_STALL_SHARE`` of the render) between samples, so the next poll, ``tolerance``
        seconds after it, either finds the job done within that or samples it close to its
        end; when the latest end comes first, the poll aims just past it. An aim that
        misses re-predicts; after ``max_misses`` misses the job falls back to plain backoff.
        ``overrides`` set any other field.

        ``tolerance`` 1.7 s (benchmarks B3, realistic progress): the p99 detection latency
        stays near 1.3 s, as most jobs end later than the soonest they could.
        """
        fields: dict[str, Any] = {"first_delay": 8.0, "min_interval": 0.5,
                                  "max_interval": 120.0, "growth": 1.5, "jitter": 0.0,
                                  "coalesce": 0.05, "aim": 0.9, "margin": 0.05,
                                  "tolerance": 1.7, "predict": True}
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def fixed(cls, interval: float) -> PollPolicy:
        """Every poll ``interval`` seconds after the previous one (no growth, no jitter).

        Raises ValueError unless ``interval`` > 0.
        """
        if not interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {interval}")
        return cls(first_delay=interval, min_interval=interval, max_interval=interval,
                   growth=1.0, jitter=0.0, coalesce=0.0)

    def __attrs_post_init__(self) -> None:
        if self.min_interval > self.max_interval:
            raise ValueError("min_interval must not exceed max_interval")
        if self.growth < 1.0:
            raise ValueError("growth must be >= 1")

    def first_state(self, now: float | None = None, *,
                    expected_seconds: float | None = None) -> PollState:
        """The state of a job not polled yet; ``now`` (clock seconds) is when its wait began.

        ``expected_seconds``: a hint of the job's length, the seconds of its driving video
        (render time grows with it); a predictive policy learns durations per hint and aims
        the first poll near the job's end. None: no hint.
        """
        return PollState(self.first_delay, since=now, hint=expected_seconds)

    def first_interval(self, model: PollModel | None = None,
                       state: PollState | None = None, *,
                       least_hint: float | None = None) -> float:
        """Seconds from the start of a wait to the first poll (before jitter).

        ``first_delay``; a predictive policy that has seen jobs end sooner polls a little
        before the shortest recent one ended, and for a job with a hint (``state.hint``)
        that ``model`` has learned, ``tolerance`` after the shortest duration learned for
        it (``PollModel.shortest``): a fast job is found within the tolerance, a slower
        one sampled late in its render. Before the model knows the hint: ``first_delay``
        times the square root of ``state.hint / least_hint`` (the shortest hint of the
        jobs waited on). Clamped to [``min_interval``, ``max_interval``] (a hinted one
        only from below).
        """
        if not self.predict or model is None:
            return self.first_delay
        shortest = model.shortest(state.hint) if state is not None else None
        if shortest is not None:
            return max(shortest * _ENVELOPE_TRUST + self.tolerance, self.min_interval)
        if state is not None and state.hint and least_hint and state.hint > least_hint:
            # Nothing learned yet: the jobs with the shortest hint end first and teach the
            # model (the scheduler then re-aims this poll); meanwhile a longer video waits
            # longer, by the square root of the ratio (renders have a fixed part).
            return self.first_delay * math.sqrt(state.hint / least_hint)
        if len(model.totals) < 4:
            return self.first_delay
        # Never later than first_delay: a short job after long ones would be found late.
        first = min(min(model.totals) * 0.9, self.first_delay)
        return min(max(first, self.min_interval), self.max_interval)

    def learn(self, model: PollModel, state: PollState, *, progress_pct: float | None,
              terminal: bool, now: float) -> PollModel:
        """``model`` updated with one poll result of the job whose state (before this
        result) is ``state``; ``now`` is its clock time. Pure; non-predictive policies
        return ``model`` unchanged."""
        if not self.predict or state.since is None:
            return model
        if terminal:
            total = now - state.since
            if state.hint is not None:
                # It ended between the last result and now (within the tolerance of it).
                total -= min(now - (state.seen_at if state.seen_at is not None
                                    else state.since), self.tolerance) * _DEBIAS
            totals = (*model.totals[-(_KEEP - 1):], total)
            if state.hint is None:
                return PollModel(model.queues, totals, model.hinted, model.base,
                                 model.per_hint, model.factor, model.reach, model.low)
            return _fit(model.queues, totals,
                        (*model.hinted[-(_KEEP_HINTED - 1):], (state.hint, total)))
        pct, pp = progress_pct, state.pp
        if (state.taught or pct is None or pp is None or not pct > pp
                or not now > state.tp):
            return model
        rate = (pct - pp) / (now - state.tp)
        queue = max(0.0, state.tp - (pp + 0.5) / rate - state.since)
        # Built directly, not with attrs.evolve (~10x): once per job (issue 13).
        return PollModel((*model.queues[-(_KEEP - 1):], queue), model.totals, model.hinted,
                         model.base, model.per_hint, model.factor, model.reach, model.low)

    def next_interval(self, state: PollState, *, progress_pct: float | None, moved: bool,
                      now: float, model: PollModel | None = None) -> tuple[float, PollState]:
        """Seconds until the next poll (before jitter), and the state to pass next time.

        Pure: the same arguments give the same answer. ``moved`` says whether the observed
        state changed since the previous poll; ``now`` is the clock time of this result;
        ``model`` what a predictive policy learned from other jobs (``learn``).
        """
        if self.predict:
            return self._predict(state, progress_pct, moved, now, model)
        pct = progress_pct
        p0, t0 = state.p0, state.t0
        interval: float | None = None
        if pct is None:
            p0 = None
        elif p0 is None or pct < p0:
            p0, t0 = pct, now  # first sample, or progress restarted
        elif pct > p0 and now > t0:
            # Average rate since the first sample is steadier than the last step's rate.
            rate = (pct - p0) / (now - t0)
            remaining = max(0.0, 100.0 - pct) / rate
            if remaining > 0 or moved:
                interval = remaining * self.aim
            # else: past the estimated end and nothing moves (e.g. a final merge): back off.
        if interval is None:
            if moved:
                interval = min(state.interval / self.growth, self.first_delay)
            else:
                interval = state.interval * self.growth
        interval = min(max(interval, self.min_interval), self.max_interval)
        # Built directly, not with attrs.evolve: this runs on every poll (evolve is ~10x).
        return interval, PollState(interval, p0, t0, state.since, state.pp, state.tp,
                                   state.aimed, state.misses, state.taught, state.idle_at,
                                   state.seen_at, state.hint)

    def _predict(self, state: PollState, pct: float | None, moved: bool, now: float,
                 model: PollModel | None) -> tuple[float, PollState]:
        # An aim that found the job still running is a miss; once misses reach max_misses
        # the job stays on plain backoff.
        misses = state.misses + 1 if state.aimed or state.misses >= self.max_misses \
            else state.misses
        p0, t0, pp, tp = state.p0, state.t0, state.pp, state.tp
        taught = state.taught or (pct is not None and pp is not None and pct > pp)
        since, idle_at = state.since, state.idle_at
        # Two bounds on the end: ``late``, which a poll can aim at and find the job done
        # (every rate behind it is at most the true one: a start taken early, a past stall,
        # progress rounded against us), and ``sure``, before which it surely runs even if
        # the longest stall (``_STALL_SHARE`` of the render) hid between the samples
        # (-inf: nothing to tell yet).
        late, sure = math.inf, -math.inf
        if pct is not None and pct > 0:
            # Progress is reported in whole percent: the true value lies in [pct, pct + 1).
            samples = [(pp, tp)] if pp is not None and pct > pp and now > tp else []
            # After a miss or a stall caught in the act, the first sample's span holds it:
            # only the last one (taken at the stall at the latest) still tells the rate.
            if p0 is not None and p0 < (pp if pp is not None else pct) and now > t0 \
                    and not state.misses:
                samples.append((p0, t0))
            for p, t in samples:
                span = now - t
                late = min(late, now + (100.0 - pct) * span / max(pct - p - 1.0, 0.5))
                # The fastest rate the samples allow: a stall of up to _STALL_SHARE of the
                # render (100 / rate) may hide in the span.
                sure = max(sure, now + (99.0 - pct) * span
                           / (pct + 1.0 - p + 100.0 * _STALL_SHARE))
            queues = () if model is None or len(model.queues) < _MIN_QUEUES else model.queues
            if since is not None:
                # Progress started at the earliest when the wait did (or after the shortest
                # recent queue) and at the latest after the longest recent queue, each
                # widened by a quarter of their spread (the load moves).
                q_lo = q_hi = 0.0
                if queues:
                    q_lo, q_hi = min(queues), max(queues)
                    pad = max((q_hi - q_lo) / 4, q_lo / 4)
                    q_lo, q_hi = max(0.0, q_lo - pad), q_hi + pad
                # Seen without progress at idle_at: it started after that (less the under
                # 1 % a 0 can hide), whatever the learned queues say (a job queued longer
                # than recent ones).
                idle = -math.inf if idle_at is None else \
                    idle_at - since - (now - idle_at) / pct
                late = min(late, now + (100.0 - pct) * (now - since - max(q_lo, idle)) / pct)
                fast_run = now - since - q_hi
                # One sample this soon after the (uncertain) start says too little.
                if queues and not samples and idle <= q_hi and fast_run >= _MIN_RUN \
                        and pct >= 3:
                    sure = now + (99.0 - pct) * fast_run / (pct + 1.0 + 100.0 * _STALL_SHARE)
            if p0 is None or pct < p0:
                p0, t0 = pct, now
            if pp is None or pct != pp:
                pp, tp = pct, now
        if not pct:
            idle_at = now
        if pct is None or pct < (pp or 0.0):
            p0 = pp = None  # no progress, or it restarted
        aimed = False
        floor = self.hinted_floor(model, state)
        if misses >= self.max_misses:
            # Predictions keep missing: plain backoff from min_interval (capped below).
            interval = min(self.min_interval * self.growth ** min(misses - self.max_misses, 30),
                           _BACKOFF_MAX)
        elif sure > -math.inf:
            # Poll ``tolerance`` after the soonest the job could end: done, it is found
            # within the tolerance; not done, it is a sample close to the end. Straight at
            # ``late`` when that comes first: an aim, which should find it done.
            soonest = max(sure, now, -math.inf if floor is None else floor)
            if late + self.margin <= soonest + self.tolerance:
                interval, aimed = max(late - now, 0.0) + self.margin, True
            else:
                interval = soonest + self.tolerance - now
            if since is not None:
                # A stall longer than the one allowed for makes every bound late: never wait
                # more than twice as long as the wait has lasted.
                interval = min(interval, max(self.first_delay, 2.0 * (now - since)))

        elif late < math.inf:
            # Only an upper bound (nothing learned yet, or too early to tell): sample again
            # half-way to it, but no later than the wait has lasted (the bound can be
            # very loose: 1 % done says little about the rate).
            span = self.first_delay if since is None else max(self.first_delay, now - since)
            interval = min((late - now) * _COLD_AIM, span)
        elif model is not None and model.queue_s is not None and since is not None \
                and not pct:
            # Queued: come back first_delay after the learned start of progress (taken late).
            interval = max(0.0, since + model.queue_s - now) + self.first_delay
        else:
            # Plain backoff, capped (the last interval may have been a long aim).
            interval = self.first_delay if moved else \
                min(state.interval * self.growth, _BACKOFF_MAX)
        if pct and pct == state.pp and misses < self.max_misses:
            # Stalled now, for longer than predicted: a miss (repeated, plain backoff);
            # look again soon, and measure the rate from here once it moves.
            misses += 1
            interval = min(interval, self.first_delay)
            tp = now
        if not aimed and misses < self.max_misses and floor is not None and floor > now:
            # The job surely runs until then (its hint's shortest learned duration): a
            # sample sooner says less than one there.
            interval = max(interval, floor - now)
        interval = min(max(interval, self.min_interval), self.max_interval)
        return interval, PollState(interval, p0, t0, since, pp, tp, aimed, misses, taught,
                                   idle_at, now, state.hint)

    def hinted_floor(self, model: PollModel | None, state: PollState) -> float | None:
        """The clock time until which a hinted job surely runs (the shortest duration
        ``model`` learned for its hint, from the start of its wait): a predictive policy
        polls it no sooner. None: no hint, not learned, not predictive."""
        if not self.predict or model is None or state.since is None:
            return None
        shortest = model.shortest(state.hint)
        return None if shortest is None else state.since + shortest * _ENVELOPE_TRUST


def _fit(queues: tuple[float, ...], totals: tuple[float, ...],
         hinted: tuple[tuple[float, float], ...]) -> PollModel:
    """A model whose envelope is fitted to ``hinted`` (see ``PollModel.shortest``).

    Runs once per finished hinted job: plain loops, no generators (issue 13: CPU per job).
    """
    n = len(hinted)
    if n < _MIN_HINTED:
        return PollModel(queues, totals, hinted)
    sh = st = shh = sht = 0.0
    low, reach = math.inf, 0.0
    for h, t in hinted:
        sh += h
        st += t
        shh += h * h
        sht += h * t
        if h < low:
            low = h
        if h > reach:
            reach = h
    mh, mt = sh / n, st / n
    var = shh - sh * mh
    # Never shorter for a longer video, never a negative base: either would aim late.
    per = max((sht - sh * mt) / var, 0.0) if var > 1e-9 else 0.0
    base = max(mt - per * mh, 0.0)
    if base <= 0 and per <= 0:
        return PollModel(queues, totals, hinted)
    factor = math.inf
    for h, t in hinted:
        ratio = t / (base + per * h)
        if ratio < factor:
            factor = ratio
    return PollModel(queues, totals, hinted, base, per, factor, reach, low)


@attrs.frozen
class PollStats:
    """Counters for tests and benchmarks."""

    polls_sent: int
    polls_failed: int
    in_flight: int
    peak_in_flight: int
    jobs: int
    waiters: int


class PollDeadlineExceeded(WaitTimeoutError, Generic[R]):
    """A waiter's deadline passed before its job reached a terminal state.

    ``last_result`` (also ``last``) is the last poll result seen for the job (None if no
    poll answered yet). A ``WaitTimeoutError``, so a ``ViggleError`` and a ``TimeoutError``.
    """

    def __init__(self, job_id: str, deadline: float, last_result: R | None) -> None:
        super().__init__(f"job {job_id!r} not finished by its deadline ({deadline:.3f})",
                         last=last_result)
        self.job_id = job_id
        self.deadline = deadline
        self.last_result = last_result


class PollSchedulerClosed(ViggleError):
    """``wait`` was called outside the scheduler's context, or the context ended first."""
