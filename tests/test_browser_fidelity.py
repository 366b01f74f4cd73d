"""Text fidelity and delivery kits in a real browser, as a new user would try them.

A poster with a quoted headline in three ratios shows ✓ on each image; a
misspelled render shows ✗ with what was read; the kit built from the Studio
queue downloads as a zip of exact-size files with a contact sheet; the Gallery
badges, filters and lightbox show the same, and build a kit there too.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

from studio.kit import PLACEMENTS_BY_KEY
from tests.support import ARTIFACTS, StudioServer
from tests.test_browser_studio import creative, generate, open_studio, set_prompt, set_ratio

pytestmark = pytest.mark.browser

SLOW = 60_000  # OCR runs one image at a time on two shared cores
TASK = "[class*='st-key-task_']"


def shot(locator, name: str) -> str:
    """A screenshot of one element (Streamlit scrolls inside the page, so full-page shots stop short)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    locator.screenshot(path=str(path))
    return str(path)


def fetch_kit(href: str) -> tuple[dict, dict[str, tuple[int, int]]]:
    answer = httpx.get(href, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    assert "attachment" in answer.headers["content-disposition"]
    sizes = {}
    with zipfile.ZipFile(io.BytesIO(answer.content)) as zf:
        [manifest_name] = [n for n in zf.namelist() if n.endswith("/manifest.json")]
        manifest = json.loads(zf.read(manifest_name))
        for n in zf.namelist():
            if n.endswith(".png"):
                with Image.open(io.BytesIO(zf.read(n))) as im:
                    sizes[n] = im.size
    return manifest, sizes


def test_text_check_and_delivery_kit_from_studio_to_gallery(browser, tmp_path):
    server = StudioServer(tmp_path / "data").start()
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 2200})
        page.set_default_timeout(60_000)
        open_studio(page, server)

        # A poster with a quoted headline in three ratios: ✓ on each image.
        marker = f"kit{uuid.uuid4().hex[:6]}"
        set_prompt(page, f'Poster {marker} with the headline "SUMMER DROP"')
        for ratio in ("9:16", "1:1", "16:9"):
            set_ratio(page, ratio, True)
        expect(generate(page)).to_contain_text("Generate 3 images")
        generate(page).click()
        poster = creative(page, marker)
        expect(poster.locator(f"{TASK} img[src*='/thumbs/']")).to_have_count(3, timeout=SLOW)
        checks = poster.locator("[class*='st-key-textcheck_']")
        expect(checks).to_have_count(3, timeout=SLOW)
        for i in range(3):
            expect(checks.nth(i)).to_contain_text("✓ SUMMER DROP", timeout=SLOW)
            expect(checks.nth(i)).not_to_contain_text("✗")
        shot(poster, "fidelity-queue-pass")

        # A misspelled render: ✗ with what was actually read.
        wrong_marker = f"typo{uuid.uuid4().hex[:6]}"
        set_prompt(page, f'Poster {wrong_marker} with the headline "SUMMER DROP" [sim:misspell]')
        set_ratio(page, "9:16", False)
        set_ratio(page, "16:9", False)
        expect(generate(page)).not_to_contain_text("images")  # one image: the 1:1 left on
        generate(page).click()
        wrong = creative(page, wrong_marker)
        check = wrong.locator("[class*='st-key-textcheck_']")
        # Streamlit updates containers in place: wait until this creative alone matches.
        expect(wrong).to_have_count(1, timeout=SLOW)
        expect(check).to_have_count(1, timeout=SLOW)
        expect(check).to_contain_text("✗ SUMMER DROP", timeout=SLOW)
        expect(check).to_contain_text("read “SUMMR DRP”")
        expect(check).not_to_contain_text("✓")
        shot(wrong, "fidelity-queue-mismatch")

        # The kit, from the queue: exact-size files, a manifest and a contact sheet.
        poster.get_by_role("button", name="Delivery kit").click()
        kit = page.get_by_role("dialog")  # the queue's kit opens in a dialog
        expect(kit.get_by_text("Story / Reel 1080×1920")).to_be_visible()
        expect(kit.get_by_text("upscaled", exact=False).first).to_be_visible()  # 1K sources: said, not silent
        kit.get_by_role("button", name="Build kit").click()
        link = kit.get_by_role("link", name="Download kit")
        expect(link).to_be_visible(timeout=SLOW)
        sheet = kit.locator("img[src*='/contact-sheet.png']")
        expect(sheet).to_have_count(1)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=sheet.element_handle())
        manifest, sizes = fetch_kit(link.get_attribute("href"))
        name = manifest["contact_sheet"].split("/")[0]
        assert marker in name
        files = {f["placement"]: f for f in manifest["files"]}
        assert set(files) == {"story", "feed-portrait", "square", "landscape", "banner", "poster-a4"}
        for key, f in files.items():
            p = PLACEMENTS_BY_KEY[key]
            assert f["file"] == f"{name}/{key}_{p.width}x{p.height}.png"
            assert sizes[f["file"]] == (p.width, p.height)
        assert files["story"]["source_ratio"] == "9:16" and files["landscape"]["source_ratio"] == "16:9"
        assert files["poster-a4"]["upscaled"] is True
        assert f"{name}/contact-sheet.png" in sizes
        shot(kit, "kit-queue")
        page.keyboard.press("Escape")
        expect(kit).to_have_count(0)

        # The Gallery: badges, the "text mismatch" filter, the lightbox and its kit.
        page.get_by_role("link", name="Gallery").click()
        cards = page.locator("[class*='st-key-card_']")
        expect(cards).to_have_count(4)
        expect(cards.filter(has_text=marker).filter(has_text="Text ✓")).to_have_count(3)
        expect(cards.filter(has_text=wrong_marker)).to_contain_text("Text ✗ 0/1")
        page.get_by_text("Text mismatch").click()
        expect(cards).to_have_count(1)
        expect(cards.first).to_contain_text(wrong_marker)
        shot(page.locator("[data-testid='stMain']"), "fidelity-gallery-filter")
        cards.first.get_by_role("button", name="Open", exact=True).click()
        dialog = page.get_by_role("dialog")
        lb_check = dialog.locator(".st-key-lb_textcheck")
        expect(lb_check).to_contain_text("✗ SUMMER DROP")
        expect(lb_check).to_contain_text("read “SUMMR DRP”")
        expect(lb_check).to_contain_text("Read by tesseract")
        shot(dialog, "fidelity-lightbox-mismatch")
        dialog.get_by_text("Delivery kit for this creative").click()
        dialog.get_by_role("button", name="Build kit").click()
        link = dialog.get_by_role("link", name="Download kit")
        expect(link).to_be_visible(timeout=SLOW)
        manifest, sizes = fetch_kit(link.get_attribute("href"))
        assert {f["source_ratio"] for f in manifest["files"]} == {
            "1:1"
        }  # its only ratio fills every placement
        assert all(sizes[f["file"]] == (f["width"], f["height"]) for f in manifest["files"])
        shot(dialog.locator(".st-key-lb_kitx"), "kit-lightbox")
        page.close()
    finally:
        server.stop()
