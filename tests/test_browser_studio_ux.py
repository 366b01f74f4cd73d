"""The Studio's layout, draft and small-print in a real browser: results in the first screen on a
desktop and a phone, the draft back after a reload or in a new tab, ratios a resolution forbids
unticked visibly, tiles that toggle on any click, the mode in the header, the light theme."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support import ARRIVAL_MS, ROOT, screenshot, wait_for
from tests.test_browser_studio import EDITOR, creative, generate, open_all_ratios, open_studio, set_prompt

pytestmark = pytest.mark.browser

DOCS = ROOT / "docs"


def _in_first_screen(locator, height: int) -> bool:
    box = locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 40) <= height


def _draft_saved(data_dir: Path, text: str, timeout_s: float = ARRIVAL_MS / 1000) -> None:
    """Wait until the studio's database holds a draft containing `text` (the save is server-side)."""
    db = data_dir / "studio.db"

    def saved() -> bool:
        if not db.exists():
            return False
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
            try:
                bodies = [r[0] for r in conn.execute("SELECT body FROM drafts")]
            except sqlite3.OperationalError:  # not migrated yet
                return False
        return any(text in json.dumps(json.loads(b), ensure_ascii=False) for b in bodies)

    try:
        wait_for(saved, timeout=timeout_s, step=0.2)
    except AssertionError:
        raise AssertionError(f"no draft with {text!r} was saved") from None


@pytest.mark.parametrize(
    ("name", "width", "height"), [("studio", 1440, 900), ("studio-phone", 390, 844)], ids=["desktop", "phone"]
)
def test_prompt_generate_and_live_results_share_the_first_screen(browser, studio_server, name, width, height):
    ctx = browser.new_context(viewport={"width": width, "height": height}, color_scheme="dark")
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    open_studio(page, studio_server)
    marker = f"first-{uuid.uuid4().hex[:6]}"
    set_prompt(page, f'A poster {marker} with the headline "SUMMER DROP"')
    generate(page).click()
    card = creative(page, marker)
    expect(card.locator("img[src*='/thumbs/']")).to_have_count(1, timeout=ARRIVAL_MS)
    page.evaluate("window.scrollTo(0, 0)")
    page.mouse.move(width - 1, height - 1)  # no tooltip from the last click in the picture
    page.evaluate("document.activeElement && document.activeElement.blur()")
    assert _in_first_screen(page.locator(EDITOR), height)
    assert _in_first_screen(generate(page), height)
    assert _in_first_screen(page.get_by_role("heading", name="Results"), height)
    # Once the page has settled (a rerun may still be drawing the notice), the card is in view.
    wait_for(lambda: _in_first_screen(card, height), timeout=30)
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / f"{name}.png"))  # the first screen, as the README shows it
    ctx.close()


def test_draft_comes_back_after_reload_and_in_a_new_tab(browser, studio_server):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1400})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    open_studio(page, studio_server)
    marker = f"draft{uuid.uuid4().hex[:6]}"
    page.locator(".st-key-resolution_picker").get_by_text("2K", exact=True).click()
    expect(page.locator(".st-key-resolution_sizes")).to_contain_text("1:1 ≈ 2048×2048")
    open_all_ratios(page)
    page.locator(".st-key-ratio_pick_16-9 label").click()
    expect(page.locator(".st-key-unpick_16x9")).to_be_visible()
    # Typed, never blurred: a pause in typing commits the prompt and the draft is saved.
    area = page.locator(EDITOR)
    area.click()
    area.press_sequentially(f"A kite {marker}")
    _draft_saved(studio_server.data_dir, marker)

    page.reload()
    expect(page.locator(EDITOR)).to_have_value(f"A kite {marker}")
    expect(page.locator(".st-key-unpick_16x9")).to_be_visible()
    expect(page.locator(".st-key-unpick_1x1")).to_be_visible()
    expect(page.locator(".st-key-resolution_sizes")).to_contain_text("16:9 ≈")
    expect(page.locator(".st-key-resolution_sizes")).to_contain_text("2048×2048")

    tab = ctx.new_page()  # same browser, same cookie
    open_studio(tab, studio_server)
    expect(tab.locator(EDITOR)).to_have_value(f"A kite {marker}")
    expect(tab.locator(".st-key-unpick_16x9")).to_be_visible()

    other = browser.new_context(viewport={"width": 1440, "height": 1400})  # another browser: its own draft
    stranger = other.new_page()
    open_studio(stranger, studio_server)
    expect(stranger.locator(EDITOR)).to_have_value("")
    other.close()
    ctx.close()


def test_campaign_rows_and_name_come_back_after_reload(browser, studio_server):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1600})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    open_studio(page, studio_server)
    marker = f"rows{uuid.uuid4().hex[:6]}"
    set_prompt(page, f"A {marker} poster of a {{{{product}}}}")
    panel = page.locator(".st-key-campaign_rows")
    panel.locator("input[type=file]").set_input_files(
        files=[{"name": "p.csv", "mimeType": "text/csv", "buffer": b"product\nMug\nBowl\n"}]
    )
    panel.get_by_role("button", name="Use these 2 rows").click()
    expect(page.locator(".st-key-campaign_preview")).to_contain_text(f"2. A {marker} poster of a Bowl")
    page.get_by_label("Campaign name").fill(f"Spring {marker}")
    page.get_by_label("Campaign name").press("Enter")
    expect(generate(page)).to_have_text("Generate 2 images · ≈$0.06")
    _draft_saved(studio_server.data_dir, f"Spring {marker}")  # the name's save, not the prompt's earlier one
    page.reload()
    expect(page.locator(".st-key-campaign_preview")).to_contain_text(f"2. A {marker} poster of a Bowl")
    expect(page.get_by_label("Campaign name")).to_have_value(f"Spring {marker}")
    ctx.close()


def test_a_ratio_the_new_resolution_forbids_is_unticked_with_a_note(page, studio_server):
    open_studio(page, studio_server)
    expect(page.locator(".st-key-unpick_1x1")).to_be_visible()  # 1:1 is picked by default
    open_all_ratios(page)
    page.locator(".st-key-ratio_pick_16-9 label").click()
    expect(page.locator(".st-key-unpick_16x9")).to_be_visible()
    page.locator(".st-key-resolution_picker").get_by_text("4K", exact=True).click()
    expect(page.locator(".st-key-ratio_note")).to_have_text("block Unticked 1:1: not available at 4K")
    expect(page.locator(".st-key-unpick_1x1")).to_have_count(0)
    expect(page.locator(".st-key-ratio_pick_1-1 input")).not_to_be_checked()
    expect(page.locator(".st-key-ratio_pick_1-1 input")).to_be_disabled()
    expect(generate(page)).to_have_text("Generate 1 image · ≈$0.12")  # only 16:9 is sent
    screenshot(page, "studio-unticked")
    page.locator(".st-key-resolution_picker").get_by_text("2K", exact=True).click()
    expect(page.locator(".st-key-ratio_note")).to_have_count(0)


def test_a_click_anywhere_on_a_tile_toggles_it(page, studio_server):
    open_studio(page, studio_server)
    open_all_ratios(page)
    tile = page.locator(".st-key-tile_21x9")
    box = page.locator(".st-key-ratio_pick_21-9 input")
    expect(box).not_to_be_checked()
    tile.locator("img").click()  # the shape preview, not the checkbox
    expect(box).to_be_checked()
    expect(page.locator(".st-key-unpick_21x9")).to_be_visible()
    tile.locator("[data-testid='stCaptionContainer']").click()  # the size caption
    expect(box).not_to_be_checked()
    expect(page.locator(".st-key-unpick_21x9")).to_have_count(0)


def test_resolution_hint_shows_the_picked_ratios(page, studio_server):
    open_studio(page, studio_server)
    open_all_ratios(page)
    page.locator(".st-key-ratio_pick_21-9 label").click()
    hint = page.locator(".st-key-resolution_sizes")
    expect(hint).to_contain_text("21:9 ≈")
    expect(hint).to_contain_text("1:1 ≈ 1024×1024")
    expect(hint).not_to_contain_text("9:16")


def test_rows_file_uploader_states_the_real_limit(page, studio_server):
    open_studio(page, studio_server)
    set_prompt(page, "A poster of a {{product}}")
    drop = page.locator(".st-key-rows_file")
    expect(drop).to_contain_text("5MB")
    expect(drop).not_to_contain_text("200MB")


def test_use_these_rows_asks_before_replacing_rows_in_the_table(page, studio_server):
    open_studio(page, studio_server)
    marker = f"ask{uuid.uuid4().hex[:6]}"
    set_prompt(page, f"A {marker} poster of a {{{{product}}}}")
    panel = page.locator(".st-key-campaign_rows")
    upload = panel.locator("input[type=file]")
    upload.set_input_files(
        files=[{"name": "a.csv", "mimeType": "text/csv", "buffer": b"product\nMug\nBowl\n"}]
    )
    panel.get_by_role("button", name="Use these 2 rows").click()  # an empty table: no question
    preview = page.locator(".st-key-campaign_preview")
    expect(preview).to_contain_text(f"2. A {marker} poster of a Bowl")
    upload.set_input_files(files=[{"name": "b.csv", "mimeType": "text/csv", "buffer": b"product\nVase\n"}])
    panel.get_by_role("button", name="Use these 1 rows").click()
    ask = page.locator(".st-key-rows_use_ask")
    expect(ask).to_contain_text("The table already has 2 typed rows")
    expect(preview).to_contain_text(f"2. A {marker} poster of a Bowl")  # nothing replaced yet
    ask.get_by_role("button", name="Append 1").click()
    expect(preview).to_contain_text(f"3. A {marker} poster of a Vase")
    expect(preview).to_contain_text(f"1. A {marker} poster of a Mug")
    expect(ask).to_have_count(0)
    panel.get_by_role("button", name="Use these 1 rows").click()
    page.locator(".st-key-rows_use_ask").get_by_role("button", name="Replace with 1").click()
    expect(preview).to_contain_text(f"1. A {marker} poster of a Vase")
    expect(preview).not_to_contain_text("Mug")


def test_mode_shows_in_the_header_on_a_phone_and_spend_is_marked_simulated(browser, studio_server):
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    open_studio(page, studio_server)
    badge = page.locator(".st-key-mode_header").get_by_text("Simulator")
    expect(badge).to_be_visible()
    assert _in_first_screen(badge, 844)
    expect(page.locator("[data-testid='stSidebar'] [data-testid='stSidebarContent']")).not_to_be_in_viewport()
    marker = f"sim-{uuid.uuid4().hex[:6]}"
    set_prompt(page, f"A lamp {marker}")
    generate(page).click()
    expect(creative(page, marker).locator("img[src*='/thumbs/']")).to_have_count(1, timeout=ARRIVAL_MS)
    page.goto(studio_server.url + "/gallery")
    expect(page.locator(".st-key-mode_header").get_by_text("Simulator")).to_be_visible()
    expect(page.get_by_text("Estimated spend:")).to_contain_text("simulated")
    ctx.close()


@pytest.mark.parametrize(
    ("scheme", "background"), [("light", "rgb(255, 255, 255)"), ("dark", "rgb(22, 22, 26)")]
)
def test_theme_follows_the_system_preference(browser, studio_server, scheme, background):
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme=scheme)
    page = ctx.new_page()
    open_studio(page, studio_server)
    expect(page.locator("[data-testid='stApp']")).to_have_css("background-color", background)
    ctx.close()


def test_settings_says_saved_after_saving(page, studio_server):
    page.goto(studio_server.url + "/settings")
    page.get_by_role("button", name="Save prices and limits").click()
    expect(page.locator(".st-key-pricing_saved")).to_contain_text("Saved prices and limits.")
