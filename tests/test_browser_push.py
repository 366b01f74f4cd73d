"""The queue component and the push channel in a real browser.

The queue is one custom component that draws itself from a JSON view model and
is kept current by GET /api/events (server-sent events): these tests click its
buttons (component events back to Python) and check that results reach an open
page without a script rerun, after a server restart, and after the tab slept,
each card drawn once.
"""

from __future__ import annotations

import re
import sqlite3
import uuid

import pytest
from playwright.sync_api import expect

from tests.conftest import ARRIVAL_MS, StudioServer
from tests.test_browser_studio import EDITOR, generate, open_studio, set_prompt

pytestmark = pytest.mark.browser

QUEUE = ".studio-queue"


def creative(page, marker: str):
    return page.locator("[class*='st-key-creative_']").filter(has_text=marker)


def thumbs(locator):
    return locator.locator("[class*='st-key-task_'] img[src*='/thumbs/']")


def submit(page, server, marker: str) -> None:
    open_studio(page, server)
    set_prompt(page, f"A lighthouse {marker}")
    generate(page).click()


def db(server) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / "studio.db")


def no_duplicates(page) -> None:
    """Every creative and every task is drawn exactly once."""
    keys = page.locator(f"{QUEUE} [class*='st-key-creative_'], {QUEUE} [class*='st-key-task_']").evaluate_all(
        "els => els.map(e => [...e.classList].find(c => c.startsWith('st-key-')))"
    )
    assert len(keys) == len(set(keys)), keys


@pytest.fixture
def server(tmp_path):
    s = StudioServer(tmp_path / "data").start()
    yield s
    s.stop()


def test_queue_buttons_come_back_as_events(browser, server):
    page = browser.new_context(viewport={"width": 1440, "height": 1600}).new_page()
    marker = f"events-{uuid.uuid4().hex[:6]}"
    submit(page, server, marker)
    card = creative(page, marker)
    expect(thumbs(card)).to_have_count(1, timeout=ARRIVAL_MS)
    [(output_id,)] = db(server).execute("SELECT id FROM outputs").fetchall()

    card.get_by_role("button", name="☆").click()  # favourite: the store, then the card
    expect(card.get_by_role("button", name="★")).to_be_visible(timeout=ARRIVAL_MS)
    assert db(server).execute("SELECT output_id FROM favourites").fetchall() == [(output_id,)]

    card.get_by_role("button", name="Open", exact=True).click()  # the lightbox
    dialog = page.get_by_role("dialog")
    expect(dialog.locator(".st-key-lb_image img")).to_have_count(1, timeout=ARRIVAL_MS)
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    thumb = card.locator(".q-thumb")  # keyboard: a focused thumbnail opens with Enter
    thumb.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog").locator(".st-key-lb_image img")).to_have_count(1, timeout=ARRIVAL_MS)
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)

    card.get_by_role("button", name="Use as reference").click()  # into the draft's references
    expect(page.locator(".st-key-reference_images img")).to_have_count(1, timeout=ARRIVAL_MS)

    card.get_by_role("button", name="Delivery kit").click()  # the kit, in a dialog
    expect(page.get_by_role("dialog").get_by_role("button", name="Build kit")).to_be_visible(
        timeout=ARRIVAL_MS
    )
    no_duplicates(page)
    page.context.close()


def test_a_result_made_in_another_tab_is_pushed_to_this_one(browser, server):
    context = browser.new_context(viewport={"width": 1440, "height": 1600})
    watcher, maker = context.new_page(), context.new_page()
    open_studio(watcher, server)
    expect(watcher.locator(QUEUE)).to_have_attribute("data-connected", "1", timeout=ARRIVAL_MS)
    watcher.evaluate("q => { document.querySelector(q).__first = true; }", QUEUE)
    marker = f"pushed-{uuid.uuid4().hex[:6]}"
    submit(maker, server, marker)
    expect(thumbs(creative(watcher, marker))).to_have_count(1, timeout=ARRIVAL_MS)
    # Drawn in place by the component: the same element, not a new one from a rerun.
    assert watcher.evaluate("q => document.querySelector(q).__first === true", QUEUE)
    no_duplicates(watcher)
    context.close()


def test_the_feed_reconnects_after_a_server_restart_and_catches_up(browser, server):
    context = browser.new_context(viewport={"width": 1440, "height": 1600})
    watcher = context.new_page()
    first = f"before-{uuid.uuid4().hex[:6]}"
    submit(watcher, server, first)
    expect(thumbs(creative(watcher, first))).to_have_count(1, timeout=ARRIVAL_MS)
    boot = watcher.locator(QUEUE).get_attribute("data-boot")

    server.stop()
    expect(watcher.locator(QUEUE)).to_have_attribute("data-connected", "0", timeout=ARRIVAL_MS)
    server.start()
    expect(watcher.locator(QUEUE)).not_to_have_attribute("data-boot", boot, timeout=ARRIVAL_MS)

    second = f"after-{uuid.uuid4().hex[:6]}"
    submit(context.new_page(), server, second)
    expect(thumbs(creative(watcher, second))).to_have_count(1, timeout=ARRIVAL_MS)
    expect(thumbs(creative(watcher, first))).to_have_count(1)
    no_duplicates(watcher)
    (n,) = db(server).execute("SELECT COUNT(*) FROM submissions").fetchone()
    expect(watcher.locator(f"{QUEUE} [class*='st-key-task_']")).to_have_count(n)
    context.close()


def test_a_tab_that_slept_catches_up_once_awake(browser, server):
    context = browser.new_context(viewport={"width": 1440, "height": 1600})
    sleeper = context.new_page()
    open_studio(sleeper, server)
    expect(sleeper.locator(QUEUE)).to_have_attribute("data-connected", "1", timeout=ARRIVAL_MS)
    cdp = context.new_cdp_session(sleeper)
    cdp.send("Page.setWebLifecycleState", {"state": "frozen"})  # what Chromium does to a sleeping tab
    marker = f"slept-{uuid.uuid4().hex[:6]}"
    maker = context.new_page()
    submit(maker, server, marker)
    expect(thumbs(creative(maker, marker))).to_have_count(1, timeout=ARRIVAL_MS)
    cdp.send("Page.setWebLifecycleState", {"state": "active"})
    expect(thumbs(creative(sleeper, marker))).to_have_count(1, timeout=ARRIVAL_MS)
    no_duplicates(sleeper)
    context.close()


CSV = b"product,headline\nMug,HOT DEAL\nBowl,FRESH BOWL\n"


def launch_campaign(page, server, marker: str) -> None:
    """Two rows × one ratio from a CSV (as tests/test_browser_campaigns.py does; two images are
    below the confirmation threshold)."""
    open_studio(page, server)
    area = page.locator(EDITOR)
    area.fill(f'A {marker} poster of a {{{{product}}}} with the headline "{{{{headline}}}}"')
    area.evaluate("e => e.blur()")
    rows_panel = page.locator(".st-key-campaign_rows")
    rows_panel.locator("input[type=file]").set_input_files(
        files=[{"name": "products.csv", "mimeType": "text/csv", "buffer": CSV}]
    )
    rows_panel.get_by_role("button", name="Use these 2 rows").click()
    page.get_by_label("Campaign name").fill(f"Push {marker}")
    page.get_by_label("Campaign name").press("Enter")
    expect(generate(page)).to_have_text(re.compile(r"Generate 2 images"))
    generate(page).click()
    expect(page.get_by_text(f"Campaign “Push {marker}” started", exact=False)).to_be_visible()


def test_a_campaign_started_in_another_tab_appears_and_finishes_here_by_push(browser, server):
    """The watcher only looks: its campaign cards come and fill in because the push channel
    told its watch (components/watch.py), which reran the fragment; no timer reruns it."""
    marker = f"push{uuid.uuid4().hex[:6]}"
    watcher = browser.new_page(viewport={"width": 1440, "height": 1600})
    starter = browser.new_page(viewport={"width": 1440, "height": 1600})
    try:
        open_studio(watcher, server)
        watch = watcher.locator(".studio-watch")
        expect(watch).to_have_count(1)  # the Studio's campaign cards' watch, hidden while idle
        expect(watch).to_have_attribute("data-connected", "1", timeout=ARRIVAL_MS)
        expect(watch).to_be_hidden()  # an idle watch takes no room on the page
        launch_campaign(starter, server, marker)
        card = watcher.locator("[class*='st-key-studio_campaign_']").filter(has_text=f"Push {marker}")
        expect(card).to_be_visible(timeout=ARRIVAL_MS)
        expect(card).to_contain_text("2 done · 0 failed · 0 left", timeout=ARRIVAL_MS)
        assert int(watch.get_attribute("data-reruns") or 0) >= 2  # it appeared, then it finished
        # Both tabs' live components share one push channel per page.
        assert watcher.evaluate("() => window.__studioFeeds.size") == 1
        assert watcher.evaluate("() => [...window.__studioFeeds.values()][0].subs.size") == 2
    finally:
        watcher.close()
        starter.close()
