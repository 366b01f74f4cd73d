"""The repository contract (studio/repositories.py), run unchanged against every database adapter.

Written against the Protocols only: no SQL, no driver, no adapter internals.
`repos` is parametrised over every adapter; an adapter joins by adding a factory to
REPO_FACTORIES. A factory gets the test's request (to reach engine fixtures such as
`postgres_db`, a fresh database on the session's PostgreSQL cluster) and a fresh folder,
and returns an empty database behind every Protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from studio.config import DatabaseSettings
from studio.models import Task, TaskRequest
from studio.records import (
    LOCAL_AUTHOR,
    CampaignState,
    Deletion,
    FidelityReport,
    GalleryQuery,
    NewCampaign,
    OutputState,
    SpendRate,
    StringCheck,
    TaskState,
    Template,
    TextCheckState,
)
from studio.repositories import (
    CampaignRepository,
    CollectionRepository,
    DraftRepository,
    GalleryRepository,
    NameTaken,
    OutputRepository,
    Repositories,
    SettingsRepository,
    SpendRepository,
    SubmissionRepository,
    TemplateRepository,
    TextCheckRepository,
    TrashRepository,
    WorkClaimRepository,
)
from studio.sqlite.store import Store


def _postgresql(request: pytest.FixtureRequest, tmp: Path) -> Repositories:
    """A store on a fresh database of the session's PostgreSQL cluster (dropped after the test)."""
    from studio.postgres.store import PgStore

    dsn = request.getfixturevalue("postgres_db")
    return PgStore.open(DatabaseSettings.parse(dsn, tmp), max_size=8)


REPO_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], Repositories]] = {
    "sqlite": lambda request, tmp: Store(tmp / "studio.db"),
    "postgresql": _postgresql,
}


@pytest.fixture(params=sorted(REPO_FACTORIES))
def repos(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repositories]:
    r = REPO_FACTORIES[request.param](request, tmp_path)
    yield r
    r.close()


def report(task_id: str, status: str, **extra: object) -> Task:
    task = Task.parse({"taskId": task_id, "status": status, "created": 100, "completed": 160} | extra)
    assert task is not None
    return task


def image(n: int) -> dict[str, object]:
    return {"url": f"https://cdn.example/{n}.png", "type": "image", "expireAt": 4_000_000_000}


def kept(
    repos: Repositories,
    prompt: str,
    *,
    key: str,
    ratio: str = "1:1",
    resolution: str = "1K",
    images: int = 1,
    now: float = 1000.0,
) -> list[int]:
    """One click made, created, succeeded and downloaded: its output ids."""
    [sid], created = repos.add_click(
        [(TaskRequest(prompt, ratio, resolution), key)], creative_id=f"c-{key}", now=now
    )
    assert created
    assert repos.mark_created(sid, f"task-{key}", now=now + 1)
    assert repos.record_task(
        report(f"task-{key}", "success", output=[image(i) for i in range(images)]), now=now + 2
    )
    out = repos.outputs_for([sid])[sid]
    for o in out:
        repos.output_kept(
            o.id, sha256=f"{key}{o.idx}".ljust(64, "0"), width=1024, height=1024, nbytes=1234, now=now + 3,
        )  # fmt: skip
    return [o.id for o in out]


def test_the_adapter_implements_every_protocol(repos: Repositories) -> None:
    for proto in (
        SubmissionRepository,
        OutputRepository,
        TrashRepository,
        WorkClaimRepository,
        GalleryRepository,
        CollectionRepository,
        TextCheckRepository,
        SettingsRepository,
        DraftRepository,
        CampaignRepository,
        SpendRepository,
        TemplateRepository,
        Repositories,
    ):
        assert isinstance(repos, proto), proto.__name__


# ---------------------------------------------------------------------- submissions


def test_a_click_recorded_twice_is_one_set_of_submissions(repos: Repositories) -> None:
    keyed = [(TaskRequest("a lighthouse", r, "2K"), f"tok-{i}") for i, r in enumerate(("1:1", "16:9"))]
    rate = SpendRate("2K", 90_000, "USD")
    first, created = repos.add_click(keyed, creative_id="c1", spend=rate, now=10.0)
    again, created_again = repos.add_click(keyed, creative_id="c2", spend=rate, now=11.0)
    assert created and not created_again
    assert again == first and len(first) == 2
    assert [s.id for s in repos.unfinished()] == first  # no second row set
    assert {s.creative_id for s in repos.recent()} == {"c1"}
    [line] = repos.spend_lines("all")
    assert line.pending == Decimal("0.18") and line.pending_images == 2  # priced once


def test_racing_recordings_of_one_click_make_one_creative(repos: Repositories) -> None:
    keyed = [(TaskRequest("a kite", "1:1", "1K"), "race-0")]
    results: list[tuple[list[int], bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(repos.add_click(keyed, creative_id="c")))
        for _ in range(6)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(results) == 6  # every recording answered (none raised)
    assert sum(created for _, created in results) == 1
    assert len({tuple(ids) for ids, _ in results}) == 1
    assert len(repos.unfinished()) == 1


def test_a_submission_is_recorded_before_it_is_sent_and_resumed_until_terminal(repos: Repositories) -> None:
    sid = repos.add_submission(
        TaskRequest("a fox", "3:4", "1K"), idempotency_key="k", creative_id="c", now=5.0
    )
    sub = repos.submission(sid)
    assert sub is not None and sub.state == TaskState.SUBMITTING and sub.task_id is None
    assert sub.idempotency_key == "k" and sub.request.aspect_ratio == "3:4"
    assert repos.mark_created(sid, "t-1", now=6.0) is True
    assert repos.mark_created(sid, "t-2", now=7.0) is False  # the first id stays
    assert repos.submission_by_task("t-1") == repos.submission(sid)
    assert repos.record_task(report("t-1", "handling"), now=8.0) is True
    assert repos.record_task(report("t-1", "queued"), now=9.0) is False  # stale: never moves back
    assert [s.id for s in repos.unfinished()] == [sid]
    assert repos.record_task(report("t-1", "fail", error={"code": "X", "message": "no"}), now=10.0) is True
    assert repos.record_task(report("t-1", "success", output=[image(1)]), now=11.0) is False  # sticky
    sub = repos.submission(sid)
    assert sub is not None and sub.state == TaskState.FAIL and sub.error_code == "X"
    assert repos.unfinished() == []
    assert [e[0] for e in repos.events(sid)] == ["submitting", "queued", "handling", "fail"]
    assert repos.counts() == {"fail": 1}


def test_a_refused_create_is_final_and_a_retryable_one_stays_submitting(repos: Repositories) -> None:
    a = repos.add_submission(TaskRequest("a"), idempotency_key="a", creative_id="c")
    b = repos.add_submission(TaskRequest("b"), idempotency_key="b", creative_id="c")
    repos.note_attempt(a, "HTTP_503", "busy")
    repos.mark_rejected(b, "INVALID", "bad prompt")
    sa, sb = repos.submission(a), repos.submission(b)
    assert (
        sa is not None
        and sa.state == TaskState.SUBMITTING
        and sa.attempts == 1
        and sa.error_code == "HTTP_503"
    )
    assert sb is not None and sb.state == TaskState.REJECTED and sb.error_message == "bad prompt"
    assert [s.id for s in repos.unfinished()] == [a]


def test_a_callback_that_outruns_the_create_answer_is_held_then_applied(repos: Repositories) -> None:
    assert repos.record_callback(report("early", "success", output=[image(1)])) == "unknown"  # nothing waits
    sid = repos.add_submission(TaskRequest("a bridge"), idempotency_key="k", creative_id="c")
    done = report("early", "success", output=[image(1), image(2)])
    assert repos.record_callback(done, now=50.0) == "held"
    assert repos.record_callback(done, now=51.0) == "duplicate"
    assert repos.held_callbacks() == 1
    assert repos.mark_created(sid, "early", now=52.0)
    sub = repos.submission(sid)
    assert sub is not None and sub.state == TaskState.SUCCESS  # applied with the create answer
    assert repos.held_callbacks() == 0
    assert len(repos.outputs_for([sid])[sid]) == 2
    assert repos.record_callback(done, now=53.0) == "duplicate"  # known now, and already terminal


def test_durations_learn_from_recent_successes_at_a_resolution(repos: Repositories) -> None:
    for i, took in enumerate((30, 40)):
        sid = repos.add_submission(
            TaskRequest(f"p{i}", "1:1", "2K"), idempotency_key=f"k{i}", creative_id="c"
        )
        repos.mark_created(sid, f"t{i}")
        repos.record_task(report(f"t{i}", "success", created=100, completed=100 + took, output=[image(i)]))
    assert sorted(repos.durations("2K")) == [30.5, 40.5]
    assert repos.durations("4K") == []


# ---------------------------------------------------------------------- outputs


def test_outputs_are_pending_then_kept_failed_or_due_again(repos: Repositories) -> None:
    sid = repos.add_submission(TaskRequest("p"), idempotency_key="k", creative_id="c")
    repos.mark_created(sid, "t")
    repos.record_task(report("t", "success", output=[image(0), image(1), image(2)]))
    a, b, c = repos.outputs_for([sid])[sid]
    assert [o.state for o in (a, b, c)] == [OutputState.PENDING] * 3 and a.url.endswith("/0.png")
    assert [o.id for o in repos.pending_outputs(now=0.0)] == [a.id, b.id, c.id]
    repos.output_kept(a.id, sha256="f" * 64, width=8, height=6, nbytes=99, now=1.0)
    repos.output_failed(b.id, "HTTP 500", retry_at=100.0)
    repos.output_failed(c.id, "gone for good", retry_at=None)
    ka, kb, kc = (repos.output(o.id) for o in (a, b, c))
    assert ka is not None and ka.state == OutputState.KEPT and ka.sha256 == "f" * 64 and ka.bytes == 99
    assert kb is not None and kb.state == OutputState.PENDING and kb.error == "HTTP 500" and kb.attempts == 1
    assert kc is not None and kc.state == OutputState.FAILED and kc.error == "gone for good"
    assert repos.pending_outputs(now=99.0) == []  # not due yet
    assert [o.id for o in repos.pending_outputs(now=100.0)] == [b.id]
    assert repos.next_output_due() == 100.0


# ---------------------------------------------------------------------- gallery


def test_gallery_filters_search_counts_and_order(repos: Repositories) -> None:
    neon = kept(repos, "A neon café sign at night", key="a", ratio="16:9", resolution="2K", now=100.0)
    lake = kept(repos, "A quiet lake at dawn", key="b", ratio="1:1", now=200.0, images=2)
    sid = repos.add_submission(TaskRequest("A failed neon poster"), idempotency_key="f", creative_id="f")
    repos.mark_created(sid, "tf")
    repos.record_task(report("tf", "fail", error={"code": "TASK_FAILED", "message": "x"}))

    items, total = repos.gallery(GalleryQuery())
    assert total == 3 == repos.gallery_count(GalleryQuery())
    assert [i.output_id for i in items] == [lake[1], lake[0], neon[0]]  # newest first
    oldest, _ = repos.gallery(GalleryQuery(newest_first=False))
    assert [i.output_id for i in oldest] == [neon[0], lake[0], lake[1]]
    page, total = repos.gallery(GalleryQuery(), limit=2, offset=2)
    assert [i.output_id for i in page] == [neon[0]] and total == 3
    assert repos.gallery(GalleryQuery(), count=False)[1] == -1

    assert [i.output_id for i in repos.gallery(GalleryQuery(text="neo"))[0]] == neon  # a prefix
    assert [i.output_id for i in repos.gallery(GalleryQuery(text="CAFE"))[0]] == neon  # case and accents
    assert repos.gallery(GalleryQuery(text="neon lake"))[1] == 0  # every word must match
    assert repos.gallery(GalleryQuery(text='"); DROP'))[1] == 0  # typed text is never syntax
    assert repos.gallery(GalleryQuery(text="ʼzq ŉq \\ '"))[1] == 0  # nor once unaccented to quotes
    assert repos.gallery_count(GalleryQuery(ratios=("16:9",))) == 1
    assert repos.gallery_count(GalleryQuery(resolutions=("1K",))) == 2
    assert repos.gallery_count(GalleryQuery(since=150.0)) == 2
    assert repos.gallery_count(GalleryQuery(until=150.0)) == 1
    failed, n = repos.gallery(GalleryQuery(status="failed"))
    assert n == 1 and failed[0].state == TaskState.FAIL and failed[0].error == "TASK_FAILED: x"
    assert failed[0].output_id is None and not failed[0].favourite
    everything, n = repos.gallery(GalleryQuery(status="all", newest_first=False))
    assert n == 4 and everything[-1].output_id is None  # the failure has no output
    assert repos.gallery_count(GalleryQuery(status="all", text="neon")) == 2

    [item] = repos.gallery_items([neon[0]])
    assert item.prompt.startswith("A neon") and item.aspect_ratio == "16:9" and item.width == 1024
    assert item.sha256 == "a0".ljust(64, "0") and item.state == "kept"
    assert [i.output_id for i in repos.creative_items("c-b")] == lake
    assert repos.gallery_items([]) == []


def test_favourites_and_collections(repos: Repositories) -> None:
    a, b = kept(repos, "one", key="a", images=2)
    repos.set_favourite(a, True)
    repos.set_favourite(a, True)  # twice is once
    assert [i.output_id for i in repos.gallery(GalleryQuery(favourites_only=True))[0]] == [a]
    assert repos.gallery_items([a])[0].favourite and not repos.gallery_items([b])[0].favourite
    repos.set_favourite(a, False)
    assert repos.gallery_count(GalleryQuery(favourites_only=True)) == 0

    cid = repos.add_collection("  Launch  ")
    assert repos.add_collection("Launch") == cid  # names are unique
    with pytest.raises(ValueError):
        repos.add_collection("   ")
    other = repos.add_collection("Autumn")
    repos.add_to_collection(cid, [a, b])
    repos.add_to_collection(cid, [a])
    assert repos.collections() == [(other, "Autumn", 0), (cid, "Launch", 2)]  # by name, empty ones too
    assert repos.output_collections(a) == ["Launch"]
    assert repos.gallery_count(GalleryQuery(collection_id=cid)) == 2
    repos.delete_outputs([b])
    assert repos.collections() == [(other, "Autumn", 0), (cid, "Launch", 1)]  # membership went with the image


# ---------------------------------------------------------------------- trash


def test_trash_hides_under_one_deletion_and_undo_inside_the_window_restores_it_whole(
    repos: Repositories,
) -> None:
    a, b = kept(repos, "one", key="a", images=2)
    [c] = kept(repos, "two", key="c")
    repos.set_favourite(a, True)
    assert repos.trash_outputs([a, b, 999], token="t1", purge_after=120.0, now=100.0) == [a, b]
    assert repos.trash_outputs([a], token="t2", purge_after=130.0, now=110.0) == []  # already trashed
    assert repos.deletion("t2") is None  # nothing hidden, nothing recorded
    assert repos.deletion("t1") == Deletion("t1", (a, b), 120.0)
    assert repos.trashed_outputs() == [a, b]
    assert repos.gallery_count(GalleryQuery()) == 1
    assert repos.purge_due(119.9) == []  # not due yet
    assert repos.restore_deletion("t1", 119.9) == 2
    assert repos.gallery_items([a])[0].favourite  # restored untouched
    assert repos.deletion("t1") is None and repos.trashed_outputs() == []
    assert repos.restore_deletion("t1", 100.0) == 0  # undone once
    assert repos.restore_deletion("nobody", 100.0) == 0
    gone = repos.delete_outputs([a, c])
    assert sorted(gone) == sorted(["a0".ljust(64, "0"), "c0".ljust(64, "0")])
    assert repos.output(b) is not None


def test_a_deletion_past_its_window_cannot_be_undone_and_the_sweep_purges_only_what_is_due(
    repos: Repositories,
) -> None:
    a, b = kept(repos, "one", key="a", images=2)
    [c] = kept(repos, "two", key="c")
    assert repos.trash_outputs([a, b], token="early", purge_after=120.0, now=100.0) == [a, b]
    assert repos.trash_outputs([c], token="late", purge_after=150.0, now=130.0) == [c]
    assert repos.restore_deletion("early", 120.0) == 0  # the window ends at purge_after
    assert repos.deletion("early") == Deletion("early", (a, b), 120.0)  # still there until swept
    assert sorted(repos.purge_due(120.0)) == sorted(["a0".ljust(64, "0"), "a1".ljust(64, "0")])
    assert repos.output(a) is None and repos.output(b) is None and repos.deletion("early") is None
    assert repos.purge_due(120.0) == []  # purged once
    assert repos.deletion("late") == Deletion("late", (c,), 150.0)  # another deletion's window runs on
    assert repos.restore_deletion("early", 100.0) == 0  # purged: nothing to restore, whatever the clock
    assert repos.restore_deletion("late", 149.0) == 1
    assert repos.purge_due(1e12) == [] and repos.output(c) is not None
    assert repos.recent() and [s.prompt for s in repos.recent()] == ["two"]  # "one" went with its outputs


def test_a_purged_output_frees_its_file_only_when_no_other_output_uses_it(repos: Repositories) -> None:
    [a] = kept(repos, "one", key="a")
    [b] = kept(repos, "two", key="b")
    repos.output_kept(b, sha256="a0".ljust(64, "0"), width=1, height=1, nbytes=1)
    repos.trash_outputs([a], token="t1", purge_after=10.0, now=0.0)
    assert repos.purge_due(10.0) == []  # b still uses the file
    repos.trash_outputs([b], token="t2", purge_after=20.0, now=0.0)
    assert repos.purge_due(20.0) == ["a0".ljust(64, "0")]


def test_a_file_shared_by_two_outputs_is_kept_until_the_last_goes(repos: Repositories) -> None:
    [a] = kept(repos, "one", key="a")
    [b] = kept(repos, "two", key="b")
    repos.output_kept(b, sha256="a0".ljust(64, "0"), width=1, height=1, nbytes=1)
    assert repos.delete_outputs([a]) == []
    assert repos.delete_outputs([b]) == ["a0".ljust(64, "0")]


# ---------------------------------------------------------------------- text checks


def check_report(state: str, matched: bool) -> FidelityReport:
    checks = (
        StringCheck(
            "SUMMER DROP", "SUMMER DROP" if matched else "SUMMER DRP", 1.0 if matched else 0.9, matched
        ),
    )
    return FidelityReport(state, checks, "read", "tesseract", 0.5, passes=2)


def test_text_checks_are_replaced_by_the_newest_and_go_with_their_image(repos: Repositories) -> None:
    [quoted] = kept(repos, 'Poster "SUMMER DROP"', key="q")
    [plain] = kept(repos, "A quiet lake, don't you think", key="p")
    assert repos.outputs_needing_text_check() == [quoted]  # only prompts that quote text
    assert repos.text_check_candidate(quoted) == ('Poster "SUMMER DROP"', "q0".ljust(64, "0"))
    assert repos.record_text_check(quoted, check_report(TextCheckState.MISMATCH, False), now=1.0)
    assert [i.output_id for i in repos.gallery(GalleryQuery(text_mismatch=True))[0]] == [quoted]
    assert repos.record_text_check(quoted, check_report(TextCheckState.PASS, True), now=2.0)
    check = repos.text_check(quoted)
    assert check is not None and check.state == TextCheckState.PASS and check.checks[0].matched
    assert check.checked_at == 2.0 and check.passes == 2 and check.engine == "tesseract"
    assert repos.gallery_count(GalleryQuery(text_mismatch=True)) == 0
    assert repos.outputs_needing_text_check() == []
    assert set(repos.text_checks_for([quoted, plain])) == {quoted}

    repos.record_text_check(quoted, FidelityReport(TextCheckState.UNAVAILABLE, (), "", "none", 0.0))
    assert repos.outputs_needing_text_check() == []
    assert repos.outputs_needing_text_check(redo_unavailable=True) == [quoted]
    repos.delete_outputs([quoted])
    assert repos.text_check(quoted) is None
    assert repos.record_text_check(quoted, check_report(TextCheckState.PASS, True)) is False  # dropped
    assert repos.text_check_candidate(quoted) is None


def test_the_text_check_backlog_stops_at_its_limit(repos: Repositories) -> None:
    ids = [kept(repos, f'Sign "OPEN {n}"', key=f"s{n}")[0] for n in range(5)]
    kept(repos, "no quotes here", key="plain")
    assert repos.outputs_needing_text_check(limit=3) == ids[:3]
    assert repos.outputs_needing_text_check() == ids


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


def test_a_campaign_launches_once_per_click(repos: Repositories) -> None:
    cid, ids, created = repos.launch_campaign_once(
        new_campaign(), cells("t"), unit_micros=40_000, currency="USD"
    )
    again = repos.launch_campaign_once(new_campaign("Other"), cells("t"), unit_micros=40_000, currency="USD")
    assert created and again == (cid, ids, False)
    assert len(repos.campaigns()) == 1 and len(ids) == 4
    camp = repos.campaign(cid)
    assert camp is not None and camp.name == "Launch" and camp.ratios == ("1:1", "16:9")
    assert camp.state == CampaignState.RUNNING and camp.progress.total == 4 and camp.progress.held == 4
    assert [(r.idx, r.values, r.prompt) for r in repos.campaign_rows(cid)] == [
        (1, {"product": "mug"}, "A mug"),
        (2, {"product": "cup"}, "A cup"),
    ]
    assert repos.campaign_submission_ids(cid) == ids
    assert [(c.row, c.aspect_ratio) for c in repos.campaign_cells(cid)] == [
        (1, "1:1"),
        (1, "16:9"),
        (2, "1:1"),
        (2, "16:9"),
    ]
    assert repos.campaign_gates(ids[:1]) == {ids[0]: (0, cid, CampaignState.RUNNING)}
    assert repos.campaign_gates([]) == {}
    assert repos.campaign_spend(cid) == (Decimal("0"), Decimal("0.16"))
    with pytest.raises(ValueError):
        repos.launch_campaign_once(new_campaign(), [], unit_micros=1, currency="USD")


def test_cancel_stops_only_creates_never_tried_and_resubmitting_adds_a_newer_cell(
    repos: Repositories,
) -> None:
    cid, ids, _ = repos.launch_campaign_once(new_campaign(), cells("t"), unit_micros=40_000, currency="USD")
    repos.mark_created(ids[0], "sent-0")  # tried: may exist at HiAPI
    assert repos.begin_create(ids[1], now=5.0)  # a worker has begun its POST: tried too
    cancelled = repos.cancel_campaign(cid, message="Cancelled before it was sent.", keep=[ids[3]])
    assert cancelled == [ids[2]]
    cell = {c.submission_id: c for c in repos.campaign_cells(cid)}
    assert cell[ids[2]].cancelled and not cell[ids[2]].failed
    assert cell[ids[2]].error_message == "Cancelled before it was sent."
    assert not cell[ids[0]].cancelled and not cell[ids[1]].cancelled and not cell[ids[3]].cancelled
    assert [(status, source) for status, _, source in repos.events(ids[2])] == [
        ("submitting", "studio"),
        ("rejected", "cancel"),
    ]
    camp = repos.campaign(cid)
    assert camp is not None and camp.state == CampaignState.CANCELLED and camp.progress.cancelled == 1
    assert repos.campaign_gates([ids[1]]) == {
        ids[1]: (1, cid, CampaignState.CANCELLED)
    }  # begun counts as tried

    redo = [(2, TaskRequest("A cup, again", "1:1", "1K"), "redo-0")]
    new_ids, created = repos.add_campaign_cells_once(cid, redo, unit_micros=40_000, currency="USD")
    assert created and repos.add_campaign_cells_once(cid, redo, unit_micros=40_000, currency="USD") == (
        new_ids,
        False,
    )
    latest = {(c.row, c.aspect_ratio): c.submission_id for c in repos.campaign_cells(cid)}
    assert latest[(2, "1:1")] == new_ids[0]  # the newest submission of a cell is the one shown
    assert repos.campaign(cid).state == CampaignState.RUNNING  # type: ignore[union-attr]
    repos.update_campaign_row(cid, 2, {"product": "cup"}, "A cup, again")
    assert repos.campaign_rows(cid)[1].prompt == "A cup, again"
    repos.set_campaign_state(cid, CampaignState.PAUSED)
    assert repos.campaign(cid).state == CampaignState.PAUSED  # type: ignore[union-attr]
    assert [c.id for c in repos.campaigns()] == [cid]


def test_spend_counts_successes_outlives_deleted_images_and_groups(repos: Repositories) -> None:
    cid, ids, _ = repos.launch_campaign_once(
        new_campaign(), cells("t"), unit_micros=40_000, currency="USD", now=50.0
    )
    for n, sid in enumerate(ids[:2]):
        repos.mark_created(sid, f"c{n}")
        repos.record_task(report(f"c{n}", "success", output=[image(n)]))
    repos.mark_created(ids[2], "c2")
    repos.record_task(report("c2", "fail", error={"code": "X", "message": "x"}))
    [single] = kept(repos, "a single prompt", key="s", now=60.0)
    sub_id = repos.gallery_items([single])[0].submission_id
    repos.record_spend([sub_id], resolution="1K", unit_micros=90_000, currency="USD", now=60.0)
    repos.record_spend([sub_id], resolution="1K", unit_micros=1, currency="USD")  # priced once
    [total] = repos.spend_lines("all")
    assert (total.key, total.spent, total.images, total.pending, total.pending_images) == (
        "all", Decimal("0.17"), 3, Decimal("0.04"), 1,
    )  # fmt: skip
    repos.delete_outputs([single])
    assert repos.spend_lines("all")[0].spent == Decimal("0.17")  # deleting an image does not un-spend it
    by_campaign = {line.key: line.spent for line in repos.spend_lines("campaign")}
    assert by_campaign == {f"Launch (#{cid})": Decimal("0.08"), "Single prompts": Decimal("0.09")}
    assert [line.key for line in repos.spend_lines("campaign")] == ["Single prompts", f"Launch (#{cid})"]
    assert [(line.key, line.spent) for line in repos.spend_lines("day")] == [("1970-01-01", Decimal("0.17"))]
    assert repos.campaign_spend(cid) == (Decimal("0.08"), Decimal("0.12"))  # planned leaves the failure out


# ---------------------------------------------------------------------- who made what


def test_without_an_author_everything_is_local(repos: Repositories) -> None:
    [out] = kept(repos, "a lighthouse", key="a")
    sid = repos.gallery_items([out])[0].submission_id
    repos.record_spend([sid], resolution="1K", unit_micros=90_000, currency="USD")
    cid, ids, _ = repos.launch_campaign_once(new_campaign(), cells("t"), unit_micros=40_000, currency="USD")
    coll = repos.add_collection("Launch")
    sub = repos.submission(sid)
    camp = repos.campaign(cid)
    assert sub is not None and sub.author == LOCAL_AUTHOR == "local"
    assert camp is not None and camp.author == LOCAL_AUTHOR
    assert {s.author for s in repos.unfinished()} == {LOCAL_AUTHOR} and len(ids) == 4
    assert repos.collection_author(coll) == LOCAL_AUTHOR
    assert repos.gallery_items([out])[0].author == LOCAL_AUTHOR
    assert [line.key for line in repos.spend_lines("author")] == [LOCAL_AUTHOR]
    assert repos.authors() == [LOCAL_AUTHOR]


def test_every_row_records_its_author_and_the_gallery_filters_by_person(repos: Repositories) -> None:
    ana, bo = "ana@example.com", "bo@example.com"
    rate = SpendRate("1K", 40_000, "USD")
    [a_sid], _ = repos.add_click(
        [(TaskRequest("ana's mug", "1:1", "1K"), "ana-0")], creative_id="ca", spend=rate, author=ana
    )
    [b_sid], _ = repos.add_click(
        [(TaskRequest("bo's cup", "1:1", "1K"), "bo-0")], creative_id="cb", spend=rate, author=bo
    )
    # A recording repeated by someone else stays the first author's (one click, one creative).
    assert repos.add_click([(TaskRequest("x"), "ana-0")], creative_id="cx", author=bo) == ([a_sid], False)
    for sid, key in ((a_sid, "ana"), (b_sid, "bo")):
        repos.mark_created(sid, f"task-{key}")
        repos.record_task(report(f"task-{key}", "success", output=[image(0)]))
        [o] = repos.outputs_for([sid])[sid]
        repos.output_kept(o.id, sha256=key.ljust(64, "0"), width=8, height=8, nbytes=1)
    lone = repos.add_submission(TaskRequest("bo alone"), idempotency_key="bo-1", creative_id="b1", author=bo)
    assert repos.submission(a_sid).author == ana  # type: ignore[union-attr]
    assert repos.submission(lone).author == bo  # type: ignore[union-attr]

    cid, ids, _ = repos.launch_campaign_once(
        replace(new_campaign(), author=bo), cells("t"), unit_micros=40_000, currency="USD"
    )
    assert repos.campaign(cid).author == bo  # type: ignore[union-attr]
    assert {repos.submission(i).author for i in ids} == {bo}  # type: ignore[union-attr]
    redo = [(2, TaskRequest("A cup, again", "1:1", "1K"), "redo-0")]
    [redo_id], _ = repos.add_campaign_cells_once(cid, redo, unit_micros=40_000, currency="USD", author=ana)
    assert repos.submission(redo_id).author == ana  # type: ignore[union-attr]

    mine = repos.gallery(GalleryQuery(author=ana))[0]
    assert [i.author for i in mine] == [ana] and mine[0].prompt == "ana's mug"
    assert repos.gallery_count(GalleryQuery(author=bo)) == 1
    assert repos.gallery_count(GalleryQuery()) == 2  # None: everyone's
    assert repos.gallery_count(GalleryQuery(author="cy@example.com")) == 0
    assert repos.gallery_count(GalleryQuery(author=bo, status="all", text="cup")) == 1
    assert repos.authors() == [ana, bo]

    # Collections are shared: anyone adds to one, and it keeps its first author.
    coll = repos.add_collection("Shared", author=ana)
    assert repos.add_collection("Shared", author=bo) == coll
    assert repos.collection_author(coll) == ana
    assert repos.collection_author(coll + 1000) is None


def test_campaigns_are_listed_everyones_or_one_persons(repos: Repositories) -> None:
    ana, bo = "ana@example.com", "bo@example.com"
    made = []
    for n, who in enumerate((ana, bo, ana)):
        cid, _, _ = repos.launch_campaign_once(
            replace(new_campaign(f"Launch {n}"), author=who),
            cells(f"t{n}"),
            unit_micros=40_000,
            currency="USD",
        )
        made.append(cid)
    assert [c.id for c in repos.campaigns()] == made[::-1]  # None: everyone's, newest first
    assert [c.id for c in repos.campaigns(author=ana)] == [made[2], made[0]]
    assert [(c.id, c.author) for c in repos.campaigns(author=bo)] == [(made[1], bo)]
    assert [c.id for c in repos.campaigns(1, author=ana)] == [made[2]]  # the limit counts that person's
    assert repos.campaigns(author="cy@example.com") == []
    assert repos.campaigns(author=LOCAL_AUTHOR) == []


def test_a_collection_one_person_made_is_seen_and_filled_by_another(repos: Repositories) -> None:
    from studio.usecases import add_to_collection

    ana, bo = "ana@example.com", "bo@example.com"
    rate = SpendRate("1K", 40_000, "USD")
    outs = {}
    for who, key in ((ana, "ana"), (bo, "bo")):
        [sid], _ = repos.add_click(
            [(TaskRequest(f"{key}'s mug"), f"{key}-0")], creative_id=f"c{key}", spend=rate, author=who
        )
        repos.mark_created(sid, f"task-{key}")
        repos.record_task(report(f"task-{key}", "success", output=[image(0)]))
        [o] = repos.outputs_for([sid])[sid]
        repos.output_kept(o.id, sha256=key.ljust(64, "0"), width=8, height=8, nbytes=1)
        outs[who] = o.id
    coll = add_to_collection(repos, "Summer", [outs[ana]], author=ana)
    # Bo sees Ana's collection under its name, and adds his image to it (no second "Summer").
    assert repos.collections() == [(coll, "Summer", 1)]
    assert add_to_collection(repos, " Summer ", [outs[bo]], author=bo) == coll
    assert repos.collections() == [(coll, "Summer", 2)]
    assert repos.collection_author(coll) == ana  # it stays Ana's
    shared = repos.gallery(GalleryQuery(collection_id=coll))[0]
    assert sorted(i.author for i in shared) == [ana, bo]
    assert repos.output_collections(outs[bo]) == ["Summer"]
    # Each person's filter still narrows inside the shared collection.
    assert [i.output_id for i in repos.gallery(GalleryQuery(collection_id=coll, author=bo))[0]] == [outs[bo]]


def test_spend_is_totalled_per_author(repos: Repositories) -> None:
    ana, bo = "ana@example.com", "bo@example.com"
    _, ids, _ = repos.launch_campaign_once(
        replace(new_campaign(), author=bo), cells("t"), unit_micros=40_000, currency="USD"
    )
    for n, sid in enumerate(ids[:3]):
        repos.mark_created(sid, f"c{n}")
        repos.record_task(report(f"c{n}", "success", output=[image(n)]))
    [a_sid], _ = repos.add_click(
        [(TaskRequest("ana's mug"), "ana-0")],
        creative_id="ca",
        spend=SpendRate("1K", 90_000, "USD"),
        author=ana,
    )
    repos.mark_created(a_sid, "ta")
    repos.record_task(report("ta", "success", output=[image(9)]))
    [single] = kept(repos, "a plain one", key="s")
    sub_id = repos.gallery_items([single])[0].submission_id
    repos.record_spend([sub_id], resolution="1K", unit_micros=10_000, currency="USD", author=ana)
    repos.delete_outputs([single])  # the ledger outlives the image, and keeps its author

    lines = repos.spend_lines("author")
    assert [line.key for line in lines] == [bo, ana]  # the biggest spender first
    by = {line.key: line for line in lines}
    assert (by[bo].spent, by[bo].images, by[bo].pending, by[bo].pending_images) == (
        Decimal("0.12"),
        3,
        Decimal("0.04"),
        1,
    )
    assert (by[ana].spent, by[ana].images) == (Decimal("0.10"), 2)
    assert sum(line.spent for line in lines) == repos.spend_lines("all")[0].spent


# ---------------------------------------------------------------------- library


def test_templates_save_update_and_clash_by_name_ignoring_case(repos: Repositories) -> None:
    t = repos.save_template(
        Template("Poster", "A {{thing}} poster", ("2:3",), "2K", "note", ({"thing": "cat"},))
    )
    assert t.id is not None and t.rows == ({"thing": "cat"},) and t.ratios == ("2:3",)
    assert repos.template(t.id) == t and repos.template_by_name("POSTER") == t
    with pytest.raises(NameTaken):
        repos.save_template(Template("poster", "other"))
    renamed = repos.save_template(Template("poster", "other"), on_conflict="rename")
    assert renamed.name == "poster (2)" and renamed.id != t.id
    assert repos.save_template(Template("Poster", "x"), on_conflict="rename").name == "Poster (3)"
    assert repos.save_template(Template("POSTER", "skipped"), on_conflict="skip") == t
    updated = repos.save_template(Template("Poster v2", "A new prompt", id=t.id))
    assert updated.id == t.id and repos.template(t.id).prompt == "A new prompt"  # type: ignore[union-attr]
    replaced = repos.save_template(Template("poster (2)", "replacing"), on_conflict="replace")
    assert repos.template(renamed.id or 0) is None and replaced.prompt == "replacing"
    assert [x.name for x in repos.templates("new")] == ["Poster v2"]
    assert [x.name for x in repos.templates("NEW prompt")] == ["Poster v2"]  # every word, any case
    assert repos.templates("100%") == [] and repos.templates("_") == []  # typed text is never a wildcard
    assert repos.delete_template(t.id) and not repos.delete_template(t.id)


def test_starters_are_found_by_key_and_listed_first(repos: Repositories) -> None:
    repos.save_template(Template("a user template", "p"))
    repos.save_template(Template("B user template", "p"))
    repos.save_template(Template("Zebra starter", "p", starter="menu"))
    assert repos.has_starter("menu") and not repos.has_starter("poster")
    assert [t.name for t in repos.starter_templates()] == ["Zebra starter"]
    # Starters first, then by name ignoring case.
    assert [t.name for t in repos.templates()] == ["Zebra starter", "a user template", "B user template"]


# ---------------------------------------------------------------------- settings and drafts


def test_settings_round_trip(repos: Repositories) -> None:
    assert repos.get_setting("pricing") is None
    repos.set_setting("pricing", '{"1K": "0.04"}')
    repos.set_setting("pricing", '{"1K": "0.05"}')
    assert repos.get_setting("pricing") == '{"1K": "0.05"}'
    repos.delete_setting("pricing")
    assert repos.get_setting("pricing") is None


def test_a_setting_stored_once_keeps_the_first_value(repos: Repositories) -> None:
    assert repos.setting_once("signing_key", "first") == "first"
    assert repos.setting_once("signing_key", "second") == "first"
    assert repos.get_setting("signing_key") == "first"


def test_drafts_are_kept_as_written_and_old_ones_pruned(repos: Repositories) -> None:
    repos.save_draft("old", '{"prompt": "old"}', now=10.0)
    repos.save_draft("mine", '{"prompt": "a"}', now=20.0)
    repos.save_draft("mine", '{"prompt": "b"}', now=30.0)
    assert repos.draft_body("mine") == '{"prompt": "b"}'
    assert repos.draft_body("nobody") is None
    repos.save_draft("new", "{}", now=40.0, prune_before=15.0)
    assert repos.draft_body("old") is None and repos.draft_body("mine") is not None


# ---------------------------------------------------------------------- claims and leases


def test_work_is_claimed_with_a_lease_and_taken_over_after_it(repos: Repositories) -> None:
    a = repos.add_submission(TaskRequest("a"), idempotency_key="a", creative_id="c")
    b = repos.add_submission(TaskRequest("b"), idempotency_key="b", creative_id="c")
    assert [s.id for s in repos.claim_due_submissions("w1", 30.0, now=100.0, limit=1)] == [a]
    assert [s.id for s in repos.claim_due_submissions("w2", 30.0, now=101.0, limit=5)] == [b]  # a is held
    assert repos.claimed_by(a) == ("w1", 130.0)
    assert repos.renew_submission_leases("w1", [a, b], 30.0, now=110.0) == {a}  # b is not w1's
    assert [s.id for s in repos.claim_due_submissions("w2", 30.0, now=139.0, limit=5)] == [
        b
    ]  # a renewed to 140
    assert [s.id for s in repos.claim_due_submissions("w2", 30.0, now=141.0, limit=5)] == [a]  # lease lapsed
    assert repos.renew_submission_leases("w1", [a], 30.0, now=142.0) == set()  # w1 learns it lost a
    repos.release_submissions("w2")
    assert repos.claimed_by(a)[0] is None


def test_named_leases_have_one_holder_at_a_time(repos: Repositories) -> None:
    assert repos.take_lease("backfill", "p1", 60.0, now=0.0)
    assert not repos.take_lease("backfill", "p2", 60.0, now=30.0)
    assert repos.take_lease("backfill", "p2", 60.0, now=61.0)  # p1's lapsed
    repos.release_lease("backfill", "p1")  # not p1's any more: nothing happens
    assert not repos.take_lease("backfill", "p3", 60.0, now=62.0)
    repos.release_lease("backfill", "p2")
    assert repos.take_lease("backfill", "p3", 60.0, now=63.0)
