"""Soak: many submissions through the tracker under faults, with a SIGKILL in the middle.

    python -m tools.soak --submissions 300        # what `make soak` runs
    python -m tools.soak --team --submissions 300 # two replicas on PostgreSQL + SeaweedFS

Three processes, all on this machine's loopback:

1. the HiAPI simulator (`python -m studio.simulator`), with faults switched on
   through `POST /_sim/faults`: 429 and 503 with Retry-After on GETs, create
   answers dropped after the task was made, 10 % failed tasks, failed and
   truncated downloads;
2. a tracker process (`python -m tools.soak worker`) that boots the studio's
   services exactly as the server does (`studio.services.boot` with
   HIAPI_BASE_URL/HIAPI_API_KEY pointing at the simulator), records every
   submission with `Tracker.submit` and follows them;
3. the same tracker process started again on the same data folder after the
   first one was killed with SIGKILL part-way through.

Then everything is checked against the store, the files and the simulator:
every submission terminal, no task created twice (and none created that the
store does not know), every success with its image on disk matching its
sha256, every failure with HiAPI's reason. The figures are printed; the exit
status is 0 only when every check passes. Nothing here imports streamlit.

`--team`: a throwaway PostgreSQL cluster and SeaweedFS's `weed mini` (tools/engines.py,
as `make team` starts them) and two tracker processes in team mode (DATABASE_URL,
STORAGE_URL=s3://…), each with its own data folder, each submitting half; the second is
killed with SIGKILL at both points and restarted, so its leases must run out and the
work pass on (to the other or to its restart) with nothing created twice and nothing
lost. The checks read PostgreSQL and the bucket.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from studio.blob_keys import original_key, thumb_key

_TEAM_ENV = ("DATABASE_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "AWS_")

#: The checkout this file is in: its processes run from here (`-m tools.soak`), wherever the soak began.
ROOT = Path(__file__).resolve().parent.parent
SOAK_KEY = "sk-soak-0123456789abcdef"
#: Faults as the issue lists them; rates are per request (per task for fail_rate).
DEFAULT_FAULTS: dict[str, Any] = {
    "get_429_rate": 0.1,
    "get_503_rate": 0.1,
    "retry_after": 1,
    "drop_create_answer_rate": 0.1,
    "fail_rate": 0.1,
    "download_fail_rate": 0.1,
    "download_truncate_rate": 0.1,
    # Slow creates keep some POSTs in flight when the kill lands.
    "create_delay_s": 0.5,
}
PROMPTS = (
    'A poster with the headline "SUMMER DROP" in bold condensed letters',
    'A chalkboard café menu titled "MORNING BREW"',
    "Studio photograph of a sage-green ceramic mug on a stone plinth",
    'Launch visual for headphones called "AURORA", headline "HEAR THE LIGHT"',
    "A floating market town on the backs of three giant turtles at dawn",
)
RATIO_SETS = (("1:1",), ("16:9", "9:16"), ("4:5", "1:1", "16:9"), ("3:2",), ("21:9", "2:3", "4:3", "9:16"))


# --------------------------------------------------------------------------- the worker


def worker(submit: int, seed: int, wait_s: float) -> int:
    """The tracker process: submit `submit` requests (0 to only resume), then follow them to the end."""
    from studio.config import Settings
    from studio.models import TaskRequest
    from studio.ratios import combination_problem
    from studio.services import boot, shutdown

    services = boot(Settings.load())
    tracker, store = services.tracker, services.store
    rng = random.Random(seed)
    sent = 0
    while sent < submit:
        drawn = RATIO_SETS[rng.randrange(len(RATIO_SETS))]
        resolution = "2K" if rng.random() < 0.2 else "1K"
        # Only what HiAPI accepts (no 4:5 at 2K): a refused create is not what the soak measures.
        ratios = tuple(r for r in drawn if not combination_problem(r, resolution))[: submit - sent]
        prompt = f"{PROMPTS[rng.randrange(len(PROMPTS))]} (soak #{sent + 1})"
        tracker.submit([TaskRequest(prompt, r, resolution) for r in ratios])
        sent += len(ratios)
    print(f"submitted {sent}", flush=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not store.unfinished() and store.next_output_due() is None:
            print("all terminal, every image settled", flush=True)
            shutdown()
            return 0
        time.sleep(0.5)
    print("gave up waiting", flush=True)
    shutdown()
    return 3


# --------------------------------------------------------------------------- the run


@dataclass
class SoakResult:
    submissions: int
    terminal: int
    by_state: dict[str, int]
    with_task: int
    tasks_created: int
    duplicates: int
    orphans: int
    successes: int
    images_verified: int
    lost_images: list[int]
    failures: int
    failures_with_reason: int
    failures_matching: int
    kill_snapshots: list[dict[str, Any]]
    sim_stats: dict[str, Any]
    elapsed_s: float
    temp_files_left: int
    problems: list[str] = field(default_factory=list)
    trackers: str = "the tracker"

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        s = self.sim_stats
        req = s.get("requests", {})

        def count(prefix: str) -> int:
            return sum(n for name, n in req.items() if name.startswith(prefix))

        lines = [f"Soak: {self.submissions} submissions through {self.trackers}, faults on"]
        for i, k in enumerate(self.kill_snapshots, 1):
            lines.append(
                f"  SIGKILL {i}, then restart: {k.get('terminal', 0)} terminal / {k.get('in_flight', 0)} in flight"
                f" / {k.get('sending', 0)} sending / {k.get('images_pending', 0)} images pending"
            )
        lines += [
            f"  terminal                 {self.terminal}/{self.submissions}   {dict(sorted(self.by_state.items()))}",
            f"  duplicates               {self.duplicates}   (tasks created on the simulator {self.tasks_created}, "
            f"submissions with a task {self.with_task}, tasks unknown to the store {self.orphans})",
            f"  lost images              {len(self.lost_images)}   (successes {self.successes}, "
            f"images on disk matching their sha256 {self.images_verified})",
            f"  failures with the reason {self.failures_with_reason}/{self.failures}   "
            f"(matching HiAPI's own answer {self.failures_matching}/{self.failures})",
            f"  faults met               GET 429 {count('GET /v1/tasks/{id} 429')}, "
            f"GET 503 {count('GET /v1/tasks/{id} 503')}, create answers dropped {s.get('create_answers_dropped', 0)}, "
            f"idempotent replays {s.get('idempotent_replays', 0)}, downloads failed "
            f"{count('GET /files/{file} 500')}, downloads answered (truncated ones included) "
            f"{s.get('downloads', 0)} for {self.images_verified} images",
            f"  temp files left by the kills {self.temp_files_left}; elapsed {self.elapsed_s:.0f} s",
        ]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def _start_simulator(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    cmd = [
        sys.executable, "-m", "studio.simulator", "--port", "0", "--api-key", SOAK_KEY,
        "--min-duration", str(args.min_duration), "--max-duration", str(args.max_duration),
        "--seed", str(args.seed), "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True, start_new_session=True
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    if not base_url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"the simulator did not start (see {log})")
    return proc, base_url


def _start_worker(
    data: Path,
    base_url: str,
    submit: int,
    args: argparse.Namespace,
    log: Path,
    team: dict[str, str] | None = None,
    seed: int | None = None,
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIAPI_", "STUDIO_", *_TEAM_ENV))}
    env.update(team or {})
    env.update(
        HIAPI_BASE_URL=base_url,
        HIAPI_API_KEY=SOAK_KEY,
        STUDIO_DATA_DIR=str(data),
        STUDIO_MIN_FREE_MB="50",
        PYTHONUNBUFFERED="1",
    )
    cmd = [
        sys.executable, "-m", "tools.soak", "worker", "--submit", str(submit),
        "--seed", str(args.seed if seed is None else seed),
        "--wait", str(args.timeout),
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _fetch(db: Path | str, sql: str) -> list[dict[str, Any]]:
    """Rows of `sql` from the store: a SQLite file read-only, or a PostgreSQL DSN."""
    if isinstance(db, Path):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql)]
        finally:
            conn.close()
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(db, row_factory=dict_row, connect_timeout=5) as pg:
        return list(pg.execute(sql).fetchall())


def _snapshot(db: Path | str) -> dict[str, Any]:
    """Where the work stands, read from the store by a separate read-only connection."""
    if isinstance(db, Path) and not db.exists():
        return {}
    try:
        rows = _fetch(db, "SELECT state, COUNT(*) AS n FROM submissions GROUP BY state")
        states = {r["state"]: r["n"] for r in rows}
        pending = _fetch(db, "SELECT COUNT(*) AS n FROM outputs WHERE state='pending'")[0]["n"]
    except Exception:  # not made yet (sqlite3.Error, psycopg.Error): nothing to read
        return {}
    terminal = sum(n for s, n in states.items() if s in ("success", "fail", "rejected"))
    return {
        "total": sum(states.values()),
        "terminal": terminal,
        "sending": states.get("submitting", 0),
        "in_flight": sum(states.values()) - terminal - states.get("submitting", 0),
        "images_pending": pending,
        "states": states,
    }


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _all_sim_tasks(http: httpx.Client) -> dict[str, dict[str, Any]]:
    tasks: dict[str, dict[str, Any]] = {}
    page = 1
    while True:
        r = http.get("/v1/tasks", params={"page": page, "size": 100})
        r.raise_for_status()
        data = r.json()["data"]
        for t in data["tasks"]:
            tasks[t["taskId"]] = t
        if page * 100 >= data["total"]:
            return tasks
        page += 1


def verify(
    data: Path,
    base_url: str,
    submissions: int,
    *,
    db: Path | str | None = None,
    blobs: Any = None,
    temp_dirs: list[Path] | None = None,
) -> tuple[SoakResult, list[str]]:
    """Every check of the soak, from the store, the blob store and the simulator (faults off).

    Defaults: the data folder's SQLite file and its `images/` folder; team mode passes the
    PostgreSQL DSN, the bucket's blob store and each replica's temp folder."""
    from studio.blobs import LocalBlobStore

    problems: list[str] = []
    db = data / "studio.db" if db is None else db
    blobs = LocalBlobStore(data / "images") if blobs is None else blobs
    subs = _fetch(db, "SELECT * FROM submissions ORDER BY id")
    outs: dict[int, list[dict[str, Any]]] = {}
    for o in _fetch(db, "SELECT * FROM outputs ORDER BY id"):
        outs.setdefault(o["submission_id"], []).append(o)

    admin = httpx.Client(base_url=base_url, timeout=30, trust_env=False)
    admin.post("/_sim/faults", json={k: 0 for k in DEFAULT_FAULTS}).raise_for_status()
    stats = admin.get("/_sim/stats").json()
    api = httpx.Client(
        base_url=base_url, timeout=30, trust_env=False, headers={"Authorization": f"Bearer {SOAK_KEY}"}
    )
    sim_tasks = _all_sim_tasks(api)

    by_state: dict[str, int] = {}
    for s in subs:
        by_state[s["state"]] = by_state.get(s["state"], 0) + 1
    terminal = sum(n for st, n in by_state.items() if st in ("success", "fail", "rejected"))
    if len(subs) != submissions:
        problems.append(f"{len(subs)} submissions in the store, {submissions} expected")
    if terminal != len(subs):
        problems.append(f"{len(subs) - terminal} submissions not terminal")

    task_ids = [s["task_id"] for s in subs if s["task_id"]]
    duplicates = max(0, stats["tasks_created"] - len(set(task_ids)))
    orphans = len(set(sim_tasks) - set(task_ids))
    if duplicates or orphans or len(task_ids) != len(set(task_ids)):
        problems.append(f"{duplicates} duplicate tasks, {orphans} tasks the store does not know")

    lost: list[int] = []
    verified = 0
    for s in subs:
        if s["state"] != "success":
            continue
        rows = outs.get(s["id"], [])
        good = 0
        for o in rows:
            if o["state"] != "kept" or not o["sha256"]:
                continue
            # The database keeps the hash; the blob store's keys say where the bytes are.
            if not blobs.exists(original_key(o["sha256"])):
                continue
            with blobs.open(original_key(o["sha256"])) as f:
                if hashlib.sha256(f.read()).hexdigest() != o["sha256"]:
                    continue
            if not blobs.exists(thumb_key(o["sha256"])):
                continue
            good += 1
        if rows and good == len(rows):
            verified += 1
        else:
            lost.append(s["id"])
    if lost:
        problems.append(f"{len(lost)} successes without their image on disk: submissions {lost[:10]}")

    failures = [s for s in subs if s["state"] == "fail"]
    with_reason = sum(1 for s in failures if s["error_code"] and s["error_message"])
    matching = 0
    for s in failures:
        err = (sim_tasks.get(s["task_id"]) or {}).get("error") or {}
        if err.get("code") == s["error_code"] and err.get("message") == s["error_message"]:
            matching += 1
    if with_reason != len(failures) or matching != len(failures):
        problems.append(f"failures with HiAPI's reason {with_reason}/{len(failures)}, matching {matching}")
    rejected = by_state.get("rejected", 0)
    if rejected:
        problems.append(f"{rejected} submissions rejected (none of the soak's requests is invalid)")

    temp_dirs = [data / "images" / "tmp"] if temp_dirs is None else temp_dirs
    temp_left = sum(1 for t in temp_dirs if t.exists() for _ in t.glob("*.part"))
    admin.close()
    api.close()
    result = SoakResult(
        submissions=len(subs),
        terminal=terminal,
        by_state=by_state,
        with_task=len(task_ids),
        tasks_created=stats["tasks_created"],
        duplicates=duplicates,
        orphans=orphans,
        successes=by_state.get("success", 0),
        images_verified=verified,
        lost_images=lost,
        failures=len(failures),
        failures_with_reason=with_reason,
        failures_matching=matching,
        kill_snapshots=[],
        sim_stats=stats,
        elapsed_s=0.0,
        temp_files_left=temp_left,
        problems=problems,
    )
    return result, problems


def _mid_creates(snap: dict[str, Any], n: int, kill_at: int) -> bool:
    """The last creates are in flight (some tasks may have finished already)."""
    return snap.get("total") == n and 0 < snap.get("sending", 0) <= max(1, n // 4)


def _mid_results(snap: dict[str, Any], n: int, kill_at: int) -> bool:
    """A good share finished; polls and downloads of the rest are under way."""
    return snap.get("total") == n and snap.get("terminal", 0) >= kill_at


def run(args: argparse.Namespace) -> SoakResult:
    """The whole soak; returns the checked figures (see `SoakResult.ok`).

    The tracker process is killed with SIGKILL twice and restarted each time on
    the same data folder: once while the last creates are in flight (their
    answers are lost; the restart must resend them with their stored keys),
    once when `--kill-at` of the submissions are terminal (polls and downloads
    under way). The third process runs to the end.
    """
    started = time.monotonic()
    own_dir = args.data is None
    data = Path(args.data or tempfile.mkdtemp(prefix="studio-soak-"))
    data.mkdir(parents=True, exist_ok=True)
    log = data / "soak.log"
    sim, base_url = _start_simulator(args, log)
    workers: list[subprocess.Popen] = []
    try:
        faults = dict(DEFAULT_FAULTS, create_delay_s=args.create_delay)
        httpx.post(base_url + "/_sim/faults", json=faults, timeout=10).raise_for_status()
        db = data / "studio.db"
        n = args.submissions
        kill_at = max(1, int(n * args.kill_at))
        snapshots: list[dict[str, Any]] = []
        workers.append(_start_worker(data, base_url, n, args, log))
        for point in (_mid_creates, _mid_results):
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                snap = _snapshot(db)
                if point(snap, n, kill_at) or (snap.get("total") == n and snap.get("terminal", 0) >= kill_at):
                    break
                if workers[-1].poll() is not None:
                    raise RuntimeError(f"the tracker process ended before the kill (see {log})")
                time.sleep(0.05)
            else:
                raise RuntimeError(f"no progress to the kill point within {args.timeout:.0f} s (see {log})")
            _kill_group(workers[-1], signal.SIGKILL)
            snapshots.append(_snapshot(db))  # what the crash left
            workers.append(_start_worker(data, base_url, 0, args, log))
        try:
            code = workers[-1].wait(args.timeout)
        except subprocess.TimeoutExpired:
            code = None
        result, _ = verify(data, base_url, n)
        if code != 0:
            result.problems.append(f"the restarted tracker did not finish (exit {code}; see {log})")
        result.kill_snapshots = snapshots
        result.elapsed_s = time.monotonic() - started
        return result
    finally:
        for proc in workers:
            _kill_group(proc, signal.SIGTERM)
        _kill_group(sim, signal.SIGTERM)
        if own_dir and not args.keep:
            import shutil

            shutil.rmtree(data, ignore_errors=True)


def run_team(args: argparse.Namespace) -> SoakResult:
    """The soak in team mode: PostgreSQL + SeaweedFS, two tracker processes, faults on.

    Replica A and replica B each submit half. B is killed with SIGKILL at both points
    (`run`'s) and restarted on its own data folder; its claims pass on only when their
    leases run out. Both processes run to the end (each stops when the database has
    nothing left to do), and the checks read PostgreSQL and the bucket."""
    from tools.engines import PostgresServer, S3Server, end_process_group

    started = time.monotonic()
    own_dir = args.data is None
    data = Path(args.data or tempfile.mkdtemp(prefix="studio-soak-team-"))
    data.mkdir(parents=True, exist_ok=True)
    log = data / "soak.log"
    pg, s3 = PostgresServer(), S3Server()
    sim = None
    workers: dict[str, list[subprocess.Popen]] = {"a": [], "b": []}
    try:
        pg.start()
        s3.start()
        team = {
            "DATABASE_URL": pg.dsn,
            "STORAGE_URL": f"s3://{s3.bucket}/soak",
            "S3_ENDPOINT_URL": s3.endpoint_url,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_REGION": s3.REGION,
            "STUDIO_ROLE": "all",
        }
        sim, base_url = _start_simulator(args, log)
        faults = dict(DEFAULT_FAULTS, create_delay_s=args.create_delay)
        httpx.post(base_url + "/_sim/faults", json=faults, timeout=10).raise_for_status()
        n = args.submissions
        half = n // 2
        kill_at = max(1, int(n * args.kill_at))
        folders = {name: data / f"replica-{name}" for name in workers}
        for name, submit, seed in (("a", half, args.seed), ("b", n - half, args.seed + 1)):
            workers[name].append(_start_worker(folders[name], base_url, submit, args, log, team, seed))
        snapshots: list[dict[str, Any]] = []
        for point in (_mid_creates, _mid_results):
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                snap = _snapshot(pg.dsn)
                if point(snap, n, kill_at) or (snap.get("total") == n and snap.get("terminal", 0) >= kill_at):
                    break
                for name, procs in workers.items():
                    if procs[-1].poll() is not None:
                        raise RuntimeError(f"replica {name} ended before the kill (see {log})")
                time.sleep(0.05)
            else:
                raise RuntimeError(f"no progress to the kill point within {args.timeout:.0f} s (see {log})")
            _kill_group(workers["b"][-1], signal.SIGKILL)
            snapshots.append(_snapshot(pg.dsn))  # what the crash left
            workers["b"].append(_start_worker(folders["b"], base_url, 0, args, log, team, args.seed + 1))
        codes = {}
        for name, procs in workers.items():
            try:
                codes[name] = procs[-1].wait(args.timeout)
            except subprocess.TimeoutExpired:
                codes[name] = None
        from studio.blobstores.s3 import S3BlobStore

        result, _ = verify(
            data, base_url, n, db=pg.dsn, blobs=S3BlobStore(s3.bucket, "soak", s3.client()), temp_dirs=[]
        )
        for name, code in codes.items():
            if code != 0:
                result.problems.append(f"replica {name} did not finish (exit {code}; see {log})")
        result.kill_snapshots = snapshots
        result.trackers = "two replicas on PostgreSQL + SeaweedFS (replica B SIGKILLed twice and restarted)"
        result.elapsed_s = time.monotonic() - started
        return result
    finally:
        for procs in workers.values():
            for proc in procs:
                _kill_group(proc, signal.SIGTERM)
        if sim is not None:
            end_process_group(sim)
        s3.stop()
        pg.stop()
        if own_dir and not args.keep:
            import shutil

            shutil.rmtree(data, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command")
    w = sub.add_parser("worker", help="(internal) the tracker process")
    w.add_argument("--submit", type=int, default=0)
    w.add_argument("--seed", type=int, default=7)
    w.add_argument("--wait", type=float, default=900.0)
    ap.add_argument("--submissions", type=int, default=300)
    ap.add_argument(
        "--team", action="store_true", help="two replicas on PostgreSQL + SeaweedFS (tools/engines.py)"
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--min-duration", type=float, default=1.0, help="simulated task seconds (default 1)")
    ap.add_argument("--max-duration", type=float, default=4.0, help="simulated task seconds (default 4)")
    ap.add_argument("--kill-at", type=float, default=0.4, help="share of terminal submissions at the kill")
    ap.add_argument(
        "--create-delay",
        type=float,
        default=DEFAULT_FAULTS["create_delay_s"],
        help="seconds the simulator takes per create, so the kill lands with creates in flight",
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds each phase may take at most")
    ap.add_argument("--data", default=None, help="data folder (default: a temporary one, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "worker":
        return worker(args.submit, args.seed, args.wait)
    result = run_team(args) if args.team else run(args)
    print(result.report(), flush=True)
    if args.json:
        print(json.dumps({k: v for k, v in result.__dict__.items() if k != "sim_stats"}, default=str))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
