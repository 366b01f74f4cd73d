"""Records and states: StrEnum states equal the strings already stored; old imports still work."""

import sqlite3

from studio import campaign_store, fidelity, records, store
from studio.models import TaskRequest
from studio.records import CANCELLED, CampaignState, OutputState, TaskState, TextCheckState
from studio.store import Store


def test_states_are_their_stored_strings():
    assert [*TaskState] == ["submitting", "queued", "handling", "archiving", "success", "fail", "rejected"]
    assert [*OutputState] == ["pending", "kept", "failed", "trashed"]
    assert [*CampaignState] == ["running", "paused", "cancelled"]
    assert fidelity.STATES == ("pass", "mismatch", "unavailable", "error") == tuple(TextCheckState)
    # What SQLite hands back is a plain str: it must still compare (and hash) as the member.
    assert "rejected" == TaskState.REJECTED and {"kept": 1}[OutputState.KEPT] == 1
    assert f"{TaskState.SUCCESS}" == "success" and TaskState("fail") is TaskState.FAIL


def test_a_stored_state_is_the_plain_string(tmp_path):
    s = Store(tmp_path / "s.db")
    sid = s.add_submission(TaskRequest("p", "1:1", "1K"), idempotency_key="k", creative_id="c")
    s.mark_rejected(sid, "INVALID_REQUEST", "no")
    raw = sqlite3.connect(tmp_path / "s.db").execute("SELECT state FROM submissions").fetchone()[0]
    assert raw == "rejected" and type(raw) is str
    sub = s.submission(sid)
    assert sub.state == TaskState.REJECTED and sub.is_terminal and not sub.cancelled


def test_cancelled_is_rejected_with_the_cancelled_code(tmp_path):
    s = Store(tmp_path / "s.db")
    sid = s.add_submission(TaskRequest("p", "1:1", "1K"), idempotency_key="k", creative_id="c")
    s.mark_rejected(sid, CANCELLED, "Cancelled before it was sent.")
    assert s.submission(sid).cancelled
    assert not records.is_cancelled(TaskState.FAIL, CANCELLED)  # a HiAPI failure is not our cancel


def test_old_modules_re_export_the_records():
    assert store.Submission is records.Submission and store.GalleryItem is records.GalleryItem
    assert store.TextCheck is records.TextCheck and store.SpendRate is records.SpendRate
    assert fidelity.StringCheck is records.StringCheck and fidelity.FidelityReport is records.FidelityReport
    assert campaign_store.CellView is records.CellView and campaign_store.Campaign is records.Campaign
    assert campaign_store.CANCELLED == CANCELLED and campaign_store.CANCELLED_STATE == CampaignState.CANCELLED
