"""Live views rerun by push, not by timers: what a push message says, and which watch it concerns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.watch import concerns
from studio import events as ev
from studio.events import EventBus, described
from studio.images import ImageKeeper
from studio.kit import KitBuilder
from tests.support import wait_for
from tests.test_kit import PROMPT, item, render_png

ROOT = Path(__file__).resolve().parents[1]


def test_a_push_message_names_what_happened_or_says_it_cannot():
    bus = EventBus(memory=4)
    bus.publish(ev.PROGRESS, 7)
    bus.publish(ev.KEPT, 7, 70)
    bus.publish_kit("job1")
    assert described(bus.since(0)) == [
        {"kind": "progress", "sid": 7},
        {"kind": "kept", "sid": 7, "oid": 70},
        {"kind": "kit", "job": "job1"},
    ]
    assert described(bus.since(3)) == []
    for sid in range(10):
        bus.publish(ev.PROGRESS, sid)
    assert described(bus.since(0)) is None  # forgotten by the bus: the listener must assume anything
    assert described(bus.since(bus.seq - 3), cap=2) is None  # too many to list
    assert len(described(bus.since(bus.seq - 2), cap=2) or []) == 2


def test_a_watch_is_concerned_only_by_its_tasks_images_kinds_or_job():
    mine = {"submissions": [1, 2], "outputs": [20], "kinds": [], "job": None}
    assert concerns([{"kind": "progress", "sid": 2}], **mine)
    assert concerns([{"kind": "checked", "oid": 20}], **mine)
    assert not concerns([{"kind": "progress", "sid": 3}, {"kind": "kept", "sid": 3, "oid": 30}], **mine)
    assert concerns([{"kind": "new", "sid": 9}], submissions=[1], kinds=[ev.NEW])
    assert concerns([{"kind": "kit", "job": "a"}], job="a")
    assert not concerns([{"kind": "kit", "job": "b"}], job="a")
    # A commit by another process names nothing; a message that cannot list its events says None.
    anon = [{"kind": "changed"}]
    assert not concerns(anon, **mine) and concerns(anon, unknown=True, **mine)
    assert not concerns(None, **mine) and concerns(None, unknown=True, **mine)
    assert not concerns([{"kind": "kit", "job": "a"}], unknown=True)  # a kit's moves name their job


def test_a_kit_build_tells_the_bus_of_every_file_and_of_its_end(tmp_path):
    keeper = ImageKeeper(tmp_path / "images")
    kept = keeper.keep_bytes(render_png(PROMPT, "9:16", "1K"), {"prompt": PROMPT})
    bus = EventBus()
    heard: list[ev.Event] = []
    bus.subscribe(heard.append)
    builder = KitBuilder(keeper.blobs, events=bus)
    try:
        job = builder.start(
            [item("9:16", sha=kept.sha256, size=(kept.width, kept.height))], ["story", "square"]
        )
        wait_for(lambda: builder.status(job.id).state != "running", step=0.02)
        assert builder.status(job.id).state == "done"
        wait_for(lambda: len(heard) >= job.total + 1, step=0.02)
    finally:
        builder.close()
    assert {(e.kind, e.job, e.submission_id, e.output_id) for e in heard} == {(ev.KIT, job.id, None, None)}
    assert len(heard) == job.total + 1  # one per file written (contact sheet included), one for the end


def test_no_widget_reruns_on_a_timer():
    """The live views (queue, gallery, undo bar, kit progress, campaigns) follow the push channel."""
    found = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sorted((ROOT / "components").rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\brun_every\s*=", line)
    ]
    assert found == []


def test_pages_told_of_one_change_share_one_view_build():
    import threading

    from studio.events import ViewCache
    from tests.support import FakeClock

    bus, clock = EventBus(), FakeClock()
    cache = ViewCache(bus, ttl=1.0, clock=clock)
    started, release = threading.Event(), threading.Event()
    built: list[int] = []

    def build():
        built.append(bus.seq)
        started.set()
        assert release.wait(10)
        return {"seq": bus.seq}

    answers: list[dict] = []
    first = threading.Thread(target=lambda: answers.append(cache.get("queue", build)))
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=lambda: answers.append(cache.get("queue", build))) for _ in range(5)]
    for t in others:
        t.start()
    wait_for(lambda: len(cache._building) == 1 and all(t.is_alive() for t in others), step=0.01)
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert answers == [{"seq": 0}] * 6 and built == [0]  # six pages, one build
    assert cache.get("gallery?text=x", lambda: {"other": True}) == {"other": True}  # another request
    bus.publish(ev.KEPT, 1, 10)
    assert cache.get("queue", lambda: {"seq": bus.seq}) == {"seq": 1}  # a newer change: built again
    clock.advance(1.5)
    assert cache.get("queue", lambda: {"fresh": True}) == {"fresh": True}  # older than ttl
    assert cache.builds == 4


def test_a_failed_view_build_is_not_kept():
    from studio.events import ViewCache

    cache = ViewCache(EventBus())

    def broken():
        raise OSError("database is locked")

    with pytest.raises(OSError, match="locked"):  # the build's error reaches its caller
        cache.get("queue", broken)
    assert cache.get("queue", lambda: {"ok": True}) == {"ok": True}
