"""Start-up checks and the bind policy: a clear sentence, never a traceback, nothing started."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from studio import services as core
from studio.config import Settings
from studio.startup import StartupError, bind_problem, check_data_dir, check_database
from studio.store import Store
from tests.support import ROOT, StudioServer, free_port

KEY = "sk-startup-secret-0123456789"


def _unwritable_dir(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits)."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        return d / "data"
    d = Path("/sys/kernel/studio-data")  # sysfs refuses new entries, even to root
    try:
        d.mkdir()
    except OSError:
        return d
    d.rmdir()
    pytest.skip("no unwritable location found for root on this machine")


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a database, just text " * 200)
    return path


def _lock(path: Path) -> sqlite3.Connection:
    """Another program holding the database's write lock."""
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO collections (name, created_at) VALUES ('held', 0)")
    return holder


# -- the checks ---------------------------------------------------------------------


def test_data_folder_that_is_a_file_is_named(tmp_path):
    f = tmp_path / "data"
    f.write_text("x")
    with pytest.raises(StartupError, match=r"is a file, not a folder.*STUDIO_DATA_DIR"):
        check_data_dir(f)


def test_unwritable_data_folder_is_refused_with_what_to_do(tmp_path):
    d = _unwritable_dir(tmp_path)
    with pytest.raises(StartupError, match=r"(cannot be created|not writable).*STUDIO_DATA_DIR") as e:
        check_data_dir(d)
    assert str(d) in e.value.message


def test_full_disk_is_refused_before_anything_is_paid_for(tmp_path):
    with pytest.raises(StartupError, match=r"MB are free.*needs at least .* MB.*Free some space"):
        check_data_dir(tmp_path / "data", min_free_mb=10**12)
    check_data_dir(tmp_path / "data", min_free_mb=1)  # and fine with room to spare


def test_corrupt_database_is_named_with_the_way_out(tmp_path):
    db = _corrupt(tmp_path / "studio.db")
    with pytest.raises(StartupError, match=r"is damaged \(file is not a database\).*move studio.db aside"):
        check_database(db)


def test_damaged_page_inside_a_real_database_is_caught(tmp_path):
    db = tmp_path / "studio.db"
    store = Store(db)
    for i in range(400):  # enough rows for several b-tree pages
        store.add_collection(f"collection {i:04d} " + "x" * 200)
    store.close()
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    data = bytearray(db.read_bytes())
    page = 4096
    data[page * 3 : page * 3 + 512] = b"\xff" * 512
    db.write_bytes(bytes(data))
    with pytest.raises(StartupError, match="is damaged"):
        check_database(db)


def test_locked_database_is_named(tmp_path):
    db = tmp_path / "studio.db"
    holder = _lock(db)
    try:
        with pytest.raises(StartupError, match=r"locked by another program"):
            check_database(db, lock_wait_s=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    check_database(db)  # released: fine again


def test_boot_refuses_and_starts_nothing(tmp_path):
    core.shutdown()
    settings = Settings.load(env={"STUDIO_DATA_DIR": str(tmp_path / "d")})
    _corrupt(tmp_path / "d" / "studio.db")
    with pytest.raises(StartupError):
        core.boot(settings)
    assert core.current() is None
    (tmp_path / "d" / "studio.db").unlink()
    s = core.boot(settings)  # fixed: the next call starts
    try:
        assert s.tracker.alive
    finally:
        core.shutdown()


# -- in the page ----------------------------------------------------------------------

PROBLEMS = ["unwritable", "full", "locked", "corrupt"]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_page_shows_the_problem_without_a_traceback(problem, tmp_path, monkeypatch):
    data = tmp_path / "data"
    holder = None
    if problem == "unwritable":
        data = _unwritable_dir(tmp_path)
    elif problem == "full":
        monkeypatch.setenv("STUDIO_MIN_FREE_MB", str(10**12))
    elif problem == "locked":
        holder = _lock(data / "studio.db")
    else:
        _corrupt(data / "studio.db")
    for k in ("HIAPI_API_KEY", "HIAPI_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(data))
    core.shutdown()
    import streamlit as st

    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
        assert not at.exception, at.exception
        [err] = at.error
        assert err.value.startswith("The studio cannot start.")
        expected = {
            "unwritable": "cannot be created",
            "full": "MB are free",
            "locked": "locked by another program",
            "corrupt": "is damaged",
        }[problem]
        assert expected in err.value
        assert not at.text_area  # no Studio page behind it: nothing can be submitted
        assert core.current() is None
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
        core.shutdown()
        st.cache_resource.clear()


# -- on the command line ----------------------------------------------------------------


def test_server_prints_one_clear_line_and_keeps_answering(tmp_path):
    data = tmp_path / "data"
    _corrupt(data / "studio.db")
    server = StudioServer(data).start()
    try:
        r = httpx.get(server.url + "/api/health", timeout=10)
        assert r.status_code == 503 and "is damaged" in r.json()["problem"]
        assert httpx.get(server.url + "/thumbs/" + "a" * 64 + ".webp", timeout=10).status_code == 503
        log = server.log()
        assert "Studio cannot start: The database" in log
        assert "Traceback" not in log
    finally:
        server.stop()


def _run_server(env_extra: dict[str, str], address: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIAPI_", "STUDIO_"))}
    env.update(env_extra)
    return subprocess.run(
        [
            sys.executable, "-m", "streamlit", "run", "server.py", "--server.port", str(free_port()),
            "--server.address", address, "--server.headless", "true",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])
def test_real_key_on_an_exposed_address_is_refused_at_start(address, tmp_path):
    done = _run_server({"HIAPI_API_KEY": KEY, "STUDIO_DATA_DIR": str(tmp_path / "d")}, address)
    assert done.returncode == 2
    assert f"Studio not started: Refusing to listen on {address} with a real HiAPI API key" in done.stderr
    assert "STUDIO_ALLOW_REMOTE=1" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert KEY not in done.stderr + done.stdout


def test_bind_policy():
    refuse = dict(real_key=True, allow_remote=False, login_configured=False)
    assert bind_problem("127.0.0.1", **refuse) is None
    assert bind_problem("localhost", **refuse) is None
    assert bind_problem("::1", **refuse) is None
    assert bind_problem("0.0.0.0", **refuse)
    assert bind_problem("", **refuse)  # Streamlit's default is every interface
    assert bind_problem(None, **refuse)
    assert bind_problem("10.1.2.3", **refuse)
    assert bind_problem("0.0.0.0", **(refuse | {"allow_remote": True})) is None
    assert bind_problem("0.0.0.0", **(refuse | {"login_configured": True})) is None
    assert bind_problem("0.0.0.0", **(refuse | {"real_key": False})) is None  # the simulator spends nothing
    assert Settings.load(env={"STUDIO_ALLOW_REMOTE": "1"}).allow_remote
    assert not Settings.load(env={}).allow_remote
