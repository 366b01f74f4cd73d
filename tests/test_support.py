"""The shared test helpers themselves: a broken wait would make every test that uses it lie."""

from __future__ import annotations

import itertools

import httpx
import pytest

from tests.support import FakeClock, simulators, wait_for


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


def test_simulators_are_made_with_defaults_and_stopped_on_exit():
    with simulators(seed=3, min_duration=0.01, max_duration=0.02) as make:
        sim = make(api_keys=["sk-support-0123456789"])
        assert sim.base_url.startswith("http://127.0.0.1:")
        assert httpx.get(sim.base_url + "/_sim/stats", timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):  # stopped: nothing listens there any more
        httpx.get(sim.base_url + "/_sim/stats", timeout=5)
