"""Who made what in a real browser: with the team login on, cards, the lightbox and the queue name
their author, "Mine" narrows the gallery, and an author's name is only ever text.

A real OIDC sign-in (tests/test_access_login.py's provider) on a studio whose data folder holds
images by two people; screenshots at 1440×900 and 390×844 under tests/artifacts/.
"""

from __future__ import annotations

import io
import secrets

import pytest
from playwright.sync_api import expect

from tests.support import StudioServer, screenshot, wait_for
from tests.test_access_login import FakeOIDC, _sign_in

pytestmark = pytest.mark.browser

ANA = "ana@example.com"
BO = "bartholomew.konstantinopoulos@marketing.example.com"  # long: the card cuts it, never wraps
HOSTILE = '<img src=x onerror="document.title=1"> [win](https://evil.example/x) **bold**'
CARDS = "[class*='st-key-card_']"


def keep_image(data, author: str, n: int, prompt: str) -> None:
    """One kept image made by `author`, written into the data folder as the tracker leaves it."""
    from PIL import Image

    from studio.images import ImageKeeper
    from studio.models import Task, TaskRequest
    from studio.store import Store

    store, keeper = Store(data / "studio.db"), ImageKeeper(data / "images", thumb_size=512)
    try:
        ratio = ("1:1", "16:9", "9:16")[n % 3]
        sid = store.add_submission(
            TaskRequest(prompt, ratio, "1K"), idempotency_key=f"a{n}", creative_id=f"ca{n}", author=author
        )
        store.mark_created(sid, f"tk-a{n}")
        store.record_task(Task.parse({"taskId": f"tk-a{n}", "status": "success",
                                      "output": [{"url": f"https://files.example/a{n}.png", "type": "image"}]}))  # fmt: skip
        buf = io.BytesIO()
        size = {"1:1": (512, 512), "16:9": (640, 360), "9:16": (360, 640)}[ratio]
        Image.new("RGB", size, (30 * n % 255, 140, 200 - 12 * n)).save(buf, "PNG")
        kept = keeper.keep_bytes(
            buf.getvalue(), {"prompt": prompt, "aspect_ratio": ratio, "resolution": "1K"}
        )
        [o] = store.outputs_for([sid])[sid]
        store.output_kept(o.id, sha256=kept.sha256, width=kept.width, height=kept.height, nbytes=kept.bytes)  # fmt: skip
    finally:
        keeper.close()
        store.close()


SEEDED = [
    (ANA, "A sage-green coffee mug on a linen tablecloth, soft morning light"),
    (BO, 'A neon sign that reads "OPEN LATE" on a rainy street'),
    (ANA, "A mountain lake at dawn, mist over the water"),
    (BO, 'Poster with the headline "SUMMER DROP", bold type'),
    (BO, "A café menu board, hand-lettered chalk"),
]


@pytest.fixture(scope="module")
def provider():
    p = FakeOIDC("studio-web", "client-secret-0123456789")
    yield p
    p.close()


@pytest.fixture(scope="module")
def authors_studio(provider, tmp_path_factory):
    data = tmp_path_factory.mktemp("authors-data")
    for n, (author, prompt) in enumerate(SEEDED):
        keep_image(data, author, n, prompt)
    secrets_file = data.parent / "authors-secrets.toml"
    secrets_file.write_text(
        f"""
[auth]
redirect_uri = "http://127.0.0.1:{{port}}/oauth2callback"
cookie_secret = "{secrets.token_urlsafe(32)}"
client_id = "{provider.client_id}"
client_secret = "{provider.client_secret}"
server_metadata_url = "{provider.url}/.well-known/openid-configuration"
"""
    )
    server = StudioServer(data, env={"STREAMLIT_SECRETS_FILES": str(secrets_file)}).start()
    server.data = data
    yield server
    server.stop()


# Every author line is one line inside its card: cut with an ellipsis when too long, never wrapped.
FITS = """cards => cards.every(card => {
  const by = card.querySelector('.g-by');
  if (!by) return false;
  const lh = parseFloat(getComputedStyle(by).lineHeight) || 20;
  const inside = by.getBoundingClientRect().right <= card.getBoundingClientRect().right + 0.5;
  const cut = by.scrollWidth <= by.clientWidth || getComputedStyle(by).textOverflow === 'ellipsis';
  return by.clientHeight < 1.6 * lh && inside && cut;
})"""


def _by_lines(page) -> list[str]:
    return page.locator(f"{CARDS} .g-by").all_inner_texts()


def test_cards_lightbox_and_queue_name_the_author_and_mine_narrows(browser, authors_studio, provider):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        _sign_in(page, authors_studio, provider, ANA)
        expect(page.get_by_text(f"Signed in as {ANA}")).to_be_visible()
        page.goto(authors_studio.url + "/gallery")
        cards = page.locator(CARDS)
        expect(cards).to_have_count(len(SEEDED))
        expected = [f"by {a}" for a, _ in reversed(SEEDED)]  # newest first
        wait_for(lambda: _by_lines(page) == expected, timeout=30)
        assert page.locator(CARDS).evaluate_all(FITS)
        heights = {round(h) for h in cards.evaluate_all("cs => cs.map(c => c.offsetHeight)")}
        assert len(heights) == 1, heights  # the author line is on every card: rows stay even
        screenshot(page, "authors-gallery-desktop")

        # The lightbox says who made it.
        bo_card = cards.filter(has_text="OPEN LATE")
        bo_card.get_by_role("button", name="Open", exact=True).click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text(f"by {BO}")).to_be_visible()
        screenshot(page, "authors-lightbox")
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0)

        # "Mine" is the signed-in person's images only.
        _pick(page, "g_scope", "Mine")
        expect(cards).to_have_count(2)
        wait_for(lambda: _by_lines(page) == [f"by {ANA}"] * 2, timeout=30)
        _pick(page, "g_scope", "Everyone")
        expect(cards).to_have_count(len(SEEDED))

        # The Studio's queue names who asked for each creative.
        page.goto(authors_studio.url + "/")
        expect(page.locator(".studio-queue .q-by").first).to_be_visible()
        queue = page.locator(".studio-queue .q-by").all_inner_texts()
        assert queue == expected
        screenshot(page, "authors-queue")
    finally:
        context.close()


def test_on_a_phone_the_author_line_is_cut_on_its_one_line(browser, authors_studio, provider):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        _sign_in(page, authors_studio, provider, ANA)
        expect(page.locator(".st-key-prompt_editor textarea")).to_be_visible()
        page.goto(authors_studio.url + "/gallery")
        cards = page.locator(CARDS)
        expect(cards.first).to_contain_text("café")  # the newest; the scroll view draws the rows in sight
        page.wait_for_function(
            "() => { const g = document.querySelector('.studio-gallery .g-grid');"
            " return g && getComputedStyle(g).getPropertyValue('--cols').trim() === '1'; }"
        )
        cards.first.scroll_into_view_if_needed()
        assert cards.evaluate_all(FITS)
        long = cards.filter(has_text="café").locator(".g-by")
        assert long.evaluate("e => e.scrollWidth > e.clientWidth")  # too long for a phone: cut, not wrapped
        assert long.get_attribute("title") == BO  # the whole address on hover
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390  # nothing pushes sideways
        screenshot(page, "authors-gallery-phone")
        # Further down, the other person's image, named on its own line.
        page.mouse.wheel(0, 900)
        ana_card = cards.filter(has_text="mountain lake")
        expect(ana_card.locator(".g-by")).to_have_text(f"by {ANA}")
        ana_card.scroll_into_view_if_needed()
        assert cards.evaluate_all(FITS)
        screenshot(page, "authors-gallery-phone-2")
    finally:
        context.close()


def test_an_authors_name_is_text_on_a_card(browser, authors_studio, provider):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        _sign_in(page, authors_studio, provider, ANA)
        expect(page.get_by_text(f"Signed in as {ANA}")).to_be_visible()
        page.goto(authors_studio.url + "/gallery")
        expect(page.locator(CARDS).first).to_be_visible()
        title = page.title()
        # Written from outside the server (STUDIO_ROLE=all hears only its own tracker): a reload shows it.
        keep_image(authors_studio.data, HOSTILE, 9, "A hostile author's image")
        page.reload()
        card = page.locator(CARDS).filter(has_text="hostile author's image")
        expect(card).to_have_count(1)
        expect(card.locator(".g-by")).to_have_text(f"by {HOSTILE}")
        assert card.locator(".g-by img, .g-by a, .g-by strong").count() == 0
        assert page.title() == title  # no handler ran
    finally:
        context.close()


def _pick(page, key: str, label: str) -> None:
    """Press a segmented control's option until it holds: a press that lands while the page's
    rerun redraws the control is lost on a busy machine (pressing the held option is not done)."""
    option = page.locator(f".st-key-{key} button", has_text=label)

    def held() -> bool:
        if option.get_attribute("aria-checked") != "true":
            option.click()
        return option.get_attribute("aria-checked") == "true"

    wait_for(held, timeout=60, step=0.5)
