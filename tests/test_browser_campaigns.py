"""A campaign as a new user runs it, in a real browser: a CSV of 3 products in 2 ratios becomes
6 images after one confirmation; the campaign zip maps files to rows; a saved template comes back
after a server restart."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import httpx
import pytest
from playwright.sync_api import expect

from studio.images import read_recipe
from tests.support import ARRIVAL_MS, StudioServer, screenshot
from tests.test_browser_studio import EDITOR, generate, open_studio, set_prompt, set_ratio

pytestmark = pytest.mark.browser

CSV = b"product,headline,sku\nMug,HOT DEAL,A1\nBowl,FRESH BOWL,A2\nVase,NEW VASE,A3\n"


def test_csv_campaign_confirm_grid_zip_and_template_after_restart(browser, tmp_path):
    marker = f"cmp{uuid.uuid4().hex[:6]}"
    prompt = f'A {marker} poster of a {{{{product}}}} with the headline "{{{{headline}}}}"'
    server = StudioServer(tmp_path / "data").start()
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 2200})
        page.set_default_timeout(60_000)
        open_studio(page, server)

        # Variables are detected while typing, before the text area commits.
        area = page.locator(EDITOR)
        area.fill(prompt)
        expect(page.locator(".st-key-prompt_vars")).to_contain_text("{{product}}, {{headline}}")
        area.evaluate("e => e.blur()")
        rows_panel = page.locator(".st-key-campaign_rows")
        expect(rows_panel).to_be_visible()
        set_ratio(page, "16:9", True)  # 1:1 is picked by default

        # A CSV of three products, mapped onto the variables by column name.
        rows_panel.locator("input[type=file]").set_input_files(
            files=[{"name": "products.csv", "mimeType": "text/csv", "buffer": CSV}]
        )
        expect(rows_panel.get_by_text("Not used by the prompt: sku")).to_be_visible()
        rows_panel.get_by_role("button", name="Use these 3 rows").click()
        preview = page.locator(".st-key-campaign_preview")
        expect(preview).to_contain_text(f'3. A {marker} poster of a Vase with the headline "NEW VASE"')
        expect(generate(page)).to_have_text("Generate 6 images · ≈$0.18")
        page.get_by_label("Campaign name").fill(f"Spring {marker}")
        page.get_by_label("Campaign name").press("Enter")

        # Save it as a template, rows and all.
        page.get_by_role("button", name="Save to library").click()
        page.get_by_label("Template name").fill(f"Poster {marker}")
        page.get_by_role("button", name="Save template").click()
        expect(page.get_by_text(f"Saved “Poster {marker}” to the library.")).to_be_visible()
        page.keyboard.press("Escape")
        screenshot(page, "campaign-rows")

        # One confirmation that states the count and the cost.
        generate(page).click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("Generate 6 images (3 rows × 2 ratios at 1K) for about $0.18?")
        screenshot(page, "campaign-confirm")
        dialog.get_by_role("button", name="Generate 6 images").click()
        expect(dialog).to_have_count(0)
        expect(
            page.get_by_text(f"Campaign “Spring {marker}” started: 6 images · ≈$0.18 simulated.")
        ).to_be_visible()

        # Six images arrive; the campaign card says so.
        card = page.locator("[class*='st-key-studio_campaign_']").filter(has_text=f"Spring {marker}")
        expect(card).to_contain_text("6 done · 0 failed · 0 left", timeout=ARRIVAL_MS)
        thumbs = page.locator("[class*='st-key-creative_cmp'] img[src*='/thumbs/']")
        expect(thumbs).to_have_count(6, timeout=ARRIVAL_MS)
        screenshot(page, "campaign-studio")

        # The Gallery's campaign view: a grid of 3 rows × 2 ratios, and the zip.
        page.get_by_role("button", name="Open in Gallery").click()
        grid = page.locator(".st-key-campaign_grid")
        expect(grid.locator("img[src*='/thumbs/']")).to_have_count(6)
        expect(grid.locator("[class*='st-key-grid_row_']")).to_have_count(3)
        expect(grid.locator("[class*='st-key-grid_row_']").nth(1)).to_contain_text("product: Bowl")
        expect(page.get_by_text("Estimated spend: $0.18 simulated for 6 images")).to_be_visible()
        page.get_by_role("button", name="Prepare campaign zip (6 images)").click()
        link = page.get_by_role("link", name="Download campaign zip")
        expect(link).to_be_visible()
        screenshot(page, "campaign-gallery")
        data = httpx.get(link.get_attribute("href")).content
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            assert sorted((m["row"], m["aspect_ratio"]) for m in manifest) == [
                (r, ratio) for r in (1, 2, 3) for ratio in ("16:9", "1:1")
            ]
            for m in manifest:
                product = ["Mug", "Bowl", "Vase"][m["row"] - 1]
                assert m["values"]["product"] == product
                assert m["file"].startswith(f"row-{m['row']:03d}_")
                assert read_recipe(zf.read(m["file"]))["prompt"] == m["prompt"]
                assert f"poster of a {product} " in m["prompt"]
        page.close()
    finally:
        server.stop()

    # A new server process on the same data folder: the template is still in the library.
    server = StudioServer(tmp_path / "data").start()
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 2000})
        page.set_default_timeout(60_000)
        page.goto(server.url + "/library")
        page.get_by_label("Search templates").fill(marker)
        card = page.locator("[class*='st-key-lib_card_']").filter(has_text=f"Poster {marker}")
        expect(card).to_have_count(1)
        expect(card).to_contain_text("{{product}}, {{headline}} · 3 sample rows")
        screenshot(page, "library-after-restart")
        card.get_by_role("button", name="Use in Studio").click()
        expect(page.locator(EDITOR)).to_have_value(prompt)
        expect(page.locator(".st-key-campaign_preview")).to_contain_text(
            "1. A " + marker + " poster of a Mug"
        )
        expect(generate(page)).to_have_text("Generate 6 images · ≈$0.18")
        set_prompt(page, prompt)  # unchanged text: the rows stay
        expect(generate(page)).to_have_text("Generate 6 images · ≈$0.18")
        page.close()
    finally:
        server.stop()
