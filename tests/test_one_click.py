"""One click, one spend: a click token makes at most one creative, whatever replays it.

Streamlit may call a button's callback again when reruns overlap, a person may
double-click, and two threads may race: each of those records the click once,
and HiAPI sees one create per image (real HTTP to the simulator, real SQLite).
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing

import pytest

from studio.campaign_store import CampaignStore
from studio.campaigns import plan_campaign, plan_prompt
from studio.models import TaskRequest
from studio.pricing import Pricing
from studio.simulator import Simulator
from studio.store import SpendRate, click_keys
from studio.usecases import generate, launch_campaign, quote, resubmit_campaign
from tests.support import wait_for
from tests.test_tracker import KEY, all_terminal, make_tracker

RATIOS = ("16:9", "9:16", "1:1")


@pytest.fixture
def sim():
    s = Simulator(api_keys=[KEY], min_duration=0.2, max_duration=0.5, seed=5).start()
    yield s
    s.stop()


def _requests(prompt: str) -> list[TaskRequest]:
    return [TaskRequest(prompt, r, "1K") for r in RATIOS]


def test_the_same_click_submitted_again_records_and_sends_nothing_new(sim, tmp_path):
    tracker, store = make_tracker(sim, tmp_path)
    tracker.start()
    try:
        rate = SpendRate("1K", 30_000, "USD")
        first = tracker.submit(_requests('poster "ONE CLICK"'), click_token="click-aaaa-0001", spend=rate)
        again = tracker.submit(_requests('poster "ONE CLICK"'), click_token="click-aaaa-0001", spend=rate)
        # The draft changed between the two calls (a ratio toggled as the click landed): still one creative.
        other = tracker.submit(
            [TaskRequest('poster "ONE CLICK"', "4:3", "1K")], click_token="click-aaaa-0001", spend=rate
        )
        assert first == again == other and len(first) == 3
        assert wait_for(all_terminal(store))
        assert sim.stats()["tasks_created"] == 3
        assert len(store.recent(100)) == 3
        keys = {store.submission(sid).idempotency_key for sid in first}
        assert keys == set(click_keys("click-aaaa-0001", 3))
        # Priced in the same transaction as the submissions, once each.
        [line] = CampaignStore(store).spend("all")
        assert line.images == 3
        # A new token is a new click.
        [fresh] = tracker.submit([TaskRequest("a second idea", "1:1", "1K")], click_token="click-bbbb-0002")
        assert fresh not in first
        assert wait_for(lambda: sim.stats()["tasks_created"] == 4)
    finally:
        tracker.stop()


def test_racing_recordings_of_one_click_make_one_creative(sim, tmp_path):
    tracker, store = make_tracker(sim, tmp_path)
    results: list[list[int]] = []
    barrier = threading.Barrier(6)

    def click() -> None:
        barrier.wait()
        results.append(tracker.submit(_requests("a race"), click_token="click-race-0003"))

    threads = [threading.Thread(target=click) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 6 and all(r == results[0] for r in results)
    assert len(store.recent(100)) == 3
    tracker.start()
    try:
        assert wait_for(all_terminal(store))
        assert sim.stats()["tasks_created"] == 3
    finally:
        tracker.stop()


def test_one_click_launches_one_campaign(sim, tmp_path):
    tracker, store = make_tracker(sim, tmp_path)
    pricing = Pricing()
    rows = [{"product": "Mug"}, {"product": "Bowl"}]
    plan = plan_campaign("A poster of a {{product}}", rows, ["1:1", "16:9"], "1K")
    tracker.start()
    try:
        cid, ids = launch_campaign(
            tracker, plan, name="Spring", pricing=pricing, model="gpt-image-2", click_token="click-camp-0004"
        )
        cid2, ids2 = launch_campaign(
            tracker, plan, name="Spring", pricing=pricing, model="gpt-image-2", click_token="click-camp-0004"
        )
        assert (cid, ids) == (cid2, ids2) and len(ids) == 4
        book = CampaignStore(store)
        assert [c.id for c in book.campaigns()] == [cid]
        assert wait_for(all_terminal(store))
        assert sim.stats()["tasks_created"] == 4
        # Resubmitting is once per token too (nothing failed here: nothing to resend, nothing sent).
        assert (
            resubmit_campaign(
                tracker,
                cid,
                {1: rows[0]},
                pricing=pricing,
                model="gpt-image-2",
                click_token="click-resub-0005",
            )
            == []
        )
        assert sim.stats()["tasks_created"] == 4
    finally:
        tracker.stop()


def test_a_bad_click_token_is_refused_before_anything_is_written(sim, tmp_path):
    tracker, store = make_tracker(sim, tmp_path)
    try:
        tracker.submit(_requests("x"), click_token="no spaces allowed")
    except ValueError as exc:
        assert "click token" in str(exc)
    else:
        raise AssertionError("a malformed token was accepted")
    assert store.recent(10) == []


def test_a_spend_that_cannot_be_written_leaves_no_submission_and_the_click_retried_makes_one(sim, tmp_path):
    """Submissions and their spend are one transaction: a failing spend write records nothing at all."""
    tracker, store = make_tracker(sim, tmp_path)
    pricing = Pricing()
    quoted = quote(plan_prompt('poster "PRICED ONCE"', list(RATIOS), "1K", "gpt-image-2"), pricing)
    assert quoted.images == 3
    # A real failure inside the transaction, after the submissions are inserted: the spend table refuses.
    with closing(sqlite3.connect(store.path)) as db:
        db.execute(
            "CREATE TRIGGER refuse_spend BEFORE INSERT ON spend BEGIN SELECT RAISE(ABORT, 'spend refused'); END"
        )
        db.commit()
    tracker.start()
    try:
        with pytest.raises(sqlite3.IntegrityError, match="spend refused"):
            generate(tracker, quoted, model="gpt-image-2", click_token="click-spend-0006")
        assert store.recent(100) == []  # no submission without its price
        assert CampaignStore(store).spend("all") == []
        with closing(sqlite3.connect(store.path)) as db:
            db.execute("DROP TRIGGER refuse_spend")
            db.commit()
        first = generate(tracker, quoted, model="gpt-image-2", click_token="click-spend-0006")
        again = generate(tracker, quoted, model="gpt-image-2", click_token="click-spend-0006")
        assert first == again and len(first.submission_ids) == 3
        assert wait_for(all_terminal(store))
        assert sim.stats()["tasks_created"] == 3
        assert len({s.creative_id for s in store.recent(100)}) == 1
        [line] = CampaignStore(store).spend("all")
        assert line.images == 3
    finally:
        tracker.stop()
