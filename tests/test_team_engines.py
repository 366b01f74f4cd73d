"""The team-mode engines the fixtures run: a PostgreSQL cluster as an unprivileged user and
SeaweedFS's S3, both on loopback only."""

from __future__ import annotations

import os

import httpx
import psycopg
import pytest


def test_postgres_runs_as_an_unprivileged_user_on_loopback(postgres_server: str) -> None:
    with psycopg.connect(postgres_server) as conn:
        row = conn.execute(
            "SELECT current_database(), inet_server_addr()::text, current_setting('data_directory')"
        ).fetchone()
    assert row is not None
    database, address, data_dir = row
    assert database == "studio"
    assert address.startswith("127.0.0.1")
    owner = os.stat(data_dir).st_uid
    assert owner != 0


def test_postgres_refuses_a_wrong_password(postgres_server: str) -> None:
    wrong = postgres_server.replace("@127.0.0.1", "x@127.0.0.1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(wrong, connect_timeout=5)


def test_each_test_gets_a_fresh_database(postgres_db: str, postgres_server: str) -> None:
    assert postgres_db != postgres_server
    with psycopg.connect(postgres_db) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)


def test_s3_serves_the_bucket_with_the_configured_credentials(s3_server) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_server.bucket, Key="engines/hello.txt", Body=b"hello")
    assert client.get_object(Bucket=s3_server.bucket, Key="engines/hello.txt")["Body"].read() == b"hello"
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    anonymous = httpx.get(f"{s3_server.endpoint_url}/{s3_server.bucket}/engines/hello.txt", timeout=10)
    assert anonymous.status_code in (401, 403)


def test_a_missing_engine_is_an_error_naming_the_install_command() -> None:
    from tests.support import PG_MISSING, WEED_MISSING, PostgresServer, S3Server

    pg, s3 = PostgresServer(), S3Server()
    pg.bin, s3.weed = None, None
    with pytest.raises(RuntimeError, match="make team-deps"):
        pg.start()
    with pytest.raises(RuntimeError, match="make install-test"):
        s3.start()
    assert "make" in PG_MISSING and "make" in WEED_MISSING
