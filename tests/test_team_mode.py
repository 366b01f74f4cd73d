"""Team mode end to end: two studio replicas, each with its own data folder, sharing nothing
but one PostgreSQL database, one S3 bucket (SeaweedFS) and one HiAPI (the simulator).

A Generate click in a browser on replica A is created once at HiAPI, kept once, and shows in
replica B's gallery with the same bytes, served by B from the bucket.
"""

from __future__ import annotations

import hashlib
import uuid

import httpx
import psycopg
import pytest

from tests.support import ARRIVAL_MS, StudioServer, wait_for
from tests.test_browser_studio import generate, open_studio, set_prompt

pytestmark = pytest.mark.browser

KEY = "sk-team-" + uuid.uuid4().hex


def _rows(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return list(conn.execute(sql, params).fetchall())


def _gallery(server: StudioServer) -> dict:
    return httpx.get(server.url + "/api/view/gallery?offset=0&limit=50", timeout=30).json()


def test_a_click_on_one_replica_is_kept_once_and_shows_on_the_other(
    browser, tmp_path, postgres_db, s3_server, make_simulator
):
    sim = make_simulator(api_keys=[KEY], min_duration=0.5, max_duration=1.0)
    prefix = "team-" + uuid.uuid4().hex[:8]
    env = {
        "HIAPI_API_KEY": KEY,
        "HIAPI_BASE_URL": sim.base_url,
        "STUDIO_ROLE": "all",
        "DATABASE_URL": postgres_db,
        "STORAGE_URL": f"s3://{s3_server.bucket}/{prefix}",
        "S3_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": s3_server.REGION,
    }
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
        submissions = _rows(postgres_db, "SELECT task_id FROM submissions WHERE prompt LIKE %s", (f"%{marker}%",))
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
