"""The gallery, text checks, campaigns and spend, and the prompt library on PostgreSQL, held to
the repository contract's cases for those aggregates, plus what only several replicas can do:
two connections launching one click, two replicas seeding the starters, and the prompt search
giving SQLite's answers for the same prompts.

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
    CampaignState,
    FidelityReport,
    GalleryQuery,
    NewCampaign,
    StringCheck,
    TaskState,
    Template,
    TextCheckState,
)
from studio.repositories import (
    CampaignRepository,
    CollectionRepository,
    GalleryRepository,
    NameTaken,
    SpendRepository,
    TemplateRepository,
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

    def delete_output(self, output_id: int) -> None:
        self.sql("DELETE FROM outputs WHERE id = %s", (output_id,))

    def set_state(self, submission_id: int, state: str) -> None:
        self.sql("UPDATE submissions SET state = %s WHERE id = %s", (state, submission_id))


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


def test_the_mixins_implement_their_protocols(repo: _Repo) -> None:
    for proto in (
        GalleryRepository,
        CollectionRepository,
        CampaignRepository,
        SpendRepository,
        TemplateRepository,
    ):
        assert isinstance(repo, proto), proto.__name__


# ---------------------------------------------------------------------- gallery


def test_gallery_filters_search_counts_and_order(repo: _Repo, seed: _Seed) -> None:
    neon = seed.kept("A neon café sign at night", key="a", ratio="16:9", resolution="2K", now=100.0)
    lake = seed.kept("A quiet lake at dawn", key="b", now=200.0, images=2)
    seed.submission("A failed neon poster", key="f", state="fail", now=300.0, error=("TASK_FAILED", "x"))

    items, total = repo.gallery(GalleryQuery())
    assert total == 3 == repo.gallery_count(GalleryQuery())
    assert [i.output_id for i in items] == [lake[1], lake[0], neon[0]]  # newest first
    oldest, _ = repo.gallery(GalleryQuery(newest_first=False))
    assert [i.output_id for i in oldest] == [neon[0], lake[0], lake[1]]
    page, total = repo.gallery(GalleryQuery(), limit=2, offset=2)
    assert [i.output_id for i in page] == [neon[0]] and total == 3
    assert repo.gallery(GalleryQuery(), count=False)[1] == -1

    assert [i.output_id for i in repo.gallery(GalleryQuery(text="neo"))[0]] == neon  # a prefix
    assert [i.output_id for i in repo.gallery(GalleryQuery(text="CAFE"))[0]] == neon  # case and accents
    assert repo.gallery(GalleryQuery(text="neon lake"))[1] == 0  # every word must match
    assert repo.gallery(GalleryQuery(text='"); DROP'))[1] == 0  # typed text is never syntax
    assert repo.gallery(GalleryQuery(text="ʼzq ŉq \\ '"))[1] == 0  # nor once unaccented to quotes
    assert repo.gallery_count(GalleryQuery(ratios=("16:9",))) == 1
    assert repo.gallery_count(GalleryQuery(resolutions=("1K",))) == 2
    assert repo.gallery_count(GalleryQuery(since=150.0)) == 2
    assert repo.gallery_count(GalleryQuery(until=150.0)) == 1
    failed, n = repo.gallery(GalleryQuery(status="failed"))
    assert n == 1 and failed[0].state == TaskState.FAIL and failed[0].error == "TASK_FAILED: x"
    assert failed[0].output_id is None and not failed[0].favourite
    everything, n = repo.gallery(GalleryQuery(status="all", newest_first=False))
    assert n == 4 and everything[-1].output_id is None  # the failure has no output
    assert repo.gallery_count(GalleryQuery(status="all", text="neon")) == 2

    [item] = repo.gallery_items([neon[0]])
    assert item.prompt.startswith("A neon") and item.aspect_ratio == "16:9" and item.width == 1024
    assert item.sha256 == "a0".ljust(64, "0") and item.state == "kept"
    assert [i.output_id for i in repo.creative_items("c-b")] == lake
    assert repo.gallery_items([]) == []


def test_favourites_and_collections(repo: _Repo, seed: _Seed) -> None:
    a, b = seed.kept("one", key="a", images=2)
    repo.set_favourite(a, True)
    repo.set_favourite(a, True)  # twice is once
    assert [i.output_id for i in repo.gallery(GalleryQuery(favourites_only=True))[0]] == [a]
    assert repo.gallery_items([a])[0].favourite and not repo.gallery_items([b])[0].favourite
    repo.set_favourite(a, False)
    assert repo.gallery_count(GalleryQuery(favourites_only=True)) == 0

    cid = repo.add_collection("  Launch  ")
    assert repo.add_collection("Launch") == cid  # names are unique
    with pytest.raises(ValueError):
        repo.add_collection("   ")
    other = repo.add_collection("Autumn")
    repo.add_to_collection(cid, [a, b])
    repo.add_to_collection(cid, [a])
    assert repo.collections() == [(other, "Autumn", 0), (cid, "Launch", 2)]
    assert repo.output_collections(a) == ["Launch"]
    assert repo.gallery_count(GalleryQuery(collection_id=cid)) == 2
    seed.delete_output(b)
    assert repo.collections() == [(other, "Autumn", 0), (cid, "Launch", 1)]  # membership went with the image


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
    from studio.postgres.gallery import KEPT_FROM, gallery_where

    where, params = gallery_where(GalleryQuery(text="cafe neon"))
    with psycopg.connect(postgres_db) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT o.id" + KEPT_FROM + where, params))
    assert "submissions_prompt_search" in plan


# ---------------------------------------------------------------------- text checks


def check_report(state: str, matched: bool) -> FidelityReport:
    checks = (
        StringCheck(
            "SUMMER DROP", "SUMMER DROP" if matched else "SUMMER DRP", 1.0 if matched else 0.9, matched
        ),
    )
    return FidelityReport(state, checks, "read", "tesseract", 0.5, passes=2)


def test_text_checks_are_replaced_by_the_newest_and_go_with_their_image(repo: _Repo, seed: _Seed) -> None:
    [quoted] = seed.kept('Poster "SUMMER DROP"', key="q")
    [plain] = seed.kept("A quiet lake, don't you think", key="p")
    assert repo.outputs_needing_text_check() == [quoted]  # only prompts that quote text
    assert repo.text_check_candidate(quoted) == ('Poster "SUMMER DROP"', "q0".ljust(64, "0"))
    assert repo.record_text_check(quoted, check_report(TextCheckState.MISMATCH, False), now=1.0)
    assert [i.output_id for i in repo.gallery(GalleryQuery(text_mismatch=True))[0]] == [quoted]
    assert repo.record_text_check(quoted, check_report(TextCheckState.PASS, True), now=2.0)
    check = repo.text_check(quoted)
    assert check is not None and check.state == TextCheckState.PASS and check.checks[0].matched
    assert check.checked_at == 2.0 and check.passes == 2 and check.engine == "tesseract"
    assert repo.gallery_count(GalleryQuery(text_mismatch=True)) == 0
    assert repo.outputs_needing_text_check() == []
    assert set(repo.text_checks_for([quoted, plain])) == {quoted}

    # A slower replica's older check arriving late changes nothing.
    assert repo.record_text_check(quoted, check_report(TextCheckState.MISMATCH, False), now=1.5)
    assert repo.text_check(quoted).state == TextCheckState.PASS  # type: ignore[union-attr]

    repo.record_text_check(quoted, FidelityReport(TextCheckState.UNAVAILABLE, (), "", "none", 0.0))
    assert repo.outputs_needing_text_check() == []
    assert repo.outputs_needing_text_check(redo_unavailable=True) == [quoted]
    seed.delete_output(quoted)
    assert repo.text_check(quoted) is None
    assert repo.record_text_check(quoted, check_report(TextCheckState.PASS, True)) is False  # dropped
    assert repo.text_check_candidate(quoted) is None


def test_the_text_check_backlog_stops_at_its_limit(repo: _Repo, seed: _Seed) -> None:
    ids = [seed.kept(f'Sign "OPEN {n}"', key=f"s{n}")[0] for n in range(5)]
    seed.kept("no quotes here", key="plain")
    assert repo.outputs_needing_text_check(limit=3) == ids[:3]
    assert repo.outputs_needing_text_check() == ids


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


def test_a_campaign_launches_once_per_click(repo: _Repo) -> None:
    cid, ids, created = repo.launch_campaign_once(
        new_campaign(), cells("t"), unit_micros=40_000, currency="USD"
    )
    again = repo.launch_campaign_once(new_campaign("Other"), cells("t"), unit_micros=40_000, currency="USD")
    assert created and again == (cid, ids, False)
    assert len(repo.campaigns()) == 1 and len(ids) == 4
    camp = repo.campaign(cid)
    assert camp is not None and camp.name == "Launch" and camp.ratios == ("1:1", "16:9")
    assert camp.state == CampaignState.RUNNING and camp.progress.total == 4 and camp.progress.held == 4
    assert [(r.idx, r.values, r.prompt) for r in repo.campaign_rows(cid)] == [
        (1, {"product": "mug"}, "A mug"),
        (2, {"product": "cup"}, "A cup"),
    ]
    assert repo.campaign_submission_ids(cid) == ids
    assert [(c.row, c.aspect_ratio) for c in repo.campaign_cells(cid)] == [
        (1, "1:1"),
        (1, "16:9"),
        (2, "1:1"),
        (2, "16:9"),
    ]
    assert repo.campaign_gates(ids[:1]) == {ids[0]: (0, cid, CampaignState.RUNNING)}
    assert repo.campaign_gates([]) == {}
    assert repo.campaign_spend(cid) == (Decimal("0"), Decimal("0.16"))
    with pytest.raises(ValueError):
        repo.launch_campaign_once(new_campaign(), [], unit_micros=1, currency="USD")


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


def test_cancel_stops_only_creates_never_tried_and_resubmitting_adds_a_newer_cell(
    repo: _Repo, seed: _Seed
) -> None:
    cid, ids, _ = repo.launch_campaign_once(new_campaign(), cells("t"), unit_micros=40_000, currency="USD")
    seed.sql(
        "UPDATE submissions SET task_id = 'sent-0', attempts = 1, state = 'queued' WHERE id = %s", (ids[0],)
    )
    seed.sql("UPDATE submissions SET sent_at = 5 WHERE id = %s", (ids[1],))  # a replica has begun its POST
    cancelled = repo.cancel_campaign(cid, message="Cancelled before it was sent.", keep=[ids[3]])
    assert cancelled == [ids[2]]
    cell = {c.submission_id: c for c in repo.campaign_cells(cid)}
    assert cell[ids[2]].cancelled and not cell[ids[2]].failed
    assert cell[ids[2]].error_message == "Cancelled before it was sent."
    assert not cell[ids[0]].cancelled and not cell[ids[1]].cancelled and not cell[ids[3]].cancelled
    assert seed.sql(
        "SELECT status, source FROM task_events WHERE submission_id = %s ORDER BY id", (ids[2],)
    ) == [
        ("submitting", "studio"),
        ("rejected", "cancel"),
    ]
    camp = repo.campaign(cid)
    assert camp is not None and camp.state == CampaignState.CANCELLED and camp.progress.cancelled == 1
    assert repo.campaign_gates([ids[1]]) == {
        ids[1]: (1, cid, CampaignState.CANCELLED)
    }  # begun counts as tried

    redo = [(2, TaskRequest("A cup, again", "1:1", "1K"), "redo-0")]
    new_ids, created = repo.add_campaign_cells_once(cid, redo, unit_micros=40_000, currency="USD")
    assert created and repo.add_campaign_cells_once(cid, redo, unit_micros=40_000, currency="USD") == (
        new_ids,
        False,
    )
    latest = {(c.row, c.aspect_ratio): c.submission_id for c in repo.campaign_cells(cid)}
    assert latest[(2, "1:1")] == new_ids[0]  # the newest submission of a cell is the one shown
    assert repo.campaign(cid).state == CampaignState.RUNNING  # type: ignore[union-attr]
    repo.update_campaign_row(cid, 2, {"product": "cup"}, "A cup, again")
    assert repo.campaign_rows(cid)[1].prompt == "A cup, again"
    repo.set_campaign_state(cid, CampaignState.PAUSED)
    assert repo.campaign(cid).state == CampaignState.PAUSED  # type: ignore[union-attr]
    assert [c.id for c in repo.campaigns()] == [cid]


def test_spend_counts_successes_outlives_deleted_images_and_groups(repo: _Repo, seed: _Seed) -> None:
    cid, ids, _ = repo.launch_campaign_once(
        new_campaign(), cells("t"), unit_micros=40_000, currency="USD", now=50.0
    )
    for sid in ids[:2]:
        seed.set_state(sid, "success")
    seed.set_state(ids[2], "fail")
    [single] = seed.kept("a single prompt", key="s", now=60.0)
    sub_id = repo.gallery_items([single])[0].submission_id
    repo.record_spend([sub_id], resolution="1K", unit_micros=90_000, currency="USD", now=60.0)
    repo.record_spend([sub_id], resolution="1K", unit_micros=1, currency="USD")  # priced once
    [total] = repo.spend_lines("all")
    assert (total.key, total.spent, total.images, total.pending, total.pending_images) == (
        "all", Decimal("0.17"), 3, Decimal("0.04"), 1,
    )  # fmt: skip
    seed.sql("DELETE FROM submissions WHERE id = %s", (sub_id,))
    assert repo.spend_lines("all")[0].spent == Decimal("0.17")  # deleting an image does not un-spend it
    by_campaign = {line.key: line.spent for line in repo.spend_lines("campaign")}
    assert by_campaign == {f"Launch (#{cid})": Decimal("0.08"), "Single prompts": Decimal("0.09")}
    assert [line.key for line in repo.spend_lines("campaign")] == ["Single prompts", f"Launch (#{cid})"]
    assert [(line.key, line.spent) for line in repo.spend_lines("day")] == [("1970-01-01", Decimal("0.17"))]
    assert repo.campaign_spend(cid) == (Decimal("0.08"), Decimal("0.12"))  # planned leaves the failure out


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


def test_templates_save_update_and_clash_by_name_ignoring_case(repo: _Repo) -> None:
    t = repo.save_template(
        Template("Poster", "A {{thing}} poster", ("2:3",), "2K", "note", ({"thing": "cat"},))
    )
    assert t.id is not None and t.rows == ({"thing": "cat"},) and t.ratios == ("2:3",)
    assert repo.template(t.id) == t and repo.template_by_name("POSTER") == t
    with pytest.raises(NameTaken):
        repo.save_template(Template("poster", "other"))
    renamed = repo.save_template(Template("poster", "other"), on_conflict="rename")
    assert renamed.name == "poster (2)" and renamed.id != t.id
    assert repo.save_template(Template("Poster", "x"), on_conflict="rename").name == "Poster (3)"
    assert repo.save_template(Template("POSTER", "skipped"), on_conflict="skip") == t
    updated = repo.save_template(Template("Poster v2", "A new prompt", id=t.id))
    assert updated.id == t.id and repo.template(t.id).prompt == "A new prompt"  # type: ignore[union-attr]
    replaced = repo.save_template(Template("poster (2)", "replacing"), on_conflict="replace")
    assert repo.template(renamed.id or 0) is None and replaced.prompt == "replacing"
    assert [x.name for x in repo.templates("new")] == ["Poster v2"]
    assert [x.name for x in repo.templates("NEW prompt")] == ["Poster v2"]  # every word, any case
    assert repo.templates("100%") == [] and repo.templates("_") == []  # typed text is never a wildcard
    assert repo.delete_template(t.id) and not repo.delete_template(t.id)


def test_starters_are_found_by_key_and_listed_first(repo: _Repo) -> None:
    repo.save_template(Template("a user template", "p"))
    repo.save_template(Template("B user template", "p"))
    repo.save_template(Template("Zebra starter", "p", starter="menu"))
    assert repo.has_starter("menu") and not repo.has_starter("poster")
    assert [t.name for t in repo.starter_templates()] == ["Zebra starter"]
    assert [t.name for t in repo.templates()] == ["Zebra starter", "a user template", "B user template"]


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
