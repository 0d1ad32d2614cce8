"""PollPolicy as a pure function: fixed intervals, and the predictive policy's bounds, aims,
learning and fallback. No clock: every time is a number passed in."""

from __future__ import annotations

import itertools
import math
import random

import attrs
import pytest

from viggle_async import PollPolicy
from viggle_async._polling import PollModel, PollState

PREDICTIVE = PollPolicy.predictive()


@attrs.frozen
class Job:
    """A render as the fake runs it: queued ``queue`` s after the wait starts, then linear
    whole-percent progress for ``processing`` s, paused ``stall`` s at ``stall_at`` (a
    fraction of the processing)."""

    queue: float
    processing: float
    stall_at: float = 0.5
    stall: float = 0.0

    @property
    def end(self) -> float:
        return self.queue + self.processing + self.stall

    def pct(self, t: float) -> float | None:
        """None while queued (no progress reported), 100 once done."""
        if t < self.queue:
            return None
        if t >= self.end:
            return 100.0
        run = t - self.queue
        pause_from = self.stall_at * self.processing
        if run > pause_from:
            run -= min(run - pause_from, self.stall)
        return float(min(99, int(100 * run / self.processing)))


def drive(policy: PollPolicy, job: Job, model: PollModel, *, first: float | None = None,
          limit: int = 40) -> tuple[list[float], PollModel]:
    """Poll ``job`` (wait started at 0) as ``policy`` says; returns the poll times and the
    model after learning from it. The loop is the scheduler's, without a clock."""
    t = policy.first_interval(model) if first is None else first
    state, times, mark = policy.first_state(0.0), [], None
    for _ in range(limit):
        times.append(t)
        pct = job.pct(t)
        model = policy.learn(model, state, progress_pct=pct, terminal=pct == 100.0, now=t)
        if pct == 100.0:
            return times, model
        moved, mark = len(times) > 1 and pct != mark, pct
        interval, state = policy.next_interval(state, progress_pct=pct, moved=moved, now=t,
                                               model=model)
        t += interval
    raise AssertionError(f"{job} not detected in {limit} polls: {times}")


def warmed(policy: PollPolicy = PREDICTIVE) -> PollModel:
    """A model that has seen a few ordinary jobs (queue 2-3 s)."""
    model = PollModel()
    for i in range(10):
        _, model = drive(policy, Job(2.0 + 0.1 * i, 20.0 + 3 * i), model)
    return model


# --- fixed ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pct, moved", [(None, False), (None, True), (0.0, False),
                                        (40.0, True), (99.0, False), (10.0, True)])
def test_fixed_policy_always_answers_its_interval(pct: float | None, moved: bool) -> None:
    policy = PollPolicy.fixed(3.0)
    state = PollState(3.0, p0=50.0, t0=0.0)  # progress went back from 50 when pct is 10
    for now in (0.0, 3.0, 600.0):
        interval, state = policy.next_interval(state, progress_pct=pct, moved=moved, now=now)
        assert interval == 3.0
    assert policy.first_interval() == 3.0 and policy.jitter == 0.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_fixed_policy_rejects_a_non_positive_interval_naming_it(bad: float) -> None:
    with pytest.raises(ValueError, match="poll_interval must be > 0"):
        PollPolicy.fixed(bad)


# --- predictive: aims ------------------------------------------------------------------------

@pytest.mark.parametrize("job", [
    Job(2.0, 8.0),                      # short: done soon after the first poll
    Job(2.5, 30.0),
    Job(3.0, 70.0),                     # long: first sample at a few percent
    Job(1.0, 45.0, stall_at=0.8, stall=4.0),  # a stall after the samples: one miss
    Job(9.0, 30.0),                     # still queued at the first poll
], ids=["short", "medium", "long", "late-stall", "queued-first"])
def test_predictive_detects_soon_after_the_end_in_few_polls(job: Job) -> None:
    times, _ = drive(PREDICTIVE, job, warmed())
    latency = times[-1] - job.end
    # Within the tolerance of an aim that hits; a stall after the samples makes it miss
    # and re-aim from samples around the stall, still within the 1.5 s target (issue 13).
    assert 0 <= latency <= (1.5 if job.stall else PREDICTIVE.tolerance + PREDICTIVE.margin)
    # Far fewer than the documented 3 s loop would send over the same render.
    assert len(times) <= max(4, job.end / 3.0 / 4)


def test_predictive_learns_the_queue_delay_and_the_durations_of_jobs_it_saw() -> None:
    model = PollModel()
    jobs = [Job(2.0, 30.0), Job(4.0, 50.0), Job(3.0, 20.0)]
    for job in jobs:
        _, model = drive(PREDICTIVE, job, model)
    # A queue delay from each job seen with two progress samples, a duration from each.
    assert 1 <= len(model.queues) <= len(model.totals) == 3
    for job, total in zip(jobs, model.totals, strict=True):
        assert job.end <= total <= job.end + PREDICTIVE.tolerance + 0.2
    for queue in model.queues:
        # Whole-percent progress: the start is known to within a percent of the render.
        assert any(abs(queue - job.queue) <= job.processing / 100 + 0.5 for job in jobs)
    assert model.queue_s == max(model.queues)


def test_learned_model_keeps_only_recent_jobs_and_sets_the_first_poll() -> None:
    # Jobs ending sooner than first_delay bring the first poll forward, never back.
    model = PollModel(totals=(30.0, 6.0, 50.0, 40.0))
    assert PREDICTIVE.first_interval(model) == pytest.approx(0.9 * 6.0)
    assert PREDICTIVE.first_interval(PollModel(totals=(30.0, 20.0, 50.0, 40.0))) == 8.0
    assert PREDICTIVE.first_interval(PollModel()) == PREDICTIVE.first_delay
    assert PollPolicy().first_interval(model) == PollPolicy().first_delay  # not predictive
    state = PollState(3.0, since=0.0)
    for i in range(40):
        model = PREDICTIVE.learn(model, state, progress_pct=100.0, terminal=True,
                                 now=float(i))
    assert len(model.totals) == 32 and model.totals[-1] == 39.0


def test_learning_is_pure_and_plain_policies_learn_nothing() -> None:
    model, state = PollModel(), PollState(3.0, since=0.0, pp=10.0, tp=5.0)
    before = (model, state)
    learned = PREDICTIVE.learn(model, state, progress_pct=30.0, terminal=False, now=9.0)
    assert (model, state) == before and learned.queues == (pytest.approx(2.9),)
    assert PREDICTIVE.learn(learned, attrs.evolve(state, taught=True), progress_pct=40.0,
                            terminal=False, now=11.0) == learned  # one lesson per job
    assert PollPolicy().learn(model, state, progress_pct=30.0, terminal=True, now=9.0) is model


def test_predictive_next_interval_is_pure() -> None:
    model = warmed()
    state = PollState(8.0, since=0.0)
    a = PREDICTIVE.next_interval(state, progress_pct=40.0, moved=True, now=10.0, model=model)
    b = PREDICTIVE.next_interval(state, progress_pct=40.0, moved=True, now=10.0, model=model)
    assert a == b and state == PollState(8.0, since=0.0)


# --- predictive: when predictions fail -------------------------------------------------------

def test_a_stall_between_samples_makes_it_sample_again_instead_of_aiming() -> None:
    model = warmed()
    policy = PREDICTIVE
    # 10 % at 4 s, then only 12 % at 12 s: much slower than the first sample said.
    _, state = policy.next_interval(policy.first_state(0.0), progress_pct=10.0, moved=True,
                                    now=4.0, model=model)
    interval, state = policy.next_interval(state, progress_pct=12.0, moved=True, now=12.0,
                                           model=model)
    assert not state.aimed and interval < 100.0


@pytest.mark.parametrize("hint", [None, 21.0], ids=["no-hint", "hinted"])
def test_repeated_misses_fall_back_to_plain_backoff(hint: float | None) -> None:
    policy = PREDICTIVE
    model = warmed() if hint is None else learned(hinted_jobs(range(3, 54, 2), 64))
    # Progress stops at 99 % for good (a final merge that takes long): every aim misses.
    state, t, intervals = policy.first_state(0.0, expected_seconds=hint), 8.0, []
    pct = 60.0
    for _ in range(12):
        interval, state = policy.next_interval(state, progress_pct=pct, moved=True, now=t,
                                               model=model)
        intervals.append(interval)
        t += interval
        pct = min(99.0, pct + 30.0)
    assert state.misses >= policy.max_misses
    tail = intervals[-4:]
    # Plain backoff: each interval ``growth`` times the previous, up to max_interval.
    for a, b in itertools.pairwise(tail):
        assert b == pytest.approx(min(a * policy.growth, policy.max_interval))


def test_no_progress_reported_means_plain_backoff() -> None:
    policy = PREDICTIVE
    state, seen = policy.first_state(0.0), []
    for t in (8.0, 16.0, 28.0):
        interval, state = policy.next_interval(state, progress_pct=None, moved=False, now=t)
        seen.append(interval)
    # Growing, and capped like the plain policy's (20 s), not at max_interval (for aims).
    assert seen == pytest.approx([min(policy.first_delay * policy.growth ** k, 20.0)
                                  for k in (1, 2, 3)])
    assert policy.max_interval > 20.0


@pytest.mark.parametrize("pct", [None, 0.0])
def test_backoff_after_a_long_aim_is_capped(pct: float | None) -> None:
    # A 100 s aim, then a status without progress (or queued again): back off from 20 s at
    # most, not 1.5 x 100 s (a job once found 112 s late that way).
    policy = PREDICTIVE
    state = PollState(100.0, since=0.0, aimed=True)
    interval, state = policy.next_interval(state, progress_pct=pct, moved=False, now=108.0)
    assert interval <= 20.0
    for _ in range(20):  # and repeated misses stay capped too
        state = attrs.evolve(state, aimed=True)
        interval, state = policy.next_interval(state, progress_pct=pct, moved=False,
                                               now=120.0)
        assert interval <= 20.0


def test_progress_that_goes_back_restarts_the_estimate() -> None:
    policy = PREDICTIVE
    _, state = policy.next_interval(policy.first_state(0.0), progress_pct=80.0, moved=True,
                                    now=10.0, model=warmed())
    _, state = policy.next_interval(state, progress_pct=5.0, moved=True, now=12.0,
                                    model=warmed())
    assert (state.p0, state.pp) == (5.0, 5.0)


def test_every_answer_is_clamped() -> None:
    policy = PollPolicy.predictive(min_interval=1.0, max_interval=30.0)
    model = warmed(policy)
    for pct in (None, 0.0, 1.0, 50.0, 99.0):
        for now in (0.5, 8.0, 300.0):
            interval, _ = policy.next_interval(policy.first_state(0.0), progress_pct=pct,
                                               moved=True, now=now, model=model)
            assert 1.0 <= interval <= 30.0


def test_predictive_is_detected_by_the_benchmarks_and_overridable() -> None:
    policy = PollPolicy.predictive(tolerance=0.5)
    assert policy.predict and policy.tolerance == 0.5
    assert not PollPolicy().predict


# --- predictive with video-length hints -------------------------------------------------------

def hinted_jobs(hints: range, n: int, seed: int = 3) -> list[tuple[float, Job]]:
    """(hint, job) pairs like B3's fake: queue 1-3 s, render (5 + hint) s +/- 30 %."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        hint = float(rng.choice(hints))
        out.append((hint, Job(rng.uniform(1.0, 3.0), (5.0 + hint) * rng.uniform(0.7, 1.3))))
    return out


def learned(pairs: list[tuple[float, Job]]) -> PollModel:
    """A model taught the wait-to-terminal duration of each job (as seen at its end)."""
    model = PollModel()
    for hint, job in pairs:
        state = PREDICTIVE.first_state(0.0, expected_seconds=hint)
        model = PREDICTIVE.learn(model, state, progress_pct=100.0, terminal=True,
                                 now=job.end)
    return model


def test_the_model_learns_a_lower_envelope_that_grows_with_the_hint() -> None:
    pairs = hinted_jobs(range(3, 54, 2), 64)
    model = learned(pairs)
    # Never longer than a job it saw: a first poll aimed there comes before the end.
    for hint, job in pairs:
        shortest = model.shortest(hint)
        assert shortest is not None and shortest <= job.end + 1e-9
    lengths = [model.shortest(float(h)) or 0.0 for h in range(3, 54, 10)]
    assert lengths == sorted(lengths) and lengths[-1] > 2.5 * lengths[0]
    assert model.shortest(None) is None and PollModel().shortest(10.0) is None


def test_too_few_hinted_jobs_teach_nothing_and_plain_jobs_teach_no_hint() -> None:
    model = learned(hinted_jobs(range(3, 10), 5))
    assert model.shortest(5.0) is None and len(model.totals) == 5
    plain = PREDICTIVE.learn(PollModel(), PollState(8.0, since=0.0), progress_pct=100.0,
                             terminal=True, now=20.0)
    assert plain.hinted == () and plain.totals == (20.0,)


def test_past_the_longest_hint_learned_the_envelope_errs_early() -> None:
    # Only short videos finished so far (the start of a bulk run): a long one's envelope
    # is extrapolated at half the learned rate, below the fastest such job there can be.
    model = learned(hinted_jobs(range(3, 12), 40))
    fastest_long = 1.0 + (5.0 + 53.0) * 0.7
    shortest = model.shortest(53.0)
    assert shortest is not None and model.shortest(11.0) < shortest < fastest_long  # type: ignore[operator]


@pytest.mark.parametrize("hint", [3.0, 21.0, 53.0])
def test_a_hinted_first_poll_comes_late_in_the_render_within_the_tolerance(hint: float
                                                                            ) -> None:
    model = learned(hinted_jobs(range(3, 54, 2), 64))
    state = PREDICTIVE.first_state(0.0, expected_seconds=hint)
    first = PREDICTIVE.first_interval(model, state)
    # The fastest such job (queue 1 s, render 30 % short) is found within the tolerance;
    # a typical one is sampled late in its render.
    fastest = 1.0 + (5.0 + hint) * 0.7
    assert 0.6 * fastest < first <= fastest + PREDICTIVE.tolerance
    # Far later than the unhinted first poll for a long video: fewer wasted samples.
    if hint > 20:
        assert first > 2 * PREDICTIVE.first_interval(model)


def test_before_the_model_knows_a_longer_video_waits_longer_for_its_first_poll() -> None:
    state = PREDICTIVE.first_state(0.0, expected_seconds=12.0)
    assert PREDICTIVE.first_interval(PollModel(), state, least_hint=3.0) == pytest.approx(
        2 * PREDICTIVE.first_delay)
    assert PREDICTIVE.first_interval(PollModel(), state) == PREDICTIVE.first_delay
    assert PREDICTIVE.first_interval(PollModel(), state, least_hint=12.0) == \
        PREDICTIVE.first_delay
    # Plain policies ignore hints.
    assert PollPolicy().first_interval(learned(hinted_jobs(range(3, 54, 2), 64)), state) == \
        PollPolicy().first_delay


@pytest.mark.parametrize("job", [Job(2.0, 12.0), Job(2.5, 40.0), Job(1.5, 70.0)],
                         ids=["short", "medium", "long"])
def test_a_job_without_a_hint_is_still_found_promptly(job: Job) -> None:
    model = learned(hinted_jobs(range(3, 54, 2), 64))
    times, _ = drive(PREDICTIVE, job, model)
    assert 0 <= times[-1] - job.end <= PREDICTIVE.tolerance + PREDICTIVE.margin
    assert len(times) <= 6  # a 3 s loop sends up to 24


@pytest.mark.parametrize("stall_at, stall", [(0.3, 5.0), (0.6, 6.0), (0.85, 4.0)])
def test_a_hinted_job_that_stalls_is_found_within_the_target(stall_at: float,
                                                             stall: float) -> None:
    model = learned(hinted_jobs(range(3, 54, 2), 64))
    job = Job(2.0, 60.0, stall_at=stall_at, stall=stall)
    first = PREDICTIVE.first_interval(model, PREDICTIVE.first_state(0.0,
                                                                    expected_seconds=45.0))
    times = drive_hinted(job, model, 45.0, first)
    assert 0 <= times[-1] - job.end <= 1.5  # issue 13's p99 target
    assert len(times) <= 6


def drive_hinted(job: Job, model: PollModel, hint: float, first: float) -> list[float]:
    """``drive`` for a job waited on with ``hint``."""
    state, t, times, mark = PREDICTIVE.first_state(0.0, expected_seconds=hint), first, [], None
    for _ in range(40):
        times.append(t)
        pct = job.pct(t)
        if pct == 100.0:
            return times
        moved, mark = len(times) > 1 and pct != mark, pct
        interval, state = PREDICTIVE.next_interval(state, progress_pct=pct, moved=moved,
                                                   now=t, model=model)
        t += interval
    raise AssertionError(f"{job} not detected in 40 polls: {times}")
