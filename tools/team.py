"""`make team`: the studio in team mode on this machine, for trying it out.

Starts, every listener on 127.0.0.1:
- a throwaway PostgreSQL cluster in `<data>/team/pg` (Debian's server, as an unprivileged
  user when run as root; made afresh at each start),
- SeaweedFS's `weed mini` as the S3 store, in `<data>/team/s3`, bucket `studio`,
- one HiAPI simulator both replicas share (unless HIAPI_API_KEY is set: then real HiAPI),
- two studio replicas (`python -m launch`, STUDIO_ROLE=all) on ports 8501 and 8502, each
  with its own data folder `<data>/team/replica-<port>`, sharing nothing else but the
  database and the bucket.
The engines are started as the test fixtures start them (tools/engines.py). Ctrl+C (or
SIGTERM) stops the replicas, then the engines. Prints the two URLs; never a password.
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tools.engines import PostgresServer, S3Server, end_process_group

ROOT = Path(__file__).resolve().parent.parent
#: Variables a replica does not inherit from this shell (the team's own are set below).
_OWN = ("DATABASE_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "AWS_", "STUDIO_ROLE", "STUDIO_DATA_DIR")


def _reachable(folder: Path) -> None:
    """As root, let the cluster's unprivileged user traverse (not list) the folders above
    `folder` inside this checkout; the server refuses to start where it cannot reach."""
    if os.geteuid() != 0:
        return
    for parent in folder.resolve().parents:
        if not parent.is_relative_to(ROOT) or parent == ROOT.parent:
            break
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _replica(port: int, data: Path, env: dict[str, str]) -> subprocess.Popen:
    data.mkdir(parents=True, exist_ok=True)
    log = open(data / "server.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "launch", "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env={**env, "STUDIO_DATA_DIR": str(data)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _healthy(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/_stcore/health", timeout=1).text.strip() == "ok":
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ports", type=int, nargs="+", default=[8501, 8502])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("STUDIO_DATA_DIR") or "data"))
    args = parser.parse_args(argv)
    team = (args.data / "team").absolute()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    pg_root = team / "pg"
    pg_root.parent.mkdir(parents=True, exist_ok=True)
    _reachable(pg_root)
    pg = PostgresServer(root=pg_root)
    s3 = S3Server(root=team / "s3")
    simulator = None
    replicas: list[subprocess.Popen] = []
    try:
        print("starting PostgreSQL in", pg_root, flush=True)
        pg.start()
        print("starting SeaweedFS (weed mini) in", team / "s3", flush=True)
        s3.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN)}
        env.update(
            {
                "STUDIO_ROLE": "all",
                "DATABASE_URL": pg.dsn,
                "STORAGE_URL": f"s3://{s3.bucket}/studio",
                "S3_ENDPOINT_URL": s3.endpoint_url,
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                "AWS_REGION": s3.REGION,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if not env.get("HIAPI_API_KEY"):  # one simulator for both, so either may follow any task
            import secrets

            from studio.simulator import Simulator

            key = "sk-team-" + secrets.token_hex(8)
            simulator = Simulator(api_keys=[key], min_duration=3.0, max_duration=8.0).start()
            env.update({"HIAPI_API_KEY": key, "HIAPI_BASE_URL": simulator.base_url})
            print("simulated HiAPI at", simulator.base_url, flush=True)
        for port in args.ports:
            replicas.append(_replica(port, team / f"replica-{port}", env))
        for port, proc in zip(args.ports, replicas, strict=True):
            url = f"http://127.0.0.1:{port}"
            if not _healthy(url, proc, 90):
                print(
                    f"the replica on port {port} did not start: see {team / f'replica-{port}' / 'server.log'}"
                )
                return 1
            print("replica ready:", url, flush=True)
        print("Ctrl+C stops the replicas, SeaweedFS and PostgreSQL.", flush=True)
        while not stop.is_set():
            for port, proc in zip(args.ports, replicas, strict=True):
                if proc.poll() is not None:
                    print(f"the replica on port {port} exited ({proc.returncode}); stopping the team")
                    return 1
            stop.wait(1.0)
        return 0
    finally:
        for proc in replicas:
            end_process_group(proc)
        if simulator is not None:
            simulator.stop()
        s3.stop()
        pg.stop()
        print("team stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
