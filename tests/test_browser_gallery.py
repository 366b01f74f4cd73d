"""The gallery in a real browser, across a server restart."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import httpx
import pytest
from playwright.sync_api import expect

from studio.images import read_recipe
from tests.conftest import StudioServer, screenshot
from tests.test_browser_studio import EDITOR, generate, open_studio, set_prompt, set_ratio

pytestmark = pytest.mark.browser


def test_generate_keep_restart_reuse_and_export(browser, tmp_path):
    server = StudioServer(tmp_path / "data").start()
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 2000})
        page.set_default_timeout(20_000)
        open_studio(page, server)
        marker = f"gallery{uuid.uuid4().hex[:6]}"
        prompt = f'A neon sign {marker} that reads "OPEN LATE"'
        set_prompt(page, prompt)
        set_ratio(page, "1:1", False)
        set_ratio(page, "21:9", True)
        page.locator(".st-key-resolution_picker").get_by_text("2K", exact=True).click()
        page.wait_for_timeout(400)
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
        page.set_default_timeout(20_000)
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

        card.get_by_role("button", name="Open").click()
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
        card.get_by_role("button", name="Open").click()
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
