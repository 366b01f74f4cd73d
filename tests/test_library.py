"""The prompt library and the spend ledger on real SQLite files."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from studio.campaign_store import CampaignStore
from studio.library import STARTERS, Library, LibraryError, Template, parse_json
from studio.models import Task, TaskRequest
from studio.store import Store


@pytest.fixture
def lib(tmp_path):
    return Library(Store(tmp_path / "studio.db"))


POSTER = Template(
    "Product poster",
    'A poster of a {{product}} with the headline "{{headline}}"',
    ("1:1", "16:9"),
    "2K",
    note="spring campaign",
    rows=({"product": "mug", "headline": "HOT"}, {"product": "bowl", "headline": "FRESH"}),
)


def test_save_list_search_edit_delete(lib):
    saved = lib.save(POSTER)
    assert saved.id and saved.variables == ["product", "headline"]
    assert lib.get(saved.id).rows == POSTER.rows
    lib.save(Template("Neon sign", 'A neon sign that reads "OPEN"', ("21:9",), "1K"))
    assert [t.name for t in lib.list("poster")] == ["Product poster"]
    assert [t.name for t in lib.list("SPRING")] == ["Product poster"]  # the note, any case
    assert [t.name for t in lib.list("neon open")] == ["Neon sign"]  # every word
    assert lib.list("100%_") == []  # LIKE wildcards are literal
    edited = lib.save(Template(**{**saved.__dict__, "name": "Poster v2", "resolution": "4K"}))
    assert edited.id == saved.id and lib.get(saved.id).resolution == "4K"
    assert lib.by_name("product poster") is None and lib.by_name("POSTER V2").id == saved.id
    assert lib.delete(saved.id) and lib.get(saved.id) is None


def test_names_are_unique_ignoring_case_unless_overwritten(lib):
    lib.save(POSTER)
    with pytest.raises(LibraryError, match="already exists"):
        lib.save(Template("PRODUCT POSTER", "other", ("1:1",), "1K"))
    lib.save(Template("PRODUCT POSTER", "other", ("1:1",), "1K"), overwrite=True)
    [only] = lib.list("poster")
    assert only.prompt == "other"


@pytest.mark.parametrize(
    "bad, message",
    [
        (Template("", "x"), "name is required"),
        (Template("a", ""), "prompt is required"),
        (Template("a", "x", ("7:5",)), "ratios"),
        (Template("a", "x", ("1:1",), "8K"), "resolution '8K'"),
        (Template("a", "{{1x}}"), "not a variable"),
    ],
)
def test_bad_templates_are_refused_naming_the_field(lib, bad, message):
    with pytest.raises(LibraryError, match=message):
        lib.save(bad)


def test_json_round_trip_into_a_fresh_database(lib, tmp_path):
    lib.save(POSTER)
    lib.save(Template("Café sign", "Un café « crème »", ("3:4",), "1K"))
    data = lib.export()
    doc = json.loads(data)
    assert doc["format"] == "hiapi-studio/prompt-library" and len(doc["templates"]) == 2
    other = Library(Store(tmp_path / "other.db"))
    assert other.import_json(data.encode()) == {"added": 2, "replaced": 0, "renamed": 0, "skipped": 0}
    strip = lambda t: (t.name, t.prompt, t.ratios, t.resolution, t.note, t.rows)  # noqa: E731
    assert sorted(map(strip, other.list())) == sorted(map(strip, lib.list()))


def test_import_conflicts_rename_skip_or_replace(lib):
    lib.save(POSTER)
    data = json.dumps({"templates": [{"name": "Product poster", "prompt": "new text"}]})
    assert lib.import_json(data, on_conflict="skip")["skipped"] == 1
    assert lib.by_name("Product poster").prompt == POSTER.prompt
    assert lib.import_json(data, on_conflict="rename")["renamed"] == 1
    assert lib.by_name("Product poster (2)").prompt == "new text"
    assert lib.import_json(data, on_conflict="replace")["replaced"] == 1
    assert lib.by_name("Product poster").prompt == "new text"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b'{"format": "something-else", "templates": []}', "not a prompt library"),
        (b'{"templates": {}}', "templates"),
        (b'{"templates": [{"name": "ok", "prompt": "x"}, {"name": "bad", "prompt": "x", "ratios": ["7:5"]}]}',
         r"Template 2 \(bad\): ratios"),
        (b'{"templates": [{"name": "r", "prompt": "x", "resolution": "8K"}]}', r"Template 1 \(r\): resolution"),
    ],
)  # fmt: skip
def test_bad_library_files_are_refused_whole_with_the_entry_named(lib, data, message):
    with pytest.raises(LibraryError, match=message):
        lib.import_json(data)
    assert lib.list() == []  # nothing half-imported


def test_starters_are_seeded_once_and_a_deleted_one_stays_deleted(tmp_path):
    store = Store(tmp_path / "studio.db")
    lib = Library(store)
    assert lib.seed_starters() == 5
    assert [t.starter for t in lib.starters()] == [s.key for s in STARTERS]
    poster = next(t for t in lib.starters() if t.starter == "poster")
    lib.delete(poster.id)
    assert Library(Store(tmp_path / "studio.db")).seed_starters() == 0  # a restart does not resurrect it
    assert "poster" not in [t.starter for t in lib.starters()]
    assert lib.restore_starters() == 1
    assert len(lib.starters()) == 5


def test_every_starter_ratio_is_one_hiapi_accepts_at_its_resolution():
    from studio.ratios import combination_problem

    for s in STARTERS:
        t = s.template
        assert [r for r in t.ratios if combination_problem(r, t.resolution)] == [], s.key


def test_parse_accepts_a_bare_list():
    [t] = parse_json('[{"name": "x", "prompt": "y", "ratios": "16:9"}]')
    assert t.ratios == ("16:9",) and t.resolution == "1K"


# -- spend ledger ----------------------------------------------------------------


def _finish(store, sid, status):
    store.mark_created(sid, f"tk-{sid}")
    out = [{"url": f"https://f.example/{sid}.png"}] if status == "success" else None
    store.record_task(Task.parse({"taskId": f"tk-{sid}", "status": status, "output": out}))


def test_spend_counts_successes_keeps_them_after_delete_and_groups_by_campaign(tmp_path):
    store = Store(tmp_path / "studio.db")
    book = CampaignStore(store)
    cid = book.add_campaign(
        name="Spring",
        template="{{p}}",
        variables=["p"],
        ratios=["1:1"],
        resolution="2K",
        rows=[({"p": "a"}, "a"), ({"p": "b"}, "b"), ({"p": "c"}, "c")],
        unit_micros=60_000,
        currency="USD",
    )
    ids = book.add_cells(
        cid,
        [(i, TaskRequest(p, "1:1", "2K"), f"k{i}") for i, p in enumerate("abc", 1)],
        unit_micros=60_000,
        currency="USD",
    )
    single = store.add_submission(TaskRequest("solo", "1:1", "1K"), idempotency_key="solo", creative_id="s")
    book.record_spend([single], resolution="1K", unit_micros=30_000, currency="USD")
    _finish(store, ids[0], "success")
    _finish(store, ids[1], "fail")
    _finish(store, single, "success")
    [total] = book.spend("all")
    assert (total.spent, total.images) == (Decimal("0.09"), 2)
    assert (total.pending, total.pending_images) == (Decimal("0.06"), 1)  # ids[2] still running
    by_campaign = {line.key: line for line in book.spend("campaign")}
    assert by_campaign[f"Spring (#{cid})"].spent == Decimal("0.06")
    assert by_campaign["Single prompts"].spent == Decimal("0.03")
    [today] = book.spend("day")
    assert today.spent == Decimal("0.09")
    assert book.campaign_spend(cid) == (Decimal("0.06"), Decimal("0.12"))  # the failed one not planned

    # Deleting the image does not un-spend the money.
    [o] = store.outputs_for([ids[0]])[ids[0]]
    store.delete_outputs([o.id])
    assert store.submission(ids[0]) is None
    assert book.spend("all")[0].spent == Decimal("0.09")


def test_a_database_that_skipped_slot_4_gets_the_tables_back(tmp_path):
    from studio.store import SCHEMA_VERSION
    from tests.support import old_database

    path = tmp_path / "studio.db"
    old_database(path, 5, placeholders=(4,))  # as written while slot 4 was still "SELECT 1"
    store = Store(path)  # the upgrade to the current version repairs slot 4
    assert store.schema_version() == SCHEMA_VERSION
    assert Library(store).seed_starters() == 5
    assert Library(store).seed_starters() == 0
