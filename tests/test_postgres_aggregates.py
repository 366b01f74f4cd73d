"""The gallery, text checks, campaigns and spend, and the prompt library on PostgreSQL: what
the repository contract (tests/contracts/test_repositories.py, run on SQLite and PostgreSQL)
cannot show. Races that only several replicas run (two connections adding one collection,
launching one click, adding one click's cells, seeding one starter), an older text check
arriving late, the prompt search and spend per day giving SQLite's answers for the same rows,
and the gallery's search going through the GIN index.

The mixins are composed here with the shared plumbing only (`_Repo`); submissions and outputs
are put in place by plain SQL (`_Seed`), so these tests depend on no other aggregate's module.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from studio.config import DatabaseSettings
from studio.models import TaskRequest
from studio.postgres.campaigns import PgCampaignRows
from studio.postgres.db import PgDatabase
from studio.postgres.gallery import PgGalleryRows
from studio.postgres.library import PgTemplateRows
from studio.postgres.pool import open_pool
from studio.postgres.submissions import CLICK_LOCK
from studio.postgres.text_checks import PgTextCheckRows
from studio.records import (
    FidelityReport,
    GalleryQuery,
    NewCampaign,
    StringCheck,
    Template,
    TextCheckState,
)
from studio.sqlite.store import Store
from tests.support import wait_for


class _Repo(PgGalleryRows, PgTextCheckRows, PgCampaignRows, PgTemplateRows, PgDatabase):
    """The four aggregates of this file over one pool."""


class _Seed:
    """Submissions and outputs written as the submissions and outputs modules would leave them."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def sql(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def submission(
        self, prompt: str, *, key: str, state: str = "success", ratio: str = "1:1", resolution: str = "1K",
        now: float = 1000.0, creative: str | None = None, error: tuple[str, str] | None = None,
    ) -> int:  # fmt: skip
        [(sid,)] = self.sql(
            "INSERT INTO submissions (creative_id, prompt, aspect_ratio, resolution, model, idempotency_key,"
            " state, task_id, created_at, error_code, error_message)"
            " VALUES (%s, %s, %s, %s, 'gpt-image-2', %s, %s, %s, %s, %s, %s) RETURNING id",
            (creative or f"c-{key}", prompt, ratio, resolution, key, state, f"task-{key}", now,
             *(error or (None, None))),
        )  # fmt: skip
        return int(sid)

    def kept(self, prompt: str, *, key: str, images: int = 1, **kw: Any) -> list[int]:
        sid = self.submission(prompt, key=key, **kw)
        return [
            int(
                self.sql(
                    "INSERT INTO outputs (submission_id, idx, url, state, sha256, width, height, bytes)"
                    " VALUES (%s, %s, %s, 'kept', %s, 1024, 1024, 1234) RETURNING id",
                    (sid, i, f"https://cdn.example/{key}{i}.png", f"{key}{i}".ljust(64, "0")),
                )[0][0]
            )
            for i in range(images)
        ]


def _pool(dsn: str, size: int = 4) -> Any:
    return open_pool(DatabaseSettings.parse(dsn, Path(".")), max_size=size)


@pytest.fixture
def repo(postgres_db: str) -> Iterator[_Repo]:
    r = _Repo(_pool(postgres_db))
    yield r
    r.close()


@pytest.fixture
def seed(postgres_db: str, repo: _Repo) -> _Seed:
    return _Seed(postgres_db)


# ---------------------------------------------------------------------- gallery


def test_two_replicas_adding_one_collection_at_once_get_one_id(postgres_db: str, repo: _Repo) -> None:
    barrier = threading.Barrier(2)
    got: list[int] = []
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            own = _Repo(_pool(postgres_db, 1))
            try:
                for i in range(20):
                    barrier.wait()
                    got.append(own.add_collection(f"Shared {i}"))
            finally:
                own.close()
        except BaseException as exc:  # a thread's error would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(got) == 40 and len(set(got)) == 20 == len(repo.collections())


# The same prompts, typed searches on both adapters: prefixes, accents, case and punctuation.
PARITY_PROMPTS = [
    "A neon café sign at night",
    "Crème brûlée on a plate, close-up!",
    'Poster: "SUMMER DROP" — 50% off',
    "l'été à Paris (watercolour)",
    "Winter boots on snow; no people",
    "Ångström-scale macro of a dew drop",
    "Straße in the rain",
    "A don't-walk sign",
    "Over-the-top birthday cake #2",
    "Zürich tram at dusk",
]
PARITY_QUERIES = [
    "neo", "NEON", "cafe", "café sign", "CREME brul", "brûlée", "close", "close-up", "up!",
    '"summer', "summer drop", "50", "ete", "l'été", "paris watercolour", "(water", "boots snow",
    "no people", "angstrom", "ÅNGSTRÖM macro", "dew-drop", "drop", "don't", "don t", "walk",
    "over the top", "top cake", "#2", "2", "zurich", "zür", "sign", "a", "rain street",
    "—", "%", "", "'", "x", "neon boots",
]  # fmt: skip


def test_prompt_search_gives_the_same_answers_as_sqlite(repo: _Repo, seed: _Seed, tmp_path: Path) -> None:
    sqlite = Store(tmp_path / "studio.db")
    try:
        for n, prompt in enumerate(PARITY_PROMPTS):
            sid = sqlite.add_submission(
                TaskRequest(prompt), idempotency_key=f"k{n}", creative_id=f"c{n}", now=n
            )
            sqlite.mark_rejected(sid, "BAD", "refused", now=n)
            seed.submission(prompt, key=f"k{n}", state="rejected", now=float(n), error=("BAD", "refused"))

        def found(r: Any, text: str) -> list[str]:
            items, total = r.gallery(GalleryQuery(text=text, status="failed"), limit=100)
            assert total == len(items)
            return [i.prompt for i in items]

        answers = {q: found(sqlite, q) for q in PARITY_QUERIES}
        assert {q: found(repo, q) for q in PARITY_QUERIES} == answers
        assert (
            sum(1 for hits in answers.values() if 0 < len(hits) < len(PARITY_PROMPTS)) >= 25
        )  # a real sieve
    finally:
        sqlite.close()


def test_prompt_search_uses_the_gin_index(repo: _Repo, seed: _Seed, postgres_db: str) -> None:
    seed.kept("A neon café sign", key="a")
    for n in range(40):  # a gallery where the words are rare, as they are in use
        seed.kept(f"A quiet lake at dawn, variant {n}", key=f"lake{n}")
    from studio.postgres.gallery import KEPT_FROM, gallery_where

    where, params = gallery_where(GalleryQuery(text="cafe neon"))
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        # Planned on the real statistics, not on guesses from an empty file's row width.
        conn.execute("ANALYZE submissions")
        conn.execute("ANALYZE outputs")
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT o.id" + KEPT_FROM + where, params))
    assert "submissions_prompt_search" in plan, plan


# ---------------------------------------------------------------------- text checks


def check_report(state: str, matched: bool) -> FidelityReport:
    checks = (
        StringCheck(
            "SUMMER DROP", "SUMMER DROP" if matched else "SUMMER DRP", 1.0 if matched else 0.9, matched
        ),
    )
    return FidelityReport(state, checks, "read", "tesseract", 0.5, passes=2)


def test_an_older_text_check_arriving_late_changes_nothing(repo: _Repo, seed: _Seed) -> None:
    # Two replicas may check one image; the slower one's older result must not replace the newer.
    # (On SQLite the last one written stays: one process checks an image at a time there.)
    [quoted] = seed.kept('Poster "SUMMER DROP"', key="q")
    assert repo.record_text_check(quoted, check_report(TextCheckState.PASS, True), now=2.0)
    assert repo.record_text_check(quoted, check_report(TextCheckState.MISMATCH, False), now=1.5)
    check = repo.text_check(quoted)
    assert check is not None and check.state == TextCheckState.PASS and check.checked_at == 2.0
    assert repo.gallery_count(GalleryQuery(text_mismatch=True)) == 0
    assert repo.record_text_check(quoted, check_report(TextCheckState.MISMATCH, False), now=3.0)
    assert repo.text_check(quoted).state == TextCheckState.MISMATCH  # type: ignore[union-attr]


# ---------------------------------------------------------------------- campaigns and spend


def new_campaign(name: str = "Launch") -> NewCampaign:
    rows = (({"product": "mug"}, "A mug"), ({"product": "cup"}, "A cup"))
    return NewCampaign(name, "A {{product}}", ("product",), ("1:1", "16:9"), "1K", rows)


def cells(token: str) -> list[tuple[int, TaskRequest, str]]:
    return [
        (row, TaskRequest(prompt, ratio, "1K"), f"{token}-{i}")
        for i, (row, prompt, ratio) in enumerate(
            [(1, "A mug", "1:1"), (1, "A mug", "16:9"), (2, "A cup", "1:1"), (2, "A cup", "16:9")]
        )
    ]


def _run_replicas(
    dsn: str, work: Any, n: int = 2
) -> tuple[list[threading.Thread], list[Any], list[BaseException]]:
    """Start `work(repo)` on `n` replicas (each its own pool) at once: the threads, and the lists
    their results (in finishing order) and errors land in."""
    barrier = threading.Barrier(n)
    results: list[Any] = []
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            own = _Repo(_pool(dsn, 1))
            try:
                barrier.wait()
                results.append(work(own))
            finally:
                own.close()
        except BaseException as exc:  # a thread's error would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results, errors


def _waiting_on_click_locks(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = %s",
            (CLICK_LOCK,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_two_replicas_launching_one_click_at_once_make_one_campaign(postgres_db: str, repo: _Repo) -> None:
    # A third connection holds the click's lock, as a replica half-way through recording it would:
    # both replicas must queue behind it, then one records the click and the other finds it.
    with psycopg.connect(postgres_db) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (CLICK_LOCK, "race-0"))
        threads, results, errors = _run_replicas(
            postgres_db,
            lambda r: r.launch_campaign_once(
                new_campaign(), cells("race"), unit_micros=40_000, currency="USD"
            ),
        )
        wait_for(lambda: _waiting_on_click_locks(postgres_db) == 2)
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(created for _, _, created in results) == [False, True]
    (cid_a, ids_a, _), (cid_b, ids_b, _) = results
    assert cid_a == cid_b and ids_a == ids_b and len(ids_a) == 4
    assert len(repo.campaigns()) == 1 and repo.campaign_submission_ids(cid_a) == ids_a
    assert repo.campaign_spend(cid_a) == (Decimal("0"), Decimal("0.16"))  # priced once


def test_two_replicas_adding_one_clicks_cells_at_once_add_them_once(postgres_db: str, repo: _Repo) -> None:
    cid, _, _ = repo.launch_campaign_once(new_campaign(), cells("t"), unit_micros=40_000, currency="USD")
    redo = [
        (2, TaskRequest("A cup, again", "1:1", "1K"), "redo-0"),
        (2, TaskRequest("A cup", "16:9", "1K"), "redo-1"),
    ]
    for _ in range(3):  # free races on top of the held-lock one
        threads, results, errors = _run_replicas(
            postgres_db, lambda r: r.add_campaign_cells_once(cid, redo, unit_micros=40_000, currency="USD")
        )
        for t in threads:
            t.join(60)
        assert errors == []
        assert [ids for ids, _ in results][0] == [ids for ids, _ in results][1]
    assert len(repo.campaign_submission_ids(cid)) == 6
    latest = {(c.row, c.aspect_ratio): c.submission_id for c in repo.campaign_cells(cid)}
    assert latest[(2, "1:1")] == results[0][0][0]


def test_spend_per_day_is_grouped_as_sqlite_groups_it(repo: _Repo, seed: _Seed, tmp_path: Path) -> None:
    sqlite = Store(tmp_path / "studio.db")
    try:
        for n, at in enumerate([1_700_000_000.0, 1_700_040_000.0, 1_700_100_000.0, 1_700_190_000.0]):
            sid = sqlite.add_submission(TaskRequest("p"), idempotency_key=f"k{n}", creative_id="c", now=at)
            sqlite.record_spend([sid], resolution="1K", unit_micros=10_000 * (n + 1), currency="USD", now=at)
            pid = seed.submission("p", key=f"k{n}", state="submitting", now=at)
            repo.record_spend([pid], resolution="1K", unit_micros=10_000 * (n + 1), currency="USD", now=at)
        assert repo.spend_lines("day") == sqlite.spend_lines("day")
        assert len(repo.spend_lines("day")) >= 3
    finally:
        sqlite.close()


# ---------------------------------------------------------------------- library


def test_two_replicas_seeding_one_starter_at_once_add_it_once(postgres_db: str, repo: _Repo) -> None:
    repo.save_template(Template("Menu", "a user's own menu"))  # the starter's name is taken: it gets a suffix
    for n in range(5):
        starter = Template(f"Starter {n}", "p", starter=f"key-{n}")
        threads, results, errors = _run_replicas(
            postgres_db, lambda r, s=starter: r.save_template(s, on_conflict="rename")
        )
        for t in threads:
            t.join(60)
        assert errors == [] and results[0] == results[1]
    menu = Template("Menu", "the starter menu", starter="menu")
    threads, results, errors = _run_replicas(
        postgres_db, lambda r: r.save_template(menu, on_conflict="rename")
    )
    for t in threads:
        t.join(60)
    assert errors == [] and results[0] == results[1] and results[0].name == "Menu (2)"
    assert len(repo.starter_templates()) == 6 and len(repo.templates()) == 7
