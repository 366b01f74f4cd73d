"""Reference images in a real browser: drop a PNG, generate at 16:9, see the result built on it;
Reuse it and find prompt, ratio, resolution and reference back; a refused file is named."""

from __future__ import annotations

import io
import uuid

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.support import ARRIVAL_MS, screenshot
from tests.test_browser_studio import (
    EDITOR,
    creative,
    generate,
    open_expander,
    open_studio,
    set_prompt,
    set_ratio,
)

pytestmark = pytest.mark.browser

GREEN = (20, 200, 60)


def _png(color, size=(640, 360)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _drop(page, files) -> None:
    open_expander(page, "references")
    page.locator(".st-key-references input[type=file]").set_input_files(files=files)


def test_a_dropped_reference_shapes_the_result_and_comes_back_with_reuse(page, studio_server):
    open_studio(page, studio_server)
    marker = f"ref-{uuid.uuid4().hex[:6]}"
    set_prompt(page, f'Restyle {marker} as a premium ad with the headline "FRESH"')
    set_ratio(page, "1:1", False)
    set_ratio(page, "16:9", True)

    # A refused file is named with its reason; the prompt and picks stay.
    _drop(page, [{"name": "notes.png", "mimeType": "image/png", "buffer": b"plain text"}])
    expect(page.locator(".st-key-reference_images")).to_contain_text(
        "“notes.png” is not a JPEG, PNG or WebP image"
    )
    _drop(page, [{"name": "product.png", "mimeType": "image/png", "buffer": _png(GREEN)}])
    thumb = page.locator("[class*='st-key-ref_0'] img")
    expect(thumb).to_have_count(1)
    expect(page.get_by_text("“notes.png” is not a JPEG")).to_have_count(0)
    assert marker in page.locator(EDITOR).input_value()
    screenshot(page, "references-added")

    generate(page).click()
    card = creative(page, marker)
    img = card.locator("img[src*='/thumbs/']")
    expect(img).to_have_count(1, timeout=ARRIVAL_MS)
    # The result is built on the reference: its green fills the 16:9 canvas around the text panel.
    src = img.first.get_attribute("src")
    thumb_png = httpx.get(src if "://" in src else studio_server.url + src, timeout=10).content
    with Image.open(io.BytesIO(thumb_png)) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        px = rgb.getpixel((w // 10, h // 2))
    assert all(abs(a - b) < 45 for a, b in zip(px, GREEN, strict=True)), px
    screenshot(page, "references-result")

    # Clear the draft, then Reuse the result from the lightbox: everything comes back.
    page.locator(".st-key-ref_remove_0 button").first.click()
    expect(thumb).to_have_count(0)
    set_prompt(page, "something else entirely")
    card.get_by_role("button", name="Open", exact=True).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Reuse in Studio").click()
    expect(page.locator(EDITOR)).to_have_value(f'Restyle {marker} as a premium ad with the headline "FRESH"')
    expect(page.locator("[class*='st-key-ref_0'] img")).to_have_count(1)
    expect(page.locator(".st-key-ratio_pick_16-9 input[type=checkbox]")).to_be_checked()
    screenshot(page, "references-reused")


def test_at_2k_the_5_4_tile_is_disabled_with_its_reason(page, studio_server):
    from tests.test_browser_studio import open_all_ratios

    open_studio(page, studio_server)
    page.locator(".st-key-resolution_picker").get_by_text("2K", exact=True).click()
    open_all_ratios(page)
    tile = page.locator(".st-key-tile_5x4")
    expect(tile.locator("input[type=checkbox]")).to_be_disabled()
    expect(tile).to_contain_text("✕ not with 2K: choose 1K or 4K")  # the reason, and what to pick instead
    expect(page.locator(".st-key-tile_4x3 input[type=checkbox]")).to_be_enabled()
