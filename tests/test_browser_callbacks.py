"""Callbacks end to end in a real browser: the studio creates tasks with a callback
to its own route, its embedded simulator calls back (signed), and the images
show without routine polling."""

from __future__ import annotations

import sqlite3
import uuid

import httpx
import pytest
from playwright.sync_api import expect

from tests.support import StudioServer, screenshot, wait_for
from tests.test_browser_studio import creative, generate, open_studio, set_prompt, set_ratio

pytestmark = pytest.mark.browser

TOKEN = "browser_" + "Qp7Rs6Tu" * 4
SECRET = "whsec-browser-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = StudioServer(tmp_path_factory.mktemp("callbacks-browser"))
    s.extra_env.update(
        {"HIAPI_CALLBACK_URL": s.url, "HIAPI_CALLBACK_TOKEN": TOKEN, "HIAPI_WEBHOOK_SECRET": SECRET}
    )
    s.start()
    yield s
    s.stop()


def health(server) -> dict:
    return httpx.get(server.url + "/api/health", timeout=10).json()


def sim(server) -> str:
    return health(server)["simulator"]


def tasks_of(server, marker: str) -> list[tuple[int, str]]:
    with sqlite3.connect(server.data_dir / "studio.db", timeout=10) as db:
        return db.execute(
            "SELECT id, task_id FROM submissions WHERE prompt LIKE ? ORDER BY id", (f"%{marker}%",)
        ).fetchall()


def successes(server, submission_id: int) -> tuple[int, int]:
    with sqlite3.connect(server.data_dir / "studio.db", timeout=10) as db:
        events = db.execute(
            "SELECT COUNT(*) FROM task_events WHERE submission_id=? AND status='success'", (submission_id,)
        ).fetchone()[0]
        outputs = db.execute(
            "SELECT COUNT(*) FROM outputs WHERE submission_id=?", (submission_id,)
        ).fetchone()[0]
    return events, outputs


def all_kept(server, marker: str, n: int) -> bool:
    with sqlite3.connect(server.data_dir / "studio.db", timeout=10) as db:
        kept = db.execute(
            "SELECT COUNT(*) FROM submissions s JOIN outputs o ON o.submission_id = s.id"
            " WHERE s.prompt LIKE ? AND s.state = 'success' AND o.state = 'kept'",
            (f"%{marker}%",),
        ).fetchone()[0]
    return kept == n


def make(page, server, marker: str, ratios: tuple[str, ...], timeout: int = 20_000) -> None:
    open_studio(page, server)
    set_prompt(page, f'A poster {marker} with the headline "CALL ME BACK"')
    set_ratio(page, "1:1", "1:1" in ratios)
    for r in ratios:
        set_ratio(page, r, True)
    generate(page).click()
    card = creative(page, marker)
    expect(card).to_be_visible(timeout=10_000)
    expect(card.locator("[class*='st-key-task_'] img[src*='/thumbs/']")).to_have_count(
        len(ratios), timeout=timeout
    )


def test_images_arrive_by_callback_with_at_most_one_get(page, server):
    base = sim(server)
    httpx.post(
        base + "/_sim/faults", json={"callback_duplicate_rate": 1.0}, timeout=10
    )  # two concurrent deliveries
    marker = f"cb-{uuid.uuid4().hex[:6]}"
    make(page, server, marker, ("16:9", "1:1"))
    subs = tasks_of(server, marker)
    assert len(subs) == 2
    stats = wait_for(
        lambda: (st := httpx.get(base + "/_sim/stats", timeout=10).json())["callbacks_acked"] >= 4 and st
    )
    for sid, task_id in subs:
        assert stats["gets_by_task"].get(task_id, 0) <= 1
        assert successes(server, sid) == (1, 1)  # duplicates changed nothing
    h = health(server)["tracker"]
    assert h["callbacks_stored"] >= 2 and h["callbacks_duplicate"] >= 2
    screenshot(page, "callbacks-studio")


def test_dropped_callback_still_arrives_through_reconciliation(page, server):
    base = sim(server)
    httpx.post(
        base + "/_sim/faults", json={"callback_duplicate_rate": 0.0, "callback_drop_rate": 1.0}, timeout=10
    )
    try:
        marker = f"drop-{uuid.uuid4().hex[:6]}"
        make(page, server, marker, ("9:16",), timeout=60_000)  # expected finish + grace, then one GET
        [(sid, task_id)] = tasks_of(server, marker)
        assert httpx.get(base + "/_sim/stats", timeout=10).json()["gets_by_task"].get(task_id) == 1
        assert health(server)["tracker"]["reconciled"] >= 1
    finally:
        httpx.post(base + "/_sim/faults", json={"callback_drop_rate": 0.0}, timeout=10)


def test_settings_show_callbacks_with_the_token_masked(page, server):
    bad = b'{"taskId": "tk-x", "status": "handling"}'
    assert httpx.post(f"{server.url}/hiapi/callback/{TOKEN}", content=bad).status_code == 401  # unsigned
    page.goto(server.url + "/settings")
    box = page.locator(".st-key-task_updates")
    expect(box.get_by_text("Callbacks", exact=True)).to_be_visible()
    expect(box.get_by_text(f"Callback URL: {server.url}/hiapi/callback/")).to_be_visible()
    expect(box.get_by_text("Callbacks received")).to_be_visible()
    expect(box.get_by_text("Callbacks rejected")).to_be_visible()
    expect(box.get_by_text("Reconciled")).to_be_visible()
    expect(box.get_by_text("Last rejected callback")).to_be_visible()
    assert TOKEN not in page.content() and SECRET not in page.content()
    screenshot(page, "callbacks-settings")
