"""Slow servers stall nothing: lanes per kind of job, deadlines on every answer and download.

Real HTTP to the simulator with its trickle faults (a body sent one byte per
interval, never finishing within a test), real SQLite, real files. Nothing is
timed: the tests assert what happened in which order, e.g. a create reached
the simulator while every download slot was still stuck.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from studio.client import HiAPIClient
from studio.errors import HiAPIConnectionError
from studio.images import DownloadFailed, ImageKeeper
from studio.models import TaskRequest
from studio.simulator import Simulator
from studio.store import Store
from studio.tracker import Tracker
from tests.support import FakeClock, wait_for

KEY = "sk-test-lanes-0123456789"
PRIORS = {"1K": 0.3, "2K": 0.3, "4K": 0.3}
TRICKLE = 0.25  # seconds per byte: a status answer needs over a minute, an image hours


@pytest.fixture
def sim():
    s = Simulator(api_keys=[KEY], min_duration=0.1, max_duration=0.3, seed=7).start()
    yield s
    s.stop()


def outputs(store, ids):
    return [o for outs in store.outputs_for(ids).values() for o in outs]


def test_stuck_downloads_never_delay_a_new_create_or_its_polls(sim, tmp_path):
    sim.set_faults(download_trickle_s=TRICKLE)
    store = Store(tmp_path / "studio.db")
    client = HiAPIClient(KEY, base_url=sim.base_url, backoff_base=0.05, backoff_cap=0.2)
    # The default download deadline (minutes) keeps both slots stuck for the whole test.
    tracker = Tracker(store, client, ImageKeeper(tmp_path / "images"), priors=PRIORS, download_workers=2)
    tracker.start()
    try:
        first = tracker.submit([TaskRequest("a fox", r, "1K") for r in ("1:1", "16:9", "9:16")])
        wait_for(lambda: sim.stats()["trickles_started"] == 2)
        assert tracker.health()["lanes"]["download"] == {"busy": 2, "workers": 2}

        [new] = tracker.submit([TaskRequest("a new prompt", "1:1", "1K")])
        wait_for(lambda: store.submission(new).state == "success")  # created, then polled to its end

        stats = sim.stats()
        assert stats["tasks_created"] == 4
        assert stats["gets_by_task"][store.submission(new).task_id] >= 1
        # All the while the two downloads were stuck: none finished, none was cut off,
        # and the third output (and the new one) still waits for a free slot.
        assert stats["trickles_started"] == 2
        assert stats["trickles_finished"] == stats["trickles_cut"] == 0
        assert tracker.health()["lanes"]["download"]["busy"] == 2
        assert sum(o.state == "pending" for o in outputs(store, [*first, new])) == 4
    finally:
        sim.stop()  # ends the trickles, so the download workers come back
        tracker.stop()


def test_a_trickled_status_answer_is_abandoned_at_its_deadline(sim, tmp_path):
    store = Store(tmp_path / "studio.db")
    client = HiAPIClient(KEY, base_url=sim.base_url, max_retries=0, answer_deadline=0.5)
    # The deadline is the client's, on real time; the tracker's waits (first look, back-off) are not
    # what this test is about and pass on its own clock.
    clock = FakeClock.at_now()
    tracker = Tracker(store, client, ImageKeeper(tmp_path / "images"), priors=PRIORS, clock=clock)
    sim.set_faults(get_trickle_s=TRICKLE)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a fox", "1:1", "1K")])
        clock.run_until(lambda: tracker.health()["poll_errors"] >= 1, tracker, step=0.25)
        assert "deadline" in tracker.health()["last_error"]
        # The studio hung up: the simulator saw its trickle cut short, never finished.
        wait_for(lambda: sim.stats()["trickles_cut"] >= 1)
        assert sim.stats()["trickles_finished"] == 0
        assert store.submission(sid).state != "success"

        sim.set_faults(get_trickle_s=0)  # the server recovers; the task is followed to its end
        clock.run_until(lambda: [o.state for o in outputs(store, [sid])] == ["kept"], tracker, step=0.25)
    finally:
        tracker.stop()


def test_client_deadline_covers_the_whole_answer_not_each_read(sim):
    client = HiAPIClient(KEY, base_url=sim.base_url, max_retries=0, answer_deadline=0.5)
    created = client.create_task(TaskRequest("a fox", "1:1", "1K"))
    sim.set_faults(get_trickle_s=TRICKLE)  # each byte well within the 30 s read timeout
    with pytest.raises(HiAPIConnectionError, match="0.5 s deadline"):
        client.get_task(created.task_id)
    wait_for(lambda: sim.stats()["trickles_cut"] == 1)
    assert sim.stats()["trickles_finished"] == 0


def test_client_deadline_also_covers_trickled_headers():
    """A server that dribbles its status line: no body read ever starts, the deadline still ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    sent = []
    stop = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for ch in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                if stop.is_set():
                    break
                try:
                    conn.sendall(bytes([ch]))
                except OSError:
                    break
                sent.append(ch)
                time.sleep(0.05)  # a deliberately slow server (the fault under test): one byte at a time

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        client = HiAPIClient(KEY, base_url=f"http://127.0.0.1:{port}", max_retries=0, answer_deadline=0.5)
        with pytest.raises(HiAPIConnectionError, match="deadline"):
            client.get_task("tk-hiapi-slow")
        total = len(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        assert len(sent) < total  # given up before the server had even sent its headers
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_download_past_its_deadline_is_a_failed_attempt_retried_while_the_link_lives(sim, tmp_path):
    sim.set_faults(download_trickle_s=TRICKLE)
    store = Store(tmp_path / "studio.db")
    client = HiAPIClient(KEY, base_url=sim.base_url, backoff_base=0.05, backoff_cap=0.2)
    keeper = ImageKeeper(tmp_path / "images", total_timeout=0.5)
    clock = FakeClock.at_now()  # the keeper's deadline is real time; the tracker's waits are not
    tracker = Tracker(store, client, keeper, priors=PRIORS, clock=clock)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a fox", "1:1", "1K")])
        [o] = clock.run_until(
            lambda: [o for o in outputs(store, [sid]) if o.attempts >= 1], tracker, step=0.25
        )
        assert o.state == "pending"  # not final: the link still lives
        assert "did not finish within 0.5 s" in o.error
        wait_for(lambda: sim.stats()["trickles_cut"] >= 1)

        sim.set_faults(download_trickle_s=0)
        [o] = clock.run_until(lambda: [o for o in outputs(store, [sid]) if o.state == "kept"], tracker)
        assert o.attempts >= 1
        assert sim.stats()["trickles_finished"] == 0
    finally:
        tracker.stop()


def test_keeper_deadline_ends_a_trickled_download(sim, tmp_path):
    client = HiAPIClient(KEY, base_url=sim.base_url)
    created = client.create_task(TaskRequest("a fox", "1:1", "1K"))
    task = wait_for(lambda: (t := client.get_task(created.task_id)).is_terminal and t)
    sim.set_faults(download_trickle_s=TRICKLE)
    with ImageKeeper(tmp_path / "images", total_timeout=0.5, allow_loopback=True) as keeper:
        with pytest.raises(DownloadFailed) as info:
            keeper.fetch(task.outputs[0].url, {"prompt": "a fox"})
    assert info.value.code == "timeout" and info.value.retryable
    wait_for(lambda: sim.stats()["trickles_cut"] == 1)
