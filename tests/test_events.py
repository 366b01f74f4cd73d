"""The push channel's source: the event bus, the tracker's events and the queue's view model."""

from __future__ import annotations

import threading

import pytest

from components.queue import queue_view
from studio import events as ev
from studio.events import EventBus
from studio.models import TaskRequest
from tests.test_tracker import make_tracker, sim, wait_for  # noqa: F401  (sim is a fixture)


def test_events_are_numbered_in_order_and_remembered():
    bus = EventBus(memory=3)
    assert bus.seq == 0 and bus.since(0) == []
    for sid in range(1, 6):
        bus.publish(ev.PROGRESS, sid)
    assert bus.seq == 5
    assert [e.submission_id for e in bus.since(2)] == [3, 4, 5]
    assert bus.since(1) is None  # forgotten: the caller reloads everything
    assert bus.since(5) == []


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="event kind"):
        EventBus().publish("kep")


def test_listeners_hear_every_event_and_a_broken_one_is_dropped():
    bus = EventBus()
    heard: list[int] = []
    bus.subscribe(lambda e: heard.append(e.seq))

    def broken(_e):
        raise RuntimeError("loop closed")

    bus.subscribe(broken)
    threads = [threading.Thread(target=bus.publish, args=(ev.CHANGED,)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(heard) == list(range(1, 21))
    assert bus.listeners == 1


def test_two_buses_tell_a_restart_apart():
    assert EventBus().boot != EventBus().boot


def test_tracker_publishes_new_progress_and_kept(sim, tmp_path):  # noqa: F811
    tracker, store = make_tracker(sim, tmp_path)
    seen: list[ev.Event] = []
    tracker.events.subscribe(seen.append)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a lighthouse", "1:1", "1K")])
        assert wait_for(lambda: any(e.kind == ev.KEPT for e in seen))
        kinds = [e.kind for e in seen if e.submission_id == sid]
        assert kinds[0] == ev.NEW and ev.PROGRESS in kinds and kinds[-1] == ev.KEPT
        [kept] = [e for e in seen if e.kind == ev.KEPT]
        assert store.outputs_for([sid])[sid][0].id == kept.output_id
    finally:
        tracker.stop()


def test_tracker_publishes_failed(sim, tmp_path):  # noqa: F811
    sim.set_faults(fail_rate=1.0)
    tracker, _ = make_tracker(sim, tmp_path)
    seen: list[ev.Event] = []
    tracker.events.subscribe(seen.append)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a lighthouse", "1:1", "1K")])
        assert wait_for(lambda: (ev.FAILED, sid) in [(e.kind, e.submission_id) for e in seen])
    finally:
        tracker.stop()


def test_queue_view_is_plain_text_and_versioned(sim, tmp_path):  # noqa: F811
    tracker, store = make_tracker(sim, tmp_path)
    tracker.start()
    try:
        prompt = 'Poster <img src=x onerror=alert(1)> [link](https://evil.example) "SALE"'
        ids = tracker.submit([TaskRequest(prompt, r, "1K") for r in ("16:9", "9:16")])
        assert wait_for(lambda: all(store.outputs_for(ids).get(i) for i in ids) and not store.unfinished())
        assert wait_for(lambda: all(o.state == "kept" for i in ids for o in store.outputs_for([i])[i]))
        view = queue_view(store, tracker.events)
    finally:
        tracker.stop()
    [creative] = view["creatives"]
    assert creative["prompt"] == prompt  # raw: the browser sets it as text, never as HTML
    assert [t["id"] for t in creative["tasks"]] == ids
    assert view["v"]["boot"] == tracker.events.boot and view["v"]["seq"] >= 4
    thumbs = [o["thumb"] for t in creative["tasks"] for o in t["outputs"]]
    assert len(thumbs) == 2 and all(t.startswith("/thumbs/") and t.endswith(".webp") for t in thumbs)
    assert view["sequence"] == [o["id"] for t in creative["tasks"] for o in t["outputs"]]
    assert creative["kit"] is True
