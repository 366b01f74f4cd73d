"""The tracker end to end in-process: real HTTP to the simulator, real SQLite, real files."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from studio.client import HiAPIClient
from studio.errors import HiAPIConnectionError
from studio.images import ImageKeeper
from studio.models import TaskRequest
from studio.ratios import pixel_size
from studio.simulator import Simulator
from studio.store import REJECTED, Store
from studio.tracker import Tracker
from tests.support import FakeClock, loop_rounds, wait_for

KEY = "sk-test-tracker-0123456789"


@pytest.fixture
def sim():
    s = Simulator(api_keys=[KEY], min_duration=0.2, max_duration=0.5, seed=3).start()
    yield s
    s.stop()


def make_tracker(sim, tmp_path, **kw):
    store = Store(tmp_path / "studio.db")
    client = HiAPIClient(KEY, base_url=sim.base_url, backoff_base=0.05, backoff_cap=0.2)
    keeper = ImageKeeper(tmp_path / "images")
    priors = {"1K": 0.4, "2K": 0.4, "4K": 0.4}
    return Tracker(store, client, keeper, priors=priors, **kw), store


def all_terminal(store):
    return lambda: (
        not store.unfinished()
        and all(
            o.state != "pending"
            for outs in store.outputs_for([s.id for s in store.recent(100)]).values()
            for o in outs
        )
    )


def test_submit_follows_tasks_to_kept_images(sim, tmp_path):
    clock = FakeClock.at_now()  # the schedule's waits pass at once; the simulator's tasks take real time
    tracker, store = make_tracker(sim, tmp_path, clock=clock)
    tracker.start()
    try:
        ids = tracker.submit([TaskRequest('poster "SUMMER DROP"', r, "1K") for r in ("16:9", "9:16", "1:1")])
        assert clock.run_until(all_terminal(store), tracker, step=0.1)
        outs = store.outputs_for(ids)
        for sid in ids:
            sub = store.submission(sid)
            assert sub.state == "success"
            [o] = outs[sid]
            assert o.state == "kept"
            with Image.open(tracker.keeper.original_path(o.sha256)) as im:
                assert im.size == pixel_size(sub.aspect_ratio, "1K") == (o.width, o.height)
        stats = sim.stats()
        assert stats["tasks_created"] == 3
        assert tracker.health()["in_flight"] == 0
    finally:
        tracker.stop()


def test_failed_task_keeps_reason_and_is_never_retried(sim, tmp_path):
    sim.set_faults(fail_rate=1.0)
    clock = FakeClock.at_now()
    tracker, store = make_tracker(sim, tmp_path, clock=clock)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a dragon", "4:3", "1K")])
        assert clock.run_until(lambda: store.submission(sid).is_terminal, tracker, step=0.1)
        clock.advance(3600.0, tracker)  # an hour on the tracker's clock...
        loop_rounds(tracker)  # ...and the loop has looked again: nothing is resent
        sub = store.submission(sid)
        assert sub.state == "fail" and sub.error_code and sub.error_message
        assert sim.stats()["tasks_created"] == 1
    finally:
        tracker.stop()


def test_refused_create_is_recorded_not_resent(sim, tmp_path):
    tracker, store = make_tracker(sim, tmp_path)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("x", "1:1", "1K", model="not-a-model")])
        assert wait_for(lambda: store.submission(sid).is_terminal)
        sub = store.submission(sid)
        assert sub.state == REJECTED and sub.error_code == "INVALID_REQUEST"
        assert sim.stats()["tasks_created"] == 0
    finally:
        tracker.stop()


def test_resumes_unfinished_work_after_a_restart_without_duplicates(sim, tmp_path):
    # First process: the create answer is dropped, then the process dies.
    store = Store(tmp_path / "studio.db")
    client = HiAPIClient(KEY, base_url=sim.base_url, max_retries=0)
    req = TaskRequest("a lighthouse", "3:2", "1K")
    key = client.new_idempotency_key()
    sid = store.add_submission(req, idempotency_key=key, creative_id="c1")
    sim.set_faults(drop_create_answer_rate=1.0)
    with pytest.raises(HiAPIConnectionError):
        client.create_task(req, idempotency_key=key)
    assert sim.stats()["tasks_created"] == 1
    sim.set_faults(drop_create_answer_rate=0.0)
    # Second process: a new tracker resumes from the store.
    clock = FakeClock.at_now()
    tracker, store2 = make_tracker(sim, tmp_path, clock=clock)
    tracker.start()
    try:
        assert clock.run_until(all_terminal(store2), tracker, step=0.1)
        assert store2.submission(sid).state == "success"
        stats = sim.stats()
        assert stats["tasks_created"] == 1 and stats["idempotent_replays"] >= 1
    finally:
        tracker.stop()


def test_rate_limited_polls_still_finish(sim, tmp_path):
    sim.set_faults(get_429_rate=0.5, get_503_rate=0.2, retry_after=0)
    clock = FakeClock.at_now()  # the back-offs after each refused poll pass at once
    tracker, store = make_tracker(sim, tmp_path, clock=clock)
    tracker.start()
    try:
        ids = tracker.submit([TaskRequest("a cat", "1:1", "1K"), TaskRequest("a dog", "2:3", "1K")])
        assert clock.run_until(all_terminal(store), tracker, step=0.1)
        assert all(store.submission(i).state == "success" for i in ids)
    finally:
        tracker.stop()


def test_crash_between_download_and_rename_is_recovered(sim, tmp_path):
    # First process: the task succeeds but the process dies before the image is kept.
    store = Store(tmp_path / "studio.db")
    client = HiAPIClient(KEY, base_url=sim.base_url)
    clock = FakeClock.at_now()
    first = Tracker(store, client, None, priors={"1K": 0.4}, clock=clock)
    first.start()
    try:
        [sid] = first.submit([TaskRequest('a menu "MORNING BREW"', "3:4", "1K")])
        assert clock.run_until(lambda: store.submission(sid).state == "success", first, step=0.1)
    finally:
        first.stop()
    [pending] = store.outputs_for([sid])[sid]
    assert pending.state == "pending"
    keeper = ImageKeeper(tmp_path / "images")
    stale = tmp_path / "images" / "tmp" / "half-written.part"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"\x89PNG partial")
    # Second process: start-up sweeps the half-written file and keeps the image.
    assert keeper.sweep_temp(older_than_s=0) >= 1
    assert not stale.exists()
    second = Tracker(store, client, keeper, priors={"1K": 0.4})
    second.start()
    try:
        assert wait_for(lambda: store.outputs_for([sid])[sid][0].state == "kept")
        kept = store.outputs_for([sid])[sid][0]
        assert hashlib.sha256(keeper.original_path(kept.sha256).read_bytes()).hexdigest() == kept.sha256
    finally:
        second.stop()
