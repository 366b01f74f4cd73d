"""The first repositories on PostgreSQL (settings and drafts), held to the same cases as the
repository contract's settings and drafts tests, plus two replicas writing one key at once."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from studio.config import DatabaseSettings
from studio.postgres.pool import open_pool
from studio.postgres.schema import migrate
from studio.postgres.settings import PgDraftRows, PgSettingRows


@pytest.fixture
def pool(postgres_db: str):
    with psycopg.connect(postgres_db) as conn:
        migrate(conn)
    with open_pool(DatabaseSettings.parse(postgres_db, Path(".")), max_size=4) as p:
        yield p


def test_settings_round_trip(pool) -> None:
    repos = PgSettingRows(pool)
    assert repos.get_setting("pricing") is None
    repos.set_setting("pricing", '{"1K": "0.04"}')
    repos.set_setting("pricing", '{"1K": "0.05"}')
    assert repos.get_setting("pricing") == '{"1K": "0.05"}'
    repos.delete_setting("pricing")
    assert repos.get_setting("pricing") is None


def test_drafts_are_kept_as_written_and_old_ones_pruned(pool) -> None:
    repos = PgDraftRows(pool)
    repos.save_draft("old", '{"prompt": "old"}', now=10.0)
    repos.save_draft("mine", '{"prompt": "a"}', now=20.0)
    repos.save_draft("mine", '{"prompt": "b"}', now=30.0)
    assert repos.draft_body("mine") == '{"prompt": "b"}'
    assert repos.draft_body("nobody") is None
    repos.save_draft("new", "{}", now=40.0, prune_before=15.0)
    assert repos.draft_body("old") is None and repos.draft_body("mine") is not None


def test_two_replicas_saving_one_key_at_once_never_fail(postgres_db: str, pool) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def replica(name: str) -> None:
        try:
            with open_pool(DatabaseSettings.parse(postgres_db, Path(".")), max_size=1) as own:
                settings, drafts = PgSettingRows(own), PgDraftRows(own)
                barrier.wait()
                for i in range(50):
                    settings.set_setting("limit", f"{name}-{i}")
                    drafts.save_draft("tab", f'{{"by": "{name}", "i": {i}}}', now=float(i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert PgSettingRows(pool).get_setting("limit") in ("a-49", "b-49")
    assert PgDraftRows(pool).draft_body("tab") in ('{"by": "a", "i": 49}', '{"by": "b", "i": 49}')


def test_the_data_version_moves_when_another_replica_commits_and_not_on_reads(pool) -> None:
    from studio.postgres.claims import PgWorkClaims

    mine, other = PgWorkClaims(pool), PgSettingRows(pool)
    before = mine.data_version()
    other.get_setting("x")
    assert mine.data_version() == before  # reads write nothing
    other.set_setting("x", "1")
    after = mine.data_version()
    assert after != before
    mine.forget_claims()  # nobody holds a claim: nothing was written
    assert mine.data_version() == after
