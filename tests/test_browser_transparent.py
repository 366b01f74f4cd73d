"""A transparent 1K image in a real browser: on a checkerboard in the queue, downloaded with alpha."""

from __future__ import annotations

import io
import uuid

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.conftest import ARRIVAL_MS, screenshot
from tests.support import wait_for
from tests.test_browser_studio import creative, generate, open_expander, open_studio, set_prompt, set_ratio

pytestmark = pytest.mark.browser


def test_a_transparent_image_shows_on_a_checkerboard_and_downloads_with_alpha(page, studio_server):
    open_studio(page, studio_server)
    marker = f"sticker-{uuid.uuid4().hex[:6]}"
    set_prompt(page, f'A sticker {marker} that says "HELLO"')
    set_ratio(page, "1:1", True)
    open_expander(page, "options")  # quality and background are folded under "Quality: Default"
    transparent = page.locator(".st-key-background_picker button", has_text="Transparent")

    def picked() -> bool:
        # A click that lands while the fold's rerun redraws the picker is lost: pressed again until it
        # holds (pressing the picked option again keeps it: `draft.sync_background`).
        if transparent.get_attribute("aria-checked") != "true":
            transparent.click()
        return transparent.get_attribute("aria-checked") == "true"

    wait_for(picked, timeout=ARRIVAL_MS / 1000, step=0.5)
    expect(page.locator(".st-key-background_picker button[aria-checked='true']")).to_have_text("Transparent")
    generate(page).click()
    card = creative(page, marker)
    thumb = card.locator("img[src*='/thumbs/']")
    expect(thumb).to_have_count(1, timeout=ARRIVAL_MS)
    # The checkerboard is the image's own CSS background: it shows wherever the pixels are clear.
    backdrop = thumb.evaluate("i => getComputedStyle(i).backgroundImage")
    assert "linear-gradient" in backdrop
    screenshot(page, "studio-transparent")
    href = card.get_by_role("link", name="Download").get_attribute("href")
    png = httpx.get(href, timeout=30).content
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "RGBA"
        assert im.getchannel("A").getextrema() == (0, 255)
