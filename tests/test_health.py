"""`studio.health`: which dependency is down, the one sentence pages show, and who hears a change."""

from __future__ import annotations

import pytest

from studio.blobs import BlobStoreUnavailable
from studio.health import SENTENCES, Dependency, Health, dependency_of
from studio.repositories import StoreUnavailable


class Switch:
    """A probe that fails while `down` is set, with the adapter's outage error."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.down = False
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.down:
            raise self.error


@pytest.fixture
def probes():
    return {
        Dependency.DATABASE: Switch(StoreUnavailable("the database server is not answering")),
        Dependency.STORAGE: Switch(BlobStoreUnavailable("S3 head of '/' failed (EndpointConnectionError)")),
    }


def test_everything_answering_is_no_problem(probes):
    health = Health(probes)
    assert health.check() == () and health.problem() is None and health.state() == ""
    assert all(p.calls == 1 for p in probes.values())


def test_the_database_is_told_before_the_storage_and_each_comes_back_by_itself(probes):
    health = Health(probes)
    heard: list[tuple[Dependency, ...]] = []
    health.subscribe(heard.append)
    probes[Dependency.STORAGE].down = True
    assert health.check() == (Dependency.STORAGE,)
    assert health.problem() == SENTENCES[Dependency.STORAGE] and health.state() == "storage"
    probes[Dependency.DATABASE].down = True
    health.check()
    assert health.problem() == SENTENCES[Dependency.DATABASE] and health.state() == "database,storage"
    probes[Dependency.DATABASE].down = False
    probes[Dependency.STORAGE].down = False
    assert health.check() == () and health.problem() is None
    # One message per change, never one per check: down, down too, back, back.
    assert heard == [
        (Dependency.STORAGE,),
        (Dependency.DATABASE, Dependency.STORAGE),
        (Dependency.STORAGE,),
        (),
    ]
    health.check()
    assert len(heard) == 4


def test_an_outage_a_caller_met_counts_at_once_until_a_check_finds_it_answering(probes):
    health = Health(probes)
    heard: list[tuple[Dependency, ...]] = []
    unsubscribe = health.subscribe(heard.append)
    health.noticed(Dependency.DATABASE)
    health.noticed(Dependency.DATABASE)
    assert health.down() == (Dependency.DATABASE,) and heard == [(Dependency.DATABASE,)]
    health.check()  # it answers: the outage is over
    assert health.down() == () and heard[-1] == ()
    unsubscribe()
    health.noticed(Dependency.STORAGE)
    assert len(heard) == 2  # no longer listening


def test_a_probe_that_fails_another_way_counts_as_down_and_a_listener_that_fails_stops_nobody(probes):
    def broken() -> None:
        raise RuntimeError("the probe itself is broken")

    health = Health({Dependency.DATABASE: broken})
    heard: list[tuple[Dependency, ...]] = []

    def angry(_down: tuple[Dependency, ...]) -> None:
        raise ValueError("listener trouble")

    health.subscribe(angry)
    health.subscribe(heard.append)
    assert health.check() == (Dependency.DATABASE,)
    assert heard == [(Dependency.DATABASE,)]


def test_the_thread_checks_until_stopped_and_a_studio_with_nothing_to_check_starts_none(probes):
    from tests.support import wait_for

    health = Health(probes, every_s=0.01).start()
    try:
        wait_for(lambda: health.checks >= 3, timeout=30)
    finally:
        health.stop()
    stopped_at = health.checks
    health.check()
    assert health.checks == stopped_at + 1  # only the explicit one: the thread is gone
    idle = Health({}).start()
    assert idle._thread is None
    idle.stop()


def test_the_sentences_name_what_is_away_and_promise_nothing_typed_is_lost():
    for dep, sentence in SENTENCES.items():
        assert sentence.count(".") == 1 and sentence.endswith(".")  # one sentence
        assert "typed is kept" in sentence
        assert ("database" if dep is Dependency.DATABASE else "storage") in sentence


def test_errors_are_mapped_to_what_they_say_is_down():
    from studio.blobstores.s3 import S3BlobError, S3Unavailable

    assert dependency_of(StoreUnavailable("x")) is Dependency.DATABASE
    assert dependency_of(S3Unavailable("x")) is Dependency.STORAGE
    assert dependency_of(S3BlobError("AccessDenied")) is None  # refused is not away
    assert dependency_of(ValueError("x")) is None


def test_an_outage_error_is_noticed_and_any_other_error_is_left_to_its_caller(probes):
    health = Health(probes)
    assert health.noticed_error(ValueError("a bad field")) is None and health.down() == ()
    assert health.noticed_error(StoreUnavailable("x")) is Dependency.DATABASE
    assert health.down() == (Dependency.DATABASE,)
