"""One click, one spend, in a real browser on a busy machine with a long session.

The double spend was seen with a data folder of ~100 images, a ratio toggled as
Generate was clicked, and the machine loaded. This test builds that: it keeps
100 images first, spins CPU-bound processes beside the server, then clicks
Generate (and Ctrl+Enter mashed, and a confirmation clicked twice) repeatedly
while toggling ratios, and counts at the simulator what each click created. A
press on Generate once its rerun has shown the result (the second click of a
double click that came late) sends nothing new; "Another variant" lets the same
draft make one more creative.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid

import httpx
import pytest
from playwright.sync_api import expect

from studio import services as core
from studio.config import Settings
from studio.models import TaskRequest
from tests.support import ARRIVAL_MS, StudioServer, screenshot, sql_rows, wait_for
from tests.test_browser_studio import EDITOR, generate, open_all_ratios, open_studio, set_prompt, set_ratio

pytestmark = pytest.mark.browser

SEEDED = 100
SPINNERS = 3  # CPU-bound processes beside the server, on a 2-core machine


def _seed(data_dir, n: int) -> None:
    """A long session's data folder: `n` kept images, made by the studio's own core."""
    settings = Settings.load(
        env={
            "STUDIO_DATA_DIR": str(data_dir),
            "STUDIO_SIM_MIN_DURATION": "0.05",
            "STUDIO_SIM_MAX_DURATION": "0.1",
        },
        secrets={},
    )
    core.shutdown()
    services = core.boot(settings)
    try:
        ratios = ("1:1", "16:9", "9:16", "4:3")
        for i in range(n // len(ratios)):
            services.tracker.submit([TaskRequest(f'seed poster {i} "SEED {i}"', r, "1K") for r in ratios])
        kept = "SELECT COUNT(*) FROM outputs WHERE state='kept'"
        wait_for(lambda: sql_rows(services.store, kept)[0][0] >= n, timeout=300)
    finally:
        core.shutdown()


def _creatives(server: StudioServer, marker: str) -> dict[str, int]:
    with sqlite3.connect(server.data_dir / "studio.db", timeout=10) as db:
        rows = db.execute(
            "SELECT creative_id, COUNT(*) FROM submissions WHERE prompt LIKE ? GROUP BY creative_id",
            (f"%{marker}%",),
        ).fetchall()
    return dict(rows)


def _all_sent(server: StudioServer) -> bool:
    with sqlite3.connect(server.data_dir / "studio.db", timeout=10) as db:
        return db.execute("SELECT COUNT(*) FROM submissions WHERE task_id IS NULL").fetchone()[0] == 0


def _tasks_at_simulator(server: StudioServer) -> int:
    sim = httpx.get(server.url + "/api/health", timeout=10).json()["simulator"]
    return httpx.get(sim + "/_sim/stats", timeout=10).json()["tasks_created"]


def test_every_click_makes_one_creative_under_load_in_a_long_session(browser, tmp_path):
    data = tmp_path / "data"
    _seed(data, SEEDED)
    server = StudioServer(data).start()
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(SPINNERS)]
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(ARRIVAL_MS)
    try:
        open_studio(page, server)
        open_all_ratios(page)  # the tiles are toggled directly below
        clicks: list[tuple[str, str]] = []  # (marker, how)
        for i in range(8):
            marker = f"click{i}-{uuid.uuid4().hex[:6]}"
            set_prompt(page, f'A poster {marker} with the headline "ONE CLICK"')
            how = ("toggle+click", "ctrl+enter", "toggle+click", "double-click")[i % 4]
            if how == "ctrl+enter":
                page.locator(EDITOR).press("Control+Enter")
                page.locator(EDITOR).press("Control+Enter")  # mashed
            elif how == "double-click":
                generate(page).dblclick()
            else:
                # The reported trigger: a ratio toggled and Generate clicked at once.
                ratio = ("16:9", "4:3")[i % 2]
                page.locator(f".st-key-ratio_pick_{ratio.replace(':', '-')} label").click()
                generate(page).click()
            clicks.append((marker, how))
            wait_for(lambda m=marker: _creatives(server, m), timeout=ARRIVAL_MS / 1000)
            expect(page.locator(".st-key-sent_row")).to_contain_text("Submitted")
        # A late second press, on the button the first press's rerun drew, then a variant on purpose.
        marker = f"again-{uuid.uuid4().hex[:6]}"
        set_prompt(page, f'A card {marker} with the headline "ONCE MORE"')
        generate(page).click()
        wait_for(lambda: _creatives(server, marker), timeout=ARRIVAL_MS / 1000)
        another = page.locator(".st-key-another_variant_box").get_by_role("button", name="Another variant")
        expect(another).to_be_visible()  # drawn by the rerun that shows the result
        generate(page).click()
        another.click()
        expect(page.locator(".st-key-another_variant_note")).to_contain_text("next Generate")
        generate(page).click()
        wait_for(lambda: len(_creatives(server, marker)) >= 2, timeout=ARRIVAL_MS / 1000)
        expect(another).to_be_visible()
        variants = marker
        # A click that asks first: the confirmation double-clicked sends once.
        marker = f"confirm-{uuid.uuid4().hex[:6]}"
        set_prompt(page, f'A banner {marker} with the headline "ASK FIRST"')
        for r in ("1:1", "16:9", "9:16", "4:3", "3:2", "2:3"):
            set_ratio(page, r, True)
        generate(page).click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("button", name="Generate 6 images").dblclick()
        expect(dialog).to_have_count(0)
        clicks.append((marker, "confirm"))
        wait_for(lambda: _creatives(server, marker), timeout=ARRIVAL_MS / 1000)
        screenshot(page, "one-click-under-load")

        wait_for(lambda: _all_sent(server), timeout=ARRIVAL_MS / 1000)
        assert len(_creatives(server, variants)) == 2, _creatives(server, variants)
        per_click = {m: _creatives(server, m) for m, _ in clicks}
        for (m, how), creatives in zip(clicks, per_click.values(), strict=True):
            assert len(creatives) == 1, f"{how} click {m} made {len(creatives)} creatives: {creatives}"
        assert per_click[marker] == {next(iter(per_click[marker])): 6}
        submissions = sum(n for c in per_click.values() for n in c.values())
        submissions += sum(_creatives(server, variants).values())
        assert _tasks_at_simulator(server) == submissions  # one create per image, none resent as new
    finally:
        page.close()
        for p in spinners:
            p.kill()
            p.wait(5)
        server.stop()
