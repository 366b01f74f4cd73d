"""The PostgreSQL adapter's groundwork on a real server (the `postgres_server` cluster):
the schema next to SQLite's, prompt search, the pool's refusals, the event bus across two
connections and claims taken by two claimers at once."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from studio.config import DatabaseSettings
from studio.events import CHANGED, KEPT, NEW, Event
from studio.postgres.claims import PgWorkClaims
from studio.postgres.events import PgEventBus
from studio.postgres.pool import DatabaseUnavailable, open_pool
from studio.postgres.schema import (
    PROMPT_MATCH,
    SCHEMA_VERSION,
    SchemaTooNew,
    current_version,
    migrate,
    prompt_words,
)
from studio.repositories import DatabaseUnusable
from studio.repositories import SchemaTooNew as RepositoriesSchemaTooNew
from studio.sqlite.store import SCHEMA_VERSION as SQLITE_VERSION
from studio.sqlite.store import Store
from tests.support import wait_for


def _pool(dsn: str, **kw):
    return open_pool(DatabaseSettings.parse(dsn, Path(".")), **kw)


@pytest.fixture
def pg(postgres_db: str) -> str:
    """A fresh database with the studio's schema."""
    with psycopg.connect(postgres_db) as conn:
        migrate(conn)
    return postgres_db


def _add_submissions(dsn: str, n: int, state: str = "submitting") -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "INSERT INTO submissions (creative_id, prompt, aspect_ratio, resolution, model, idempotency_key,"
            " state, created_at) SELECT 'c' || g, 'prompt ' || g, '1:1', '1K', 'm', %s || g, %s, g"
            " FROM generate_series(1, %s) g ORDER BY g RETURNING id",
            (f"key-{uuid.uuid4().hex[:8]}-", state, n),
        ).fetchall()
    return [r[0] for r in rows]


# -- schema ---------------------------------------------------------------------------------
def test_migrations_are_numbered_like_sqlites_and_run_once(postgres_db: str) -> None:
    assert SCHEMA_VERSION == SQLITE_VERSION
    with psycopg.connect(postgres_db) as conn:
        assert migrate(conn) == 0
        assert current_version(conn) == SCHEMA_VERSION
        assert migrate(conn) == SCHEMA_VERSION  # nothing left to do
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_every_sqlite_table_and_column_exists_on_postgresql(pg: str, tmp_path: Path) -> None:
    Store(tmp_path / "studio.db")  # a fresh SQLite file at the latest version
    lite = sqlite3.connect(tmp_path / "studio.db")
    names = [
        r[0]
        for r in lite.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
        if not r[0].startswith("prompt_search")  # fts5's tables: a tsvector column here
    ]
    sqlite_cols = {t: {r[1] for r in lite.execute(f"PRAGMA table_info({t})")} for t in names}
    with psycopg.connect(pg) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        ).fetchall()
    pg_cols: dict[str, set[str]] = {}
    for table, column in rows:
        pg_cols.setdefault(table, set()).add(column)
    pg_cols.pop("schema_migrations")
    pg_cols["submissions"].remove("prompt_search")
    assert pg_cols == sqlite_cols


def test_replicas_migrating_together_migrate_once(postgres_db: str) -> None:
    barrier = threading.Barrier(2)
    found: list[int] = []
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            with psycopg.connect(postgres_db) as conn:
                barrier.wait()
                found.append(migrate(conn))
        except BaseException as exc:  # a thread's error would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    # One replica finds the empty database; the other finds it wherever the first had got to
    # (anything from 0 to done, by how the two interleave), and applies only what is left.
    assert len(found) == 2 and min(found) == 0 and max(found) <= SCHEMA_VERSION
    with psycopg.connect(postgres_db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT version) FROM schema_migrations").fetchone() == (
            SCHEMA_VERSION,
            SCHEMA_VERSION,
        )


def test_a_database_from_a_newer_studio_is_refused(pg: str) -> None:
    with psycopg.connect(pg) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
        conn.commit()
        with pytest.raises(SchemaTooNew, match="newer than this studio") as refused:
            migrate(conn)
    # The adapter-neutral refusal, as on SQLite: the start-up catches one class for both.
    assert isinstance(refused.value, DatabaseUnusable) and type(refused.value) is RepositoriesSchemaTooNew


def test_spend_outlives_its_submission_and_library_names_ignore_case(pg: str) -> None:
    (sid,) = _add_submissions(pg, 1, state="success")
    with psycopg.connect(pg) as conn:
        conn.execute(
            "INSERT INTO spend (submission_id, resolution, unit_micros, currency, at) VALUES (%s, '1K', 40000, 'USD', 1)",
            (sid,),
        )
        conn.execute("DELETE FROM submissions WHERE id = %s", (sid,))
        assert conn.execute("SELECT submission_id, final_state FROM spend").fetchone() == (None, "success")
        insert = (
            "INSERT INTO prompt_library (name, prompt, ratios, resolution, created_at, updated_at)"
            " VALUES (%s, 'p', '[]', '1K', 0, 0)"
        )
        conn.execute(insert, ("Summer Sale",))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, ("summer sale",))


# -- prompt search ---------------------------------------------------------------------------
def test_prompt_search_matches_word_prefixes_without_accents_through_the_gin_index(pg: str) -> None:
    with psycopg.connect(pg) as conn:
        for i, prompt in enumerate(
            ["Café crème summer sale", "Winter boots on snow", "Summery café terrace"]
        ):
            conn.execute(
                "INSERT INTO submissions (creative_id, prompt, aspect_ratio, resolution, model, idempotency_key,"
                " state, created_at) VALUES ('c', %s, '1:1', '1K', 'm', %s, 'success', 0)",
                (prompt, f"k{i}"),
            )

        def search(text: str) -> list[str]:
            q = prompt_words(text)
            return [
                r[0]
                for r in conn.execute(
                    f"SELECT prompt FROM submissions s WHERE {PROMPT_MATCH} ORDER BY id", (q,)
                )
            ]

        assert search("cafe summ") == ["Café crème summer sale", "Summery café terrace"]
        assert search("CRÈME") == ["Café crème summer sale"]
        assert search("boots snow") == ["Winter boots on snow"]
        assert search("sale boots") == []
        assert prompt_words("  ' & | ! ") == []  # no word: no query, never a syntax error
        assert search("o'clock & (x") == []
        assert search("ʼa") == []  # unaccented to a quote: still never syntax
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(f"EXPLAIN SELECT id FROM submissions s WHERE {PROMPT_MATCH}", (["cafe"],))
        )
        assert "submissions_prompt_search" in plan


# -- the pool ----------------------------------------------------------------------------------
def test_the_pool_refuses_a_wrong_password_without_showing_it(postgres_server: str) -> None:
    wrong_password = "Wr0ng-pass-" + "z" * 12
    user, rest = postgres_server.split("://", 1)[1].split(":", 1)
    dsn = f"postgresql://{user}:{wrong_password}@{rest.split('@', 1)[1]}"
    with pytest.raises(DatabaseUnavailable) as info:
        _pool(dsn, timeout=3)
    message = info.value.message
    assert "password authentication failed" in message and "DATABASE_URL" in message
    assert wrong_password not in message and info.value.__cause__ is None
    with _pool(postgres_server) as pool, pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- events across replicas ----------------------------------------------------------------------
def test_events_reach_the_other_replica_once_and_survive_a_lost_connection(pg: str) -> None:
    heard_a: list[Event] = []
    heard_b: list[Event] = []
    a = PgEventBus(connect=lambda: psycopg.connect(pg)).start()
    b = PgEventBus(connect=lambda: psycopg.connect(pg), reconnect_s=0.05).start()
    try:
        assert a.listening and b.listening
        a.subscribe(heard_a.append)
        b.subscribe(heard_b.append)
        sent = a.publish(KEPT, 7, 11)
        assert heard_a == [sent]  # the publisher's own listeners hear it at once
        wait_for(lambda: heard_b, timeout=20)
        assert [(e.kind, e.submission_id, e.output_id) for e in heard_b] == [(KEPT, 7, 11)]
        assert heard_b[0].seq == b.seq  # numbered by the bus that tells it

        b.publish(NEW, 8)
        wait_for(lambda: len(heard_a) == 2, timeout=20)
        assert [(e.kind, e.submission_id) for e in heard_a] == [(KEPT, 7), (NEW, 8)]  # no echo of its own

        # The listener's connection dies (a restart, a failover): b reconnects and says CHANGED.
        with psycopg.connect(pg, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
            ).fetchall()
        assert len(killed) == 2
        wait_for(lambda: b.reconnects >= 1 and b.listening, timeout=20)
        wait_for(lambda: any(e.kind == CHANGED for e in heard_b), timeout=20)
        wait_for(lambda: a.listening, timeout=20)
        a.publish(KEPT, 9, 12)
        wait_for(lambda: heard_b[-1].submission_id == 9, timeout=20)
    finally:
        a.stop()
        b.stop()
    assert not a.listening and not b.listening


# -- claims ---------------------------------------------------------------------------------
def test_a_claimer_skips_rows_another_is_claiming_instead_of_waiting(pg: str) -> None:
    ids = _add_submissions(pg, 30)
    # A claimer that waited for A's locks would fail after 5 s instead of hanging.
    with _pool(pg + "?options=-c%20lock_timeout%3D5000") as pool:
        b = PgWorkClaims(pool)
        with psycopg.connect(pg) as a:  # claimer A mid-claim: its rows are locked, not committed
            locked = [
                r[0]
                for r in a.execute(
                    "UPDATE submissions SET claimed_by = 'a', lease_until = 1e12 WHERE id IN ("
                    " SELECT id FROM submissions ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING id"
                )
            ]
            got_b = [s.id for s in b.claim_due_submissions("b", 30, now=100.0, limit=10)]
            assert sorted(locked) == ids[:10]
            assert got_b == ids[10:20]  # at once, and none of A's
            a.commit()
        again = [s.id for s in b.claim_due_submissions("b", 30, now=100.0, limit=20)]
        assert again == ids[20:]  # A's committed claims are A's
        assert b.claim_due_submissions("b", 30, now=100.0, limit=5) == []
        assert b.claimed_by(ids[0]) == ("a", 1e12)


def test_two_claimers_at_once_claim_every_row_exactly_once(pg: str) -> None:
    ids = set(_add_submissions(pg, 400))
    barrier = threading.Barrier(2)
    got: dict[str, list[int]] = {"a": [], "b": []}

    def claimer(name: str) -> None:
        with _pool(pg, max_size=1) as pool:
            claims = PgWorkClaims(pool)
            barrier.wait()
            while batch := claims.claim_due_submissions(name, 60, now=time.time(), limit=7):
                got[name].extend(s.id for s in batch)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not set(got["a"]) & set(got["b"])
    assert sorted(got["a"] + got["b"]) == sorted(ids)
    assert got["a"] and got["b"]  # both worked: the test ran a race, not a queue
    with psycopg.connect(pg) as conn:
        owners = dict(conn.execute("SELECT id, claimed_by FROM submissions").fetchall())
    assert all(owners[i] == "a" for i in got["a"]) and all(owners[i] == "b" for i in got["b"])


def test_an_expired_lease_passes_to_another_claimer_and_its_holder_learns_it_lost_it(pg: str) -> None:
    ids = _add_submissions(pg, 3)
    _add_submissions_done = _add_submissions(pg, 1, state="success")
    with _pool(pg) as pool:
        claims = PgWorkClaims(pool)
        assert [s.id for s in claims.claim_due_submissions("a", 30, now=100.0, limit=10)] == ids
        assert claims.claim_due_submissions("b", 30, now=129.0, limit=10) == []
        assert claims.renew_submission_leases("a", ids[:1], 30, now=129.0) == {ids[0]}  # a keeps one alive
        taken = [s.id for s in claims.claim_due_submissions("b", 30, now=131.0, limit=10)]
        assert taken == ids[1:]  # the finished one is never claimed
        assert claims.renew_submission_leases("a", ids, 30, now=131.0) == {ids[0]}
        claims.release_submissions("a")
        assert [s.id for s in claims.claim_due_submissions("b", 30, now=131.0, limit=10)] == ids[:1]
        assert _add_submissions_done[0] not in taken
        assert claims.begin_create(ids[0], now=132.0) is True


def test_outputs_budget_and_named_leases(pg: str) -> None:
    (sid,) = _add_submissions(pg, 1, state="success")
    with psycopg.connect(pg) as conn:
        conn.execute(
            "INSERT INTO outputs (submission_id, idx, url, next_try_at) SELECT %s, g, 'https://x/' || g, g * 10"
            " FROM generate_series(0, 2) g",
            (sid,),
        )
    with _pool(pg) as pool:
        claims = PgWorkClaims(pool)
        assert [o.idx for o in claims.claim_due_outputs("a", 30, now=15.0, limit=5)] == [
            0,
            1,
        ]  # idx 2 not due
        assert [o.idx for o in claims.claim_due_outputs("b", 30, now=25.0, limit=5)] == [2]
        held = claims.hold_creates("keyhash", until=500.0, default_max_active=8, now=1.0)
        assert (held.hold_until, held.pace, held.max_active) == (500.0, 4.0, 8)
        later = claims.hold_creates("keyhash", until=300.0, default_max_active=8, now=2.0)
        assert (later.hold_until, later.pace) == (500.0, 2.0)  # the later hold wins, the pace halves
        assert claims.take_lease("backfill", "a", 30, now=0.0)
        assert not claims.take_lease("backfill", "b", 30, now=10.0)
        assert claims.take_lease("backfill", "b", 30, now=31.0)
