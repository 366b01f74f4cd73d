"""The database or the bucket going away while the studio runs, on the real engines.

Each test here stops a real PostgreSQL server or a real SeaweedFS as an outage would
(`halt`: the server ends, its connections are cut, its data stays) and starts it again on
the same port (`resume`). The engines are this module's own, so no other test meets the
outage. What must hold:
- the adapters say `StoreUnavailable` / `BlobStoreUnavailable`, never a driver error, and
  name no credential; nothing a cut call was asked to write is half written;
- the studio notices (`Health`), tells its pages, and picks up by itself once the engine
  is back: every task terminal, none created twice, every image kept.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from studio import services as core
from studio.blobs import BlobStoreUnavailable
from studio.config import DatabaseSettings, Settings
from studio.health import SENTENCES, Dependency
from studio.models import TaskRequest
from studio.postgres.store import PgStore
from studio.repositories import StoreUnavailable
from tests.support import wait_for
from tools.engines import PG_MISSING, WEED_MISSING, PostgresServer, S3Server, postgres_bin, weed_binary

KEY = "sk-outage-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def pg():
    if postgres_bin() is None:
        pytest.fail(PG_MISSING)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3():
    if weed_binary() is None:
        pytest.fail(WEED_MISSING)
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def dsn(pg):
    url = pg.create_database()
    yield url
    if pg.proc is not None and pg.proc.poll() is not None:
        pg.resume()  # a test that failed while it was away leaves it running for the next
    pg.drop_database(url)


@pytest.fixture
def bucket(s3):
    yield s3
    if s3.proc is not None and s3.proc.poll() is not None:
        s3.resume()


def test_a_database_that_goes_away_is_store_unavailable_and_its_return_is_seen_by_the_next_ping(pg, dsn):
    store = PgStore.open(DatabaseSettings.parse(dsn, Path("/nonexistent")))
    try:
        store.save_draft("before", '{"prompt": "kept"}', now=1.0, prune_before=None)
        store.ping()
        assert not store.unavailable
        pg.halt()
        for call in (
            store.ping,
            lambda: store.draft_body("before"),
            lambda: store.save_draft("during", '{"prompt": "lost?"}', now=2.0, prune_before=None),
        ):
            with pytest.raises(StoreUnavailable) as away:
                call()
            assert pg.password not in str(away.value) and "postgresql://" not in str(away.value)
            # No driver error rides along (a traceback shows nothing more than the sentence).
            assert away.value.__cause__ is None
            assert away.value.__context__ is None or away.value.__suppress_context__
        assert store.unavailable
        pg.resume()
        wait_for(lambda: _answers(store), timeout=60)
        assert not store.unavailable
        assert store.draft_body("before") == '{"prompt": "kept"}'
        assert store.draft_body("during") is None  # the write it cut was not half made
        store.save_draft("after", '{"prompt": "saved"}', now=3.0, prune_before=None)
        assert store.draft_body("after") == '{"prompt": "saved"}'
    finally:
        store.close()


def _answers(store: PgStore) -> bool:
    try:
        store.ping()
    except StoreUnavailable:
        return False
    return True


def test_a_bucket_that_goes_away_is_blob_store_unavailable_and_answers_again_when_back(bucket):
    from studio.blobstores import blob_store_for
    from studio.config import StorageSettings

    settings = StorageSettings.parse(
        f"s3://{bucket.bucket}/outage-{uuid.uuid4().hex[:6]}",
        Path("/nonexistent"),
        {
            "S3_ENDPOINT_URL": bucket.endpoint_url,
            "AWS_ACCESS_KEY_ID": bucket.access_key,
            "AWS_SECRET_ACCESS_KEY": bucket.secret_key,
            "AWS_REGION": bucket.REGION,
        },
    )
    blobs = blob_store_for(settings)
    blobs.put("images/a.png", b"before")
    blobs.ping()
    bucket.halt()
    for call in (
        blobs.ping,
        lambda: blobs.put("images/b.png", b"during"),
        lambda: blobs.exists("images/a.png"),
    ):
        with pytest.raises(BlobStoreUnavailable) as away:
            call()
        assert bucket.secret_key not in str(away.value) and bucket.access_key not in str(away.value)
    bucket.resume()
    wait_for(lambda: _blobs_answer(blobs), timeout=90)
    # SeaweedFS's gateway answers before its volume server is back: reads work a moment later.
    assert wait_for(lambda: _read(blobs, "images/a.png"), timeout=90) == b"before"
    assert not blobs.exists("images/b.png")


def _read(blobs, key: str) -> bytes | None:
    try:
        return blobs.open(key).read()
    except BlobStoreUnavailable:
        return None


def _blobs_answer(blobs) -> bool:
    try:
        blobs.ping()
    except BlobStoreUnavailable:
        return False
    return True


def _team(tmp_path: Path, dsn: str, s3: S3Server, sim, **env: str) -> Settings:
    return Settings.load(
        env={
            "STUDIO_DATA_DIR": str(tmp_path),
            "STUDIO_ROLE": "all",
            "DATABASE_URL": dsn,
            "STORAGE_URL": f"s3://{s3.bucket}/t-{uuid.uuid4().hex[:8]}",
            "S3_ENDPOINT_URL": s3.endpoint_url,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_REGION": s3.REGION,
            "HIAPI_API_KEY": KEY,
            "HIAPI_BASE_URL": sim.base_url,
            **env,
        },
        secrets={},
    )


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["database", "storage"])
def test_work_in_flight_when_an_engine_goes_away_finishes_once_it_is_back(
    engine, tmp_path, pg, dsn, bucket, make_simulator
):
    import hashlib

    sim = make_simulator(api_keys=[KEY], min_duration=0.5, max_duration=1.5)
    server = pg if engine == "database" else bucket
    dep = Dependency.DATABASE if engine == "database" else Dependency.STORAGE
    core.shutdown()
    services = core.boot(_team(tmp_path, dsn, bucket, sim))
    told: list[tuple[Dependency, ...]] = []
    services.health.subscribe(told.append)
    try:
        requests = [TaskRequest(f'Outage poster {i} "SALE {i}"', "1:1", "1K") for i in range(6)]
        ids = services.intake.submit(requests, click_token=f"outage-{engine}")
        # Tasks are at HiAPI when the engine goes: the tracker is following them.
        wait_for(lambda: _created(sim) >= 1, timeout=60)
        server.halt()
        wait_for(lambda: dep in services.health.down(), timeout=60)
        assert services.health.problem() == SENTENCES[dep]
        server.resume()
        wait_for(lambda: not services.health.down(), timeout=90)
        wait_for(lambda: _all_done(services, ids), timeout=180)

        subs = [services.store.submission(i) for i in ids]
        assert _created(sim) == len(ids)  # none created twice
        assert len({s.task_id for s in subs if s is not None}) == len(ids)
        outputs = [o for rows in services.store.outputs_for(ids).values() for o in rows]
        succeeded = [s for s in subs if s is not None and s.state == "success"]
        assert succeeded and outputs
        assert all(o.state == "kept" for o in outputs), [(o.state, o.error) for o in outputs]
        for o in outputs:  # every image is in the bucket, whole
            assert o.sha256 is not None
            data = services.keeper.open_original(o.sha256).read()
            assert hashlib.sha256(data).hexdigest() == o.sha256
        assert dep in told[0] and told[-1] == ()  # the pages were told it went, and that it came back
    finally:
        core.shutdown()


def _created(sim) -> int:
    return int(httpx.get(sim.base_url + "/_sim/stats", timeout=10).json()["tasks_created"])


def _all_done(services, ids: list[int]) -> bool:
    """Every submission terminal and none of its images still waiting to be kept."""
    try:
        subs = [services.store.submission(i) for i in ids]
        outputs = [o for rows in services.store.outputs_for(ids).values() for o in rows]
    except StoreUnavailable:
        return False
    return all(s is not None and s.is_terminal for s in subs) and all(o.state != "pending" for o in outputs)


@pytest.mark.browser
def test_an_open_studio_says_the_database_is_away_keeps_what_is_typed_and_carries_on_when_it_is_back(
    browser, tmp_path, pg, dsn, bucket, make_simulator
):
    from playwright.sync_api import expect

    from tests.support import ARRIVAL_MS, StudioServer
    from tests.test_browser_studio import EDITOR, GENERATE, generate, open_studio, set_prompt

    sim = make_simulator(api_keys=[KEY], min_duration=0.5, max_duration=1.0)
    env = {
        "HIAPI_API_KEY": KEY,
        "HIAPI_BASE_URL": sim.base_url,
        "STUDIO_ROLE": "all",
        "DATABASE_URL": dsn,
        "STORAGE_URL": f"s3://{bucket.bucket}/b-{uuid.uuid4().hex[:8]}",
        "S3_ENDPOINT_URL": bucket.endpoint_url,
        "AWS_ACCESS_KEY_ID": bucket.access_key,
        "AWS_SECRET_ACCESS_KEY": bucket.secret_key,
        "AWS_REGION": bucket.REGION,
    }
    studio = StudioServer(tmp_path / "studio", env=env).start()
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    away = page.get_by_text(SENTENCES[Dependency.DATABASE]).first
    try:
        open_studio(page, studio)
        set_prompt(page, "typed before the outage")
        pg.halt()
        # Told on the open page with no click or key on it: pushed.
        expect(away).to_be_visible(timeout=ARRIVAL_MS)
        assert page.locator(EDITOR).input_value() == "typed before the outage"
        set_prompt(page, 'typed while it is away "OPEN"')
        expect(page.get_by_text("Generate waits for the studio's database")).to_be_visible()
        expect(generate(page)).to_be_disabled()
        view = httpx.get(studio.url + "/api/view/gallery?offset=0&limit=5", timeout=30)
        assert view.status_code == 503 and view.json()["problem"] == SENTENCES[Dependency.DATABASE]
        page.get_by_role("link", name="Gallery").first.click()
        expect(away).to_be_visible()
        page.get_by_role("link", name="Studio").first.click()
        expect(page.locator(EDITOR)).to_have_value('typed while it is away "OPEN"')
        expect(generate(page)).to_be_disabled()  # drawn whole: the rest of the page is there too
        artifacts = Path(__file__).parent / "artifacts"
        page.screenshot(path=str(artifacts / "outage-studio-desktop.png"))
        assert page.get_by_text(SENTENCES[Dependency.DATABASE]).count() == 1  # said once, above the page
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        try:  # a session begun while it is away: the same sentence, and Generate says why it waits
            open_studio(phone, studio)
            expect(phone.get_by_text(SENTENCES[Dependency.DATABASE]).first).to_be_visible()
            expect(phone.get_by_text("Generate waits for the studio's database")).to_be_visible()
            phone.screenshot(path=str(artifacts / "outage-studio-phone.png"), full_page=True)
        finally:
            phone.close()

        pg.resume()
        expect(away).to_have_count(0, timeout=ARRIVAL_MS)  # gone by itself once it is back
        # The page drawn again (on a busy machine its run may take a while: the button of the run
        # before stays beside the new one until it ends).
        expect(page.locator(GENERATE)).to_have_count(1, timeout=ARRIVAL_MS)
        expect(generate(page)).to_be_enabled(timeout=ARRIVAL_MS)
        generate(page).click()
        wait_for(
            lambda: (
                httpx.get(studio.url + "/api/view/gallery?offset=0&limit=5", timeout=30).json()["total"] == 1
            )
        )
        assert _created(sim) == 1
        page.reload()  # the draft typed while it was away was saved once it was back
        expect(page.locator(EDITOR)).to_have_value('typed while it is away "OPEN"')
        log = studio.log()
        assert pg.password not in log and bucket.secret_key not in log
    finally:
        page.close()
        studio.stop()


def test_a_worker_started_while_the_database_is_down_waits_for_it_and_then_follows_tasks(tmp_path, pg, dsn):
    import os
    import signal
    import subprocess
    import sys

    from tests.support import ROOT, STUDIO_ENV_PREFIXES

    pg.halt()
    env = {k: v for k, v in os.environ.items() if not k.startswith(STUDIO_ENV_PREFIXES)}
    env.update({"STUDIO_DATA_DIR": str(tmp_path), "STUDIO_ROLE": "worker", "DATABASE_URL": dsn})
    err, out = tmp_path / "err.log", tmp_path / "out.log"
    with open(err, "wb") as e, open(out, "wb") as o:
        proc = subprocess.Popen(
            [sys.executable, "-m", "studio.worker"],
            cwd=ROOT,
            env=env,
            stdout=o,
            stderr=e,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "Worker waiting:" in err.read_text(), timeout=120)
        assert proc.poll() is None  # waiting, not exited
        pg.resume()
        wait_for(lambda: "following tasks" in out.read_text(), timeout=120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    said = err.read_text()
    assert said.count("Worker waiting:") == 1  # said once, however long it waited
    assert pg.password not in said and pg.password not in out.read_text()


def test_a_database_nobody_listens_for_is_an_outage_to_wait_for():
    from studio.postgres.pool import DatabaseUnavailable, open_pool

    wrong = DatabaseSettings.parse("postgresql://studio:wrong@127.0.0.1:1/studio", Path("/nonexistent"))
    with pytest.raises(DatabaseUnavailable) as refused:
        open_pool(wrong, timeout=1)
    assert refused.value.transient  # nothing listens on port 1: a server not up (yet)


def test_a_refused_login_is_a_setting_to_fix_not_an_outage(pg, dsn):
    from studio.postgres.pool import DatabaseUnavailable, open_pool

    wrong = DatabaseSettings.parse(
        dsn.replace(f":{pg.password}@", ":not-the-password@"), Path("/nonexistent")
    )
    with pytest.raises(DatabaseUnavailable) as refused:
        open_pool(wrong, timeout=2)
    assert not refused.value.transient and "not-the-password" not in refused.value.message


@pytest.mark.browser
def test_a_studio_started_while_the_database_is_down_says_so_and_opens_by_itself_when_it_is_back(
    browser, tmp_path, pg, dsn, bucket
):
    from playwright.sync_api import expect

    from tests.support import ARRIVAL_MS, StudioServer
    from tests.test_browser_studio import GENERATE

    pg.halt()
    env = {
        "STUDIO_ROLE": "all",
        "DATABASE_URL": dsn,
        "STORAGE_URL": f"s3://{bucket.bucket}/s-{uuid.uuid4().hex[:8]}",
        "S3_ENDPOINT_URL": bucket.endpoint_url,
        "AWS_ACCESS_KEY_ID": bucket.access_key,
        "AWS_SECRET_ACCESS_KEY": bucket.secret_key,
        "AWS_REGION": bucket.REGION,
    }
    studio = StudioServer(tmp_path / "studio", env=env).start()
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(studio.url + "/")
        expect(page.get_by_text("The studio cannot start.")).to_be_visible(timeout=ARRIVAL_MS)
        expect(page.get_by_text("Trying again every few seconds")).to_be_visible()
        assert pg.password not in page.content()
        pg.resume()
        expect(page.locator(GENERATE)).to_have_count(1, timeout=ARRIVAL_MS)  # no click, no reload
    finally:
        page.close()
        studio.stop()


@pytest.mark.browser
def test_a_tab_opened_while_the_database_is_away_gets_the_stored_draft_once_it_is_back_and_never_empties_it(
    browser, tmp_path, pg, dsn, bucket
):
    from playwright.sync_api import expect

    from tests.support import ARRIVAL_MS, StudioServer
    from tests.test_browser_studio import EDITOR, open_studio, set_prompt

    env = {
        "STUDIO_ROLE": "all",
        "DATABASE_URL": dsn,
        "STORAGE_URL": f"s3://{bucket.bucket}/d-{uuid.uuid4().hex[:8]}",
        "S3_ENDPOINT_URL": bucket.endpoint_url,
        "AWS_ACCESS_KEY_ID": bucket.access_key,
        "AWS_SECRET_ACCESS_KEY": bucket.secret_key,
        "AWS_REGION": bucket.REGION,
    }
    studio = StudioServer(tmp_path / "studio", env=env).start()
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        first = context.new_page()
        open_studio(first, studio)
        set_prompt(first, "yesterday's poster")
        wait_for(lambda: "yesterday" in (_stored_prompt(dsn) or ""), timeout=60)
        first.close()

        pg.halt()
        later = context.new_page()  # same browser (its draft cookie), a new session
        open_studio(later, studio)
        expect(later.get_by_text(SENTENCES[Dependency.DATABASE]).first).to_be_visible(timeout=ARRIVAL_MS)
        assert later.locator(EDITOR).input_value() == ""  # the stored draft cannot be read yet
        pg.resume()
        expect(later.locator(EDITOR)).to_have_value("yesterday's poster", timeout=ARRIVAL_MS)  # no click
        later.reload()
        expect(later.locator(EDITOR)).to_have_value("yesterday's poster")
        assert _stored_prompt(dsn) == "yesterday's poster"  # never overwritten by the empty session
    finally:
        context.close()
        studio.stop()


def _stored_prompt(dsn: str) -> str | None:
    import json

    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT body FROM drafts").fetchall()
    prompts = [json.loads(r[0]).get("prompt") for r in rows]
    return prompts[0] if len(prompts) == 1 else None
