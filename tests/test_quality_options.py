"""Background, Draft/Standard/Final quality (HiAPI's `ext` route) and persistent storage.

Wire shape and shared rules (unit), the simulator's answers (real HTTP), the
store and Make final (real SQLite and tracker), alpha kept through the keeper
and kits, and the Studio and Settings pages through AppTest.
"""

from __future__ import annotations

import io
from decimal import Decimal
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image

from components.actions import send_again
from studio import services as core
from studio.images import ImageKeeper
from studio.kit import flatten, plan_kit, render_entry
from studio.models import TaskRequest
from studio.output_storage import set_persistent, storage_value
from studio.pricing import DEFAULT_PRICES, Pricing, defaults_from
from studio.ratios import RATIO_NAMES, RESOLUTIONS, combination_problem
from studio.simulator import Simulator
from studio.simulator.render import render_png
from studio.store import SCHEMA_VERSION, Store
from studio.validation import first_problem_by_field, validate_request
from tests.support import sql_rows
from tests.test_kit import item
from tests.test_studio_page import _texts, app  # noqa: F401 (the AppTest fixture)
from tests.test_tracker import KEY, all_terminal, make_tracker, wait_for

# ------------------------------------------------------------------ wire shape


def test_a_quality_sends_on_the_ext_route_with_image_urls():
    body = TaskRequest("poster", "3:1", "4K", quality="low", references=("https://x.test/a.png",)).to_body()
    assert body["route"] == "ext"
    assert body["input"]["quality"] == "low"
    assert body["input"]["image_urls"] == ["https://x.test/a.png"]
    assert "input_urls" not in body["input"] and "background" not in body["input"]


def test_the_default_route_omits_route_quality_background_and_storage():
    body = TaskRequest("poster", "1:1", "1K").to_body()
    assert set(body) == {"model", "input"}
    assert set(body["input"]) == {"prompt", "aspect_ratio", "resolution"}


def test_background_and_storage_are_sent_only_when_set():
    body = TaskRequest("logo", "1:1", "1K", background="transparent", storage="persistent").to_body()
    assert body["input"]["background"] == "transparent"
    assert body["storage"] == "persistent" and "storage" not in body["input"]


# ------------------------------------------------------------------ shared rules


def test_transparent_at_2k_is_one_sentence_naming_background_and_the_fix():
    problems = validate_request("logo", "1:1", "2K", background="transparent")
    assert [p.field for p in problems] == ["background"]
    assert "1K" in problems[0].message and "Auto" in problems[0].message


def test_quality_missing_on_ext_names_quality():
    problems = first_problem_by_field(validate_request("logo", "1:1", "1K", route="ext"))
    assert set(problems) == {"quality"}
    assert "Draft, Standard or Final" in problems["quality"]
    unknown = first_problem_by_field(validate_request("logo", "1:1", "1K", route="ext", quality="ultra"))
    assert "'ultra'" in unknown["quality"]


def test_ext_refuses_a_background_and_more_than_six_references():
    assert "background" in first_problem_by_field(
        validate_request("logo", "1:1", "1K", route="ext", quality="high", background="opaque")
    )
    refs = [f"https://x.test/{i}.png" for i in range(7)]
    problems = first_problem_by_field(
        validate_request("x", "1:1", "1K", route="ext", quality="low", image_to_image=True, references=refs)
    )
    assert "image_urls" in problems["references"]


def test_ext_takes_every_ratio_at_every_resolution():
    refused = [(r, res) for r in RATIO_NAMES for res in RESOLUTIONS if combination_problem(r, res)]
    assert ("3:1", "4K") in refused and ("auto", "2K") in refused  # the default route has limits
    for ratio, res in refused:
        assert combination_problem(ratio, res, route="ext") is None
        assert validate_request("p", ratio, res, route="ext", quality="medium") == []


# ------------------------------------------------------------------ prices


def test_each_quality_has_its_own_price_and_the_default_route_keeps_its_defaults():
    p = Pricing()
    assert p.unit("1K") == Decimal("0.03") and p.unit("4K") == Decimal("0.12")
    assert p.unit("1K", "low") < p.unit("1K", "medium") < p.unit("1K", "high")
    env, problems = defaults_from({"STUDIO_PRICE_1K_LOW": "0.005", "STUDIO_PRICE_4K_HIGH": "1.5"})
    assert problems == [] and env.from_user
    assert env.unit("1K", "low") == Decimal("0.005") and env.unit("4K", "high") == Decimal("1.5")
    assert env.unit("1K") == DEFAULT_PRICES["1K"]
    assert env.estimate(3, "4K", "high") == Decimal("4.5")
    _, bad = defaults_from({"STUDIO_PRICE_2K_MEDIUM": "cheap"})
    assert "2K Standard" in bad[0].message


# ------------------------------------------------------------------ simulator


@pytest.fixture
def client():
    sim = Simulator(api_keys=[KEY], min_duration=0.05, max_duration=0.1, seed=3).start()
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10) as c:
        yield c
    sim.stop()


def _body(res="1K", ratio="1:1", route=None, **inp):
    out = {
        "model": "gpt-image-2",
        "input": {"prompt": 'logo "ACME"', "aspect_ratio": ratio, "resolution": res},
    }
    out["input"].update(inp)
    if route:
        out["route"] = route
    return out


def _finish(client, payload) -> bytes:
    r = client.post("/v1/tasks", json=payload)
    assert r.status_code == 200, r.text
    task_id = r.json()["data"]["taskId"]
    assert wait_for(lambda: client.get(f"/v1/tasks/{task_id}").json()["data"]["status"] == "success", 10)
    url = client.get(f"/v1/tasks/{task_id}").json()["data"]["output"][0]["url"]
    return httpx.get(url, timeout=10).content


def test_simulator_ext_needs_a_quality_and_refuses_a_background(client):
    missing = client.post("/v1/tasks", json=_body(route="ext"))
    assert missing.status_code == 400 and missing.json()["error_code"] == "INVALID_REQUEST"
    assert "Quality" in missing.json()["message"]
    bg = client.post("/v1/tasks", json=_body(route="ext", quality="low", background="transparent"))
    assert bg.status_code == 400 and "Background" in bg.json()["message"]
    at_2k = client.post("/v1/tasks", json=_body(res="2K", ratio="16:9", background="transparent"))
    assert at_2k.status_code == 400 and "1K" in at_2k.json()["message"]


def test_simulator_ext_renders_a_ratio_the_default_route_refuses(client):
    assert client.post("/v1/tasks", json=_body(res="2K", ratio="3:1")).status_code == 400
    png = _finish(client, _body(res="2K", ratio="3:1", route="ext", quality="low"))
    with Image.open(io.BytesIO(png)) as im:
        assert im.width > 2 * im.height


def test_simulator_draws_real_alpha_for_a_transparent_background(client):
    png = _finish(client, _body(background="transparent"))
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "RGBA"
        alpha = im.getchannel("A")
        lo, hi = alpha.getextrema()
        assert lo == 0 and hi == 255  # the backdrop is gone, the panel and shapes stay
    opaque = render_png('logo "ACME"', "1:1", "1K")
    with Image.open(io.BytesIO(opaque)) as im:
        assert im.mode == "RGB"


# ------------------------------------------------------------------ store, Make final


def test_the_store_keeps_the_options_and_resends_carry_them(tmp_path):
    store = Store(tmp_path / "s.db")
    assert store.schema_version() == SCHEMA_VERSION
    sid = store.add_submission(
        TaskRequest("p", "3:1", "4K", quality="low", storage="persistent"),
        idempotency_key="k1",
        creative_id="c",
    )
    sub = store.submission(sid)
    assert (sub.quality, sub.storage, sub.background) == ("low", "persistent", None)
    assert sub.request.to_body()["route"] == "ext" and sub.request.storage == "persistent"


def test_make_final_resends_a_draft_at_high_quality_priced_as_final(tmp_path):
    sim = Simulator(api_keys=[KEY], min_duration=0.05, max_duration=0.1, seed=4).start()
    tracker, store = make_tracker(sim, tmp_path)
    tracker.start()
    try:
        [draft_id] = tracker.submit(
            [TaskRequest('tile "SALE"', "3:1", "4K", quality="low")], click_token="draft-click-1"
        )
        services = SimpleNamespace(
            store=store, tracker=tracker, intake=tracker, pricing=Pricing(), read_pricing=Pricing
        )
        done: dict = {}
        first = send_again(services, draft_id, "final-click-1", done, quality="high")
        again = send_again(services, draft_id, "final-click-1", done, quality="high")  # a double click
        assert first == again and len(first) == 1
        final = store.submission(first[0])
        assert final.quality == "high" and (final.aspect_ratio, final.resolution) == ("3:1", "4K")
        assert wait_for(all_terminal(store))
        assert store.submission(first[0]).state == "success"
        unit = sql_rows(store, "SELECT unit_micros FROM spend WHERE submission_id=?", (first[0],))
        assert unit[0][0] == int(Pricing().unit("4K", "high") * 1_000_000)
    finally:
        tracker.stop()
        sim.stop()


# ------------------------------------------------------------------ alpha kept


def _rgba_png() -> bytes:
    im = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    im.paste((200, 30, 30, 255), (16, 12, 48, 36))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_the_keeper_keeps_alpha_in_the_original_and_the_thumbnail(tmp_path):
    with ImageKeeper(tmp_path / "images") as keeper:
        kept = keeper.keep_bytes(_rgba_png(), {"prompt": "logo"})
    with Image.open(kept.path) as im:
        assert im.mode == "RGBA" and im.getpixel((0, 0))[3] == 0
    with Image.open(kept.thumb_path) as th:
        assert th.mode == "RGBA" and th.getpixel((0, 0))[3] == 0


def test_kit_files_keep_alpha_and_flattening_puts_it_on_white():
    src = Image.open(io.BytesIO(_rgba_png()))
    entry = plan_kit([item("4:3", size=src.size)], ["square"])[0]
    out = render_entry(entry, src)
    assert out.mode == "RGBA" and out.getpixel((0, 0))[3] == 0
    flat = flatten(out)
    assert flat.mode == "RGB" and flat.getpixel((0, 0)) == (255, 255, 255)


# ------------------------------------------------------------------ pages


def _pick(at, label: str, value: str):
    control = next(c for c in at.button_group if c.label == label)
    return control.set_value(value).run()


def test_picking_draft_prices_the_button_and_unlocks_ratios(app):  # noqa: F811
    app.text_area(key="prompt_editor").input('banner "SALE"').run()
    app.get("button_group")[0].set_value("4K").run()  # the resolution picker
    assert next(c for c in app.checkbox if c.label == "3:1").disabled  # the default route refuses it
    _pick(app, "Quality", "low")
    captions = " ".join(c.value for c in app.caption)
    assert "Draft — quick and cheap, for trying ideas" in captions
    assert "Background: not on Draft" in captions
    three = next(c for c in app.checkbox if c.label == "3:1")
    assert three.disabled is False
    three.check().run()
    label = next(b.label for b in app.button if b.label.startswith("Generate"))
    assert label == f"Generate 1 image · ≈{Pricing().money(Pricing().unit('4K', 'low'))}"
    from tests.conftest import generate_button

    generate_button(app).click().run()
    [sub] = core.current().store.recent()
    assert (sub.aspect_ratio, sub.resolution, sub.quality) == ("3:1", "4K", "low")


def test_transparent_at_2k_is_refused_on_click_and_the_draft_is_kept(app):  # noqa: F811
    app.text_area(key="prompt_editor").input('logo "ACME"').run()
    _pick(app, "Background", "transparent")
    app.get("button_group")[0].set_value("2K").run()  # the resolution picker
    from tests.conftest import generate_button

    generate_button(app).click().run()
    assert "A transparent background works only at 1K" in _texts(app)
    assert core.current().store.recent() == []
    assert app.text_area(key="prompt_editor").value == 'logo "ACME"'
    assert next(c for c in app.button_group if c.label == "Background").value == "transparent"


def test_persistent_storage_is_off_by_default_and_says_it_is_billed(tmp_path):
    store = Store(tmp_path / "s.db")
    assert storage_value(store) is None
    set_persistent(store, True)
    assert storage_value(store) == "persistent"
    set_persistent(store, False)
    assert storage_value(store) is None
