"""A server that echoes the API key back (in an error, a status, extra fields, a callback body)
never gets it into the database, the health JSON, a callback answer or a log line.

The key here does not look like a HiAPI key (`sk-...`), so only the configured-key path
(`errors.remember_secret`, registered by the client) can catch it.
"""

from __future__ import annotations

import json
import logging

from studio.callbacks import CallbackReceiver
from studio.client import HiAPIClient
from studio.images import ImageKeeper
from studio.models import TaskRequest
from studio.store import Store
from studio.tracker import Tracker
from tests.support import FakeClock, sql_rows
from tests.test_tracker_faults import Answer, HostileHiAPI, _envelope

KEY = "hk_7f3a9c2e5b1d40"  # 17 characters: short enough to be quoted in a refusal reason
TASK = "tk-echo-01"
TOKEN = "t" * 32


def _tracker(base_url: str, data, **kw) -> tuple[Tracker, Store]:
    store = Store(data / "studio.db")
    client = HiAPIClient(KEY, base_url=base_url, max_retries=0)
    keeper = ImageKeeper(data / "images", thumb_size=128)
    return Tracker(store, client, keeper, priors={"1K": 0.2, "2K": 0.2, "4K": 0.2}, **kw), store


def _no_key_in(data, *texts: str) -> None:
    files = list(data.glob("studio.db*"))
    assert files
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p.name
    for text in texts:
        assert KEY not in text


def test_a_polled_task_echoing_the_key_is_stored_redacted(tmp_path, caplog):
    hostile = HostileHiAPI()
    answers = iter(
        [
            # a failed look: HTTP error whose code and message echo the key
            (503, {"code": 503, "message": f"busy for {KEY}", "error_code": f"BUSY_{KEY}"}),
            # an unknown status and extra fields carrying it
            (200, {"code": 200, "data": {"taskId": TASK, "status": f"odd-{KEY}", "debug": {KEY: [KEY]}}}),
        ]
    )

    def task(handler):
        status, body = next(answers, (200, None))
        if body is None:
            body = json.loads(
                _envelope(
                    {
                        "taskId": TASK,
                        "status": "fail",
                        "error": {"code": f"E_{KEY}", "message": f"upstream saw Authorization: Bearer {KEY}"},
                        "echo": {"headers": {"Authorization": f"Bearer {KEY}"}, KEY: KEY},
                    }
                )
            )
        hostile.answers["task"].status = status  # read after the body is made
        return json.dumps(body).encode()

    hostile.answers["create"] = Answer(200, _envelope({"taskId": TASK}))
    hostile.answers["task"] = Answer(200, task)
    clock = FakeClock.at_now()  # the back-off after the 503 and the poll intervals pass at once
    tracker, store = _tracker(hostile.base_url, tmp_path, clock=clock)
    caplog.set_level(logging.DEBUG)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a kite", "1:1", "1K")])
        sub = clock.run_until(lambda: (s := store.submission(sid)).is_terminal and s, tracker)
        health = json.dumps(tracker.health())
        raw = sql_rows(store, "SELECT raw_task FROM submissions WHERE id=?", (sid,))[0][0]
        logging.getLogger("studio.test").warning("a line quoting %s", KEY)  # any log line at all
    finally:
        tracker.stop()
        hostile.close()
    assert sub.state == "fail"
    assert sub.error_code == "E_[redacted]" and "Bearer [redacted]" in sub.error_message
    assert json.loads(raw)["echo"] == {
        "headers": {"Authorization": "Bearer [redacted]"},
        "[redacted]": "[redacted]",
    }
    assert "odd-[redacted]" in [e[0] for e in store.events(sid)]
    store.close()
    _no_key_in(tmp_path, health, caplog.text)


def test_a_callback_echoing_the_key_is_stored_redacted_and_refusals_do_not_quote_it(tmp_path, caplog):
    tracker, store = _tracker("http://127.0.0.1:9", tmp_path)  # never started: nothing is polled
    receiver = CallbackReceiver(TOKEN, tracker)
    caplog.set_level(logging.DEBUG)
    known = store.add_submission(TaskRequest("a kite", "1:1", "1K"), idempotency_key="k1", creative_id="c")
    store.mark_created(known, TASK)
    waiting = store.add_submission(TaskRequest("a boat", "1:1", "1K"), idempotency_key="k2", creative_id="c")

    def body(task_id: str) -> bytes:
        return json.dumps(
            {
                "taskId": task_id,
                "status": "fail",
                "error": {"code": "TASK_FAILED", "message": f"key {KEY} was refused"},
                "extra": {KEY: f"Bearer {KEY}"},
            }
        ).encode()

    stored = receiver.receive(TOKEN, {}, body(TASK))
    held = receiver.receive(TOKEN, {}, body("tk-not-yet-known"))  # outran its create answer
    refused = receiver.receive(TOKEN, {}, json.dumps({"taskId": TASK, "status": KEY}).encode())
    health = json.dumps(tracker.health())
    tracker.stop()
    assert (stored.status, held.status, refused.status) == (200, 202, 400)
    assert KEY not in refused.reason and "[redacted]" in refused.reason
    assert "key [redacted] was refused" in store.submission(known).error_message
    assert store.held_callbacks() == 1 and store.submission(waiting).state == "submitting"
    store.close()
    _no_key_in(tmp_path, health, caplog.text)
