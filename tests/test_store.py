"""The store on real SQLite files: round trips, stickiness, resumption, migrations."""

import sqlite3
import threading

import pytest

from studio.models import Task, TaskRequest
from studio.store import REJECTED, SCHEMA_VERSION, SUBMITTING, Store
from tests.support import old_database, sql_rows


def _task(task_id, status, **extra):
    return Task.parse({"taskId": task_id, "status": status, "created": 100, "completed": 0} | extra)


def test_submission_is_written_before_any_task_exists(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = store.add_submission(TaskRequest("a poster", "16:9", "2K"), idempotency_key="k1", creative_id="c")
    # A fresh connection (another process after a crash) sees it unfinished.
    again = Store(tmp_path / "s.db")
    [sub] = again.unfinished()
    assert sub.id == sid and sub.state == SUBMITTING and sub.task_id is None
    assert sub.idempotency_key == "k1" and sub.request == TaskRequest("a poster", "16:9", "2K")


def test_task_reports_are_sticky_and_deduplicated(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = store.add_submission(TaskRequest("p", "1:1", "1K"), idempotency_key="k", creative_id="c")
    assert store.mark_created(sid, "tk-1") is True
    assert store.mark_created(sid, "tk-2") is False  # one task per submission
    assert store.record_task(_task("tk-1", "handling")) is True
    assert store.record_task(_task("tk-1", "queued")) is False  # stale, never moves back
    ok = _task(
        "tk-1", "success", completed=160, output=[{"url": "https://x/a.png", "type": "image", "expireAt": 9}]
    )
    assert store.record_task(ok) is True
    assert store.record_task(ok) is False
    assert store.record_task(_task("tk-1", "fail", error={"code": "TASK_FAILED", "message": "x"})) is False
    sub = store.submission(sid)
    assert sub.state == "success" and sub.is_terminal and sub.remote_completed == 160
    assert [e[0] for e in store.events(sid)] == ["submitting", "queued", "handling", "success"]
    [out] = store.pending_outputs()
    assert out.url == "https://x/a.png" and out.expire_at == 9
    assert store.unfinished() == []
    assert store.record_task(_task("tk-unknown", "success")) is False


def test_failure_keeps_hiapis_reason(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = store.add_submission(TaskRequest("p"), idempotency_key="k", creative_id="c")
    store.mark_created(sid, "tk-9")
    store.record_task(
        _task("tk-9", "fail", error={"code": "TASK_FAILED", "message": "upstream rejected the prompt"})
    )
    sub = store.submission(sid)
    assert (sub.state, sub.error_code, sub.error_message) == (
        "fail",
        "TASK_FAILED",
        "upstream rejected the prompt",
    )


def test_rejected_and_retry_notes(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = store.add_submission(TaskRequest("p"), idempotency_key="k", creative_id="c")
    store.note_attempt(sid, "HTTP_503", "busy")
    assert store.submission(sid).state == SUBMITTING and store.submission(sid).attempts == 1
    store.mark_rejected(sid, "HTTP_402", "balance too low")
    sub = store.submission(sid)
    assert sub.state == REJECTED and sub.error_message == "balance too low" and sub.is_terminal


def test_output_download_states(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = store.add_submission(TaskRequest("p"), idempotency_key="k", creative_id="c")
    store.mark_created(sid, "tk-1")
    store.record_task(_task("tk-1", "success", output=[{"url": "https://x/1", "type": "image"}, {"bad": 1}]))
    [o] = store.pending_outputs()
    store.output_failed(o.id, "timed out", retry_at=10**12)
    assert store.pending_outputs() == []  # not due yet
    store.output_kept(o.id, sha256="ab" * 32, width=10, height=20, nbytes=5)
    [kept] = store.outputs_for([sid])[sid]
    assert (kept.state, kept.width, kept.height, kept.error) == ("kept", 10, 20, None)


def test_durations_learned_per_resolution(tmp_path):
    store = Store(tmp_path / "s.db")
    for i, res in enumerate(["1K", "2K", "1K"]):
        sid = store.add_submission(
            TaskRequest("p", "16:9", res), idempotency_key=f"k{i}", creative_id="c", now=0
        )
        store.mark_created(sid, f"tk-{i}", now=10)
        store.record_task(_task(f"tk-{i}", "success"), now=10 + 30 * (i + 1))
    assert sorted(store.durations("1K")) == [30.0, 90.0]
    assert store.durations("2K") == [60.0]


def test_concurrent_writers_do_not_lose_rows(tmp_path):
    store = Store(tmp_path / "s.db")

    def work(n):
        for i in range(25):
            store.add_submission(TaskRequest(f"p{n}-{i}"), idempotency_key=f"{n}-{i}", creative_id="c")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(store.unfinished()) == 150


def test_migrations_from_version_one(tmp_path):
    path = tmp_path / "old.db"
    old_database(path, 1)  # a version-1 database, as an older studio left it
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO submissions (creative_id, prompt, aspect_ratio, resolution, model, idempotency_key, state,"
        " created_at) VALUES ('c', 'an old neon sign', '1:1', '1K', 'gpt-image-2', 'k', 'success', 1)"
    )
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    rows = sql_rows(store, "SELECT rowid FROM prompt_search WHERE prompt_search MATCH 'neon'")
    assert len(rows) == 1  # the search index was built for existing rows


def test_an_up_to_date_database_runs_no_migration_when_opened(tmp_path):
    from studio.sqlite import schema

    path = tmp_path / "studio.db"
    Store(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    ran: list[str] = []
    conn.set_trace_callback(ran.append)
    assert schema.migrate(conn, path) == 0
    assert ran == ["PRAGMA user_version"]  # one look at the version, no DDL
    conn.close()
    old_database(tmp_path / "v8.db", 8)
    conn = sqlite3.connect(tmp_path / "v8.db", isolation_level=None)
    assert schema.migrate(conn) == schema.SCHEMA_VERSION - 8  # only the slots after 8
    conn.close()


def test_a_database_from_a_newer_studio_is_refused_untouched(tmp_path):
    from studio.repositories import DatabaseUnusable, SchemaTooNew

    path = tmp_path / "studio.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer studio"):
        Store(path)
    assert sql_rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
    (tmp_path / "junk.db").write_bytes(b"not a database at all, just bytes" * 100)
    with pytest.raises(DatabaseUnusable):
        Store(tmp_path / "junk.db")


@pytest.mark.parametrize("version", [4, 5, 8])
def test_a_database_that_skipped_slots_3_and_4_gets_their_tables_back(tmp_path, version):
    """Slots 3 and 4 were placeholders while later ones shipped: upgrading such a file repairs them."""
    path = tmp_path / "studio.db"
    old_database(path, version, placeholders=(3, 4))
    tables = {"text_checks", "campaigns", "campaign_rows", "campaign_tasks", "spend", "prompt_library"}
    have = {r[0] for r in sql_rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & have
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    have = {r[0] for r in sql_rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables <= have
    store.set_setting("k", "v")  # app_settings came back with slot 4
    assert store.get_setting("k") == "v"
