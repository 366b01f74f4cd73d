"""The races SQLite's single writer avoided, run on PostgreSQL between two replicas (two
`PgStore`s, each on its own pool) with a third connection holding a lock where the order of
events must be forced: each test fails if the lock the adapter takes is removed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from studio.callbacks import CallbackOutcome
from studio.config import DatabaseSettings
from studio.models import Task, TaskRequest
from studio.postgres.store import PgStore
from studio.records import TaskState
from tests.support import wait_for


@pytest.fixture
def replicas(postgres_db: str, tmp_path: Path) -> Iterator[tuple[PgStore, PgStore, str]]:
    settings = DatabaseSettings.parse(postgres_db, tmp_path)
    a = PgStore.open(settings, max_size=2)
    b = PgStore.open(settings, max_size=2)
    yield a, b, postgres_db
    a.close()
    b.close()


def report(task_id: str, status: str, **extra: object) -> Task:
    task = Task.parse({"taskId": task_id, "status": status, "created": 100, "completed": 160} | extra)
    assert task is not None
    return task


IMAGE = {"url": "https://cdn.example/1.png", "type": "image", "expireAt": 4_000_000_000}


def lock_waits(dsn: str) -> int:
    """How many other sessions on this database wait for a lock right now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def started(results: dict[str, Any], name: str, call: Callable[[], Any]) -> threading.Thread:
    def run() -> None:
        try:
            results[name] = call()
        except BaseException as exc:  # the assertion on `results` shows it
            results[name] = exc

    t = threading.Thread(target=run, name=name)
    t.start()
    return t


def at_once(**calls: Callable[[], Any]) -> dict[str, Any]:
    """Run every call on its own thread, released together; what each returned (or raised)."""
    barrier = threading.Barrier(len(calls))
    results: dict[str, Any] = {}

    def released(call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            barrier.wait()
            return call()

        return run

    threads = [started(results, name, released(call)) for name, call in calls.items()]
    for t in threads:
        t.join(30)
    assert not [r for r in results.values() if isinstance(r, BaseException)], results
    return results


def created(store: PgStore, key: str, task_id: str) -> int:
    sid = store.add_submission(TaskRequest("a bridge"), idempotency_key=key, creative_id=f"c-{key}")
    assert store.mark_created(sid, task_id, now=10.0)
    return sid


def test_a_callback_held_on_one_replica_while_the_create_answer_lands_on_the_other_is_applied(
    replicas,
) -> None:
    a, b, dsn = replicas
    sid = a.add_submission(TaskRequest("a bridge"), idempotency_key="k", creative_id="c")
    done = report("early", "success", output=[IMAGE])
    results: dict[str, Any] = {}
    with psycopg.connect(dsn) as blocker:
        # An uncommitted row on the held callback's key stops replica B mid-hold, after it
        # found no submission with this task id and before its hold is visible.
        blocker.execute(
            "INSERT INTO pending_callbacks (task_id, body, received_at) VALUES ('early', '{}', 0)"
        )
        callback = started(results, "callback", lambda: b.record_callback(done, now=50.0))
        wait_for(lambda: lock_waits(dsn) == 1)
        create = started(results, "create", lambda: a.mark_created(sid, "early", now=51.0))
        # The create answer must wait for the hold to commit (the task lock), not pass it by.
        wait_for(lambda: lock_waits(dsn) == 2 or not create.is_alive())
        blocker.rollback()
    callback.join(30)
    create.join(30)
    assert results == {"callback": CallbackOutcome.HELD, "create": True}
    sub = a.submission(sid)
    assert sub is not None and sub.state == TaskState.SUCCESS  # the held report was applied
    assert a.held_callbacks() == 0
    assert [o.url for o in b.outputs_for([sid])[sid]] == [IMAGE["url"]]


def test_a_create_answer_in_flight_makes_the_callback_wait_and_find_its_task(replicas) -> None:
    a, b, dsn = replicas
    sid = a.add_submission(TaskRequest("a bridge"), idempotency_key="k", creative_id="c")
    results: dict[str, Any] = {}
    with psycopg.connect(dsn) as blocker:
        blocker.execute("SELECT id FROM submissions WHERE id = %s FOR UPDATE", (sid,))
        create = started(results, "create", lambda: a.mark_created(sid, "t-1", now=51.0))
        wait_for(lambda: lock_waits(dsn) == 1)
        callback = started(
            results, "callback", lambda: b.record_callback(report("t-1", "success", output=[IMAGE]), now=52.0)
        )
        wait_for(lambda: lock_waits(dsn) == 2 or not callback.is_alive())
        blocker.rollback()
    create.join(30)
    callback.join(30)
    assert results == {"create": True, "callback": CallbackOutcome.STORED}
    sub = b.submission(sid)
    assert sub is not None and sub.state == TaskState.SUCCESS and b.held_callbacks() == 0


@pytest.mark.parametrize("second", ["callback", "poll"])
def test_one_report_delivered_to_two_replicas_at_once_is_stored_once(replicas, second: str) -> None:
    a, b, dsn = replicas
    sid = created(a, "k", "t-1")
    done = report("t-1", "success", output=[IMAGE])
    results: dict[str, Any] = {}
    with psycopg.connect(dsn) as blocker:
        # Both deliveries start while the row is locked: both have read it as `queued`
        # before either writes, unless applying a report locks the row first.
        blocker.execute("SELECT id FROM submissions WHERE id = %s FOR UPDATE", (sid,))
        first = started(results, "a", lambda: a.record_callback(done, now=60.0))
        wait_for(lambda: lock_waits(dsn) == 1)
        if second == "callback":
            other = started(results, "b", lambda: b.record_callback(done, now=60.5))
        else:
            other = started(results, "b", lambda: b.record_task(done, source="poll", now=60.5))
        wait_for(lambda: lock_waits(dsn) == 2)
        blocker.rollback()
    first.join(30)
    other.join(30)
    stored = [r for r in results.values() if r in (CallbackOutcome.STORED, True)]
    assert len(results) == 2 and len(stored) == 1, results
    assert [e[0] for e in a.events(sid)].count("success") == 1
    assert len(a.outputs_for([sid])[sid]) == 1


def test_two_replicas_resuming_one_abandoned_submission_follow_it_once(replicas) -> None:
    a, b, _ = replicas
    rounds = 25
    for i in range(rounds):
        now = 1000.0 * (i + 1)
        sid = a.add_submission(TaskRequest(f"p{i}"), idempotency_key=f"k{i}", creative_id="c")
        # A replica that died holding it: its lease runs out at now - 10.
        assert [s.id for s in a.claim_due_submissions("dead", 10.0, now=now - 20.0, limit=5)] == [sid]

        def resume(name: str, store: PgStore, sid: int = sid, now: float = now) -> Any:
            mine = [s.id for s in store.claim_due_submissions(name, 1e6, now=now, limit=5)]
            # Even a replica that sent a create it should not have: one task id sticks.
            # (Not "task-a-12": "sk-a-12" reads as an API key and is redacted.)
            attached = store.mark_created(sid, f"{name}-job-{sid}", now=now + 1)
            return mine, attached

        results = at_once(a=lambda: resume("a", a), b=lambda: resume("b", b))
        claimed = [n for n, (mine, _) in results.items() if mine == [sid]]
        assert len(claimed) == 1 and [mine for mine, _ in results.values()].count([]) == 1, results
        assert sum(ok for _, ok in results.values()) == 1, results
        assert a.claimed_by(sid) == (claimed[0], now + 1e6)  # still held next round
        assert [e[0] for e in a.events(sid)].count("queued") == 1
    assert a.in_flight_count() == rounds


def test_two_replicas_deleting_the_last_two_uses_of_one_file_report_it_unused_once(replicas) -> None:
    a, b, _ = replicas
    sha = "ab" * 32
    for i in range(10):
        sid = a.add_submission(TaskRequest(f"p{i}"), idempotency_key=f"k{i}", creative_id=f"c{i}")
        assert a.mark_created(sid, f"t{i}")
        assert a.record_task(report(f"t{i}", "success", output=[IMAGE, IMAGE]))
        one, two = a.outputs_for([sid])[sid]
        for o in (one, two):
            a.output_kept(o.id, sha256=f"{sha[:-2]}{i:02d}", width=1, height=1, nbytes=1)
        results = at_once(a=partial(a.delete_outputs, [one.id]), b=partial(b.delete_outputs, [two.id]))
        assert sorted(results["a"] + results["b"]) == [f"{sha[:-2]}{i:02d}"], results  # once, not never
        assert a.submission(sid) is None  # the submission left without outputs went too


def trashed_pair(store: PgStore, i: int, *, token: str, purge_after: float) -> tuple[int, int]:
    """Two kept outputs of one submission, trashed under one deletion."""
    sid = store.add_submission(TaskRequest(f"p{i}"), idempotency_key=f"k{i}", creative_id=f"c{i}")
    assert store.mark_created(sid, f"t{i}")
    assert store.record_task(report(f"t{i}", "success", output=[IMAGE, IMAGE]))
    one, two = store.outputs_for([sid])[sid]
    for n, o in enumerate((one, two)):
        store.output_kept(o.id, sha256=f"{i:02d}{n}".ljust(64, "0"), width=1, height=1, nbytes=1)
    assert store.trash_outputs([one.id, two.id], token=token, purge_after=purge_after, now=0.0) == [
        one.id,
        two.id,
    ]
    return one.id, two.id


def test_an_undo_holding_its_deletion_makes_a_sweep_on_the_other_replica_leave_it_whole(replicas) -> None:
    a, b, dsn = replicas
    one, two = trashed_pair(a, 0, token="tok", purge_after=100.0)
    results: dict[str, Any] = {}
    with psycopg.connect(dsn) as blocker:
        # The second output's row is locked: an Undo that took the deletion stops mid-restore.
        blocker.execute("SELECT id FROM outputs WHERE id = %s FOR UPDATE", (two,))
        # Replica A's clock says the window is open, replica B's that it ended: both may act.
        undo = started(results, "undo", lambda: a.restore_deletion("tok", 99.0))
        wait_for(lambda: lock_waits(dsn) == 1)
        sweep = started(results, "sweep", lambda: b.purge_due(101.0))
        # The sweep must pass the deletion an Undo holds by, not purge what it can reach of it.
        wait_for(lambda: lock_waits(dsn) == 2 or not sweep.is_alive())
        blocker.rollback()
    undo.join(30)
    sweep.join(30)
    assert results == {"undo": 2, "sweep": []}
    assert [o.state for o in (a.output(one), a.output(two)) if o] == ["kept", "kept"]
    assert a.deletion("tok") is None and b.purge_due(1e9) == []


def test_a_sweep_holding_a_deletion_makes_an_undo_on_the_other_replica_find_it_gone(replicas) -> None:
    a, b, dsn = replicas
    one, two = trashed_pair(a, 0, token="tok", purge_after=100.0)
    results: dict[str, Any] = {}
    with psycopg.connect(dsn) as blocker:
        blocker.execute("SELECT id FROM outputs WHERE id = %s FOR UPDATE", (two,))
        sweep = started(results, "sweep", lambda: b.purge_due(101.0))
        wait_for(lambda: lock_waits(dsn) == 1)
        undo = started(results, "undo", lambda: a.restore_deletion("tok", 99.0))
        # The Undo must wait for the sweep's deletion row, not restore the output it can reach.
        wait_for(lambda: lock_waits(dsn) == 2 or not undo.is_alive())
        blocker.rollback()
    undo.join(30)
    sweep.join(30)
    assert results["undo"] == 0, results
    assert sorted(results["sweep"]) == [f"00{n}".ljust(64, "0") for n in range(2)]  # both files freed
    assert a.output(one) is None and a.output(two) is None and a.deletion("tok") is None


def test_an_undo_and_a_sweep_racing_on_two_replicas_restore_or_purge_a_deletion_whole(replicas) -> None:
    a, b, _ = replicas
    for i in range(20):
        token = f"tok{i}"
        one, two = trashed_pair(a, i, token=token, purge_after=100.0)
        # Skewed clocks: for A the window is open, for B it has ended.
        results = at_once(undo=partial(a.restore_deletion, token, 99.0), sweep=partial(b.purge_due, 101.0))
        left = [o.state for o in (a.output(one), a.output(two)) if o is not None]
        if results["undo"]:
            assert results == {"undo": 2, "sweep": []} and left == ["kept", "kept"], results
        else:
            assert len(results["sweep"]) == 2 and left == [], (results, left)
    assert a.trashed_outputs() == []
