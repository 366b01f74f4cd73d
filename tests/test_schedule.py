"""The adaptive polling schedule, as plain functions on a virtual clock."""

import random

from studio.schedule import (
    ARCHIVING_INTERVAL,
    FIRST_CHECK,
    MAX_INTERVAL,
    WINDOW_CAP,
    DurationHistory,
    next_check_delay,
    replay,
)
from studio.simulator import realistic_duration


def ours(history):
    return lambda t, status, checks: next_check_delay(t, status, history, checks=checks)


def fixed(interval):
    return lambda t, status, checks: interval


def median(xs):
    return sorted(xs)[len(xs) // 2]


HISTORY = DurationHistory(tuple(float(x) for x in range(40, 61)))  # finishes between 40 and 60 s


def test_first_check_is_soon_after_submit():
    assert next_check_delay(0, "submitting", HISTORY, checks=0) == FIRST_CHECK


def test_one_long_hop_while_nothing_can_be_done_then_short_gaps():
    hop = next_check_delay(1, "queued", HISTORY, checks=1)
    assert 1 + hop <= HISTORY.window_start() + 1e-9
    assert hop > 10 * WINDOW_CAP
    inside = [next_check_delay(t, "handling", HISTORY, checks=3) for t in (41, 45, 50, 55, 59)]
    assert all(d <= WINDOW_CAP for d in inside)
    assert next_check_delay(50, "archiving", HISTORY, checks=5) == ARCHIVING_INTERVAL


def test_late_tasks_back_off_but_are_never_dropped():
    delays = [next_check_delay(t, "handling", HISTORY, checks=9) for t in (61, 80, 120, 4000)]
    assert delays == sorted(delays)
    assert delays[-1] == MAX_INTERVAL


def test_errors_back_off_and_retry_after_wins():
    d1 = next_check_delay(50, "handling", HISTORY, checks=3, errors=1)
    d3 = next_check_delay(50, "handling", HISTORY, checks=3, errors=3)
    assert d3 > d1
    assert next_check_delay(50, "handling", HISTORY, checks=3, errors=1, retry_after=30) == 30
    assert next_check_delay(50, "handling", HISTORY, checks=3, retry_after=7) == 7


def test_history_from_prior_until_enough_tasks_finished():
    prior = DurationHistory.learn([50.0, 52.0], prior=100)
    assert 90 <= prior.typical <= 110 and not prior.learned
    # No long hop on a prior's word: a task far faster than the prior is still seen soon.
    gaps = [next_check_delay(t, "handling", prior, checks=2) for t in (1, 5, 10, 20)]
    assert gaps == sorted(gaps) and gaps[-1] <= 6
    learned = DurationHistory.learn([40, 45, 50, 55, 60], prior=100)
    assert learned.seconds == (40, 45, 50, 55, 60) and learned.typical == 50 and learned.learned


def test_time_scale_compresses_the_fixed_intervals():
    assert next_check_delay(0, "submitting", HISTORY, checks=0, scale=10) == FIRST_CHECK / 10
    assert next_check_delay(50, "archiving", HISTORY, checks=5, scale=10) == ARCHIVING_INTERVAL / 10


def test_beats_fixed_three_seconds_on_delay_and_requests_at_once():
    rng = random.Random(7)
    warm = DurationHistory.learn([sum(realistic_duration("1K", rng)) for _ in range(50)], prior=45)
    tasks = [realistic_duration("1K", rng) for _ in range(300)]
    a = [replay(ours(warm), p) for p in tasks]
    b = [replay(fixed(3.0), p) for p in tasks]
    # The bar: p50 delay <= 0.5x and requests <= 0.6x those of HiAPI's own 3 s polling.
    assert median([d for d, _ in a]) <= 0.5 * median([d for d, _ in b])
    assert sum(n for _, n in a) <= 0.6 * sum(n for _, n in b)
