"""DATABASE_URL and STORAGE_URL: parsed into typed settings, refused at start with one sentence
naming the variable and the fix, and never showing a password or a secret key."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from studio.config import (
    MASK,
    ConfigError,
    DatabaseKind,
    DatabaseSettings,
    Settings,
    StorageKind,
    StorageSettings,
    mask_url,
)
from studio.startup import StartupError
from tests.support import ROOT, free_port
from tests.test_launch import make_run_command

PASSWORD = "pg-Pa55word-not-for-eyes"
SECRET = "s3-SeCrEt-key-not-for-eyes-0123456789"


def load(tmp_path: Path, **env: str) -> Settings:
    return Settings.load(env={"STUDIO_DATA_DIR": str(tmp_path / "data"), **env})


def test_defaults_are_sqlite_and_files_in_the_data_folder(tmp_path: Path) -> None:
    s = load(tmp_path)
    assert s.database.kind is DatabaseKind.SQLITE
    assert s.database.path == tmp_path / "data" / "studio.db"
    assert s.database.url == f"sqlite:///{tmp_path}/data/studio.db"
    assert s.storage.kind is StorageKind.FILE and s.storage.root == tmp_path / "data"
    assert Settings(data_dir=tmp_path).database.path == tmp_path / "studio.db"  # built by hand too


@pytest.mark.parametrize(
    ("url", "path"),
    [("sqlite:///rel/studio.db", Path("rel/studio.db")), ("sqlite:////abs/dir/s.db", Path("/abs/dir/s.db"))],
)
def test_sqlite_urls_name_a_file(tmp_path: Path, url: str, path: Path) -> None:
    db = load(tmp_path, DATABASE_URL=url).database
    assert (db.kind, db.path, db.url) == (DatabaseKind.SQLITE, path, url)


def test_a_postgresql_url_is_kept_whole_for_the_driver_and_masked_everywhere_else(tmp_path: Path) -> None:
    url = f"postgresql://studio:{PASSWORD}@db.internal:5432/studio?sslmode=require"
    s = load(tmp_path, DATABASE_URL=url)
    assert s.database.kind is DatabaseKind.POSTGRESQL
    assert s.database.url == url
    assert s.database.safe_url == f"postgresql://studio:{MASK}@db.internal:5432/studio?sslmode=require"
    for text in (repr(s), str(s), repr(s.database), str(s.database), s.database.safe_url):
        assert PASSWORD not in text


def test_s3_storage_reads_the_endpoint_and_the_usual_aws_variables(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        STORAGE_URL="s3://team-studio/prod/images",
        S3_ENDPOINT_URL="http://127.0.0.1:8333/",
        AWS_ACCESS_KEY_ID="AKIASTUDIO",
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_SESSION_TOKEN="session-" + SECRET,
        AWS_DEFAULT_REGION="eu-west-1",
    )
    st = s.storage
    assert (st.kind, st.bucket, st.prefix, st.endpoint_url, st.region) == (
        StorageKind.S3, "team-studio", "prod/images", "http://127.0.0.1:8333", "eu-west-1",
    )  # fmt: skip
    assert (st.access_key, st.secret_key, st.session_token) == ("AKIASTUDIO", SECRET, "session-" + SECRET)
    for text in (repr(s), str(s), repr(st), str(st)):
        assert SECRET not in text and "AKIASTUDIO" not in text


def test_without_keys_s3_leaves_credentials_to_boto3s_chain(tmp_path: Path) -> None:
    st = load(tmp_path, STORAGE_URL="s3://bucket-1").storage
    assert (st.bucket, st.prefix, st.endpoint_url, st.access_key, st.region) == (
        "bucket-1", "", None, None, "us-east-1",
    )  # fmt: skip
    assert "default chain" in repr(st)


@pytest.mark.parametrize(
    ("env", "variable", "fix"),
    [
        ({"DATABASE_URL": "mysql://u:{pw}@h/db"}, "DATABASE_URL", "postgresql://user:password@host"),
        ({"DATABASE_URL": "postgresql+psycopg://u:{pw}@h/db"}, "DATABASE_URL", "suffixes"),
        ({"DATABASE_URL": "postgresql://u:{pw}@h:notaport/db"}, "DATABASE_URL", "port"),
        ({"DATABASE_URL": "postgresql://u:{pw}@h"}, "DATABASE_URL", "no database"),
        ({"DATABASE_URL": "postgresql://u:{pw}@/db"}, "DATABASE_URL", "no host"),
        ({"DATABASE_URL": "sqlite://"}, "DATABASE_URL", "sqlite:///path/to/studio.db"),
        ({"DATABASE_URL": "sqlite:///:memory:"}, "DATABASE_URL", "in a file"),
        ({"DATABASE_URL": "just text {pw}"}, "DATABASE_URL", "not a URL"),
        ({"STORAGE_URL": "s3://AKIA:{pw}@bucket/p"}, "STORAGE_URL", "AWS_SECRET_ACCESS_KEY"),
        ({"STORAGE_URL": "s3://Bad_Bucket/p"}, "STORAGE_URL", "bucket name"),
        ({"STORAGE_URL": "s3://bucket/a/../b"}, "STORAGE_URL", "prefix"),
        ({"STORAGE_URL": "s3://bucket/a b"}, "STORAGE_URL", "prefix"),
        ({"STORAGE_URL": "gs://bucket/p"}, "STORAGE_URL", "s3://bucket/prefix"),
        ({"STORAGE_URL": "file://relative/dir"}, "STORAGE_URL", "file:///absolute/folder"),
        (
            {"STORAGE_URL": "s3://bucket/p", "S3_ENDPOINT_URL": "http://u:{pw}@h:8333"},
            "S3_ENDPOINT_URL",
            "http",
        ),
        ({"STORAGE_URL": "s3://bucket/p", "S3_ENDPOINT_URL": "127.0.0.1:8333"}, "S3_ENDPOINT_URL", "http"),
        ({"STORAGE_URL": "s3://bucket/p", "AWS_ACCESS_KEY_ID": "AKIA"}, "AWS_SECRET_ACCESS_KEY", "both"),
        ({"STORAGE_URL": "s3://bucket/p", "AWS_SECRET_ACCESS_KEY": "{pw}"}, "AWS_ACCESS_KEY_ID", "both"),
    ],
)
def test_a_wrong_setting_is_one_sentence_naming_the_variable_and_the_fix(
    tmp_path: Path, env: dict[str, str], variable: str, fix: str
) -> None:
    env = {k: v.replace("{pw}", PASSWORD) for k, v in env.items()}
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **env)
    message = info.value.message
    assert isinstance(info.value, StartupError)  # every page shows a start-up problem
    assert message.startswith(variable + " ")
    assert fix in message
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message
    assert PASSWORD not in message and PASSWORD not in repr(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{PASSWORD}@h/db",
        f"postgresql://u:p@ss/{PASSWORD}@h/db",
        f"postgresql://h/db?sslmode=disable&password={PASSWORD}",
        f"garbage://:{PASSWORD}@",
    ],
)
def test_mask_url_hides_every_password_form(url: str) -> None:
    masked = mask_url(url)
    assert PASSWORD not in masked and MASK in masked


def test_the_parsers_are_the_same_ones_settings_uses(tmp_path: Path) -> None:
    assert DatabaseSettings.parse(None, tmp_path) == Settings(data_dir=tmp_path).database
    assert StorageSettings.parse(None, tmp_path, {}) == Settings(data_dir=tmp_path).storage


def test_make_run_refuses_a_wrong_database_url_before_it_listens(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIAPI_", "STUDIO_", "AWS_", "S3_"))}
    env |= {
        "STUDIO_DATA_DIR": str(tmp_path / "d"),
        "DATABASE_URL": f"postgres://studio:{PASSWORD}@db.internal:5432",
        "PYTHONUNBUFFERED": "1",
    }
    done = subprocess.run(
        make_run_command(port, "127.0.0.1"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2
    assert lines == [
        f"Studio not started: DATABASE_URL 'postgres://studio:{MASK}@db.internal:5432' cannot be used: "
        "it names no database; set it to sqlite:///path/to/studio.db (four slashes for an absolute path) "
        "or postgresql://user:password@host:5432/database, or unset it for studio.db in the data folder."
    ]
    assert PASSWORD not in done.stdout + done.stderr
