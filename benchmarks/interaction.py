"""Interaction latency: page switches and opening the lightbox, beside a bare Streamlit app.

The studio (a `TimedStudioServer` on a Gallery of 200 kept images) and, in the
same run, a bare two-page Streamlit app with one st.dialog (the baseline: what
Streamlit itself costs on this machine now) are both up at once and driven by
one niced Chromium turn about, so other load weighs on both alike:
- page switch: click a sidebar link → the other page's content visible
  (Studio → Gallery: 24 cards; Gallery → Studio: the Generate button; bare:
  the other page's title);
- dialog open: click Open on a Gallery card → the lightbox's image decoded
  (bare: click a button → the dialog's text visible).
Each figure is the p50 (and p95 in the note) over the rounds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, pct
from benchmarks.startup import (
    SERVER_FLAGS,
    TimedStudioServer,
    free_port,
    launch_niced_browser,
    stop_group,
    wait_healthy,
)

SECTION = "P5 interaction"
ROUNDS = 12
ITEMS = 200

BARE = {
    "bare.py": (
        "import streamlit as st\n"
        "pg = st.navigation([st.Page('one.py', title='One', default=True), st.Page('two.py', title='Two')])\n"
        "pg.run()\n"
    ),
    "one.py": (
        "import streamlit as st\n"
        "st.title('Page one')\n"
        "@st.dialog('Bare dialog', width='large')\n"
        "def show():\n"
        "    st.write('Inside the dialog')\n"
        "if st.button('Open'):\n"
        "    show()\n"
    ),
    "two.py": "import streamlit as st\nst.title('Page two')\n",
}


def _bare_server(folder: Path) -> tuple[subprocess.Popen, str]:
    for name, text in BARE.items():
        (folder / name).write_text(text)
    port = free_port()
    log = open(folder / "bare.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "bare.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.fileWatcherType", "none", *SERVER_FLAGS],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc, 60.0)
    return proc, url


def _timed(action, wait) -> float:
    t0 = time.perf_counter()
    action()
    wait()
    return time.perf_counter() - t0


def _studio_round(page: Any) -> tuple[float, float, float]:
    cards = "[class*='st-key-card_']"
    to_gallery = _timed(
        lambda: page.get_by_role("link", name="Gallery").click(),
        lambda: page.wait_for_function(f'() => document.querySelectorAll("{cards}").length === 24'),
    )

    def lightbox_shown() -> None:
        page.wait_for_function(
            "() => { const i = document.querySelector('[role=dialog] .st-key-lb_image img');"
            " return i && i.complete && i.naturalWidth > 0; }"
        )

    dialog = _timed(
        lambda: page.locator(cards).first.get_by_role("button", name="Open").click(), lightbox_shown
    )
    page.keyboard.press("Escape")
    page.wait_for_selector("[role=dialog]", state="detached")
    to_studio = _timed(
        lambda: page.get_by_role("link", name="Studio").click(),
        lambda: page.wait_for_selector(".st-key-generate_box button:visible"),
    )
    return to_gallery, to_studio, dialog


def _bare_round(page: Any) -> tuple[float, float, float]:
    to_two = _timed(
        lambda: page.get_by_role("link", name="Two").click(),
        lambda: page.wait_for_selector("h1:has-text('Page two')"),
    )
    to_one = _timed(
        lambda: page.get_by_role("link", name="One").click(),
        lambda: page.wait_for_selector("h1:has-text('Page one')"),
    )
    dialog = _timed(
        lambda: page.get_by_role("button", name="Open").click(),
        lambda: page.wait_for_selector("[role=dialog] >> text=Inside the dialog"),
    )
    page.keyboard.press("Escape")
    page.wait_for_selector("[role=dialog]", state="detached")
    return to_two, to_one, dialog


def run(quick: bool = False) -> list[Row]:
    from playwright.sync_api import sync_playwright

    from benchmarks.gallery import make_images, seed_store

    rounds = 3 if quick else ROUNDS
    load_avg = os.getloadavg()[0]
    studio_s: list[tuple[float, float, float]] = []
    bare_s: list[tuple[float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-interaction-") as tmp:
        data = Path(tmp) / "studio"
        seed_store(data / "studio.db", make_images(data / "images", 24), ITEMS)
        server = TimedStudioServer(data).start()
        bare_proc = None
        try:
            bare_proc, bare_url = _bare_server(Path(tmp))
            with sync_playwright() as pw:
                browser = launch_niced_browser(pw, Path(tmp))
                try:
                    studio = browser.new_page(viewport={"width": 1440, "height": 1000})
                    bare = browser.new_page(viewport={"width": 1440, "height": 1000})
                    for p in (studio, bare):
                        p.set_default_timeout(60_000)
                    studio.goto(server.url + "/")
                    studio.wait_for_selector(".st-key-generate_box button:visible")
                    bare.goto(bare_url + "/")
                    bare.wait_for_selector("h1:has-text('Page one')")
                    _studio_round(studio)  # warm both (first imports, caches) before measuring
                    _bare_round(bare)
                    for _ in range(rounds):
                        studio_s.append(_studio_round(studio))
                        bare_s.append(_bare_round(bare))
                finally:
                    browser.close()
        finally:
            server.stop()
            stop_group(bare_proc)

    def ms(rows: list[tuple[float, ...]], i: int, q: float = 0.5) -> float:
        return pct([r[i] for r in rows], q) * 1000

    def note(i: int) -> str:
        return (f"p50 of {rounds} rounds; p95 {ms(studio_s, i, 0.95):.0f} ms vs bare {ms(bare_s, i, 0.95):.0f} ms; "
                f"both servers up at once, Chromium niced; load average {load_avg:.1f} at the start")  # fmt: skip

    return [
        Row(SECTION, "page switch Studio → Gallery (24 cards shown)", ms(studio_s, 0), "ms",
            baseline=ms(bare_s, 0), baseline_name="bare 2-page app", note=note(0)),
        Row(SECTION, "page switch Gallery → Studio (Generate shown)", ms(studio_s, 1), "ms",
            baseline=ms(bare_s, 1), baseline_name="bare 2-page app", note=note(1)),
        Row(SECTION, "lightbox open (click → image decoded)", ms(studio_s, 2), "ms",
            baseline=ms(bare_s, 2), baseline_name="bare st.dialog", note=note(2)),
    ]  # fmt: skip


if __name__ == "__main__":
    from benchmarks.common import table

    rows = run(quick="--quick" in sys.argv)
    print(table(rows))
    print("\n".join(f"- {r.metric}: {r.note}" for r in rows if r.note))
