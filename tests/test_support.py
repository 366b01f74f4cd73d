"""The shared test helpers themselves: a broken wait would make every test that uses it lie."""

from __future__ import annotations

import itertools
import time

import httpx
import pytest

from tests.support import FakeClock, loop_rounds, simulators, wait_for


def test_wait_for_returns_the_first_truthy_value():
    calls = itertools.count()
    assert wait_for(lambda: next(calls) >= 3 and "ready", step=0.001) == "ready"


def test_wait_for_fails_with_a_sentence_when_the_condition_never_holds():
    with pytest.raises(AssertionError, match="not met within 0.05 s"):
        wait_for(lambda: None, timeout=0.05, step=0.01)


def test_the_fake_clock_moves_only_when_told():
    clock = FakeClock(10.0)
    assert clock() == clock() == 10.0
    assert clock.advance(2.5) == 12.5 == clock()


def test_advancing_the_fake_clock_wakes_the_trackers_given():
    class Sleeper:
        woken = 0

        def wake(self):
            self.woken += 1

        def __call__(self):
            return None

    a, b = Sleeper(), Sleeper()
    clock = FakeClock.at_now()
    assert abs(clock() - time.time()) < 60
    clock.advance(1.0, a, b)
    clock.advance(1.0, a)
    assert (a.woken, b.woken) == (2, 1)


def test_loop_rounds_waits_for_whole_rounds_of_a_real_tracker(tmp_path):
    from studio.store import Store
    from studio.tracker import Tracker

    clock = FakeClock.at_now()
    tracker = Tracker(Store(tmp_path / "s.db"), None, None, clock=clock).start()
    try:
        before = tracker.rounds
        loop_rounds(tracker, 3)
        assert tracker.rounds >= before + 4  # the clock never moved: only wake() ran them
    finally:
        tracker.stop()
    with pytest.raises(AssertionError, match="stopped"):
        loop_rounds(tracker, 1, timeout=5)


def test_simulators_are_made_with_defaults_and_stopped_on_exit():
    with simulators(seed=3, min_duration=0.01, max_duration=0.02) as make:
        sim = make(api_keys=["sk-support-0123456789"])
        assert sim.base_url.startswith("http://127.0.0.1:")
        assert httpx.get(sim.base_url + "/_sim/stats", timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):  # stopped: nothing listens there any more
        httpx.get(sim.base_url + "/_sim/stats", timeout=5)


def test_run_until_moves_the_clock_only_while_the_condition_is_unmet():
    clock = FakeClock(0.0)
    assert clock.run_until(lambda: clock() >= 5.0 and "due", step=1.0) == "due"
    assert clock() == 5.0
    assert clock.run_until(lambda: "already") == "already" and clock() == 5.0
