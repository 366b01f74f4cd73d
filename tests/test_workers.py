"""Several workers on one database: claims with leases, one create budget, the web and worker roles.

Real HTTP to the simulator, real SQLite files (each tracker with its own Store, as
two processes would have), real image files; `FakeClock` wherever a lease has to
run out or a 429's hold has to pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import defaultdict

import httpx
import pytest

from studio import services as core
from studio.callbacks import callback_url
from studio.client import HiAPIClient
from studio.config import Settings
from studio.images import ImageKeeper
from studio.intake import Intake
from studio.models import Task, TaskRequest
from studio.simulator import Simulator
from studio.startup import StartupError
from studio.store import Store
from studio.tracker import Tracker
from tests.support import ROOT, FakeClock, StudioServer, wait_for

KEY = "sk-test-workers-0123456789"
PRIORS = {"1K": 0.3, "2K": 0.3, "4K": 0.3}
RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "2:3")


@pytest.fixture
def sim():
    s = Simulator(api_keys=[KEY], min_duration=0.1, max_duration=0.3, seed=11).start()
    yield s
    s.stop()


class Recording:
    """A real client that notes which creates (by idempotency key) and GETs (by task id) it sent."""

    def __init__(self, client: HiAPIClient) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.keys: list[str] = []
        self.gets: dict[str, int] = defaultdict(int)

    @property
    def is_local(self) -> bool:
        return self.client.is_local

    def create_task(self, request, *, idempotency_key):
        with self.lock:
            self.keys.append(idempotency_key)
        return self.client.create_task(request, idempotency_key=idempotency_key)

    def get_task(self, task_id):
        with self.lock:
            self.gets[task_id] += 1
        return self.client.get_task(task_id)


def worker(sim, tmp_path, name, **kw):
    """A tracker with its own Store on the shared file and its own recording client."""
    client = Recording(HiAPIClient(KEY, base_url=sim.base_url, max_retries=0, backoff_base=0.05))
    store = Store(tmp_path / "studio.db")
    keeper = ImageKeeper(tmp_path / "images")
    return Tracker(store, client, keeper, priors=PRIORS, worker_id=name, **kw), client, store


def requests(n):
    return [TaskRequest(f"a poster, variant {i}", RATIOS[i % len(RATIOS)], "1K") for i in range(n)]


def kept_once(store, ids):
    found = store.outputs_for(ids)
    outs = [o for sid in ids for o in found.get(sid, [])]
    return len(outs) == len(ids) and all(o.state == "kept" for o in outs) and outs


def test_two_trackers_share_the_work_each_task_created_polled_and_kept_by_one(sim, tmp_path):
    a, a_client, _ = worker(sim, tmp_path, "worker-a", claim_batch=3)
    b, b_client, _ = worker(sim, tmp_path, "worker-b", claim_batch=3)
    web = Store(tmp_path / "studio.db")
    intake = Intake(web)  # the clicks come from a page process with no tracker
    a.start()
    b.start()
    try:
        ids = []
        for i, r in enumerate(requests(12)):
            ids += intake.submit([r], click_token=f"click-{i:04d}")
        outs = wait_for(lambda: kept_once(web, ids), timeout=90)
    finally:
        a.stop()
        b.stop()
    stats = sim.stats()
    assert stats["tasks_created"] == 12 and stats["idempotent_replays"] == 0
    assert stats["downloads"] == 12  # each image fetched once
    assert all(o.attempts == 1 for o in outs)
    # Every create went out from exactly one tracker…
    assert sorted(a_client.keys + b_client.keys) == sorted(web.submission(i).idempotency_key for i in ids)
    assert not set(a_client.keys) & set(b_client.keys)
    # …and every task was followed by one tracker only: no task costs two trackers' GETs.
    assert not set(a_client.gets) & set(b_client.gets)
    total = sum(stats["gets_by_task"].values())
    assert total == sum(a_client.gets.values()) + sum(b_client.gets.values())
    # Done and released: nothing stays claimed.
    assert all(web.claimed_by(i) == (None, None) for i in ids)


def test_a_dead_trackers_tasks_are_taken_over_after_its_lease_none_lost_none_created_twice(sim, tmp_path):
    clock = FakeClock(1_000_000.0)
    a, a_client, store = worker(sim, tmp_path, "worker-a", clock=clock, lease_s=15.0)
    b, b_client, _ = worker(sim, tmp_path, "worker-b", clock=clock, lease_s=15.0)
    intake = Intake(store, clock=clock)
    ids = []
    for i, r in enumerate(requests(6)):
        ids += intake.submit([r], click_token=f"click-{i:04d}")
    # A sends every create, but every answer is lost: the tasks exist at HiAPI, A does not know them.
    sim.set_faults(drop_create_answer_rate=1.0)
    a.start()
    wait_for(lambda: all(store.submission(i).attempts >= 1 for i in ids))
    assert sim.stats()["tasks_created"] == 6
    assert {store.claimed_by(i)[0] for i in ids} == {"worker-a"}
    a.stop(release=False)  # dies: its claims stay until their lease runs out
    sim.set_faults(drop_create_answer_rate=0.0)

    b.start()
    try:
        assert b.health()["in_flight"] == 0  # A's leases still hold
        clock.advance(16.0)  # past A's lease
        wait_for(lambda: b.health()["in_flight"] == 6)
        # Moving time on lets B's schedule come due; each step is a condition check, not a sleep.
        assert wait_for(lambda: clock.advance(0.5) and kept_once(store, ids), timeout=90)
    finally:
        b.stop()
    stats = sim.stats()
    assert stats["tasks_created"] == 6  # B resent with the stored keys: HiAPI replayed
    assert stats["idempotent_replays"] >= 6
    assert all(store.submission(i).state == "success" for i in ids)
    assert stats["downloads"] == 6
    assert sorted(set(b_client.keys)) == sorted(store.submission(i).idempotency_key for i in ids)
    assert not a_client.gets  # A never learnt a task id; B followed every task


def test_a_429_one_tracker_met_holds_the_other_trackers_creates(sim, tmp_path):
    clock = FakeClock(1_000_000.0)
    a, _, store = worker(sim, tmp_path, "worker-a", clock=clock, max_active=8)
    b, _, _ = worker(sim, tmp_path, "worker-b", clock=clock, max_active=8)
    intake = Intake(store, clock=clock)
    sim.set_faults(post_429_rate=1.0, retry_after=30)
    [first] = intake.submit(requests(1), click_token="click-first")
    a.start()
    wait_for(lambda: store.submission(first).attempts >= 1)  # its create met the 429
    a.stop()  # gone, its claims released: the hold is all that is left of it
    sim.set_faults(post_429_rate=0.0)
    posts = sim.stats()["requests"].get("POST /v1/tasks 429", 0)
    assert posts >= 1

    [second] = intake.submit(requests(2)[1:], click_token="click-second")
    b.start()
    try:
        # B read the shared budget: A's hold and A's halved pace.
        wait_for(lambda: b.health()["hold_until"] > clock())
        assert b.health()["pace"] == 4
        assert b.health()["in_flight"] == 2
        assert sim.stats()["tasks_created"] == 0  # nothing sent during the hold
        clock.advance(31.0)
        assert wait_for(lambda: clock.advance(0.5) and kept_once(store, [first, second]), timeout=60)
    finally:
        b.stop()
    assert sim.stats()["tasks_created"] == 2
    assert sim.stats()["requests"].get("POST /v1/tasks 429", 0) == posts


def test_the_budget_row_names_a_key_hash_never_the_key(tmp_path):
    from studio.intake import budget_key

    store = Store(tmp_path / "studio.db")
    name = budget_key(KEY, "https://api.hiapi.ai")
    store.hold_creates(name, 2_000.0, 8, 1_000.0)
    raw = (tmp_path / "studio.db").read_bytes() + (tmp_path / "studio.db-wal").read_bytes()
    assert KEY.encode() not in raw and name.encode() in raw
    assert budget_key(KEY, "https://api.hiapi.ai") == name != budget_key(KEY + "x", "https://api.hiapi.ai")


def test_a_web_role_boots_without_a_tracker_and_records_clicks_for_a_worker(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", role="web")
    services = core.boot(settings)
    try:
        assert services.tracker is None and services.simulator is None
        assert services.intake.works is False
        [sid] = services.intake.submit(requests(1), click_token="click-web-0001")
        sub = services.store.submission(sid)
        assert sub.state == "submitting" and services.store.claimed_by(sid) == (None, None)
        h = services.intake.health()
        assert h["works"] is False and h["in_flight"] == 1 and h["alive"] is False
    finally:
        core.shutdown()


def test_a_worker_role_sweeps_the_deletions_a_web_replica_left_when_they_are_due(tmp_path):
    """No page process is left to purge: the worker's start-up sweep does, and only what is due."""
    data = tmp_path / "data"
    store = Store(data / "studio.db")
    [due, open_] = [kept_output(store, n) for n in range(2)]
    assert store.trash_outputs([due], token="gone", purge_after=1.0, now=0.0) == [due]
    assert store.trash_outputs([open_], token="open", purge_after=4e9, now=0.0) == [open_]
    services = core.boot(Settings(data_dir=data, role="worker"))
    try:
        assert services.trash is not None
        assert store.output(due) is None and store.deletion("gone") is None
        assert store.trashed_outputs() == [open_]  # its window is still open: Undo can come
    finally:
        core.shutdown()
    assert store.trashed_outputs() == [open_]  # a stop purges nothing


def kept_output(store: Store, n: int) -> int:
    sid = store.add_submission(requests(1)[0], idempotency_key=f"kept-{n}", creative_id=f"c-{n}")
    assert store.mark_created(sid, f"tk-kept-{n}")
    assert store.record_task(
        Task.parse({"taskId": f"tk-kept-{n}", "status": "success", "output": [{"url": "https://x/1.png"}]})
    )
    [o] = store.outputs_for([sid])[sid]
    store.output_kept(o.id, sha256=f"{n}".ljust(64, "0"), width=1, height=1, nbytes=1)
    return o.id


@pytest.mark.parametrize("role", ["wokrer", "WEB server", ""])
def test_a_bad_studio_role_is_refused_with_what_to_write(tmp_path, role):
    settings = Settings.load(env={"STUDIO_ROLE": role, "STUDIO_DATA_DIR": str(tmp_path / "data")})
    if role == "":
        assert settings.role == "all" and settings.role_problem is None  # unset: both in one process
        return
    with pytest.raises(StartupError, match=r"is not a role\. Write STUDIO_ROLE=web .*STUDIO_ROLE=worker"):
        core.boot(settings)
    assert core.current() is None
    assert not (tmp_path / "data" / "studio.db").exists()  # nothing started


def test_the_worker_entry_point_refuses_a_web_role_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIAPI_", "STUDIO_"))}
    env.update({"STUDIO_ROLE": "web", "STUDIO_DATA_DIR": str(tmp_path / "data")})
    done = subprocess.run(
        [sys.executable, "-m", "studio.worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "Worker not started: STUDIO_ROLE=web does not follow tasks; a worker process runs with "
        "STUDIO_ROLE=worker (or unset)."
    ]


TOKEN = "workers_" + "Qp7Rs6Tu" * 3
SECRET = "whsec-workers-0123456789abcdef"


def test_a_web_server_stores_a_signed_callback_and_a_worker_downloads_its_image(tmp_path):
    sim = Simulator(api_keys=[KEY], min_duration=0.1, max_duration=0.3, seed=5, signing_key=SECRET).start()
    server = StudioServer(tmp_path / "data")
    server.extra_env.update(
        {
            "STUDIO_ROLE": "web",
            "HIAPI_API_KEY": KEY,
            "HIAPI_BASE_URL": sim.base_url,  # a simulator on loopback: plain-http callbacks allowed
            "HIAPI_CALLBACK_URL": server.url,
            "HIAPI_CALLBACK_TOKEN": TOKEN,
            "HIAPI_WEBHOOK_SECRET": SECRET,
        }
    )
    tracker = None
    try:
        server.start()
        body = httpx.get(server.url + "/api/health", timeout=10).json()
        assert body["role"] == "web" and body["status"] == "ok" and body["tracker"]["works"] is False
        # The worker: another process in production, here a tracker on the same database file.
        store = Store(server.data_dir / "studio.db")
        client = HiAPIClient(KEY, base_url=sim.base_url, max_retries=0)
        tracker = Tracker(
            store,
            client,
            ImageKeeper(server.data_dir / "images"),
            priors=PRIORS,
            callback_url=callback_url(server.url, TOKEN),
            worker_id="worker-1",
        ).start()
        [sid] = tracker.submit(requests(1), click_token="click-callback")
        [out] = wait_for(lambda: kept_once(store, [sid]), timeout=90)
        task_id = store.submission(sid).task_id
        stats = sim.stats()
        assert stats["callbacks_acked"] == 1
        assert stats["gets_by_task"].get(task_id, 0) == 0  # the result came by the web's callback route
        assert tracker.health()["callbacks_received"] == 0  # not through the worker
        web = httpx.get(server.url + "/api/health", timeout=10).json()["tracker"]
        assert web["callbacks_stored"] == 1
        assert out.attempts == 1 and stats["downloads"] == 1
        assert "callback" in {src for _, _, src in store.events(sid)}
    finally:
        if tracker is not None:
            tracker.stop()
        server.stop()
        sim.stop()


def test_a_worker_process_follows_clicks_a_page_process_recorded_and_releases_its_claims_on_sigterm(tmp_path):
    import signal

    from tests.support import end_process_group

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIAPI_", "STUDIO_"))}
    env.update(
        {
            "STUDIO_DATA_DIR": str(data),
            "STUDIO_SIM_MIN_DURATION": "0.2",
            "STUDIO_SIM_MAX_DURATION": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio.worker"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=log, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once the tracker runs
        assert first.startswith("Worker ") and str(data) in first, (tmp_path / "worker.log").read_text()
        store = Store(data / "studio.db")
        intake = Intake(store)  # the page process's side
        ids = []
        for i, r in enumerate(requests(3)):
            ids += intake.submit([r], click_token=f"click-proc-{i:04d}")
        assert wait_for(lambda: kept_once(store, ids), timeout=90)
        assert [store.submission(i).state for i in ids] == ["success"] * 3
        # One more click, claimed at once by the worker; SIGTERM must give its claim up.
        [late] = intake.submit(requests(4)[3:], click_token="click-proc-late")
        wait_for(lambda: store.claimed_by(late)[0] is not None or store.submission(late).is_terminal)
        ids.append(late)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert all(store.claimed_by(i) == (None, None) for i in ids)
    finally:
        if proc.poll() is None:
            end_process_group(proc)
        log.close()
