"""Running campaigns through the tracker: real HTTP to the simulator, real SQLite, real files.

Pacing is checked from a recording of the real client's calls: how many tasks
were in flight at once (from a create's start to the poll that saw it finish),
and whether any create started inside a 429's Retry-After.
"""

from __future__ import annotations

import json
import threading
import time
import zipfile
from collections.abc import Callable
from decimal import Decimal

import pytest

from studio.campaign_store import CANCELLED, CampaignStore
from studio.campaigns import plan_campaign
from studio.client import HiAPIClient
from studio.errors import RateLimitedError
from studio.export import campaign_manifest_rows, write_zip
from studio.images import ImageKeeper, read_recipe
from studio.models import TaskRequest
from studio.pricing import Pricing
from studio.simulator import Simulator
from studio.store import REJECTED, SUBMITTING, Store
from studio.tracker import Tracker
from studio.usecases import launch_campaign, resubmit_campaign
from tests.support import FakeClock, loop_rounds, wait_for

KEY = "sk-test-campaigns-0123456789"
PRICING = Pricing(prices={"1K": Decimal("0.03"), "2K": Decimal("0.06"), "4K": Decimal("0.12")})


class RecordingClient:
    """The real HiAPIClient, with every create and poll timed (monotonic seconds, or on `clock`
    when a test sets it to the tracker's fake clock)."""

    def __init__(self, client: HiAPIClient) -> None:
        self.client = client
        self.clock: Callable[[], float] = time.monotonic
        self.lock = threading.Lock()
        self.creates: list[tuple[float, float, str]] = []  # (start, end, outcome)
        self.started: dict[str, float] = {}  # task id -> its create's start
        self.finished: dict[str, float] = {}  # task id -> first poll that saw it terminal

    @property
    def is_local(self) -> bool:  # the simulator's loopback output URLs may be fetched
        return self.client.is_local

    def new_idempotency_key(self) -> str:
        return self.client.new_idempotency_key()

    def create_task(self, request, *, idempotency_key=None):
        start = self.clock()
        try:
            created = self.client.create_task(request, idempotency_key=idempotency_key)
        except RateLimitedError:
            with self.lock:
                self.creates.append((start, self.clock(), "429"))
            raise
        except Exception:
            with self.lock:
                self.creates.append((start, self.clock(), "error"))
            raise
        with self.lock:
            self.creates.append((start, self.clock(), "ok"))
            self.started.setdefault(created.task_id, start)
        return created

    def get_task(self, task_id):
        task = self.client.get_task(task_id)
        if task.is_terminal:
            with self.lock:
                self.finished.setdefault(task_id, self.clock())
        return task

    def peak_in_flight(self) -> int:
        events = []
        for tid, start in self.started.items():
            events.append((start, 1))
            events.append((self.finished.get(tid, float("inf")), -1))
        peak = now = 0
        for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
            now += delta
            peak = max(peak, now)
        return peak


@pytest.fixture
def sim():
    s = Simulator(api_keys=[KEY], min_duration=0.3, max_duration=0.6, seed=9).start()
    yield s
    s.stop()


def make(sim, tmp_path, *, max_active: int, max_retries: int = 0, clock=time.time):
    store = Store(tmp_path / "studio.db")
    client = RecordingClient(
        HiAPIClient(KEY, base_url=sim.base_url, max_retries=max_retries, backoff_base=0.05, backoff_cap=0.2)
    )
    keeper = ImageKeeper(tmp_path / "images")
    tracker = Tracker(
        store, client, keeper, priors={"1K": 0.4, "2K": 0.4, "4K": 0.4}, max_active=max_active, clock=clock
    )
    return tracker, store, client


def start_campaign(tracker, products, ratios=("1:1",), template="A poster of a {{product}}"):
    plan = plan_campaign(template, [{"product": p} for p in products], list(ratios), "1K")
    assert not plan.problems, plan.problems
    return launch_campaign(tracker, plan, name="Test", pricing=PRICING, model="gpt-image-2")


def finished(store, cid):
    def pred():
        camp = CampaignStore(store).campaign(cid)
        if not camp.progress.finished:
            return False
        ids = CampaignStore(store).submission_ids(cid)
        return all(o.state != "pending" for outs in store.outputs_for(ids).values() for o in outs)

    return pred


def test_campaign_never_has_more_tasks_in_flight_than_the_limit(sim, tmp_path):
    # In flight is measured on the real clock (RecordingClient); the tracker's poll intervals
    # pass on its own, so each wave is as long as the simulator's tasks, not the first look's wait.
    clock = FakeClock.at_now()
    tracker, store, client = make(sim, tmp_path, max_active=2, clock=clock)
    tracker.start()
    try:
        cid, ids = start_campaign(tracker, [f"item {i}" for i in range(4)], ratios=("1:1", "16:9"))
        assert len(ids) == 8
        assert clock.run_until(finished(store, cid), tracker, step=0.1)
        camp = CampaignStore(store).campaign(cid)
        assert (camp.progress.done, camp.progress.failed, camp.progress.left) == (8, 0, 0)
        assert sim.stats()["tasks_created"] == 8
        assert 1 <= client.peak_in_flight() <= 2
    finally:
        tracker.stop()


class HeldFirstCreate:
    """The real client, whose first create waits inside the call (before the POST) until `answer` is set."""

    def __init__(self, client: HiAPIClient) -> None:
        self.client = client
        self.entered = threading.Event()
        self.answer = threading.Event()
        self._lock = threading.Lock()
        self._first = True

    @property
    def is_local(self) -> bool:
        return self.client.is_local

    def new_idempotency_key(self) -> str:
        return self.client.new_idempotency_key()

    def create_task(self, request, *, idempotency_key=None):
        with self._lock:
            first, self._first = self._first, False
        if first:
            self.entered.set()
            assert self.answer.wait(60), "the held create was never let go"
        return self.client.create_task(request, idempotency_key=idempotency_key)

    def get_task(self, task_id):
        return self.client.get_task(task_id)


class CountHook(Store):
    """A real SQLite store that runs `after_count` once, just after its next in-flight count is read."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.after_count = None
        self.hook_errors: list[BaseException] = []

    def in_flight_count(self) -> int:
        n = super().in_flight_count()
        hook, self.after_count = self.after_count, None
        if hook is not None:
            try:
                hook()
            except BaseException as exc:  # seen by the test, not swallowed by the tracker's loop
                self.hook_errors.append(exc)
        return n


def test_a_create_answered_while_the_loop_counts_its_room_still_counts(sim, tmp_path):
    # The loop reads the store's count of tasks at HiAPI while a create is on the wire (so it is
    # not in that count); the create is then answered and its task recorded before the loop looks
    # at the creates it is sending. It must be counted once, not missed: else a second row goes out.
    clock = FakeClock.at_now()
    store = CountHook(tmp_path / "studio.db")
    held = HeldFirstCreate(HiAPIClient(KEY, base_url=sim.base_url, max_retries=0))
    client = RecordingClient(held)
    tracker = Tracker(
        store, client, ImageKeeper(tmp_path / "images"), priors={"1K": 0.4}, max_active=1, clock=clock
    )
    tracker.start()
    try:
        cid, ids = start_campaign(tracker, ["a", "b"])
        wait_for(held.entered.is_set)  # the first row is being sent; the second waits for room

        def answer_the_create_before_the_loop_goes_on() -> None:
            busy = tracker.health()["lanes"]["create"]["busy"]
            held.answer.set()
            # The create's job has ended: its task id is stored and it is no longer "being sent".
            wait_for(lambda: tracker.health()["lanes"]["create"]["busy"] < busy)
            assert store.submission(ids[0]).task_id is not None

        store.after_count = answer_the_create_before_the_loop_goes_on
        tracker.wake()
        wait_for(lambda: store.after_count is None)
        loop_rounds(tracker)
        assert store.hook_errors == []
        assert sim.stats()["tasks_created"] == 1  # the second row still waits: the limit is 1
        assert store.in_flight_count() == 1

        assert clock.run_until(finished(store, cid), tracker, step=0.1)
        assert sim.stats()["tasks_created"] == 2
        assert client.peak_in_flight() == 1
    finally:
        held.answer.set()
        tracker.stop()


def test_a_single_prompt_goes_at_once_and_campaign_rows_wait_for_room(sim, tmp_path):
    clock = FakeClock.at_now()
    tracker, store, client = make(sim, tmp_path, max_active=1, clock=clock)
    # Queue both before the loop runs, so the order is the tracker's choice.
    cid, camp_ids = start_campaign(tracker, ["a", "b"])
    singles = tracker.submit([TaskRequest("a single prompt", r, "1K") for r in ("1:1", "16:9", "9:16")])
    tracker.start()
    try:
        assert clock.run_until(finished(store, cid), tracker, step=0.1)
        single_tasks = {store.submission(i).task_id for i in singles}
        camp_tasks = {store.submission(i).task_id for i in camp_ids}
        by_start = sorted(client.started, key=client.started.get)
        assert set(by_start[:3]) == single_tasks  # one click is not held back by the limit of 1…
        # …and campaign rows start only once nothing else is in flight.
        first_row = min(client.started[t] for t in camp_tasks)
        assert first_row >= max(client.finished[t] for t in single_tasks)
        assert client.peak_in_flight() > 1  # they ran side by side, above the limit of 1
    finally:
        tracker.stop()


@pytest.mark.slow
def test_429s_on_create_hold_every_create_and_halve_the_pace_without_duplicates(sim, tmp_path):
    sim.set_faults(post_429_rate=1.0, retry_after=1)
    clock = FakeClock.at_now()
    tracker, store, client = make(sim, tmp_path, max_active=8, clock=clock)
    client.clock = clock  # creates are timed on the clock the tracker holds them by
    cid, ids = start_campaign(tracker, [f"item {i}" for i in range(6)], ratios=("1:1", "4:5"))
    tracker.start()

    def settled() -> None:
        """The tracker has looked at the clock's time and every create it sent has been answered."""
        loop_rounds(tracker, 1)
        wait_for(lambda: tracker.health()["lanes"]["create"]["busy"] == 0)

    try:
        settled()
        for _ in range(
            30
        ):  # three seconds on the tracker's clock, a tenth at a time: every create is refused
            clock.advance(0.1)
            settled()
        with client.lock:
            attempts = sorted(client.creates)
        # The first tick admits the limit (8) at once; some of those may reach the wire
        # only after the first 429 came back, so the first wave is the first 8 starts.
        first_wave, later = attempts[:8], attempts[8:]
        assert all(outcome == "429" for *_, outcome in first_wave)
        assert later, "creates must be tried again after Retry-After"
        for attempt in later:
            start = attempt[0]
            # Its own 429 ends at its start on a clock that stands still while a create is answered.
            others = (a for a in attempts if a is not attempt)
            last_429 = max(end for _, end, outcome in others if outcome == "429" and end <= start)
            # Retry-After: 1 holds every create, and the halved pace sends them one at a time.
            assert start - last_429 >= 0.9, f"a create started {start - last_429:.2f}s after a 429"
        assert len(later) <= 4  # one per second, not one per waiting create
        assert tracker.health()["pace"] == 1 and tracker.health()["rate_limited"] >= len(attempts) - 1

        sim.set_faults(post_429_rate=0.3)
        assert clock.run_until(finished(store, cid), tracker, step=0.1, timeout=120)
        assert CampaignStore(store).campaign(cid).progress.done == 12
        stats = sim.stats()
        assert stats["tasks_created"] == 12  # every retry reused its idempotency key
        assert stats["requests"].get("POST /v1/tasks 429", 0) >= len(attempts)
    finally:
        tracker.stop()


def test_pause_holds_unsent_rows_across_a_restart_then_resume_and_cancel(sim, tmp_path):
    tracker, store, client = make(sim, tmp_path, max_active=1)
    cid, ids = start_campaign(tracker, [f"item {i}" for i in range(6)])
    tracker.pause_campaign(cid)  # before the loop starts: nothing may be sent
    tracker.start()
    book = CampaignStore(store)
    try:
        loop_rounds(tracker)  # the loop looked, several times, and sent nothing
        assert sim.stats()["tasks_created"] == 0
        assert book.campaign(cid).status == "paused" and book.campaign(cid).progress.held == 6
    finally:
        tracker.stop()

    # A new process on the same database: still paused.
    clock = FakeClock.at_now()
    tracker, store, client = make(sim, tmp_path, max_active=1, clock=clock)
    book = CampaignStore(store)
    tracker.start()
    try:
        loop_rounds(tracker)
        assert sim.stats()["tasks_created"] == 0
        tracker.resume_campaign(cid)
        assert clock.run_until(lambda: book.campaign(cid).progress.done >= 2, tracker, step=0.1)
        cancelled = tracker.cancel_campaign(cid)
        assert clock.run_until(lambda: book.campaign(cid).progress.finished, tracker, step=0.1)
        camp = book.campaign(cid)
        created = sim.stats()["tasks_created"]
        assert camp.progress.done == created  # whatever was sent was followed to its end
        assert camp.progress.cancelled == cancelled == 6 - created
        assert camp.status == "cancelled"
        for cell in book.cells(cid):
            if cell.cancelled:
                assert cell.task_id is None and cell.state == REJECTED and cell.error_code == CANCELLED
        loop_rounds(tracker)
        assert sim.stats()["tasks_created"] == created  # nothing sent after the cancel
    finally:
        tracker.stop()


def test_failed_rows_keep_their_reason_and_are_resubmitted_after_editing(sim, tmp_path):
    clock = FakeClock.at_now()
    tracker, store, _ = make(sim, tmp_path, max_active=4, clock=clock)
    tracker.start()
    book = CampaignStore(store)
    try:
        cid, _ = start_campaign(tracker, ["mug", "bowl [sim:fail]", "vase"], ratios=("1:1", "16:9"))
        assert clock.run_until(finished(store, cid), tracker, step=0.1)
        camp = book.campaign(cid)
        assert (camp.progress.done, camp.progress.failed) == (4, 2)
        failed = [c for c in book.cells(cid) if c.failed]
        assert {c.row for c in failed} == {2}
        assert all(c.error_code == "TASK_FAILED" and "rejected" in c.error_message for c in failed)

        with pytest.raises(ValueError, match=r"Row 2: \{\{product\}\} is empty"):
            resubmit_campaign(tracker, cid, {2: {"product": ""}}, pricing=PRICING, model="gpt-image-2")
        new_ids = resubmit_campaign(
            tracker, cid, {2: {"product": "bowl"}}, pricing=PRICING, model="gpt-image-2"
        )
        assert len(new_ids) == 2  # only the failed cells of that row
        assert clock.run_until(finished(store, cid), tracker, step=0.1)
        camp = book.campaign(cid)
        assert (camp.progress.done, camp.progress.failed, camp.progress.total) == (6, 0, 6)
        assert book.rows(cid)[1].prompt == "A poster of a bowl"

        # The campaign zip maps each file to its row and values.
        rows = {r.idx: r.values for r in book.rows(cid)}
        kept = book.kept_items(cid)
        manifest = campaign_manifest_rows("Test", ["product"], [(r, it, rows[r]) for r, it in kept])
        blobs = ImageKeeper(tmp_path / "images").blobs
        token = write_zip([it for _, it in kept], blobs, manifest=manifest)
        with zipfile.ZipFile(blobs.open(f"exports/{token}.zip")) as zf:
            listed = json.loads(zf.read("manifest.json"))
            assert sorted(m["file"] for m in listed) == sorted(
                f"row-{r:03d}_{ratio}_1K.png" for r in (1, 2, 3) for ratio in ("1x1", "16x9")
            )
            for m in listed:
                assert m["values"]["product"] == ["mug", "bowl", "vase"][m["row"] - 1]
                assert read_recipe(zf.read(m["file"]))["prompt"] == f"A poster of a {m['values']['product']}"
            csv_text = zf.read("manifest.csv").decode()
            assert csv_text.splitlines()[0].endswith("campaign,row,{{product}}")
            assert "row-002_16x9_1K.png" in csv_text
        assert blobs.size(f"exports/{token}.zip")
    finally:
        tracker.stop()


def test_cancel_never_drops_a_create_that_was_already_tried(sim, tmp_path):
    store = Store(tmp_path / "studio.db")
    tracker, store, _ = make(sim, tmp_path, max_active=1)
    cid, ids = start_campaign(tracker, ["a", "b"])
    # The first create was tried and its answer lost: it may exist at HiAPI.
    store.note_attempt(ids[0], "CONNECTION_ERROR", "connection reset")
    assert tracker.cancel_campaign(cid) == 1
    assert store.submission(ids[0]).state == SUBMITTING
    tracker.start()
    try:
        assert wait_for(lambda: store.submission(ids[0]).state == "success", timeout=30)
        assert store.submission(ids[1]).error_code == CANCELLED
    finally:
        tracker.stop()
