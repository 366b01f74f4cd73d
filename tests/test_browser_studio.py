"""The Studio page in a real browser: Debian's Chromium through Playwright."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from components.editor import count_label
from tests.support import after_rerun, screenshot

pytestmark = pytest.mark.browser

EDITOR = ".st-key-prompt_editor textarea"
GENERATE = ".st-key-generate_box button:visible"


def generate(page):
    expect(page.locator(GENERATE)).to_have_count(1)
    return page.locator(GENERATE)


def open_studio(page, server):
    page.goto(server.url + "/")
    page.wait_for_selector(GENERATE)


def set_prompt(page, text: str) -> None:
    """Type `text` as the prompt; return once the studio has drawn the page for it.

    Streamlit commits a text area on blur, then reruns the page: this waits for
    that run to end having drawn the count of `text` ("N / 20,000 characters").
    Text the editor already holds commits nothing, so there is no run to wait for.
    """
    area = page.locator(EDITOR)

    def type_and_commit() -> None:
        area.fill(text)
        area.evaluate("e => e.blur()")  # Streamlit commits a text area on blur

    if area.input_value() == text:
        type_and_commit()
    else:
        after_rerun(page, type_and_commit, drawn=count_label(text))


def open_all_ratios(page) -> None:
    """Open the "All ratios" expander (the grid of tiles) if it is closed."""
    summary = page.locator(".st-key-ratio_all summary")
    if page.locator(".st-key-ratio_all details[open]").count() == 0:
        summary.click()
    expect(page.locator(".st-key-ratio_pick_16-9 label")).to_be_visible()


def open_expander(page, key: str) -> None:
    """Open the folded section inside `.st-key-<key>` (references, options) if it is closed."""
    if page.locator(f".st-key-{key} details[open]").count() == 0:
        page.locator(f".st-key-{key} summary").first.click()
    expect(page.locator(f".st-key-{key} details[open]")).to_have_count(1)


def set_ratio(page, ratio: str, on: bool) -> None:
    box = page.locator(f".st-key-ratio_pick_{ratio.replace(':', '-')} input[type=checkbox]")
    if box.is_checked() != on:
        open_all_ratios(page)
        page.locator(f".st-key-ratio_pick_{ratio.replace(':', '-')} label").click()
        expect(box).to_be_checked(checked=on)


def creative(page, marker: str):
    return page.locator("[class*='st-key-creative_']").filter(has_text=marker)


def image_shapes(locator) -> list[float]:
    return locator.locator("[class*='st-key-task_'] img[src*='/thumbs/']").evaluate_all(
        "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).map(i => i.naturalWidth / i.naturalHeight)"
    )


def test_poster_in_two_formats_arrives_with_the_right_shapes(page, studio_server):
    open_studio(page, studio_server)
    marker = f"poster-{uuid.uuid4().hex[:6]}"
    set_prompt(page, f'A poster {marker} with the headline "SUMMER DROP"')
    set_ratio(page, "1:1", False)
    set_ratio(page, "16:9", True)
    set_ratio(page, "9:16", True)
    expect(generate(page)).to_have_text("Generate 2 images · ≈$0.06")
    generate(page).click()
    card = creative(page, marker)
    expect(card).to_be_visible(timeout=10_000)
    expect(card.locator("[class*='st-key-task_'] img[src*='/thumbs/']")).to_have_count(2, timeout=20_000)
    page.wait_for_function(
        """m => [...document.querySelectorAll("[class*='st-key-creative_']")]
             .filter(c => c.innerText.includes(m))
             .flatMap(c => [...c.querySelectorAll("img[src*='/thumbs/']")])
             .filter(i => i.complete && i.naturalWidth > 0).length === 2""",
        arg=marker,
        timeout=20_000,
    )
    shapes = sorted(image_shapes(card))
    assert shapes == pytest.approx([9 / 16, 16 / 9], rel=0.02)
    screenshot(page, "studio-two-formats")


def test_too_long_prompt_shows_the_error_and_keeps_the_text(page, studio_server):
    open_studio(page, studio_server)
    text = "x" * 20_001
    set_prompt(page, text)
    generate(page).click()
    # Beside the field, and again beside Generate (where the eye is after the click), with the field named.
    expect(page.locator(".st-key-generate_box")).to_contain_text(re.compile("Prompt: .*the limit is 20,000"))
    expect(page.get_by_text(re.compile("the limit is 20,000")).first).to_be_visible()
    assert len(page.locator(EDITOR).input_value()) == 20_001
    expect(page.locator(".st-key-prompt_count")).to_contain_text("1 over the limit")
    screenshot(page, "studio-too-long")


def test_live_count_and_ctrl_enter_generate(page, studio_server):
    open_studio(page, studio_server)
    marker = f"hotkey-{uuid.uuid4().hex[:6]}"
    area = page.locator(EDITOR)
    area.click()
    area.press_sequentially(marker)
    # Counted on every keystroke, before the text area commits.
    expect(page.locator(".st-key-prompt_count")).to_contain_text(f"{len(marker)} / 20,000")
    area.press("Control+Enter")
    expect(creative(page, marker)).to_be_visible(timeout=10_000)


def test_failed_task_shows_reason_and_edit_restores_prompt(page, studio_server):
    open_studio(page, studio_server)
    marker = f"fail-{uuid.uuid4().hex[:6]}"
    prompt = f"A sign {marker} [sim:fail]"
    set_prompt(page, prompt)
    generate(page).click()
    card = creative(page, marker)
    expect(card.get_by_text("TASK_FAILED")).to_be_visible(timeout=20_000)
    expect(card.get_by_text("upstream rejected the prompt")).to_be_visible()
    screenshot(page, "studio-failed")
    set_prompt(page, "something else entirely")
    card.get_by_role("button", name="Edit and resubmit").click()
    expect(page.locator(EDITOR)).to_have_value(prompt)


def test_closing_the_page_mid_generation_loses_nothing(browser, studio_server):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1400})
    page = ctx.new_page()
    open_studio(page, studio_server)
    marker = f"away-{uuid.uuid4().hex[:6]}"
    set_prompt(page, f"A lighthouse {marker}")
    generate(page).click()
    expect(creative(page, marker)).to_be_visible(timeout=10_000)
    ctx.close()  # every tab closed while the task runs
    ctx2 = browser.new_context(viewport={"width": 1440, "height": 1400})
    page2 = ctx2.new_page()
    open_studio(page2, studio_server)
    card = creative(page2, marker)
    expect(card.locator("img[src*='/thumbs/']")).to_have_count(1, timeout=20_000)
    expect(card.get_by_text("Done")).to_be_visible()
    ctx2.close()
