"""The use cases the widgets call, without a page (real SQLite, real files, a real intake)."""

from __future__ import annotations

import zipfile
from decimal import Decimal

import pytest

from studio import routes
from studio.blob_keys import export_key
from studio.campaigns import CampaignPlan, PromptPlan, plan_generation
from studio.images import ImageKeeper
from studio.intake import Intake
from studio.models import TaskRequest
from studio.output_storage import storage_value
from studio.pricing import Pricing, build
from studio.store import GalleryQuery, Store
from studio.trash import Trash
from studio.usecases import (
    add_to_collection,
    apply_settings,
    delete_images,
    export_images,
    generate,
    launch_campaign,
    quote,
    send_again,
    set_output_storage,
    undo_delete,
)
from tests.test_gallery_page import seed


@pytest.fixture
def stocked(tmp_path):
    store = Store(tmp_path / "studio.db")
    keeper = ImageKeeper(tmp_path / "images")
    return store, keeper, seed(store, keeper)


def test_one_planner_plans_a_campaign_for_variables_and_one_task_per_ratio_otherwise():
    single = plan_generation("a kite", [], ["1:1", "16:9"], "1K", "gpt-image-2", quality="low")
    assert isinstance(single, PromptPlan) and single.images == 2 and single.quality == "low"
    rows = [{"item": "kite"}, {"item": "boat"}, {"item": ""}]
    camp = plan_generation("a {{item}}", rows, ["1:1", "16:9"], "1K", "gpt-image-2", quality="low")
    assert isinstance(camp, CampaignPlan) and camp.images == 4
    assert camp.quality is None  # campaigns go on the default route, priced there
    pricing = Pricing()
    assert quote(camp, pricing).cost == pricing.estimate(4, "1K")
    assert quote(single, pricing).unit == pricing.unit("1K", "low")


def test_settings_are_saved_and_pushed_to_every_worker_and_reset_goes_back(tmp_path):
    store = Store(tmp_path / "studio.db")
    tracker = Intake(store)
    elsewhere = Intake(Store(tmp_path / "studio.db"))  # another process on the same database
    defaults = Pricing()
    new, problems = build({"price_1K": "0.5", "max_active": 3}, defaults)
    assert problems == []
    now = apply_settings(store, tracker, new, defaults=defaults)
    assert now.prices["1K"] == Decimal("0.5") and now.from_user
    assert tracker.health()["max_active"] == 3 == elsewhere.health()["max_active"]
    back = apply_settings(store, tracker, None, defaults=defaults)
    assert back == defaults and tracker.health()["max_active"] == defaults.max_active
    set_output_storage(store, True)
    assert storage_value(store) == "persistent"
    set_output_storage(store, False)
    assert storage_value(store) is None


def test_delete_then_undo_restores_and_a_second_undo_is_too_late(stocked):
    store, keeper, ids = stocked
    trash = Trash(store, keeper, window_s=600)
    deletion = delete_images(trash, ids[:2])
    assert deletion.output_ids == tuple(ids[:2])
    assert store.gallery(GalleryQuery())[1] == len(ids) - 2
    assert undo_delete(trash, deletion.token) == 2
    assert undo_delete(trash, deletion.token) == 0
    assert store.gallery(GalleryQuery())[1] == len(ids)


def test_an_export_zips_the_originals_and_names_its_route(stocked):
    store, keeper, ids = stocked
    export = export_images(store, keeper.blobs, ids[:2])
    assert export.images == 2 and export.route == routes.export(export.token, export.download_name)
    with zipfile.ZipFile(keeper.blobs.open(export_key(export.token))) as zf:
        names = zf.namelist()
    assert "manifest.csv" in names and sum(n.endswith(".png") for n in names) == 2


def test_collections_take_images_once_and_refuse_a_blank_name(stocked):
    store, _, ids = stocked
    cid = add_to_collection(store, " Keep ", ids[:2])
    assert add_to_collection(store, "Keep", ids[1:3]) == cid
    assert store.gallery(GalleryQuery(collection_id=cid))[1] == 3
    with pytest.raises(ValueError):
        add_to_collection(store, "  ", ids)


def test_sending_again_a_deleted_task_says_so_and_sends_nothing(tmp_path):
    store = Store(tmp_path / "studio.db")
    tracker = Intake(store)

    def never(names):
        raise AssertionError("nothing to sign")

    said = send_again(store, tracker, Pricing(), 999, click_token="click-gone-0001", sign=never)
    assert said == "This task is gone (deleted); nothing was sent."
    assert store.recent(10) == []
    # A stored recipe goes again as a new creative, priced at the recipe's quality.
    [sid] = tracker.submit(
        [TaskRequest("a kite", "1:1", "1K", quality="low")], click_token="click-first-0002"
    )
    ids = send_again(
        store, tracker, Pricing(), sid, click_token="click-again-0003", sign=never, quality="high"
    )
    assert isinstance(ids, list) and len(ids) == 1
    again = store.submission(ids[0])
    assert (
        again is not None
        and again.quality == "high"
        and again.creative_id != store.submission(sid).creative_id
    )
    assert send_again(store, tracker, Pricing(), sid, click_token="click-again-0003", sign=never) == ids


def test_the_use_cases_record_who_made_what_and_local_without_a_login(tmp_path):
    store = Store(tmp_path / "studio.db")
    intake = Intake(store)
    pricing = Pricing()
    ana, bo = "ana@example.com", "bo@example.com"

    def never(names):
        raise AssertionError("nothing to sign")

    single = quote(plan_generation("a kite", [], ["1:1"], "1K", "gpt-image-2"), pricing)
    rows = [{"item": "kite"}, {"item": "boat"}]
    camp = plan_generation("a {{item}}", rows, ["1:1"], "1K", "gpt-image-2")
    assert isinstance(camp, CampaignPlan)
    local = generate(intake, single, model="gpt-image-2", click_token="click-local-0001")
    by_ana = generate(intake, single, model="gpt-image-2", click_token="click-ana-0002", author=ana)
    launched = generate(
        intake, quote(camp, pricing), model="gpt-image-2", click_token="click-camp-0003", author=bo
    )
    cid, cells = launch_campaign(
        intake,
        camp,
        name="Second",
        pricing=pricing,
        model="gpt-image-2",
        click_token="click-camp-0004",
        author=ana,
    )
    again = send_again(store, intake, pricing, by_ana.submission_ids[0], click_token="click-again-0005",
                       sign=never, author=bo)  # fmt: skip
    assert isinstance(again, list)

    def author(sid: int) -> str:
        sub = store.submission(sid)
        assert sub is not None
        return sub.author

    assert [author(s) for s in local.submission_ids] == ["local"]  # no login: everything is "local"
    assert [author(s) for s in by_ana.submission_ids] == [ana]
    assert {author(s) for s in launched.submission_ids} == {bo} and len(launched.submission_ids) == 2
    assert launched.campaign_id is not None and store.campaign(launched.campaign_id).author == bo
    assert store.campaign(cid).author == ana and {author(s) for s in cells} == {ana}
    assert [author(s) for s in again] == [bo]  # who sends it again, not who first did
    pending = {line.key: line.pending_images for line in store.spend_lines("author")}
    assert pending == {"local": 1, ana: 3, bo: 3}
    shared = add_to_collection(store, "Team picks", [], author=ana)
    assert add_to_collection(store, "Team picks", [], author=bo) == shared
    assert store.collection_author(shared) == ana
    assert store.collection_author(add_to_collection(store, "Mine", [])) == "local"
