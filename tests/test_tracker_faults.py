"""The tracker against bad servers: each bad answer becomes a clear state in the store, and pages still render.

The simulator produces the faults HiAPI documents; for answers it never gives
(HTML pages, empty or huge bodies, missing fields, bombs) a scripted HTTP
server on loopback stands in for HiAPI and its file storage. Everything else
is real: the client over HTTP, SQLite, the image keeper, the Streamlit page.
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from studio import services as core
from studio.client import HiAPIClient
from studio.images import ImageKeeper
from studio.models import TaskRequest
from studio.schedule import ERROR_BASE
from studio.simulator import Simulator
from studio.store import NO_OUTPUT, REJECTED, SUBMITTING, Store
from studio.tracker import IDEMPOTENCY_SAFE_S, Tracker
from tests.support import ROOT, FakeClock, loop_rounds, sql_rows, sql_write, wait_for

KEY = "sk-hostile-secret-key-0123456789"
TASK_ID = "tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR"
HTML_PAGE = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"


def _envelope(data, code=200, **extra) -> bytes:
    return json.dumps(
        {"code": code, "message": "success" if code == 200 else "error", "data": data} | extra
    ).encode()


def _png(w=64, h=48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 90, 40)).save(buf, "PNG")
    return buf.getvalue()


def _bomb_png(w=60_000, h=60_000) -> bytes:
    """A tiny PNG whose header declares 3.6 gigapixels."""

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


class Answer:
    def __init__(self, status=200, body=b"", headers=None, content_type="application/json"):
        self.status, self.body, self.headers, self.content_type = status, body, headers or {}, content_type


class HostileHiAPI:
    """A loopback HTTP server answering from a script; `answers[route]` may be swapped at any time."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.seen: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _answer(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                outer.seen.append((method, self.path, dict(self.headers)))
                if method == "POST":
                    route = "create"
                elif self.path.startswith("/v1/tasks/"):
                    route = "task"
                else:
                    route = self.path.lstrip("/")
                a = outer.answers.get(route) or Answer(404, b"not found", content_type="text/plain")
                body = a.body(self) if callable(a.body) else a.body
                self.send_response(a.status)
                self.send_header("Content-Type", a.content_type)
                if "Content-Length" not in a.headers:
                    self.send_header("Content-Length", str(len(body)))
                for k, v in a.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def file_url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile():
    h = HostileHiAPI()
    yield h
    h.close()


def make_tracker(base_url: str, data: Path, **kw) -> tuple[Tracker, Store]:
    store = Store(data / "studio.db")
    client = HiAPIClient(KEY, base_url=base_url, max_retries=0)
    keeper = ImageKeeper(data / "images", thumb_size=128)
    return Tracker(store, client, keeper, priors={"1K": 0.3, "2K": 0.3, "4K": 0.3}, **kw), store


def render_studio(data: Path, monkeypatch) -> AppTest:
    """The Studio page on this data folder, as a new server process would show it."""
    for k in ("HIAPI_API_KEY", "HIAPI_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(data))
    core.shutdown()
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    assert not at.exception, at.exception
    return at


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def shown(at: AppTest) -> str:
    """Every message and caption on the page, markdown escapes removed, and every text the queue
    component is handed to draw (its view model: the browser sets each one as plain text)."""
    from components.queue import queue_view

    parts = [e.value for e in [*at.error, *at.warning, *at.caption, *at.text, *at.markdown]]
    parts += _strings(queue_view(core.current().store, None))
    return " ".join(str(p) for p in parts).replace("\\", "")


@pytest.fixture
def page_cleanup():
    yield
    core.shutdown()
    import streamlit as st

    st.cache_resource.clear()


# -- answers to a create ------------------------------------------------------------------

CREATE_ANSWERS = {
    "not JSON": (Answer(200, b"OK", content_type="text/plain"), "not JSON"),
    "empty body": (Answer(200, b""), "empty body"),
    "HTML error page": (Answer(502, HTML_PAGE, content_type="text/html"), "HTTP 502"),
    "no taskId": (Answer(200, _envelope({"id": "x"})), "has no taskId"),
    "huge body": (Answer(200, b"[" + b"0," * (5 * 2**20) + b"0]"), "larger than 8 MiB"),
}


@pytest.mark.parametrize("case", list(CREATE_ANSWERS))
def test_bad_create_answers_leave_a_clear_sending_state_then_recover(case, hostile, tmp_path):
    answer, words = CREATE_ANSWERS[case]
    hostile.answers["create"] = answer
    clock = FakeClock.at_now()
    tracker, store = make_tracker(hostile.base_url, tmp_path, clock=clock)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a kite", "1:1", "1K")])
        sub = wait_for(lambda: (s := store.submission(sid)).attempts and s)
        assert sub.state == SUBMITTING and sub.task_id is None  # unknown outcome: kept, resent with its key
        assert words in sub.error_message
        assert tracker.alive
        loop_rounds(tracker)  # the clock stands still: no resend before the back-off is over
        assert [m for m, _, _ in hostile.seen].count("POST") == 1
        keys = {h.get("Idempotency-Key") for m, _, h in hostile.seen if m == "POST"}
        # HiAPI recovers: the same key is sent again, after the back-off, and the task is attached.
        hostile.answers["create"] = Answer(200, _envelope({"taskId": TASK_ID}))
        hostile.answers["task"] = Answer(200, _envelope({"taskId": TASK_ID, "status": "queued"}))
        clock.advance(ERROR_BASE, tracker)
        sub = wait_for(lambda: (s := store.submission(sid)).task_id and s, timeout=30)
        assert sub.task_id == TASK_ID and sub.state == "queued"
        assert len(keys) == 1 and keys == {
            h.get("Idempotency-Key") for m, _, h in hostile.seen if m == "POST"
        }
    finally:
        tracker.stop()


# -- answers to a status poll --------------------------------------------------------------

POLL_ANSWERS = {
    "not JSON": (Answer(200, b"<<<", content_type="text/plain"), "not JSON"),
    "HTML error page": (Answer(503, HTML_PAGE, content_type="text/html"), "HTTP 503"),
    "empty body": (Answer(200, b""), "empty body"),
    "missing fields": (Answer(200, _envelope({"status": "success"})), "no taskId"),
    "not the envelope": (Answer(200, b'{"taskId": "x"}'), "not HiAPI's envelope"),
}


@pytest.mark.slow
def test_bad_status_answers_are_noted_on_the_task_and_cleared_by_a_good_one(hostile, tmp_path):
    hostile.answers["create"] = Answer(200, _envelope({"taskId": TASK_ID}))
    tracker, store = make_tracker(hostile.base_url, tmp_path)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a kite", "1:1", "1K")])
        queued = Answer(200, _envelope({"taskId": TASK_ID, "status": "queued"}))
        for case, (answer, words) in POLL_ANSWERS.items():
            hostile.answers["task"] = answer
            sub = wait_for(
                lambda w=words: (s := store.submission(sid)).error_message and w in s.error_message and s
            )
            assert sub.state == "queued", case  # still in flight: nothing invented
            hostile.answers["task"] = queued  # readable again: the note goes
            wait_for(lambda: store.submission(sid).error_message is None)
        hostile.answers["task"] = Answer(200, _envelope({"taskId": TASK_ID, "status": "handling"}))
        wait_for(lambda: store.submission(sid).state == "handling")
        assert tracker.alive
    finally:
        tracker.stop()


def test_unknown_status_and_fields_are_kept_and_shown(hostile, tmp_path, monkeypatch, page_cleanup):
    data = {"taskId": TASK_ID, "status": "moderation", "created": 1, "queuePosition": 7, "region": "eu"}
    hostile.answers["create"] = Answer(200, _envelope({"taskId": TASK_ID}))
    hostile.answers["task"] = Answer(200, _envelope(data))
    tracker, store = make_tracker(hostile.base_url, tmp_path)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a kite", "1:1", "1K")])
        wait_for(lambda: store.submission(sid).state == "moderation")
        assert sid in {s.id for s in store.unfinished()}  # not terminal: still followed
    finally:
        tracker.stop()
    raw = sql_rows(store, "SELECT raw_task FROM submissions WHERE id=?", (sid,))[0][0]
    assert json.loads(raw) == data
    at = render_studio(tmp_path, monkeypatch)
    assert "Moderation" in shown(at)  # the status badge, as sent


# -- answers about the image ---------------------------------------------------------------


def test_bad_outputs_each_get_a_clear_reason_and_the_page_still_renders(
    hostile, tmp_path, monkeypatch, page_cleanup
):
    files = {
        "good.png": (Answer(200, _png(), content_type="image/png"), None),
        "page.png": (Answer(200, HTML_PAGE * 4, content_type="text/html"), "did not return an image"),
        "huge.png": (
            Answer(200, b"", {"Content-Length": str(200 * 2**20)}, content_type="image/png"),
            "larger than the 64 MB limit",
        ),
        "bomb.png": (Answer(200, _bomb_png(), content_type="image/png"), "unreasonably large"),
        "expired.png": (Answer(410, b"gone", content_type="text/plain"), "temporary link has expired"),
        "signed.png": (
            Answer(403, b"<Error>AccessDenied</Error>", content_type="application/xml"),
            "may have expired",
        ),
        "corrupt.png": (Answer(200, _png()[:60] + b"\0" * 200, content_type="image/png"), "incomplete"),
    }
    for name, (answer, _) in files.items():
        hostile.answers[name] = answer
    now = int(time.time())
    output = [{"url": hostile.file_url(n), "type": "image", "expireAt": now - 60} for n in files]
    done = {"taskId": TASK_ID, "status": "success", "created": now, "completed": now, "output": output}
    hostile.answers["create"] = Answer(200, _envelope({"taskId": TASK_ID}))
    hostile.answers["task"] = Answer(200, _envelope(done))
    tracker, store = make_tracker(hostile.base_url, tmp_path)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a kite", "1:1", "1K")])
        outs = wait_for(
            lambda: (
                (o := store.outputs_for([sid]).get(sid, [])) and all(x.state != "pending" for x in o) and o
            ),
            timeout=40,
        )
    finally:
        tracker.stop()
    assert store.submission(sid).state == "success"
    by_name = {o.url.rsplit("/", 1)[1]: o for o in outs}
    assert by_name["good.png"].state == "kept"
    for name, (_, words) in files.items():
        if words:
            assert by_name[name].state == "failed", name
            assert words in by_name[name].error, (name, by_name[name].error)
            assert hostile.base_url not in by_name[name].error  # no URL in a message for people
    assert list((tmp_path / "images" / "tmp").iterdir()) == []  # nothing half-written left behind

    at = render_studio(tmp_path, monkeypatch)
    text = shown(at)
    for name, (_, words) in files.items():
        if words:
            assert f"Image could not be kept: {words}"[:40] in text or words in text, name


def test_success_without_an_image_link_says_so(hostile, tmp_path, monkeypatch, page_cleanup):
    hostile.answers["create"] = Answer(200, _envelope({"taskId": TASK_ID}))
    hostile.answers["task"] = Answer(
        200, _envelope({"taskId": TASK_ID, "status": "success", "output": [{"type": "image"}, "junk", 7]})
    )
    tracker, store = make_tracker(hostile.base_url, tmp_path)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a kite", "1:1", "1K")])
        sub = wait_for(lambda: (s := store.submission(sid)).is_terminal and s)
    finally:
        tracker.stop()
    assert sub.state == "success" and sub.error_code == NO_OUTPUT
    assert "sent no image link" in sub.error_message
    at = render_studio(tmp_path, monkeypatch)
    assert "HiAPI reported success but sent no image link" in shown(at)
    assert "Saving the image" not in shown(at)  # not a spinner forever


def test_the_key_echoed_by_a_server_is_never_stored_or_logged(hostile, tmp_path, caplog):
    def echo(handler):
        return _envelope(None, 400, message=f"bad request from {handler.headers.get('Authorization')}")

    hostile.answers["create"] = Answer(400, echo)
    tracker, store = make_tracker(hostile.base_url, tmp_path)
    caplog.set_level(logging.DEBUG)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a kite", "1:1", "1K")])
        sub = wait_for(lambda: (s := store.submission(sid)).is_terminal and s)
        assert sub.state == REJECTED and "bad request from Bearer" in sub.error_message
        hostile.answers["create"] = Answer(502, lambda h: f"<p>{h.headers.get('Authorization')}</p>".encode())
        [sid2] = tracker.submit([TaskRequest("a kite", "1:1", "1K")])
        wait_for(lambda: store.submission(sid2).error_message)
        health = json.dumps(tracker.health())
    finally:
        tracker.stop()
    store.close()
    assert KEY in "".join(h.get("Authorization", "") for _, _, h in hostile.seen)  # it was echoed
    assert KEY not in (tmp_path / "studio.db").read_bytes().decode("latin-1")
    for p in tmp_path.glob("studio.db*"):
        assert KEY.encode() not in p.read_bytes()
    assert KEY not in health
    assert KEY not in caplog.text


# -- reliability rules of the tracker --------------------------------------------------------


@pytest.fixture
def sim():
    s = Simulator(api_keys=[KEY], min_duration=0.2, max_duration=0.4, seed=5).start()
    yield s
    s.stop()


def test_a_create_older_than_the_replay_window_is_never_resent(sim, tmp_path):
    store = Store(tmp_path / "studio.db")
    long_ago = time.time() - IDEMPOTENCY_SAFE_S - 60
    old = store.add_submission(
        TaskRequest("old", "1:1", "1K"), idempotency_key="studio-old", creative_id="c", now=long_ago
    )
    store.note_attempt(old, "HTTP_503", "busy")  # it was sent once; the answer never came
    fresh = store.add_submission(
        TaskRequest("fresh", "1:1", "1K"), idempotency_key="studio-new", creative_id="c"
    )
    tracker, store = make_tracker(sim.base_url, tmp_path)
    tracker.start()
    try:
        wait_for(lambda: store.submission(fresh).task_id)
        sub = wait_for(lambda: (s := store.submission(old)).is_terminal and s)
    finally:
        tracker.stop()
    assert sub.state == REJECTED and sub.error_code == "CREATE_UNCONFIRMED"
    assert "Check your task list on HiAPI" in sub.error_message
    assert sim.stats()["tasks_created"] == 1  # only the fresh one: no possible duplicate


def test_downloads_of_a_paid_image_are_retried_until_its_link_expires(sim, tmp_path):
    sim.set_faults(download_fail_rate=1.0)
    tracker, store = make_tracker(sim.base_url, tmp_path)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a kite", "1:1", "1K")])
        o = wait_for(lambda: (x := store.outputs_for([sid]).get(sid)) and x[0].attempts >= 1 and x[0])
        assert o.state == "pending" and "HTTP 500" in o.error
        # A long history of failures: far past any fixed attempt count.
        sql_write(store, "UPDATE outputs SET attempts=40, next_try_at=0 WHERE id=?", (o.id,))
        tracker._wake.set()
        o = wait_for(lambda: (x := store.output(o.id)).attempts >= 41 and x)
        assert o.state == "pending"  # its link is valid for days: keep trying
        sim.set_faults(download_fail_rate=0.0)
        sql_write(store, "UPDATE outputs SET next_try_at=0 WHERE id=?", (o.id,))
        tracker._wake.set()
        assert wait_for(lambda: store.output(o.id).state == "kept")
        # Once the link has expired, a retryable failure becomes final, and says why.
        sim.set_faults(download_fail_rate=1.0)
        [sid2] = tracker.submit([TaskRequest("a second kite", "1:1", "1K")])
        o2 = wait_for(lambda: (x := store.outputs_for([sid2]).get(sid2)) and x[0].attempts >= 1 and x[0])
        sql_write(
            store, "UPDATE outputs SET expire_at=?, next_try_at=0 WHERE id=?", (int(time.time()) - 1, o2.id)
        )
        tracker._wake.set()
        o2 = wait_for(lambda: (x := store.output(o2.id)).state == "failed" and x)
        assert "link has expired" in o2.error
    finally:
        tracker.stop()
