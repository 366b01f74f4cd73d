"""The adaptive polling schedule, as plain functions on a virtual clock."""

import random

from studio.schedule import DENSE_INTERVAL, MAX_INTERVAL, Expectation, next_check_delay


def simulate(policy, finish: float, expected: Expectation) -> tuple[float, int]:
    """Return (detection delay, number of GETs) for a task finishing at `finish` s."""
    t, checks = 0.0, 0
    status = "queued"
    while True:
        t += policy(t, status, checks)
        checks += 1
        if t >= finish:
            return t - finish, checks
        status = "archiving" if t >= finish * 0.9 else "handling"


def ours(exp):
    return lambda t, status, checks: next_check_delay(t, status, exp, checks=checks)


def fixed(interval):
    return lambda t, status, checks: interval


def test_first_check_is_soon_after_submit():
    exp = Expectation.learn([], prior=60)
    assert next_check_delay(0, "queued", exp, checks=0) <= 1.0


def test_sparse_early_dense_near_expected_finish():
    exp = Expectation(early=30, typical=50, late=90)
    early = next_check_delay(5, "handling", exp, checks=1)
    near = next_check_delay(50, "handling", exp, checks=5)
    assert early > 5 * near
    assert near <= 1.0
    assert next_check_delay(48, "archiving", exp, checks=5) == DENSE_INTERVAL


def test_late_tasks_back_off_but_are_never_dropped():
    exp = Expectation(early=30, typical=50, late=90)
    delays = [next_check_delay(t, "handling", exp, checks=9) for t in (100, 200, 400, 4000)]
    assert delays == sorted(delays)
    assert delays[-1] == MAX_INTERVAL


def test_errors_back_off_and_retry_after_wins():
    exp = Expectation(early=30, typical=50, late=90)
    d1 = next_check_delay(50, "handling", exp, checks=3, errors=1)
    d3 = next_check_delay(50, "handling", exp, checks=3, errors=3)
    assert d3 > d1
    assert next_check_delay(50, "handling", exp, checks=3, errors=1, retry_after=30) == 30
    assert next_check_delay(50, "handling", exp, checks=3, retry_after=7) == 7


def test_learning_uses_recent_durations():
    exp = Expectation.learn([40, 45, 50, 55, 60], prior=200)
    assert 40 < exp.typical < 60
    assert exp.early < exp.typical < exp.late
    assert Expectation.learn([50], prior=200).typical == 200  # too little data: the prior


def test_faster_than_fixed_3s_and_cheaper_than_fixed_half_second():
    rng = random.Random(7)
    durations = [min(240, max(20, rng.lognormvariate(4.0, 0.35))) for _ in range(300)]
    exp = Expectation.learn(durations[:50], prior=60)
    ours_delay, ours_reqs, fixed_delay, fixed_reqs = [], [], [], []
    for d in durations[50:]:
        a, n = simulate(ours(exp), d, exp)
        b, _ = simulate(fixed(3.0), d, exp)
        _, m = simulate(fixed(0.5), d, exp)
        ours_delay.append(a), ours_reqs.append(n), fixed_delay.append(b), fixed_reqs.append(m)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(ours_delay) < mean(fixed_delay)  # sooner than HiAPI's client
    assert mean(ours_reqs) < mean(fixed_reqs) / 2  # far fewer requests than Replicate's
