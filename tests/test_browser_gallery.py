"""The gallery in a real browser, across a server restart."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import uuid
import zipfile

import httpx
import pytest
from playwright.sync_api import expect

from studio.images import read_recipe
from tests.support import ARRIVAL_MS, StudioServer, after_rerun, screenshot
from tests.test_browser_studio import EDITOR, generate, open_studio, set_prompt, set_ratio

pytestmark = pytest.mark.browser


def test_generate_keep_restart_reuse_and_export(browser, tmp_path):
    server = StudioServer(tmp_path / "data").start()
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 2000})
        page.set_default_timeout(60_000)
        open_studio(page, server)
        marker = f"gallery{uuid.uuid4().hex[:6]}"
        prompt = f'A neon sign {marker} that reads "OPEN LATE"'
        set_prompt(page, prompt)
        set_ratio(page, "1:1", False)
        set_ratio(page, "21:9", True)
        after_rerun(page, page.locator(".st-key-resolution_picker").get_by_text("2K", exact=True).click)
        generate(page).click()
        expect(page.locator("[class*='st-key-creative_'] img[src*='/thumbs/']")).to_have_count(
            1, timeout=20_000
        )
        page.get_by_role("link", name="Gallery").click()
        cards = page.locator("[class*='st-key-card_']")
        expect(cards).to_have_count(1)
        expect(cards.first).to_contain_text(marker)
        page.reload()
        expect(page.locator("[class*='st-key-card_']")).to_have_count(1)
        page.close()
    finally:
        server.stop()

    # A new server process on the same data folder still has everything.
    server = StudioServer(tmp_path / "data").start()
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 2000})
        page.set_default_timeout(60_000)
        page.goto(server.url + "/gallery")
        card = page.locator("[class*='st-key-card_']").filter(has_text=marker)
        expect(card).to_have_count(1)
        # Search finds a word of the prompt; a favourite filter narrows.
        search = page.get_by_label("Search prompts")
        search.fill("nothing-like-this")
        expect(page.get_by_text("0 images")).to_be_visible()
        search.fill(marker)
        expect(page.get_by_text("1 image", exact=True)).to_be_visible()
        img = card.locator("img[src*='/thumbs/']")
        expect(img).to_have_count(1)
        thumb_url = img.get_attribute("src")
        head = httpx.get(thumb_url)
        assert head.status_code == 200 and "immutable" in head.headers["cache-control"]

        card.get_by_role("button", name="Open", exact=True).click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(dialog.get_by_text(prompt)).to_be_visible()  # shown literally
        screenshot(page, "gallery-lightbox")
        dialog.get_by_text("Favourite").click()
        page.keyboard.press("Escape")
        page.get_by_text("Favourites only").click()
        expect(page.locator("[class*='st-key-card_']")).to_have_count(1)

        # Select → zip with a manifest.
        card = page.locator("[class*='st-key-card_']").filter(has_text=marker)
        card.get_by_text("Select").click()
        page.get_by_role("button", name="Prepare zip").click()
        link = page.get_by_role("link", name="Download zip")
        expect(link).to_be_visible()
        data = httpx.get(link.get_attribute("href")).content
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            assert [m["prompt"] for m in manifest] == [prompt]
            png = zf.read(manifest[0]["file"])
            assert manifest[0]["file"].endswith("_21x9_2K_" + manifest[0]["file"].rsplit("_", 1)[1])
        assert read_recipe(png)["aspect_ratio"] == "21:9"
        screenshot(page, "gallery-selected")

        # Reuse in Studio restores prompt and settings.
        card.get_by_role("button", name="Open", exact=True).click()
        page.get_by_role("dialog").get_by_role("button", name="Reuse in Studio").click()
        expect(page.locator(EDITOR)).to_have_value(prompt)
        expect(page.locator(".st-key-ratio_pick_21-9 input")).to_be_checked()
        expect(page.locator(".st-key-ratio_pick_1-1 input")).not_to_be_checked()
        expect(page.locator(".st-key-resolution_picker button[aria-checked=true], "
                            ".st-key-resolution_picker [aria-pressed=true], "
                            ".st-key-resolution_picker [kind=segmented_controlActive]")).to_contain_text("2K")  # fmt: skip

        # An exported PNG dropped on the gallery restores its recipe into the Studio.
        set_prompt(page, "scratch")
        page.get_by_role("link", name="Gallery").click()
        page.get_by_text("Restore a recipe from an exported image").click()
        page.locator("input[type=file]").set_input_files(
            files=[{"name": "export.png", "mimeType": "image/png", "buffer": png}]
        )
        page.get_by_role("button", name="Load into Studio").click()
        expect(page.locator(EDITOR)).to_have_value(prompt)
    finally:
        server.stop()


# ------------------------------------------------------------------ cards, pages, lightbox, queue actions

LONG = "A very long prompt " + "with many careful words about light and colour " * 30


def seed_folder(data, n: int = 30) -> None:
    """`n` kept images (every 5th a tall 9:16 one) in a data folder, before the server starts."""
    from PIL import Image

    from studio.images import ImageKeeper
    from studio.models import Task, TaskRequest
    from studio.store import Store

    store, keeper = Store(data / "studio.db"), ImageKeeper(data / "images", thumb_size=512)
    for i in range(n):
        ratio, size = ("9:16", (576, 1024)) if i % 5 == 0 else ("16:9", (640, 360))
        prompt = (LONG if i == n - 1 else f"Seeded image number {i:02d}") + f" #{i:02d}"
        sid = store.add_submission(
            TaskRequest(prompt, ratio, "1K"), idempotency_key=f"s{i}", creative_id=f"c{i}"
        )
        store.mark_created(sid, f"tk-s{i}")
        store.record_task(Task.parse({"taskId": f"tk-s{i}", "status": "success",
                                      "output": [{"url": f"https://files.example/{i}.png", "type": "image"}]}))  # fmt: skip
        buf = io.BytesIO()
        Image.new("RGB", size, (8 * i, 120, 200 - 5 * i)).save(buf, "PNG")
        kept = keeper.keep_bytes(
            buf.getvalue(), {"prompt": prompt, "aspect_ratio": ratio, "resolution": "1K"}
        )
        [o] = store.outputs_for([sid])[sid]
        store.output_kept(o.id, sha256=kept.sha256, width=kept.width, height=kept.height, nbytes=kept.bytes)  # fmt: skip
    keeper.close()
    store.close()


@pytest.fixture(scope="module")
def seeded_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("seeded")
    seed_folder(data)
    server = StudioServer(data).start()
    yield server
    server.stop()


CARDS = "[class*='st-key-card_']"
SCROLLED = """() => Math.max(window.scrollY, ...[...document.querySelectorAll("[data-testid=stMain], [data-testid=stAppViewContainer]")].map(e => e.scrollTop))"""


def test_pages_selection_delete_undo_zip_name_and_clear_filters(browser, seeded_server):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(60_000)
    try:
        page.goto(seeded_server.url + "/gallery")
        page.get_by_role("button", name="Show in pages").click()  # the paged view, 24 a page
        cards = page.locator(CARDS)
        expect(cards).to_have_count(24)
        # One line of prompt per card, cut with an ellipsis; the newest (the long one) first.
        text = cards.first.locator(".g-prompt")
        expect(text).to_contain_text("A very long prompt")
        page.wait_for_function(
            """e => { const lh = parseFloat(getComputedStyle(e).lineHeight) || 24;
                      return e.clientHeight < 1.6 * lh && e.scrollWidth > e.clientWidth
                             && getComputedStyle(e).textOverflow === "ellipsis"; }""",
            arg=text.element_handle(),
        )
        # Page 2 opens at the top, not where the pager was.
        page.get_by_role("button", name="Next page", exact=True).scroll_into_view_if_needed()
        assert page.evaluate(SCROLLED) > 300
        page.get_by_role("button", name="Next page", exact=True).click()
        expect(cards).to_have_count(6)
        page.wait_for_function(f"() => ({SCROLLED})() === 0")
        screenshot(page, "gallery-page-2-top")
        # A selected card is outlined; the others are not.
        first, second, third = cards.nth(0), cards.nth(1), cards.nth(2)
        first.get_by_text("Select").click()
        second.get_by_text("Select").click()
        outline = "e => getComputedStyle(e).outlineStyle"
        expect(page.get_by_text("2 selected")).to_be_visible()
        assert first.evaluate(outline) == "solid" and second.evaluate(outline) == "solid"
        assert third.evaluate(outline) == "none"
        screenshot(page, "gallery-selected-outline")
        # The zip is named by what is in it and when.
        page.get_by_role("button", name="Prepare zip").click()
        href = page.get_by_role("link", name="Download zip").get_attribute("href")
        answer = httpx.get(href)
        assert answer.status_code == 200
        assert re.fullmatch(
            r'attachment; filename="studio-images-\d{4}-\d\d-\d\d-2-images\.zip"',
            answer.headers["content-disposition"],
        ), answer.headers["content-disposition"]
        # Delete shows an Undo bar; Undo brings both back.
        page.locator(".st-key-bulk_bar").get_by_role("button", name="Delete").click()
        page.get_by_role("button", name="Yes, delete them").click()
        bar = page.locator(".st-key-undo_bar")
        expect(bar).to_contain_text("Deleted 2 images")
        expect(cards).to_have_count(4)
        screenshot(page, "gallery-undo-bar")
        bar.get_by_role("button", name="Undo").click()
        expect(cards).to_have_count(6)
        expect(bar).to_have_count(0)
        # Clear filters puts everything back.
        page.get_by_label("Search prompts").fill("nothing-like-this")
        expect(page.get_by_text("0 images")).to_be_visible()
        page.get_by_role("button", name="Clear filters").click()
        expect(page.get_by_text("30 images")).to_be_visible()
        expect(page.get_by_label("Search prompts")).to_have_value("")
    finally:
        page.close()


def _box(locator) -> dict:
    return locator.evaluate(
        "e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, r: r.right, b: r.bottom}; }"
    )


@pytest.mark.parametrize("viewport", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_lightbox_fits_the_window_steps_with_arrows_and_closes_on_escape(browser, seeded_server, viewport):
    w, h = viewport
    page = browser.new_page(viewport={"width": w, "height": h})
    page.set_default_timeout(60_000)
    try:
        page.goto(seeded_server.url + "/gallery")
        cards = page.locator(CARDS)
        # By keyboard to the fifth card (#25, a 9:16 image: taller than the window at its width):
        # on a phone it is below the screen, so not drawn until the focus gets there.
        cards.first.locator(".g-thumb").focus()
        for _ in range(4):
            page.keyboard.press("ArrowRight")
        assert "#25" in page.evaluate(ACTIVE_CARD)
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        img = dialog.locator(".st-key-lb_image img")
        page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle())
        box = _box(img)
        assert box["y"] >= 0 and box["b"] <= h and box["x"] >= 0 and box["r"] <= w, box
        code = _box(dialog.locator("[data-testid=stCode]"))
        if w > 1000:
            assert code["x"] >= box["r"] - 1, (code, box)  # details beside the image
        else:
            assert code["y"] >= box["b"] - 1, (code, box)  # details below it
        screenshot(page, f"lightbox-{'desktop' if w > 1000 else 'phone'}")
        expect(dialog.get_by_text("5 of 30")).to_be_visible()  # newest first: #29 … #25
        page.keyboard.press("ArrowRight")
        expect(dialog.get_by_text("6 of 30")).to_be_visible()
        expect(dialog.locator("[data-testid=stCode]")).to_contain_text("#24")
        page.keyboard.press("ArrowLeft")
        expect(dialog.get_by_text("5 of 30")).to_be_visible()
        page.keyboard.press("ArrowLeft")
        expect(dialog.get_by_text("4 of 30")).to_be_visible()
        expect(dialog.locator("[data-testid=stCode]")).to_contain_text("#26")
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0)
        page.get_by_text("Favourites only").click()  # a full rerun: the lightbox stays closed
        expect(page.get_by_text("0 images")).to_be_visible()
        expect(page.get_by_role("dialog")).to_have_count(0)
    finally:
        page.close()


GRID = ".studio-gallery"
ACTIVE_CARD = "() => document.activeElement.closest('.g-card')?.textContent || ''"


def no_duplicate_cards(page) -> None:
    keys = page.locator(CARDS).evaluate_all(
        "els => els.map(e => [...e.classList].find(c => c.startsWith('st-key-card_')))"
    )
    assert len(keys) == len(set(keys)), keys


def test_the_grid_scrolls_through_every_item_drawing_only_rows_in_view_and_steps_with_the_keyboard(
    browser, seeded_server
):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(60_000)
    try:
        page.goto(seeded_server.url + "/gallery")
        cards = page.locator(CARDS)
        expect(cards.first).to_be_visible()
        expect(page.locator(GRID)).to_have_attribute("data-total", "30")
        assert 4 <= cards.count() < 30  # windowed: only the rows near the viewport are drawn
        screenshot(page, "gallery-scroll-desktop")
        cards.first.locator(".g-thumb").focus()
        page.keyboard.press("ArrowDown")  # four to a row, newest first: #29 #28 #27 #26 / #25 …
        assert "#25" in page.evaluate(ACTIVE_CARD)
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("5 of 30")).to_be_visible()
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0)
        # Down to the last row: rows come into the DOM as they come into view, and go.
        page.locator(CARDS).filter(has_text="#25").locator(".g-thumb").focus()
        for _ in range(6):
            page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => ({ACTIVE_CARD})().includes('#00')")
        expect(cards.filter(has_text="#29")).to_have_count(0)  # the first row left the DOM
        assert cards.count() < 30
        no_duplicate_cards(page)
        screenshot(page, "gallery-scroll-end")
    finally:
        page.close()


def test_card_clicks_come_back_as_events(browser, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    seed_folder(data, 6)
    server = StudioServer(data).start()
    page = browser.new_page(viewport={"width": 1440, "height": 1200})
    page.set_default_timeout(60_000)
    try:
        page.goto(server.url + "/gallery")
        card = page.locator(CARDS).filter(has_text="#03")
        expect(card).to_have_count(1)
        [(output_id,)] = (
            sqlite3.connect(data / "studio.db")
            .execute(
                "SELECT o.id FROM outputs o JOIN submissions s ON s.id = o.submission_id WHERE s.prompt LIKE '%#03'"
            )
            .fetchall()
        )
        # Favourite: the store, then the card (redrawn by the push channel).
        card.get_by_role("button", name="☆").click()
        expect(card.get_by_role("button", name="★")).to_be_visible(timeout=ARRIVAL_MS)
        favs = sqlite3.connect(data / "studio.db").execute("SELECT output_id FROM favourites").fetchall()
        assert favs == [(output_id,)]
        # Select: outlined at once, and the bulk bar counts it; Clear selection clears both.
        card.get_by_text("Select").click()
        expect(page.get_by_text("1 selected")).to_be_visible()
        expect(card).to_have_css("outline-style", "solid")
        page.get_by_role("button", name="Clear selection").click()
        expect(page.get_by_text("1 selected")).to_have_count(0)
        expect(card.locator("input[type=checkbox]")).not_to_be_checked()
        expect(card).to_have_css("outline-style", "none")
        # Download: a plain link to the original, named by its recipe.
        href = card.get_by_role("link", name="Download").get_attribute("href")
        answer = httpx.get(href)
        assert answer.headers["content-type"] == "image/png"
        assert "attachment" in answer.headers["content-disposition"] and "_16x9_1K_" in href
        # Open: the lightbox on this image.
        card.get_by_role("button", name="Open", exact=True).click()
        dialog = page.get_by_role("dialog")
        expect(dialog.locator("[data-testid=stCode]")).to_contain_text("#03")
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0)
        # Use as reference: the image joins the Studio's references (kept by the server per session).
        card.get_by_role("button", name="Use as reference").click()
        page.get_by_role("link", name="Studio").click()
        expect(page.locator(".st-key-reference_images img")).to_have_count(1, timeout=ARRIVAL_MS)
    finally:
        page.close()
        server.stop()


def test_a_new_kept_image_is_pushed_into_the_open_gallery_once(browser, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    seed_folder(data, 3)
    server = StudioServer(data).start()
    context = browser.new_context(viewport={"width": 1440, "height": 1400})
    try:
        watcher, maker = context.new_page(), context.new_page()
        watcher.goto(server.url + "/gallery")
        cards = watcher.locator(CARDS)
        expect(cards).to_have_count(3)
        expect(watcher.locator(GRID)).to_have_attribute("data-connected", "1", timeout=ARRIVAL_MS)
        watcher.evaluate("q => { document.querySelector(q).__first = true; }", GRID)
        marker = f"pushed{uuid.uuid4().hex[:6]}"
        open_studio(maker, server)
        set_prompt(maker, f"A harbour {marker}")
        generate(maker).click()
        expect(cards.filter(has_text=marker)).to_have_count(1, timeout=ARRIVAL_MS)
        expect(cards.first).to_contain_text(marker)  # newest first
        expect(cards).to_have_count(4)
        # Drawn in place by the component: the same element, not a new one from a rerun.
        assert watcher.evaluate("q => document.querySelector(q).__first === true", GRID)
        no_duplicate_cards(watcher)
    finally:
        context.close()
        server.stop()


def test_queue_cards_open_download_favourite_and_retry(browser, tmp_path):
    from tests.test_browser_studio import creative

    server = StudioServer(tmp_path / "data").start()
    page = browser.new_page(viewport={"width": 1440, "height": 1400})
    page.set_default_timeout(60_000)
    try:
        open_studio(page, server)
        marker = f"acts{uuid.uuid4().hex[:6]}"
        set_prompt(page, f"A kite {marker}")
        generate(page).click()
        card = creative(page, marker)
        expect(card.locator("img[src*='/thumbs/']")).to_have_count(1, timeout=ARRIVAL_MS)
        download = card.get_by_role("link", name="Download")
        assert "download=a-kite-" in download.get_attribute("href")
        assert httpx.get(download.get_attribute("href")).headers["content-type"] == "image/png"
        card.get_by_role("button", name="☆").click()
        expect(card.get_by_role("button", name="★")).to_be_visible()
        card.get_by_role("button", name="Open", exact=True).click()
        dialog = page.get_by_role("dialog")
        expect(dialog.locator("[data-testid=stCode]")).to_contain_text(marker)
        screenshot(page, "queue-lightbox")
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0)

        failing = f"fails{uuid.uuid4().hex[:6]}"
        set_prompt(page, f"A sign {failing} [sim:fail]")
        generate(page).click()
        failed = creative(page, failing)
        expect(failed.get_by_text("TASK_FAILED")).to_be_visible(timeout=ARRIVAL_MS)
        failed.get_by_role("button", name="Retry").click()
        expect(failed.get_by_text("Sent again")).to_be_visible()
        expect(failed.get_by_role("button", name="Retry")).to_be_disabled()
        # The recipe went out again as a new creative: two creatives with that prompt now.
        expect(creative(page, failing)).to_have_count(2, timeout=ARRIVAL_MS)
        screenshot(page, "queue-actions")
    finally:
        page.close()
        server.stop()
