"""HiAPI callbacks in-process: the receiver's rules on real SQLite, and the tracker
with callbacks on against the simulator, whose signed callbacks reach the
receiver over real loopback HTTP (a stdlib server stands in for the studio's
route here; tests/test_callback_route.py drives the real route)."""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studio import callbacks as cb
from studio.client import HiAPIClient
from studio.config import Settings
from studio.images import ImageKeeper
from studio.models import TaskRequest
from studio.schedule import ERROR_BASE
from studio.services import _callback_plan
from studio.simulator import Simulator
from studio.simulator import sign as sim_sign
from studio.store import Store
from studio.tracker import Tracker, _Watch
from tests.support import FakeClock, loop_rounds, simulators, wait_for

KEY = "sk-test-callbacks-0123456789"
SECRET = "whsec-test-0123456789abcdef"
TOKEN = "tok_" + "A1b2C3d4" * 4


# ------------------------------------------------------------------ harness


class Endpoint:
    """The receiver behind real HTTP on loopback, for the simulator to call."""

    def __init__(self) -> None:
        self.receiver: cb.CallbackReceiver | None = None
        self.verdicts: list[cb.Verdict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                token = self.path.removeprefix(cb.CALLBACK_PATH)
                verdict = outer.receiver.receive(token, dict(self.headers.items()), body)
                outer.verdicts.append(verdict)
                out = json.dumps({"reason": verdict.reason}).encode()
                self.send_response(verdict.status)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    e = Endpoint()
    yield e
    e.close()


@pytest.fixture
def make_sim():
    defaults = dict(api_keys=[KEY], signing_key=SECRET, min_duration=0.2, max_duration=0.4, seed=5)
    with simulators(**defaults, callback_backoff=0.05) as make:
        yield make


@pytest.fixture
def sim(make_sim):
    return make_sim()


def make_tracker(
    sim, tmp_path, endpoint=None, *, secret=SECRET, grace=10.0, slow_poll=30.0, clock=time.time, **client_kw
):
    store = Store(tmp_path / "studio.db")
    client_kw.setdefault("backoff_base", 0.05)
    client_kw.setdefault("backoff_cap", 0.2)
    client = HiAPIClient(KEY, base_url=sim.base_url, **client_kw)
    keeper = ImageKeeper(tmp_path / "images")
    url = cb.callback_url(endpoint.base, TOKEN) if endpoint else None
    tracker = Tracker(
        store,
        client,
        keeper,
        priors={"1K": 0.4, "2K": 0.4, "4K": 0.4},
        callback_url=url,
        reconcile_grace=grace,
        slow_poll=slow_poll,
        clock=clock,
    )
    if endpoint is not None:
        endpoint.receiver = cb.CallbackReceiver(TOKEN, tracker, secret=secret)
    return tracker, store


def kept(store, sid) -> bool:
    sub = store.submission(sid)
    outs = store.outputs_for([sid]).get(sid, [])
    return bool(sub and sub.is_terminal and outs and all(o.state == "kept" for o in outs))


# ------------------------------------------- the receiver's rules, on a real store


class World:
    """A store with one submission whose task really finished on the simulator."""

    def __init__(self, sim: Simulator, tmp_path: Path) -> None:
        self.sim = sim
        self.tracker, self.store = make_tracker(sim, tmp_path)
        self.receiver = cb.CallbackReceiver(TOKEN, self.tracker, secret=SECRET)
        with HiAPIClient(KEY, base_url=sim.base_url) as client:
            self.task_id = client.create_task(TaskRequest('menu "SOUP"', "3:4", "1K")).task_id
        self.sid = self.store.add_submission(
            TaskRequest('menu "SOUP"', "3:4", "1K"), idempotency_key="k-world", creative_id="c"
        )
        self.store.mark_created(self.sid, self.task_id)
        wait_for(lambda: time.time() >= sim.task_finished_at(self.task_id))
        self.detail = sim.task_snapshot(self.task_id)
        self.body = json.dumps(self.detail, separators=(",", ":")).encode()

    def headers(self, body: bytes, *, ts: float | None = None, secret: str = SECRET) -> dict[str, str]:
        stamp = str(int(time.time() if ts is None else ts))
        return {"X-HiAPI-Timestamp": stamp, "X-HiAPI-Signature": sim_sign(secret, stamp, body)}

    def deliver(self, body: bytes | None = None, headers=None, token: str = TOKEN) -> cb.Verdict:
        body = self.body if body is None else body
        return self.receiver.receive(token, self.headers(body) if headers is None else headers, body)

    def snapshot(self) -> tuple:
        return (
            self.store.submission(self.sid),
            self.store.events(self.sid),
            self.store.outputs_for([self.sid]),
            self.store.held_callbacks(),
        )

    def nothing_stored(self) -> bool:
        sub = self.store.submission(self.sid)
        return (
            sub.state == "queued"
            and [e[0] for e in self.store.events(self.sid)] == ["submitting", "queued"]
            and self.store.outputs_for([self.sid]) == {}
            and self.store.held_callbacks() == 0
        )


@pytest.fixture
def world(make_sim, tmp_path):
    # Tasks done the moment they are made: these tests are about the receiver, not the wait.
    return World(make_sim(min_duration=0.0, max_duration=0.0), tmp_path)


def test_our_signature_is_the_simulators():
    assert cb.sign(SECRET, "1700000000", b'{"a":1}') == sim_sign(SECRET, "1700000000", b'{"a":1}')


def test_signed_callback_from_the_simulator_is_stored_once(world):
    v = world.deliver()
    assert (v.status, v.reason, v.task_id) == (200, "stored", world.task_id)
    sub = world.store.submission(world.sid)
    assert sub.state == "success"
    assert world.store.events(world.sid)[-1][0::2] == ("success", "callback")
    [out] = world.store.outputs_for([world.sid])[world.sid]
    assert out.url == world.detail["output"][0]["url"] and out.state == "pending"
    again = world.deliver()
    assert (again.status, again.reason) == (200, "already stored")
    assert [e[0] for e in world.store.events(world.sid)].count("success") == 1
    h = world.tracker.health()
    assert (h["callbacks_received"], h["callbacks_stored"], h["callbacks_duplicate"]) == (2, 1, 1)
    assert h["callbacks_rejected"] == 0


def _padded(world) -> bytes:
    # Valid JSON of a terminal task, just over 1 MiB: only the size check can refuse it.
    return world.body + b" " * (cb.MAX_BODY_BYTES - len(world.body) + 1)


def _stale(seconds):
    return lambda w: w.deliver(headers=w.headers(w.body, ts=time.time() + seconds))


# case -> (status, words the reason must hold, delivery). The reason pins down
# which check refused, so removing any one check fails its case.
REFUSALS = {
    "wrong token": (404, "not found", lambda w: w.deliver(token=TOKEN[:-1] + "x")),
    "token prefix": (404, "not found", lambda w: w.deliver(token=TOKEN[:-4])),
    "oversize body": (413, "body over", lambda w: w.deliver(body=_padded(w))),
    "missing both headers": (
        401,
        "missing X-HiAPI-Timestamp and X-HiAPI-Signature",
        lambda w: w.deliver(headers={}),
    ),
    "missing signature": (
        401,
        "missing X-HiAPI-Signature",
        lambda w: w.deliver(headers={"X-HiAPI-Timestamp": w.headers(w.body)["X-HiAPI-Timestamp"]}),
    ),
    "missing timestamp": (
        401,
        "missing X-HiAPI-Timestamp",
        lambda w: w.deliver(headers={"X-HiAPI-Signature": w.headers(w.body)["X-HiAPI-Signature"]}),
    ),
    "signed with another key": (
        401,
        "signature does not match",
        lambda w: w.deliver(headers=w.headers(w.body, secret="x" * 20)),
    ),
    "body changed after signing": (
        401,
        "signature does not match",
        lambda w: w.deliver(body=w.body + b" ", headers=w.headers(w.body)),
    ),
    "timestamp 301 s old": (401, "300 s", _stale(-301)),
    "timestamp 301 s ahead": (401, "300 s", _stale(301)),
    "timestamp not a number": (
        401,
        "not Unix seconds",
        lambda w: w.deliver(headers={"X-HiAPI-Timestamp": "soon", "X-HiAPI-Signature": "0" * 64}),
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_deliveries_store_nothing(world, case):
    status, why, deliver = REFUSALS[case]
    v = deliver(world)
    assert v.status == status and why in v.reason, v
    assert not v.ok and v.reason
    assert SECRET not in v.reason and TOKEN not in v.reason
    assert world.nothing_stored()
    h = world.tracker.health()
    assert h["callbacks_rejected"] == 1 and h["callbacks_received"] == 0
    assert h["last_rejection"].startswith(str(status))


def _with(world, **changes) -> bytes:
    return json.dumps(world.detail | changes).encode()


BAD_BODIES = {
    "handling": (lambda w: _with(w, status="handling", completed=0), "not terminal"),
    "queued": (lambda w: _with(w, status="queued"), "not terminal"),
    "unknown status": (lambda w: _with(w, status="expired"), "not terminal"),
    "no status": (lambda w: json.dumps({"taskId": w.task_id}).encode(), "not terminal"),
    "not json": (lambda w: b"taskId=" + w.task_id.encode(), "not JSON"),
    "empty": (lambda w: b"", "empty"),
    "a list": (lambda w: json.dumps([w.detail]).encode(), "not a task object"),
    "no taskId": (lambda w: json.dumps({"status": "success"}).encode(), "taskId"),
    "taskId not a string": (lambda w: _with(w, taskId=12), "taskId"),
    "success without outputs": (lambda w: _with(w, output=[]), "output"),
    "success with broken outputs": (lambda w: _with(w, output=[{"url": "ftp://x"}, 7]), "output"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_malformed_or_non_terminal_bodies_are_400_and_store_nothing(world, case):
    make, why = BAD_BODIES[case]
    v = world.deliver(body=make(world))  # correctly signed: only the body is wrong
    assert v.status == 400 and why in v.reason, v
    assert len(v.reason) < 80
    assert world.nothing_stored()
    assert world.tracker.health()["callbacks_rejected"] == 1


def test_without_a_signing_key_unsigned_deliveries_are_accepted(world):
    receiver = cb.CallbackReceiver(TOKEN, world.tracker)
    assert not receiver.signed
    assert receiver.receive(TOKEN, {}, world.body).status == 200
    assert world.store.submission(world.sid).state == "success"


def test_precheck_refuses_a_declared_oversize_body_before_reading(world):
    assert world.receiver.precheck(TOKEN, str(cb.MAX_BODY_BYTES + 1)).status == 413
    assert world.receiver.precheck(TOKEN + "x", str(cb.MAX_BODY_BYTES + 1)).status == 404
    assert world.receiver.precheck(TOKEN, str(cb.MAX_BODY_BYTES)) is None
    assert world.receiver.precheck(TOKEN, None) is None
    assert world.tracker.health()["callbacks_rejected"] == 2


def _run(coro):
    """asyncio.run in a thread of its own: a session's Playwright keeps a loop running in this one."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_read_capped_stops_at_the_cap():

    sent = []

    async def endless():  # "endless": far more than the cap
        for _ in range(1000):
            sent.append(1)
            yield b"x" * 1000

    with pytest.raises(cb.BodyTooLarge):
        _run(cb.read_capped(endless(), cap=10_000))
    assert len(sent) == 11  # stopped right after passing the cap

    async def small():
        yield b"ab"
        yield b"c"

    assert _run(cb.read_capped(small(), cap=3)) == b"abc"


def test_concurrent_duplicate_deliveries_make_one_record(world):
    headers = world.headers(world.body)
    with ThreadPoolExecutor(16) as pool:
        verdicts = list(pool.map(lambda _: world.deliver(headers=headers), range(32)))
    assert all(v.status == 200 for v in verdicts)
    assert [v.reason for v in verdicts].count("stored") == 1
    assert [e[0] for e in world.store.events(world.sid)].count("success") == 1
    assert len(world.store.outputs_for([world.sid])[world.sid]) == 1
    assert world.tracker.health()["callbacks_duplicate"] == 31


def test_callback_for_a_task_not_ours_is_acknowledged_and_not_kept(world):
    sim = world.sim
    world.deliver()  # our only submission is finished: nothing waits for a task id
    with HiAPIClient(KEY, base_url=sim.base_url) as client:
        other = client.create_task(TaskRequest("someone else's", "1:1", "1K")).task_id
    wait_for(lambda: time.time() >= sim.task_finished_at(other))
    body = json.dumps(sim.task_snapshot(other)).encode()
    v = world.deliver(body=body)
    assert v.status == 200 and "ignored" in v.reason
    assert world.store.submission_by_task(other) is None and world.store.held_callbacks() == 0


def test_a_failed_store_is_not_acknowledged(world):
    class Broken:
        def ingest_callback(self, task):
            raise OSError("disk full")

        def note_callback_rejected(self, status, reason):
            pass

    v = cb.CallbackReceiver(TOKEN, Broken(), secret=SECRET).receive(
        TOKEN, world.headers(world.body), world.body
    )
    assert v.status == 503  # HiAPI redelivers on non-2xx


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300) | _json.map(lambda v: json.dumps(v).encode()),
    headers=st.dictionaries(
        st.sampled_from(["X-HiAPI-Timestamp", "X-HiAPI-Signature", "x-hiapi-timestamp", "Content-Type"]),
        st.text(max_size=80),
    ),
)
def test_arbitrary_deliveries_get_a_4xx_and_store_nothing(world, body, headers):
    v = world.deliver(body=body, headers=headers)
    assert v.status == 401
    unsigned = cb.CallbackReceiver(TOKEN, world.tracker).receive(TOKEN, headers, body)
    assert unsigned.status in (400, 200), unsigned  # 200 only for a task this studio does not know
    assert world.nothing_stored()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.dictionaries(st.sampled_from(["status", "output", "error", "created", "taskId"]), _json))
def test_signed_odd_task_objects_never_break_the_receiver(world, extra):
    body = json.dumps(world.detail | extra).encode()
    before = world.snapshot()
    v = world.deliver(body=body)
    assert v.status in (200, 400), v
    if v.status == 400:
        assert world.snapshot() == before


# ------------------------------------------- the tracker with callbacks on, end to end


def test_callbacks_bring_results_with_zero_polls(sim, tmp_path, endpoint):
    tracker, store = make_tracker(sim, tmp_path, endpoint)
    tracker.start()
    try:
        ids = tracker.submit([TaskRequest('poster "SALE"', r, "1K") for r in ("16:9", "1:1", "9:16")])
        wait_for(lambda: all(kept(store, i) for i in ids))
        task_ids = [store.submission(i).task_id for i in ids]
        for i in ids:
            assert store.submission(i).callback_url == cb.callback_url(endpoint.base, TOKEN)
            assert store.events(i)[-1][0::2] == ("success", "callback")
        gets = sim.stats()["gets_by_task"]
        assert [gets.get(t, 0) for t in task_ids] == [0, 0, 0]
        h = tracker.health()
        assert h["mode"] == "callbacks"
        assert (h["polls"], h["callbacks_stored"], h["callbacks_rejected"], h["reconciled"]) == (0, 3, 0, 0)
        assert h["downloads"] == 3
    finally:
        tracker.stop()


def test_campaign_rows_arrive_by_callback_too(sim, tmp_path, endpoint):
    from decimal import Decimal

    from studio.campaigns import plan_campaign
    from studio.pricing import Pricing
    from studio.usecases import launch_campaign

    tracker, store = make_tracker(sim, tmp_path, endpoint)
    tracker.start()
    try:
        plan = plan_campaign(
            'A mug of {{drink}} "HOT"', [{"drink": "tea"}, {"drink": "cocoa"}], ["1:1"], "1K"
        )
        pricing = Pricing(prices={"1K": Decimal("0.03"), "2K": Decimal("0.06"), "4K": Decimal("0.12")})
        _, ids = launch_campaign(tracker, plan, name="cb", pricing=pricing, model="gpt-image-2")
        wait_for(lambda: all(kept(store, i) for i in ids))
        assert all(store.submission(i).callback_url for i in ids)
        gets = sim.stats()["gets_by_task"]
        assert [gets.get(store.submission(i).task_id, 0) for i in ids] == [0, 0]
    finally:
        tracker.stop()


def test_duplicated_callbacks_from_the_simulator_make_one_record(sim, tmp_path, endpoint):
    sim.set_faults(callback_duplicate_rate=1.0)
    tracker, store = make_tracker(sim, tmp_path, endpoint)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a kite", "4:3", "1K")])
        wait_for(lambda: kept(store, sid) and sim.stats()["callbacks_acked"] == 2)
        assert [e[0] for e in store.events(sid)].count("success") == 1
        assert len(store.outputs_for([sid])[sid]) == 1
        assert sorted(v.reason for v in endpoint.verdicts) == ["already stored", "stored"]
    finally:
        tracker.stop()


def test_dropped_callback_is_reconciled_by_one_get(sim, tmp_path, endpoint):
    sim.set_faults(callback_drop_rate=1.0)
    clock = FakeClock.at_now()
    tracker, store = make_tracker(sim, tmp_path, endpoint, grace=0.5, clock=clock)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a lighthouse", "3:2", "1K")])
        task_id = wait_for(lambda: store.submission(sid).task_id)
        wait_for(lambda: time.time() >= sim.task_finished_at(task_id))  # done, its callback lost
        loop_rounds(tracker)
        assert sim.stats()["gets_by_task"] == {}  # not overdue yet on the tracker's clock: no look
        clock.advance(tracker._reconcile_after("1K"), tracker)
        wait_for(lambda: kept(store, sid))
        assert sim.stats()["gets_by_task"] == {task_id: 1}
        assert store.events(sid)[-1][0::2] == ("success", "reconcile")
        h = tracker.health()
        assert (h["reconciled"], h["reconcile_polls"], h["callbacks_received"]) == (1, 1, 0)
    finally:
        tracker.stop()


def test_slow_task_with_dropped_callback_is_slow_polled_after_reconciliation(make_sim, tmp_path, endpoint):
    sim = make_sim(min_duration=1.5, max_duration=1.5)
    sim.set_faults(callback_drop_rate=1.0)
    clock = FakeClock.at_now()
    tracker, store = make_tracker(sim, tmp_path, endpoint, grace=0.2, slow_poll=30.0, clock=clock)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a slow one", "1:1", "1K")])
        task_id = wait_for(lambda: store.submission(sid).task_id)
        clock.advance(tracker._reconcile_after("1K"), tracker)  # its callback is overdue: one look
        wait_for(lambda: sim.stats()["gets_by_task"].get(task_id) == 1)
        assert not store.submission(sid).is_terminal  # the first look found it still running
        wait_for(lambda: time.time() >= sim.task_finished_at(task_id))
        loop_rounds(tracker)
        assert sim.stats()["gets_by_task"][task_id] == 1  # then slow polling: no look before 30 s
        clock.advance(30.0, tracker)
        wait_for(lambda: kept(store, sid))
        assert sim.stats()["gets_by_task"][task_id] == 2
        assert tracker.health()["reconciled"] == 1
    finally:
        tracker.stop()


def test_callback_outrunning_the_create_answer_is_held_then_applied(make_sim, tmp_path, endpoint):
    sim = make_sim(min_duration=0.0, max_duration=0.0)  # done, and called back, at once
    sim.set_faults(drop_create_answer_rate=1.0)  # ...while the create answer never arrives
    clock = FakeClock.at_now()
    tracker, store = make_tracker(sim, tmp_path, endpoint, max_retries=0, clock=clock)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("a quick one", "1:1", "1K")])
        wait_for(lambda: store.held_callbacks() == 1)
        wait_for(lambda: store.submission(sid).attempts)  # the lost answer is noted; a resend waits
        sub = store.submission(sid)
        assert sub.task_id is None and sub.state == "submitting"
        assert [v.status for v in endpoint.verdicts] == [202]
        sim.set_faults(drop_create_answer_rate=0.0)  # the resend (same key) is answered: a replay
        clock.advance(ERROR_BASE, tracker)  # ...once its back-off is over
        wait_for(lambda: kept(store, sid))
        sub = store.submission(sid)
        assert sub.state == "success" and store.held_callbacks() == 0
        assert store.events(sid)[-1][0::2] == ("success", "callback")
        stats = sim.stats()
        assert stats["tasks_created"] == 1 and stats["idempotent_replays"] >= 1
        assert stats["gets_by_task"].get(sub.task_id, 0) == 0  # not lost, not reconciled
        assert tracker.health()["callbacks_held"] == 1
    finally:
        tracker.stop()


def test_held_callback_survives_a_restart(make_sim, tmp_path, endpoint):
    sim = make_sim(min_duration=0.0, max_duration=0.0)
    sim.set_faults(drop_create_answer_rate=1.0)
    tracker, store = make_tracker(sim, tmp_path, endpoint, max_retries=0)
    tracker.start()
    [sid] = tracker.submit([TaskRequest("kept across a crash", "1:1", "1K")])
    wait_for(lambda: store.held_callbacks() == 1)
    tracker.stop()
    sim.set_faults(drop_create_answer_rate=0.0)
    tracker2, store2 = make_tracker(sim, tmp_path, endpoint)
    tracker2.start()
    try:
        wait_for(lambda: kept(store2, sid))
        task_id = store2.submission(sid).task_id
        assert sim.stats()["gets_by_task"].get(task_id, 0) == 0
        assert sim.stats()["tasks_created"] == 1
    finally:
        tracker2.stop()


def test_resend_after_restart_keeps_the_first_callback_url(sim, tmp_path, endpoint):
    # Created with callbacks on, answer lost; restarted with callbacks off. The resend
    # must carry the same body, else HiAPI answers 422 and the paid task is orphaned.
    sim.set_faults(drop_create_answer_rate=1.0)
    tracker, store = make_tracker(sim, tmp_path, endpoint, max_retries=0)
    tracker.start()
    [sid] = tracker.submit([TaskRequest("a resend", "1:1", "1K")])
    wait_for(lambda: sim.stats()["create_answers_dropped"] >= 1)
    tracker.stop()
    sim.set_faults(drop_create_answer_rate=0.0)
    tracker2, store2 = make_tracker(sim, tmp_path, None)
    assert tracker2.mode == "polling"
    endpoint.receiver = cb.CallbackReceiver(TOKEN, tracker2, secret=SECRET)
    tracker2.start()
    try:
        wait_for(lambda: kept(store2, sid))
        stats = sim.stats()
        assert stats["tasks_created"] == 1 and stats["idempotent_replays"] >= 1
        assert "POST /v1/tasks 422" not in stats["requests"]
    finally:
        tracker2.stop()


def test_task_in_flight_at_restart_waits_for_its_callback(make_sim, tmp_path, endpoint):
    sim = make_sim(min_duration=1.5, max_duration=1.5)
    tracker, store = make_tracker(sim, tmp_path, endpoint)
    tracker.start()
    [sid] = tracker.submit([TaskRequest("across a restart", "1:1", "1K")])
    wait_for(lambda: store.submission(sid).task_id)
    tracker.stop()
    tracker2, store2 = make_tracker(sim, tmp_path, endpoint)
    tracker2.start()
    try:
        wait_for(lambda: kept(store2, sid))
        assert sim.stats()["gets_by_task"].get(store2.submission(sid).task_id, 0) == 0
    finally:
        tracker2.stop()


# ------------------------------------------- the schedule with callbacks on


def test_reconciliation_schedule(tmp_path):
    clock = FakeClock(1000.0)
    now = clock.now
    tracker = Tracker(
        Store(tmp_path / "s.db"),
        None,
        None,
        priors={"1K": 20.0},
        callback_url="https://studio.example.com/hiapi/callback/" + TOKEN,
        reconcile_grace=10.0,
        slow_poll=30.0,
        clock=clock,
    )
    late = tracker.expectation("1K").late  # from the prior, before anything finished
    assert 20.0 < late < 40.0
    w = _Watch(1, 0.0, "check", callback=True)
    tracker._schedule_check(w, "1K", elapsed=0.0)
    assert w.due == now + late + max(10.0, late / 2)  # one look once the callback is overdue
    tracker._schedule_check(w, "1K", elapsed=100.0)
    assert w.due == now  # already overdue (e.g. after a restart): look now
    w.checks = 1
    tracker._schedule_check(w, "1K", elapsed=70.0)
    assert w.due == now + 30.0  # then slow polling
    w.errors = 1
    tracker._schedule_check(w, "1K", elapsed=70.0)
    assert w.due == now + 2.0  # a failed look backs off like any other
    polled = _Watch(2, 0.0, "check", callback=False)
    tracker._schedule_check(polled, "1K", elapsed=0.0)
    assert polled.due == now + 1.0  # tasks made without a callback are polled as before


def test_late_reconciled_results_do_not_stretch_the_learned_durations(sim, tmp_path, endpoint):
    # All callbacks lost (say, a wrong secret): every result comes by reconciliation, seen
    # well after it existed. Learning that lateness would delay each next round further.
    sim.set_faults(callback_drop_rate=1.0)
    clock = FakeClock.at_now()
    tracker, store = make_tracker(sim, tmp_path, endpoint, grace=5.0, clock=clock)
    tracker.start()
    try:
        [sid] = tracker.submit([TaskRequest("short, and noticed late", "1:1", "1K")])
        task_id = wait_for(lambda: store.submission(sid).task_id)
        wait_for(lambda: time.time() >= sim.task_finished_at(task_id))
        clock.advance(tracker._reconcile_after("1K"), tracker)  # over 5 s on the tracker's clock
        wait_for(lambda: kept(store, sid))
        sub = store.submission(sid)
        assert sub.finished_at - sub.submitted_at > 5.0  # seen only by the reconciliation GET
        [learned] = store.durations("1K")
        assert learned < 2.0  # HiAPI's own timing (a task of under half a second), not our lateness
    finally:
        tracker.stop()


# ------------------------------------------- token, URL and settings


def test_generated_token_is_kept_private_and_stable(tmp_path):
    token = cb.load_or_create_token(tmp_path)
    path = tmp_path / cb.TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 32 and cb.token_problem(token) is None
    assert cb.load_or_create_token(tmp_path) == token
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left
    os.chmod(path, 0o644)
    assert cb.load_or_create_token(tmp_path) == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("short\n")
    fresh = cb.load_or_create_token(tmp_path)
    assert fresh != token and cb.token_problem(fresh) is None
    assert cb.load_or_create_token(tmp_path) == fresh


def test_concurrent_starters_agree_on_one_token(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        tokens = set(pool.map(lambda _: cb.load_or_create_token(tmp_path / "d"), range(16)))
    assert len(tokens) == 1


def test_configured_token_wins_and_weak_ones_are_refused(tmp_path):
    assert cb.load_or_create_token(tmp_path, TOKEN) == TOKEN
    assert not (tmp_path / cb.TOKEN_FILE).exists()
    for weak in ("short", "has space in it 123456", "a/b" * 8):
        with pytest.raises(ValueError, match="HIAPI_CALLBACK_TOKEN"):
            cb.load_or_create_token(tmp_path, weak)


def test_callback_url_and_mask():
    assert cb.callback_url("https://studio.example.com/", TOKEN) == (
        f"https://studio.example.com/hiapi/callback/{TOKEN}"
    )
    assert cb.callback_url("https://example.com/studio", TOKEN).endswith("/studio/hiapi/callback/" + TOKEN)
    masked = cb.masked_url("https://studio.example.com")
    assert masked.startswith("https://studio.example.com/hiapi/callback/") and TOKEN not in masked


@pytest.mark.parametrize(
    ("base", "loopback_ok", "problem"),
    [
        ("https://studio.example.com", False, None),
        ("http://studio.example.com", False, "https://"),
        ("http://studio.example.com", True, "https://"),
        ("http://127.0.0.1:8501", True, None),
        ("http://127.0.0.1:8501", False, "simulator"),
        ("https://x.example?a=1", False, "query"),
        ("studio.example.com", False, "not a URL"),
    ],
)
def test_base_url_rules(base, loopback_ok, problem):
    why = cb.base_url_problem(base, allow_loopback_http=loopback_ok)
    assert (why is None) if problem is None else (problem in why and "HIAPI_CALLBACK_URL" in why)


def test_callback_plan_from_settings(tmp_path):
    store = Store(tmp_path / "studio.db")  # one person's studio: the token lives in the data folder

    def plan(settings: Settings) -> tuple[str | None, str | None, list[str]]:
        return _callback_plan(settings, store)

    env = {"STUDIO_DATA_DIR": str(tmp_path), "HIAPI_CALLBACK_URL": "http://127.0.0.1:8501"}
    url, token, problems = plan(Settings.load(env=env))
    assert url == f"http://127.0.0.1:8501/hiapi/callback/{token}" and problems == []
    assert (tmp_path / cb.TOKEN_FILE).read_text().strip() == token
    # With a real key, plain http is refused: the studio keeps polling and says why.
    url, token, problems = plan(Settings.load(env=env | {"HIAPI_API_KEY": "sk-x"}))
    assert url is None and token is None and "https://" in problems[0] and "polls" in problems[0]
    # ...unless HiAPI itself is a simulator on loopback, which may call plain http back.
    local = {"HIAPI_API_KEY": "sk-x", "HIAPI_BASE_URL": "http://127.0.0.1:9000"}
    assert plan(Settings.load(env=env | local))[0].startswith("http://127.0.0.1:8501/hiapi/callback/")
    url, _, problems = plan(
        Settings.load(env=env | {"HIAPI_CALLBACK_TOKEN": "weak", "HIAPI_WEBHOOK_SECRET": "short"})
    )
    assert url is None
    assert any("HIAPI_CALLBACK_TOKEN" in p for p in problems)
    assert any("HIAPI_WEBHOOK_SECRET" in p and "16-256" in p for p in problems)
    assert plan(Settings.load(env={"STUDIO_DATA_DIR": str(tmp_path)})) == (None, None, [])
