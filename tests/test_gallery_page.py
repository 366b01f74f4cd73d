"""Gallery logic: search, filters, favourites, collections, delete, export — AppTest and store."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from studio import services as core
from studio.export import file_name, write_zip
from studio.images import ImageKeeper, read_recipe
from studio.models import Task, TaskRequest
from studio.store import GalleryQuery, Store
from tests.support import sql_rows

ROOT = Path(__file__).resolve().parent.parent

SEED = [
    ("A neon sign that reads \"OPEN LATE\" on a rainy street", "16:9", "2K"),
    ("Product photo of a sage-green coffee mug", "1:1", "1K"),
    ("Poster with the headline \"SUMMER DROP\"", "2:3", "2K"),
    ("A café menu board titled \"MORNING BREW\"", "3:4", "4K"),
]  # fmt: skip


def seed(store: Store, keeper: ImageKeeper, items=SEED) -> list[int]:
    """Finished generations with real kept files, as the tracker leaves them."""
    ids = []
    for n, (prompt, ratio, res) in enumerate(items):
        sid = store.add_submission(
            TaskRequest(prompt, ratio, res), idempotency_key=f"seed-{n}", creative_id=f"c{n}"
        )
        store.mark_created(sid, f"tk-seed-{n}")
        store.record_task(Task.parse({"taskId": f"tk-seed-{n}", "status": "success",
                                      "output": [{"url": f"https://files.example/{n}.png", "type": "image"}]}))  # fmt: skip
        buf = io.BytesIO()
        Image.new("RGB", (64 + n, 48), (40 * n, 90, 160)).save(buf, "PNG")
        kept = keeper.keep_bytes(buf.getvalue(), {"prompt": prompt, "aspect_ratio": ratio, "resolution": res})
        [o] = store.outputs_for([sid])[sid]
        store.output_kept(o.id, sha256=kept.sha256, width=kept.width, height=kept.height, nbytes=kept.bytes)  # fmt: skip
        ids.append(o.id)
    return ids


@pytest.fixture
def stocked(tmp_path):
    store = Store(tmp_path / "studio.db")
    keeper = ImageKeeper(tmp_path / "images")
    return store, keeper, seed(store, keeper)


def test_search_finds_a_word_of_a_prompt(stocked):
    store, _, _ = stocked
    items, total = store.gallery(GalleryQuery(text="summer"))
    assert total == 1 and "SUMMER DROP" in items[0].prompt
    assert store.gallery(GalleryQuery(text="caf"))[1] == 1  # prefix and accents
    assert store.gallery(GalleryQuery(text='"; DROP --'))[1] == 1  # hostile text is only words
    assert store.gallery(GalleryQuery(text="zebra"))[1] == 0


def test_filters_sort_and_paging(stocked):
    store, _, ids = stocked
    assert store.gallery(GalleryQuery(ratios=("1:1", "2:3")))[1] == 2
    assert store.gallery(GalleryQuery(resolutions=("2K",)))[1] == 2
    newest, _ = store.gallery(GalleryQuery(), limit=2)
    oldest, _ = store.gallery(GalleryQuery(newest_first=False), limit=2)
    assert [i.output_id for i in newest] == ids[::-1][:2]
    assert [i.output_id for i in oldest] == ids[:2]
    page2, total = store.gallery(GalleryQuery(), limit=3, offset=3)
    assert total == 4 and len(page2) == 1


def test_favourites_and_collections(stocked):
    store, _, ids = stocked
    store.set_favourite(ids[1], True)
    favs, n = store.gallery(GalleryQuery(favourites_only=True))
    assert n == 1 and favs[0].output_id == ids[1] and favs[0].favourite
    cid = store.add_collection("Summer campaign")
    assert store.add_collection(" Summer campaign ") == cid
    store.add_to_collection(cid, [ids[0], ids[2]])
    assert store.gallery(GalleryQuery(collection_id=cid))[1] == 2
    assert store.collections() == [(cid, "Summer campaign", 2)]
    with pytest.raises(ValueError, match="name is required"):
        store.add_collection("  ")


def test_delete_removes_rows_and_files(stocked):
    store, keeper, ids = stocked
    [item] = store.gallery_items([ids[0]])
    orphans = store.delete_outputs([ids[0]])
    assert orphans == [item.sha256]
    for sha in orphans:
        keeper.delete(sha)
    assert not keeper.original_path(item.sha256).exists()
    assert store.gallery(GalleryQuery())[1] == 3
    assert store.submission(item.submission_id) is None


def test_zip_holds_originals_and_a_manifest(stocked, tmp_path):
    store, keeper, ids = stocked
    items = store.gallery_items(ids)
    token = write_zip(items, keeper.blobs)
    with zipfile.ZipFile(keeper.blobs.open(f"exports/{token}.zip")) as zf:
        names = set(zf.namelist())
        assert {"manifest.csv", "manifest.json"} <= names
        manifest = json.loads(zf.read("manifest.json"))
        assert (
            {m["file"] for m in manifest}
            == {file_name(i) for i in items}
            == names - {"manifest.csv", "manifest.json"}
        )
        first = next(m for m in manifest if "neon" in m["prompt"])
        assert first["file"].startswith("a-neon-sign-that-reads-open-late") and "_16x9_2K_" in first["file"]
        recipe = read_recipe(zf.read(first["file"]))
        assert recipe["prompt"] == first["prompt"]
        assert "manifest" not in zf.read("manifest.csv").decode()[:0]  # csv is text
        assert zf.read("manifest.csv").decode().splitlines()[0].startswith("file,prompt,aspect_ratio")


@pytest.fixture
def gallery_app(tmp_path, monkeypatch):
    for k in ("HIAPI_API_KEY", "HIAPI_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    core.shutdown()
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.run()
    services = core.current()
    seed(services.store, services.keeper)
    at.switch_page("app_pages/gallery.py").run()
    assert not at.exception, at.exception
    yield at
    core.shutdown()
    st.cache_resource.clear()


def _card_prompts(at) -> list[str]:
    """The prompts of the cards the grid was handed (its view model: the grid draws itself)."""
    from components.gallery import gallery_view, parse_query

    grid = [e for e in at.get("bidi_component") if "studio_gallery" in e.proto.component_name]
    if not grid:
        return []
    data = json.loads(grid[0].proto.json)
    source = data["source"].split("?", 1)[1]
    from urllib.parse import parse_qs

    params = parse_qs(source)
    q = parse_query({k: v[0] for k, v in params.items()}, lambda k: params.get(k, []))
    assert [i["prompt"] for i in data["view"]["items"]] == [
        i["prompt"] for i in gallery_view(core.current().store, None, q)["items"]
    ]
    return [i["prompt"] for i in data["view"]["items"]]


def test_gallery_page_lists_and_searches(gallery_app):
    at = gallery_app
    assert "4 images" in [c.value for c in at.caption]
    assert len(_card_prompts(at)) == 4
    at.text_input(key="g_text").input("neon").run()
    assert "1 image" in [c.value for c in at.caption]
    assert any("OPEN LATE" in p for p in _card_prompts(at))


def test_gallery_page_ratio_filter_and_favourites(gallery_app):
    at = gallery_app
    at.multiselect(key="g_ratios").select("1:1").run()
    assert "1 image" in [c.value for c in at.caption]
    at.multiselect(key="g_ratios").unselect("1:1").run()
    at.toggle(key="g_fav").set_value(True).run()
    assert "0 images" in [c.value for c in at.caption]


def test_status_filter_lists_failures_with_their_reasons(stocked):
    store, _, _ = stocked
    sid = store.add_submission(
        TaskRequest("a rejected prompt", "1:1", "1K"), idempotency_key="f1", creative_id="cf"
    )
    store.mark_created(sid, "tk-failed")
    store.record_task(Task.parse({"taskId": "tk-failed", "status": "fail",
                                  "error": {"code": "TASK_FAILED", "message": "upstream rejected the prompt"}}))  # fmt: skip
    kept, n_kept = store.gallery(GalleryQuery())
    assert n_kept == 4 and all(i.kept for i in kept)
    failed, n_failed = store.gallery(GalleryQuery(status="failed"))
    assert n_failed == 1
    assert failed[0].state == "fail" and failed[0].error == "TASK_FAILED: upstream rejected the prompt"
    assert store.gallery(GalleryQuery(status="all"))[1] == 5


def test_clear_filters_puts_every_filter_back(gallery_app):
    at = gallery_app
    assert at.button(key="g_clear").disabled  # nothing to clear yet
    at.text_input(key="g_text").input("neon").run()
    at.toggle(key="g_fav").set_value(True).run()
    assert "0 images" in [c.value for c in at.caption]
    at.button(key="g_clear").click().run()
    assert "4 images" in [c.value for c in at.caption]
    assert at.text_input(key="g_text").value == "" and at.toggle(key="g_fav").value is False
    assert at.button(key="g_clear").disabled


def test_bulk_delete_can_be_undone(gallery_app):
    at = gallery_app
    ids = sorted(core.current().store.gallery(GalleryQuery())[0], key=lambda i: i.output_id)
    at.session_state["gallery_selected"] = {
        it.output_id for it in ids[:3]
    }  # as the grid's select events leave it
    at.run()
    at.button(key="bulk_delete").click().run()
    assert not at.exception, at.exception
    assert "1 image" in [c.value for c in at.caption]
    assert any("Deleted **3 images**" in m.value for m in at.markdown)
    # Rows and files are still there during the window.
    assert core.current().keeper.original_path(ids[0].sha256).exists()
    at.button(key="undo_delete").click().run()
    assert "4 images" in [c.value for c in at.caption]
    assert not [m for m in at.markdown if "Deleted **" in m.value]


def test_a_card_shows_one_short_line_of_the_prompt():
    from components.gallery import PROMPT_CHARS, _one_line

    long = "A poster\nwith   the headline " + "x" * 5000
    line = _one_line(long)
    assert "\n" not in line and line.startswith("A poster with the headline x")
    assert len(line) == PROMPT_CHARS + 1 and line.endswith("…")
    assert _one_line("short") == "short"


def test_filters_travel_to_the_view_route_and_back():
    from components.gallery import parse_query, query_string

    q = GalleryQuery(text="neon & sign", ratios=("1:1", "21:9"), resolutions=("2K",), favourites_only=True,
                     collection_id=3, since=1700000000.5, until=1700086400.0, newest_first=False,
                     status="all", text_mismatch=True)  # fmt: skip
    from urllib.parse import parse_qs

    params = parse_qs(query_string(q))
    assert parse_query({k: v[0] for k, v in params.items()}, lambda k: params.get(k, [])) == q
    assert query_string(GalleryQuery()) == ""
    bad = {"ratio": "7:3", "coll": "x", "since": "soon", "status": "deleted", "q": "x" * 900}
    got = parse_query(bad, lambda k: [bad[k]] if k in bad else [])
    assert got == GalleryQuery(text="x" * 500)  # what is malformed is ignored: it shows more, never fails


def test_the_view_model_pages_through_the_gallery_and_carries_text_only(stocked):
    from components.gallery import gallery_view

    store, _, ids = stocked
    first = gallery_view(store, None, GalleryQuery(), offset=0, limit=3)
    rest = gallery_view(store, None, GalleryQuery(), offset=3, limit=3)
    assert first["total"] == rest["total"] == 4 and rest["offset"] == 3
    assert [i["id"] for i in first["items"] + rest["items"]] == ids[::-1]
    item = first["items"][0]
    assert item["prompt"].startswith("A café menu board") and item["ratio"] == "3:4" and not item["fav"]
    assert item["download"].endswith(f"_3x4_4K_{ids[3]}.png") and len(item["sha"]) == 64
    assert item["download"].startswith(f"/images/{item['sha']}.png?download=")
    assert item["thumb"] == f"/thumbs/{item['sha']}.webp"
    assert gallery_view(store, None, GalleryQuery(), limit=10_000)["items"][-1]["id"] == ids[0]


def test_lightbox_steps_through_the_ids_shown():
    from components.lightbox import neighbours

    assert neighbours((5, 4, 3), 4) == (5, 3)
    assert neighbours((5, 4, 3), 5) == (None, 4)
    assert neighbours((5, 4, 3), 3) == (4, None)
    assert neighbours((5, 4, 3), 9) == (None, None)


def _queue_event(name: str, payload: dict):
    """One click on the queue component, as its JS reports it: the event's value, then its handler."""
    import streamlit as st

    from components import queue

    st.session_state["queue"] = {name: payload}
    getattr(queue, f"_on_{name}")()


def _retry_twice(sid: int) -> None:
    import streamlit as st

    from tests.test_gallery_page import _queue_event

    if "clicked" not in st.session_state:
        st.session_state.clicked = True
        _queue_event("retry", {"id": sid})
        _queue_event("retry", {"id": sid})  # a second click before the page redraws


def test_retry_resends_a_failed_task_once_as_a_new_creative(tmp_path, monkeypatch):
    for k in ("HIAPI_API_KEY", "HIAPI_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    core.shutdown()
    import streamlit as st

    from components.queue import queue_view

    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
        at.run()
        store = core.current().store
        sid = store.add_submission(
            TaskRequest("a lighthouse at dusk", "16:9", "2K"), idempotency_key="f-retry", creative_id="cfail"
        )
        store.mark_created(sid, "tk-retry")
        store.record_task(Task.parse({"taskId": "tk-retry", "status": "fail",
                                      "error": {"code": "TASK_FAILED", "message": "upstream said no"}}))  # fmt: skip
        # The failed card offers Retry, with HiAPI's reason.
        [card] = [c for c in queue_view(store, None)["creatives"] if c["id"] == "cfail"]
        [task] = card["tasks"]
        assert task["retry"] and task["error"] == {"code": "TASK_FAILED", "message": "upstream said no"}
        clicks = AppTest.from_function(_retry_twice, args=(sid,), default_timeout=30)
        clicks.run()
        assert not clicks.exception, clicks.exception
        again = [s for s in store.recent(limit=10) if s.id != sid]
        assert len(again) == 1  # two clicks, one token: one creative
        assert (again[0].prompt, again[0].aspect_ratio, again[0].resolution) == (
            "a lighthouse at dusk",
            "16:9",
            "2K",
        )
        assert again[0].creative_id != "cfail"
        assert clicks.session_state["queue_resent"][sid] == [again[0].id]  # the card shows it was sent
        spent = sql_rows(store, "SELECT COUNT(*) FROM spend WHERE submission_id = ?", (again[0].id,))
        assert spent == [(1,)]
    finally:
        core.shutdown()
        st.cache_resource.clear()


def _open_and_favourite(output_id: int, sequence: list[int]) -> None:
    import streamlit as st

    from tests.test_gallery_page import _queue_event

    if "clicked" not in st.session_state:
        st.session_state.clicked = True
        _queue_event("favourite", {"id": output_id, "on": True})
        _queue_event("open", {"id": output_id, "sequence": sequence})


def test_queue_cards_of_kept_images_open_download_and_favourite(gallery_app):
    from components.queue import queue_view

    store = core.current().store
    ids = [i.output_id for i in store.gallery(GalleryQuery())[0]]
    view = queue_view(store, None)
    kept = [o for c in view["creatives"] for t in c["tasks"] for o in t["outputs"] if o["kind"] == "kept"]
    assert sorted(o["id"] for o in kept) == sorted(ids)
    assert all("/images/" in o["download"] and "download=" in o["download"] for o in kept)
    assert view["sequence"] == ids  # the queue's order, newest first, is what the lightbox steps through
    clicks = AppTest.from_function(_open_and_favourite, args=(ids[0], view["sequence"]), default_timeout=30)
    clicks.run()
    assert not clicks.exception, clicks.exception
    assert store.gallery_items([ids[0]])[0].favourite
    [fav] = [o for c in queue_view(store, None)["creatives"] for t in c["tasks"] for o in t["outputs"]
             if o.get("id") == ids[0]]  # fmt: skip
    assert fav["fav"] is True  # the card's ★
    assert clicks.session_state["gallery_lightbox"] == ids[0]
    assert tuple(clicks.session_state["gallery_lightbox_seq"]) == tuple(ids)


# -- who made what ------------------------------------------------------------------

ANA, BO = "ana@example.com", "bo@example.com"
AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "a-test-cookie-secret",
        "client_id": "studio", "client_secret": "s", "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}  # fmt: skip


def test_the_author_filter_is_mine_everyone_or_one_person():
    from components.gallery import EVERYONE, MINE, author_filter

    assert author_filter(MINE, None, ANA, login_on=True) == ANA
    assert author_filter(MINE, BO, ANA, login_on=True) == ANA  # "Mine" wins over a stale pick
    assert author_filter(EVERYONE, None, ANA, login_on=True) is None
    assert author_filter(EVERYONE, BO, ANA, login_on=True) == BO
    assert author_filter(MINE, BO, "local", login_on=False) is None  # no login: no people to tell apart


def test_the_author_is_the_signed_in_person_and_local_without_a_login():
    from access.page import author_of

    assert author_of({"is_logged_in": True, "email": ANA, "name": "Ana"}, login_on=True) == ANA
    assert author_of({"is_logged_in": True, "name": "Bo"}, login_on=True) == "Bo"
    assert author_of({"is_logged_in": True, "email": ANA}, login_on=False) == "local"
    assert author_of({"is_logged_in": False}, login_on=True) == "local"
    assert author_of(None, login_on=True) == "local"


def test_the_author_filter_travels_to_the_view_route_and_back():
    from urllib.parse import parse_qs

    from components.gallery import parse_query, query_string

    q = GalleryQuery(text="mug", author=ANA)
    params = parse_qs(query_string(q))
    assert parse_query({k: v[0] for k, v in params.items()}, lambda k: params.get(k, [])) == q


def test_without_a_login_the_gallery_has_no_person_controls(gallery_app):
    at = gallery_app
    groups = {w.key for w in at.get("button_group")}
    assert "g_sort" in groups and "g_scope" not in groups  # the reader sees segmented controls
    selects = {w.key for w in at.selectbox}
    assert "g_collection" in selects and "g_person" not in selects
    store = core.current().store
    assert {i.author for i in store.gallery(GalleryQuery())[0]} == {"local"}
    store.record_spend([i.submission_id for i in store.gallery(GalleryQuery())[0]], resolution="1K",
                       unit_micros=40_000, currency="USD")  # fmt: skip
    at.run()
    shown = [m.value for m in at.markdown]
    assert "**Per day**" in shown and "**Per person**" not in shown


def _by(store: Store, keeper: ImageKeeper, author: str, n: int, prompt: str) -> None:
    sid = store.add_submission(
        TaskRequest(prompt), idempotency_key=f"by-{n}", creative_id=f"by{n}", author=author
    )
    store.mark_created(sid, f"tk-by-{n}")
    store.record_task(Task.parse({"taskId": f"tk-by-{n}", "status": "success",
                                  "output": [{"url": f"https://files.example/by{n}.png", "type": "image"}]}))  # fmt: skip
    buf = io.BytesIO()
    Image.new("RGB", (32, 32 + n), (200, 30 * n, 90)).save(buf, "PNG")
    kept = keeper.keep_bytes(buf.getvalue(), {"prompt": prompt})
    [o] = store.outputs_for([sid])[sid]
    store.output_kept(o.id, sha256=kept.sha256, width=kept.width, height=kept.height, nbytes=kept.bytes)
    store.record_spend([sid], resolution="1K", unit_micros=40_000 * n, currency="USD", author=author)


def test_with_the_login_on_the_gallery_shows_mine_everyone_or_one_person(tmp_path, monkeypatch):
    for k in ("HIAPI_API_KEY", "HIAPI_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    core.shutdown()
    import streamlit as st

    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
        at.secrets["auth"] = AUTH
        at.user = {"is_logged_in": True, "email": ANA, "name": "Ana"}
        at.run()
        assert not at.exception, at.exception
        services = core.current()
        _by(services.store, services.keeper, ANA, 1, "Ana's sage mug")
        _by(services.store, services.keeper, BO, 2, "Bo's neon poster")
        _by(services.store, services.keeper, BO, 3, "Bo's lake at dawn")
        at.switch_page("app_pages/gallery.py").run()
        assert not at.exception, at.exception
        assert "3 images" in [c.value for c in at.caption]  # everyone's by default: one shared gallery
        assert "**Per person**" in [m.value for m in at.markdown]
        per_person = next(d.value for d in at.dataframe if set(d.value[""]) == {ANA, BO})
        assert list(per_person[""]) == [BO, ANA]  # the biggest spender first: 0.20 against 0.04
        person = at.selectbox(key="g_person")
        assert person.options == ["Everyone", ANA, BO]
        person.set_value(BO).run()
        assert "2 images" in [c.value for c in at.caption]
        assert sorted(_card_prompts(at)) == ["Bo's lake at dawn", "Bo's neon poster"]
        at.button_group(key="g_scope").set_value("Mine").run()
        assert "1 image" in [c.value for c in at.caption]
        assert _card_prompts(at) == ["Ana's sage mug"]
        assert not [w for w in at.selectbox if w.key == "g_person"]  # "Mine" needs no picker
        at.button(key="g_clear").click().run()
        assert "3 images" in [c.value for c in at.caption]
    finally:
        core.shutdown()
        st.cache_resource.clear()


@pytest.fixture
def team_app(tmp_path, monkeypatch):
    """The app with the team login on and Ana signed in; one image of Ana's and two of Bo's."""
    for k in ("HIAPI_API_KEY", "HIAPI_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    core.shutdown()
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": True, "email": ANA, "name": "Ana"}
    at.run()
    assert not at.exception, at.exception
    services = core.current()
    _by(services.store, services.keeper, ANA, 1, "Ana's sage mug")
    _by(services.store, services.keeper, BO, 2, "Bo's neon poster")
    _by(services.store, services.keeper, BO, 3, "Bo's lake at dawn")
    yield at
    core.shutdown()
    st.cache_resource.clear()


def _component_data(at, name: str) -> dict:
    [el] = [e for e in at.get("bidi_component") if name in e.proto.component_name]
    return json.loads(el.proto.json)


def _unescaped(markdown: str) -> str:
    """What a person reads of `literal` text: backslash escapes and zero-width spaces removed."""
    import re

    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u200b", "")


def test_the_view_models_name_the_author_only_when_asked(stocked):
    from components.gallery import gallery_view
    from components.queue import queue_view

    store, _, _ = stocked
    assert all("by" not in i for i in gallery_view(store, None, GalleryQuery())["items"])
    assert all("by" not in c for c in queue_view(store, None)["creatives"])
    store.add_submission(TaskRequest("bo's"), idempotency_key="bo-x", creative_id="cbo", author=BO)
    named = gallery_view(store, None, GalleryQuery(status="all"), show_author=True)["items"]
    assert [i["by"] for i in named] == [i.author for i in store.gallery(GalleryQuery(status="all"))[0]]
    assert {i["by"] for i in named} == {"local"}  # the pending one is not in the gallery; seeds are local
    creatives = queue_view(store, None, show_author=True)["creatives"]
    assert {c["id"]: c["by"] for c in creatives}["cbo"] == BO
    assert {c["by"] for c in creatives if c["id"] != "cbo"} == {"local"}


def test_with_the_login_on_cards_the_queue_and_the_lightbox_name_the_author(team_app):
    at = team_app
    at.switch_page("app_pages/gallery.py").run()
    items = _component_data(at, "studio_gallery")["view"]["items"]
    assert [(i["prompt"], i["by"]) for i in items] == [
        ("Bo's lake at dawn", BO), ("Bo's neon poster", BO), ("Ana's sage mug", ANA),
    ]  # fmt: skip
    # The lightbox names the author, escaped for markdown (an address is not turned into a link).
    at.session_state["gallery_lightbox"] = items[1]["id"]
    at.run()
    assert not at.exception, at.exception
    [caption] = [c.value for c in at.caption if c.value.startswith("Model ")]
    assert _unescaped(caption).endswith(f" · by {BO}") and "bo\u200b@example" in caption
    # The Studio's queue names who asked for each creative.
    at.session_state["gallery_lightbox"] = None
    at.switch_page("app_pages/studio.py").run()
    creatives = _component_data(at, "studio_queue")["view"]["creatives"]
    by_prompt = {c["prompt"]: c["by"] for c in creatives}
    assert by_prompt == {"Ana's sage mug": ANA, "Bo's neon poster": BO, "Bo's lake at dawn": BO}


def test_a_shared_collection_is_listed_with_its_author_and_filled_by_anyone(team_app):
    from studio.usecases import add_to_collection

    at = team_app
    store = core.current().store
    ana_img, bo_img = (store.gallery(GalleryQuery(author=who))[0][0].output_id for who in (ANA, BO))
    cid = add_to_collection(store, "Summer", [bo_img], author=BO)  # Bo made it
    at.switch_page("app_pages/gallery.py").run()
    coll = at.selectbox(key="g_collection")
    assert coll.options == ["All images", f"Summer (1) · by {BO}"]
    # Ana (signed in) adds her image to Bo's collection from the lightbox's picker.
    at.session_state["gallery_lightbox"] = ana_img
    at.run()
    picker = at.selectbox(key="lb_coll")
    assert picker.options == [f"Summer · by {BO}", "New collection…"]
    picker.set_value("Summer").run()
    at.button(key="lb_coll_add").click().run()
    assert not at.exception, at.exception
    assert store.collections() == [(cid, "Summer", 2)] and store.collection_author(cid) == BO
    assert sorted(i.author for i in store.gallery(GalleryQuery(collection_id=cid))[0]) == [ANA, BO]


def test_campaigns_name_their_author_and_filter_mine_everyone_or_one_person(team_app):
    from dataclasses import replace

    from studio.records import NewCampaign

    at = team_app
    store = core.current().store
    rows = (({"p": "mug"}, "A mug"),)
    made = {}
    for who, name in ((BO, "Bo's launch"), (ANA, "Ana's launch")):
        new = replace(NewCampaign(name, "A {{p}}", ("p",), ("1:1",), "1K", rows), author=who)
        cells = [(1, TaskRequest("A mug", "1:1", "1K"), f"{name}-0")]
        made[who], _, _ = store.launch_campaign_once(new, cells, unit_micros=40_000, currency="USD")
    # The Studio's campaign cards say who launched each.
    at.switch_page("app_pages/studio.py").run()
    assert {f"by {ANA}", f"by {BO}"} <= {_unescaped(c.value) for c in at.caption}
    at.button_group(key="sc_scope").set_value("Mine").run()  # the Studio's cards: Mine / Everyone too
    assert not at.exception, at.exception
    by = [_unescaped(c.value) for c in at.caption if c.value.startswith("by ")]
    assert by == [f"by {ANA}"]
    at.button_group(key="sc_scope").set_value("Everyone").run()
    at.switch_page("app_pages/gallery.py").run()
    at.button_group(key="g_view").set_value("Campaigns").run()
    assert not at.exception, at.exception

    def listed() -> list[str]:
        return [
            o.split(" · ")[0] + " · " + o.rsplit(" · ", 1)[1] for o in at.selectbox(key="g_campaign").options
        ]

    assert listed() == [f"Ana's launch · by {ANA}", f"Bo's launch · by {BO}"]  # everyone's, newest first
    assert _unescaped(next(c.value for c in at.caption if "per image" in c.value)).endswith(f" · by {ANA}")
    at.selectbox(key="gc_person").set_value(BO).run()
    assert listed() == [f"Bo's launch · by {BO}"]
    at.button_group(key="gc_scope").set_value("Mine").run()
    assert listed() == [f"Ana's launch · by {ANA}"]
