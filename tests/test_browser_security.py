"""Secrets and rendering in a real browser, with a real API key against a simulator process.

The studio runs with HIAPI_API_KEY set, pointed at `python -m studio.simulator`
accepting only that key, so every request carries it. Then every page's HTML,
the server's log, the export zip, the PNGs (bytes and metadata), the health
route and every file in the data folder are searched for it. A prompt full of
HTML, script and markdown must show literally in the queue, the gallery card
the lightbox and the prompt library, and run nothing.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
import zipfile

import httpx
import pytest
from playwright.sync_api import expect

from studio.images import read_recipe
from tests.support import ROOT, StudioServer, end_process_group, screenshot
from tests.test_browser_studio import generate, open_studio, set_prompt, set_ratio

pytestmark = pytest.mark.browser

KEY = "sk-live-" + uuid.uuid4().hex  # what a leak would look like
HOSTILE = (
    '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> **bold** _it_ '
    "<b>bold tag</b> [link](javascript:window.__pwned=3) $x^2$ :red[red] # Heading "
    'sign "visit https://evil.example/win"'
)


@pytest.fixture(scope="module")
def simulator():
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "studio.simulator", "--port", "0", "--api-key", KEY,
            "--min-duration", "0.5", "--max-duration", "1.5", "--quiet",
        ],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    base_url = proc.stdout.readline().strip()
    # Some faults, so the tracker has errors to log and to show.
    httpx.post(base_url + "/_sim/faults", json={"get_503_rate": 0.3, "retry_after": 0}).raise_for_status()
    yield base_url
    end_process_group(proc)


@pytest.fixture(scope="module")
def studio(simulator, tmp_path_factory):
    server = StudioServer(
        tmp_path_factory.mktemp("secure-data"),
        env={"HIAPI_API_KEY": KEY, "HIAPI_BASE_URL": simulator},
    ).start()
    yield server
    server.stop()


def _no_key(text: str | bytes, where: str) -> None:
    if isinstance(text, bytes):
        assert KEY.encode() not in text, f"the API key appears in {where}"
        text = text.decode("latin-1")
    assert KEY not in text, f"the API key appears in {where}"
    assert KEY.removeprefix("sk-") not in text, f"the API key (without sk-) appears in {where}"


def _generate(page, server, prompt: str, ratios: tuple[str, ...]):
    open_studio(page, server)
    set_prompt(page, prompt)
    for r in ratios:
        set_ratio(page, r, True)
    if "1:1" not in ratios:
        set_ratio(page, "1:1", False)
    generate(page).click()
    card = page.locator("[class*='st-key-creative_']").first
    expect(card.locator("[class*='st-key-task_'] img[src*='/thumbs/']")).to_have_count(
        len(ratios), timeout=30_000
    )
    return card


def test_the_key_is_nowhere_a_person_or_a_file_can_see(page, studio, simulator):
    assert httpx.get(simulator + "/_sim/stats").json()["tasks_created"] >= 0
    _generate(page, studio, 'A sign that reads "NO SECRETS HERE"', ("16:9", "1:1"))
    _no_key(page.content(), "the Studio page")
    sidebar = page.locator("[data-testid='stSidebar']")
    expect(sidebar).to_contain_text("HiAPI")  # a real key is in use (not the simulator badge)

    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_text("API key", exact=True)).to_be_visible()
    expect(page.locator("[data-testid='stMetricValue']").filter(has_text="set")).to_have_count(1)
    _no_key(page.content(), "the Settings page")

    page.get_by_role("link", name="Gallery").click()
    cards = page.locator("[class*='st-key-card_']")
    expect(cards).to_have_count(2)
    _no_key(page.content(), "the Gallery page")
    cards.first.get_by_role("button", name="Open", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("img[src*='/images/']")).to_have_count(1)
    _no_key(page.content(), "the lightbox")
    page.keyboard.press("Escape")

    for i in range(2):
        cards.nth(i).get_by_text("Select").click()
    page.get_by_role("button", name="Prepare zip").click()
    link = page.get_by_role("link", name="Download zip")
    expect(link).to_be_visible()
    archive = httpx.get(link.get_attribute("href")).content
    _no_key(archive, "the export zip")
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        names = zf.namelist()
        assert "manifest.json" in names and "manifest.csv" in names
        for name in names:
            member = zf.read(name)
            _no_key(member, f"{name} in the export zip")
            if name.endswith(".png"):
                recipe = read_recipe(member)
                assert recipe and recipe["prompt"].startswith("A sign")
                _no_key(json.dumps(recipe), f"the recipe of {name}")

    for img in page.locator("img[src*='/thumbs/']").all():
        _no_key(httpx.get(img.get_attribute("src")).content, "a thumbnail")
    health = httpx.get(studio.url + "/api/health")
    assert health.json()["mode"] == "HiAPI"
    _no_key(health.text, "/api/health")

    # Everything the studio wrote: database (and WAL), images, thumbnails, exports, its log.
    files = [p for p in studio.data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in files) and any(p.name.startswith("studio.db") for p in files)
    for p in files:
        _no_key(p.read_bytes(), str(p.relative_to(studio.data_dir)))
    log = studio.log()
    assert "poll" in log or "HTTP_503" in log or "tracker" in log or log  # the log has content
    _no_key(log, "the server log")
    screenshot(page, "security-gallery")


def assert_inert(page, where: str) -> None:
    """Nothing of the prompt (or of text derived from it) was interpreted on the page as it is now."""
    assert page.evaluate("() => window.__pwned") is None, where
    app = page.locator("[data-testid='stMain'], [role='dialog'], [data-testid='stSidebar']")
    assert app.locator("script:text('__pwned')").count() == 0, where
    assert page.locator("img[src='x']").count() == 0, where
    assert (
        page.locator("b:text('bold tag'), strong:text('bold'), em:text('it'), b:text-is('n')").count() == 0
    ), where
    assert page.locator("strong:text-is('Evil')").count() == 0, where
    assert page.locator("a[href^='javascript'], a[href*='evil.example']").count() == 0, where
    assert page.locator("h1:text('Heading')").count() == 0, where
    assert page.locator(".katex").count() == 0, where


def test_a_hostile_prompt_shows_literally_everywhere_and_runs_nothing(page, studio):
    marker = uuid.uuid4().hex[:6]
    prompt = f"{HOSTILE} {marker}"
    card = _generate(page, studio, prompt, ("16:9",))
    expect(card).to_contain_text("<script>window.__pwned=1</script>")
    expect(card).to_contain_text("**bold** _it_ <b>bold tag</b> [link](javascript:")
    screenshot(page, "security-queue")
    assert_inert(page, "the queue")

    page.get_by_role("link", name="Gallery").click()
    gallery_card = page.locator("[class*='st-key-card_']").filter(
        has_text="<script>window.__pwned=1</script>"
    )
    expect(gallery_card).to_have_count(1)
    # One line of the prompt, exactly as typed (CSS ends it with an ellipsis; the lightbox has it all).
    expect(gallery_card).to_contain_text("**bold** _it_ <b>bold tag</b> [link](javascript:")
    assert_inert(page, "the gallery")
    gallery_card.get_by_role("button", name="Open", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("code").filter(has_text=marker)).to_contain_text(
        prompt
    )  # the whole prompt, as sent
    # The text check lists the quoted strings it looked for: a URL among them stays plain text.
    expect(dialog.locator("p").filter(has_text="visit https://evil.example/win").first).to_be_visible(
        timeout=30_000
    )
    screenshot(page, "security-lightbox")
    assert_inert(page, "the lightbox")
    page.keyboard.press("Escape")

    # Saved to the library under a name that is markdown too: both shown as typed.
    name = f"**Evil** [x](javascript:window.__pwned=4) <b>n</b> {marker}"
    page.get_by_role("link", name="Studio").click()
    expect(page.locator(".st-key-prompt_editor textarea")).to_have_value(prompt)
    page.get_by_role("button", name="Save to library").click()
    page.get_by_label("Template name").fill(name)
    page.get_by_label("Template name").press("Enter")
    page.locator(".st-key-lib_save button").click()
    expect(page.get_by_text("to the library.")).to_be_visible()
    page.keyboard.press("Escape")
    page.get_by_role("link", name="Library").click()
    lib_card = page.locator("[class*='st-key-lib_card_']").filter(has_text=marker)
    expect(lib_card).to_have_count(1)
    expect(lib_card).to_contain_text(name)
    expect(lib_card).to_contain_text("<script>window.__pwned=1</script>")
    screenshot(page, "security-library")
    assert_inert(page, "the library")


def test_a_hostile_placeholder_error_shows_the_placeholder_and_the_escape_literally(page, studio):
    # The error quotes what was typed: a remote image and a link stay text, and the
    # advice shows its backslash (markdown would otherwise eat it: "type {{.").
    placeholder = "{{![p](https://evil.example/p.png) [x](https://evil.example/x)}}"
    open_studio(page, studio)
    set_prompt(page, "A poster of a {{product}} " + placeholder)
    panel = page.locator(".st-key-campaign_rows [data-testid='stAlertContentError']").first
    expect(panel).to_contain_text(placeholder[:30], timeout=30_000)
    expect(panel).to_contain_text("To write {{ literally, type \\{{.")
    assert page.locator("img[src*='evil.example']").count() == 0
    assert_inert(page, "the placeholder error")
    screenshot(page, "security-placeholder")
