"""Team mode end to end: two studio replicas, each with its own data folder, sharing nothing
but one PostgreSQL database, one S3 bucket (SeaweedFS) and one HiAPI (the simulator).

A Generate click in a browser on replica A is created once at HiAPI, kept once, and shows in
replica B's gallery with the same bytes, served by B from the bucket.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import httpx
import psycopg
import pytest
from playwright.sync_api import expect

from studio import services as core
from studio.blob_keys import export_key, kit_key, new_token
from studio.blobstores.s3 import S3BlobStore
from studio.config import Settings
from studio.export import EXPORT_LIFETIME_S
from studio.postgres.schema import SCHEMA_VERSION
from studio.postgres.store import PgStore
from studio.startup import StartupError
from tests.support import ARRIVAL_MS, StudioServer, free_port, wait_for
from tests.test_browser_studio import generate, open_studio, set_prompt

KEY = "sk-team-" + uuid.uuid4().hex


def _rows(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(sql, params).fetchall())


def _gallery(server: StudioServer) -> dict:
    return httpx.get(server.url + "/api/view/gallery?offset=0&limit=50", timeout=30).json()


def _team_settings(tmp_path, dsn: str, **env: str) -> Settings:
    return Settings.load(env={"STUDIO_DATA_DIR": str(tmp_path), "DATABASE_URL": dsn, **env}, secrets={})


def test_replicas_starting_on_one_database_agree_on_the_callback_token_and_signing_key(tmp_path, postgres_db):
    settings = _team_settings(tmp_path, postgres_db, HIAPI_CALLBACK_URL="https://studio.example.com")
    first, second = PgStore.open(settings.database), PgStore.open(settings.database)
    try:
        keys = {core._signing_key(settings, store) for store in (first, second)}
        plans = {core._callback_plan(settings, store)[:2] for store in (second, first)}
        assert len(keys) == 1 and len(next(iter(keys))) == 32
        [(url, token)] = plans
        assert token and url.endswith("/" + token)
        configured = _team_settings(tmp_path, postgres_db, STUDIO_SIGNING_KEY="k" * 40)
        assert core._signing_key(configured, first) == b"k" * 40
    finally:
        first.close()
        second.close()
    assert not any(tmp_path.iterdir())  # nothing shared was written to the data folder


def test_a_database_that_refuses_the_login_stops_the_start_with_the_password_masked(tmp_path, postgres_db):
    wrong = postgres_db.replace("//studio:", "//studio:not-the-", 1)
    core.shutdown()
    with pytest.raises(StartupError, match="cannot be used.*check DATABASE_URL") as refused:
        core.boot(_team_settings(tmp_path, wrong))
    password = wrong.split("@")[0].rsplit(":", 1)[1]
    assert password not in str(refused.value) and "***" in str(refused.value)
    assert core.current() is None


def test_a_database_from_a_newer_studio_is_refused_at_start_in_one_sentence(tmp_path, postgres_db):
    PgStore.open(_team_settings(tmp_path, postgres_db).database).close()  # migrated to this studio's version
    with psycopg.connect(postgres_db) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    before = _rows(postgres_db, "SELECT version FROM schema_migrations ORDER BY version")
    core.shutdown()
    with pytest.raises(StartupError) as refused:
        core.boot(_team_settings(tmp_path, postgres_db))
    sentence = str(refused.value)
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this studio's {SCHEMA_VERSION}" in sentence
    assert "DATABASE_URL" in sentence and "\n" not in sentence and sentence.count(". ") == 0
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    assert core.current() is None
    assert _rows(postgres_db, "SELECT version FROM schema_migrations ORDER BY version") == before  # untouched


def test_an_object_store_that_is_down_stops_the_start_naming_the_variables(tmp_path, postgres_db):
    settings = _team_settings(
        tmp_path,
        postgres_db,
        STORAGE_URL="s3://studio/team",
        S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        AWS_ACCESS_KEY_ID="AKIDTEAM",
        AWS_SECRET_ACCESS_KEY="secret-team-key-never-shown",
    )
    core.shutdown()
    with pytest.raises(StartupError, match="object store.*S3_ENDPOINT_URL") as refused:
        core.boot(settings)
    assert "secret-team-key-never-shown" not in str(refused.value)
    assert core.current() is None


def test_a_team_start_sweeps_old_downloads_from_the_bucket_and_asks_it_to_expire_the_rest(
    tmp_path, postgres_db, s3_server
):
    prefix = "boot-" + uuid.uuid4().hex[:8]
    store = S3BlobStore(s3_server.bucket, prefix, s3_server.client())
    long_ago = time.time() - EXPORT_LIFETIME_S - 60
    stale = [export_key(new_token(long_ago)), kit_key(new_token(long_ago), "kit.zip")]
    fresh = [export_key(new_token()), kit_key(new_token(), "kit.zip")]
    for key in stale + fresh:
        store.put(key, b"PK")
    settings = _team_settings(
        tmp_path,
        postgres_db,
        STORAGE_URL=f"s3://{s3_server.bucket}/{prefix}",
        S3_ENDPOINT_URL=s3_server.endpoint_url,
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
    )
    core.shutdown()
    core.boot(settings)
    try:
        assert not any(store.exists(k) for k in stale) and all(store.exists(k) for k in fresh)
        rules = s3_server.client().get_bucket_lifecycle_configuration(Bucket=s3_server.bucket)["Rules"]
        expiring = {r["Filter"]["Prefix"]: r["Expiration"] for r in rules if r["Status"] == "Enabled"}
        assert expiring[f"{prefix}/exports/"] == expiring[f"{prefix}/kits/"] == {"Days": 1}
        assert not any(p.startswith(f"{prefix}/originals") for p in expiring)
    finally:
        core.shutdown()


def _replica_env(sim, dsn: str, s3_server, prefix: str, role: str = "all") -> dict[str, str]:
    """A team replica's environment: one simulator, one database, one bucket prefix."""
    return {
        "HIAPI_API_KEY": KEY,
        "HIAPI_BASE_URL": sim.base_url,
        "STUDIO_ROLE": role,
        "DATABASE_URL": dsn,
        "STORAGE_URL": f"s3://{s3_server.bucket}/{prefix}",
        "S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": s3_server.REGION,
    }


@pytest.mark.browser
def test_a_click_on_one_replica_is_kept_once_and_shows_on_the_other(
    browser, tmp_path, postgres_db, s3_server, make_simulator
):
    sim = make_simulator(api_keys=[KEY], min_duration=0.5, max_duration=1.0)
    prefix = "team-" + uuid.uuid4().hex[:8]
    env = _replica_env(sim, postgres_db, s3_server, prefix)
    a = StudioServer(tmp_path / "a", env=env).start()
    b = StudioServer(tmp_path / "b", env=env).start()
    page = browser.new_page(viewport={"width": 1440, "height": 1200})
    page.set_default_timeout(ARRIVAL_MS)
    try:
        # Neither replica wrote its database or a shared secret into its data folder.
        for server in (a, b):
            assert not (server.data_dir / "studio.db").exists()
            assert not (server.data_dir / "reference-signing-key").exists()
        assert _gallery(b)["total"] == 0

        marker = uuid.uuid4().hex[:8]
        open_studio(page, a)
        set_prompt(page, f'team poster {marker} "TEAM {marker}"')
        generate(page).click()

        view = wait_for(lambda: (v := _gallery(b))["total"] >= 1 and v, timeout=ARRIVAL_MS / 1000)
        [item] = view["items"]
        submissions = _rows(
            postgres_db, "SELECT task_id FROM submissions WHERE prompt LIKE %s", (f"%{marker}%",)
        )
        assert len(submissions) == 1 and submissions[0][0]
        kept = _rows(postgres_db, "SELECT COUNT(*) FROM outputs WHERE state = 'kept'")[0][0]
        assert kept == 1
        stats = httpx.get(sim.base_url + "/_sim/stats", timeout=10).json()
        assert stats["tasks_created"] == 1

        # B serves the original A kept: from the bucket, with the bytes HiAPI made.
        served_b = httpx.get(b.url + item["download"], timeout=30, follow_redirects=True)
        served_a = httpx.get(a.url + item["download"], timeout=30, follow_redirects=True)
        assert served_b.status_code == 200 and served_b.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert hashlib.sha256(served_b.content).hexdigest() == item["sha"]
        assert served_b.content == served_a.content
        stored = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix + "/")
        assert any(item["sha"] in o["Key"] for o in stored.get("Contents", []))
        assert not any((server.data_dir / "images").exists() for server in (a, b))
    finally:
        page.close()
        a.stop()
        b.stop()
    for server in (a, b):
        log = server.log()
        assert s3_server.secret_key not in log and postgres_db.split("@")[0].split(":")[-1] not in log


@pytest.mark.browser
def test_images_kept_on_one_replica_appear_on_the_other_replicas_open_gallery_without_a_reload(
    browser, tmp_path, postgres_db, s3_server, make_simulator
):
    """B's Gallery page is opened once, empty, and then only watched: the first image kept on A
    (the empty gallery's watch reruns the page) and the next (the grid's push channel) appear."""
    sim = make_simulator(api_keys=[KEY], min_duration=0.3, max_duration=0.6)
    prefix = "team-" + uuid.uuid4().hex[:8]
    # B serves pages only (no tracker): every image is created, followed and kept by A.
    a = StudioServer(tmp_path / "a", env=_replica_env(sim, postgres_db, s3_server, prefix, "all")).start()
    b = StudioServer(tmp_path / "b", env=_replica_env(sim, postgres_db, s3_server, prefix, "web")).start()
    studio = browser.new_context(viewport={"width": 1440, "height": 1200}).new_page()
    gallery = browser.new_context(viewport={"width": 1440, "height": 1200}).new_page()
    for p in (studio, gallery):
        p.set_default_timeout(ARRIVAL_MS)
    try:
        gallery.goto(b.url + "/gallery")
        expect(gallery.get_by_text("No images match")).to_be_visible()
        gallery.evaluate("() => { window.__opened_once = true; }")  # a reload would forget it
        cards = gallery.locator(".studio-gallery .g-card[data-id]")
        open_studio(studio, a)
        markers = [uuid.uuid4().hex[:8] for _ in range(2)]
        for n, marker in enumerate(markers, 1):
            set_prompt(studio, f"team poster {marker}")
            generate(studio).click()
            expect(cards.filter(has_text=marker)).to_have_count(1, timeout=ARRIVAL_MS)
            expect(cards).to_have_count(n)
            # The count above the grid follows the same push: never fewer than the cards under it.
            expect(gallery.locator(".st-key-g_count")).to_have_text(f"{n} image{'s' if n != 1 else ''}")
        assert gallery.evaluate("() => window.__opened_once === true")
        kept = _rows(
            postgres_db,
            "SELECT o.id FROM outputs o JOIN submissions s ON s.id = o.submission_id"
            " WHERE o.state = 'kept' ORDER BY o.id",
        )
        shown = cards.evaluate_all("els => els.map(e => Number(e.dataset.id)).sort((x, y) => x - y)")
        assert shown == [oid for (oid,) in kept]
    finally:
        studio.context.close()
        gallery.context.close()
        a.stop()
        b.stop()
