"""The per-browser draft store (studio/drafts.py) over a real SQLite store."""

from __future__ import annotations

from studio.drafts import MAX_AGE_DAYS, Drafts, new_id, valid_id
from studio.store import Store

DRAFT = {"prompt": "A kite", "ratios": ["16:9"], "resolution": "2K", "rows": [], "campaign_name": ""}


def test_a_saved_draft_loads_back_in_a_new_instance(tmp_path):
    store = Store(tmp_path / "s.db")
    did = new_id()
    assert Drafts(store).save(did, DRAFT)
    assert Drafts(store).load(did) == DRAFT
    assert Drafts(store).load(new_id()) is None


def test_an_unchanged_draft_is_not_written_again(tmp_path):
    drafts = Drafts(Store(tmp_path / "s.db"))
    did = new_id()
    assert drafts.save(did, DRAFT)
    assert not drafts.save(did, dict(DRAFT))
    assert drafts.save(did, {**DRAFT, "prompt": "A kite, red"})
    assert drafts.load(did)["prompt"] == "A kite, red"


def test_an_unreadable_body_is_no_draft(tmp_path):
    store = Store(tmp_path / "s.db")
    store.save_draft("x", "not json", now=0)
    store.save_draft("y", "[1]", now=0)
    assert Drafts(store).load("x") is None
    assert Drafts(store).load("y") is None


def test_old_drafts_are_dropped_when_a_new_one_is_saved(tmp_path):
    store = Store(tmp_path / "s.db")
    now = 1_000_000_000.0
    Drafts(store).save("old", DRAFT, now=now - (MAX_AGE_DAYS + 1) * 86_400)
    Drafts(store).save("recent", DRAFT, now=now - 86_400)
    Drafts(store).save(new_id(), DRAFT, now=now)
    assert Drafts(store).load("old") is None
    assert Drafts(store).load("recent") == DRAFT


def test_only_random_looking_ids_are_accepted_from_a_cookie():
    assert valid_id(new_id())
    assert new_id() != new_id()
    for bad in (None, "", "short", "a" * 65, "x" * 30 + ";", 42):
        assert not valid_id(bad)
