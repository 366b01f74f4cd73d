"""Team: two replicas on one PostgreSQL database and one S3 bucket, against one simulator.

    python -m benchmarks.team [--tasks 100] [--images 20] [--quick] [--push-only]

Engines as `make team` starts them (tools/engines.py): a throwaway PostgreSQL cluster and
SeaweedFS's `weed mini`. A replica here is what `studio.services.boot` builds for the work
of a team-mode server, in this process: its own `PgStore` (its own pool), its own S3 blob
store and image keeper, its own HiAPI client and a `Tracker` with its own worker id and
leases, the shared create budget keyed as boot keys it. Every scenario gets a fresh
database and bucket prefix, and the simulator's stats are reset before it:

- one replica × N tasks (baseline), then two replicas × N tasks (N/2 submitted on each):
  GETs per task; tasks created twice (tasks the simulator created beyond one per
  idempotency key the store holds); downloads beyond one per kept output;
- two replicas × N tasks, one stopped without releasing its leases (as a SIGKILL leaves
  them) once a share of the tasks is terminal: seconds from the stop until every
  submission is terminal with its images kept; lost (not terminal, or a success without
  its original and thumbnail in the bucket) and created twice;
- an image kept on replica A → its card on replica B's open Gallery page (two real studio
  servers, Chromium): `outputs.kept_at` to the card in B's DOM, beside the same images on a
  page on A (see `_push_times`);
- gallery page time at 10,000 items: `benchmarks.gallery.seed_store`'s rows in SQLite,
  copied row for row into PostgreSQL; `gallery` (with its count) through the repository
  Protocol for a few filters and a prompt search, both stores timed turn about.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Row, pct

SECTION = "team"
KEY = "sk-bench-team-000000000000"
TASK_S = (2.0, 6.0)  # simulated task seconds
# Two replicas' GETs per task at most 10 % above one replica's (fewer is not a fault: each
# follows its own tasks by the same schedule, so the figure varies by the run's noise).
GETS_TARGET = 0.10
TAKEOVER_TARGET_S = 30.0
KILL_AT = 0.3  # share of terminal submissions when a replica is stopped
MAX_ACTIVE = 200  # no queueing behind the create budget: both runs send at once
GALLERY_ITEMS = 10_000
_TRACKER_CLIENT = {"max_retries": 1, "retry_after_cap": 10.0}  # as studio.services boots it
_TERMINAL = ("success", "fail", "rejected")


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# --------------------------------------------------------------------------- replicas


@dataclass
class Engines:
    pg: Any  # tools.engines.PostgresServer
    s3: Any  # tools.engines.S3Server
    sim: Any  # studio.simulator.Simulator
    tmp: Path


class Replica:
    """One replica's work side: its own pool, blob store, client and tracker."""

    def __init__(self, eng: Engines, dsn: str, prefix: str, name: str) -> None:
        from studio.blobstores import blob_store_for
        from studio.client import HiAPIClient
        from studio.config import Settings
        from studio.images import ImageKeeper
        from studio.intake import budget_key
        from studio.postgres.store import PgStore
        from studio.tracker import Tracker

        data = eng.tmp / name
        data.mkdir(exist_ok=True)
        self.settings = Settings.load(
            env={
                "STUDIO_DATA_DIR": str(data),
                "DATABASE_URL": dsn,
                "STORAGE_URL": f"s3://{eng.s3.bucket}/{prefix}",
                "S3_ENDPOINT_URL": eng.s3.endpoint_url,
                "AWS_ACCESS_KEY_ID": eng.s3.access_key,
                "AWS_SECRET_ACCESS_KEY": eng.s3.secret_key,
                "AWS_REGION": eng.s3.REGION,
                "HIAPI_API_KEY": KEY,
                "HIAPI_BASE_URL": eng.sim.base_url,
            },
            secrets={},
        )
        self.store = PgStore.open(self.settings.database)
        self.keeper = ImageKeeper(blob_store_for(self.settings.storage), thumb_size=512)
        self.client = HiAPIClient(KEY, base_url=eng.sim.base_url, **_TRACKER_CLIENT)
        mid = sum(TASK_S) / 2
        self.tracker = Tracker(
            self.store,
            self.client,
            self.keeper,
            priors={"1K": mid, "2K": mid, "4K": mid},
            max_active=MAX_ACTIVE,
            pacing_key=budget_key(KEY, self.settings.base_url),
            worker_id=f"bench-{name}",
        ).start()
        self.stopped = False

    def submit(self, n: int, tag: str) -> None:
        from studio.models import TaskRequest
        from studio.ratios import RATIO_NAMES

        while n > 0:
            batch = [
                TaskRequest(f'Team poster {tag} #{n} with the headline "BIG DAY"', r, "1K")
                for r in RATIO_NAMES[: min(16, n)]
            ]
            self.tracker.submit(batch)
            n -= len(batch)

    def stop(self, *, release: bool = True) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.tracker.stop(release=release)
        self.client.close()
        self.keeper.close()
        self.store.close()


def _rows(dsn: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def _settled(dsn: str) -> bool:
    """Every submission terminal and no output waiting for its download."""
    (left,) = _rows(
        dsn,
        "SELECT (SELECT COUNT(*) FROM submissions WHERE state NOT IN ('success','fail','rejected'))"
        " + (SELECT COUNT(*) FROM outputs WHERE state = 'pending')",
    )[0]
    return left == 0


def _terminal(dsn: str) -> int:
    return _rows(dsn, "SELECT COUNT(*) FROM submissions WHERE state IN ('success','fail','rejected')")[0][0]


def _wait(cond: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def _check(eng: Engines, dsn: str, replica: Replica, tasks: int) -> dict[str, Any]:
    """What the simulator and the store say after a run (the simulator's faults are off)."""
    from studio.blob_keys import original_key, thumb_key

    stats = eng.sim.stats()
    subs = _rows(dsn, "SELECT id, state, task_id, idempotency_key FROM submissions")
    outs = _rows(dsn, "SELECT submission_id, state, sha256 FROM outputs")
    keys = {k for _, _, t, k in subs if t}
    kept = [o for o in outs if o[1] == "kept"]
    blobs = replica.keeper.blobs
    good = {
        sid
        for sid, _, sha in kept
        if sha and blobs.exists(original_key(sha)) and blobs.exists(thumb_key(sha))
    }
    successes = [s for s in subs if s[1] == "success"]
    lost = [s[0] for s in subs if s[1] not in _TERMINAL] + [s[0] for s in successes if s[0] not in good]
    gets = sum(stats["gets_by_task"].values())
    return {
        "submissions": len(subs),
        "created_twice": stats["tasks_created"] - len(keys),
        "tasks_created": stats["tasks_created"],
        "replays": stats["idempotent_replays"],
        "gets_per_task": gets / max(1, stats["tasks_created"]),
        "downloads": stats["downloads"],
        "extra_downloads": stats["downloads"] - len(kept),
        "kept": len(kept),
        "lost": lost + ([0] * (tasks - len(subs))),
        "states": {st: sum(1 for s in subs if s[1] == st) for st in {s[1] for s in subs}},
    }


def _scenario(eng: Engines, replicas: int, tasks: int, kill: bool, timeout: float) -> dict[str, Any]:
    dsn = eng.pg.create_database()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    eng.sim.reset_stats()
    reps = [Replica(eng, dsn, prefix, f"{prefix}-r{i}") for i in range(replicas)]
    try:
        t0 = time.monotonic()
        share = tasks // replicas
        for i, r in enumerate(reps):
            r.submit(share if i < replicas - 1 else tasks - share * (replicas - 1), f"r{i}")
        out: dict[str, Any] = {}
        if kill:
            _wait(lambda: _terminal(dsn) >= tasks * KILL_AT, timeout, "the kill point")
            worker = reps[-1].tracker.worker_id
            out["held_at_kill"] = _rows(
                dsn,
                f"SELECT (SELECT COUNT(*) FROM submissions WHERE claimed_by = '{worker}')"
                f" + (SELECT COUNT(*) FROM outputs WHERE claimed_by = '{worker}')",
            )[0][0]
            out["terminal_at_kill"] = _terminal(dsn)
            reps[-1].stop(release=False)  # its leases stay until they run out, as after a SIGKILL
            out["takeover_s"] = _wait(lambda: _settled(dsn), timeout, "every task terminal after the stop")
        else:
            out["run_s"] = _wait(lambda: _settled(dsn), timeout, "every task terminal")
        out["elapsed_s"] = time.monotonic() - t0
        out.update(_check(eng, dsn, reps[0], tasks))
        return out
    finally:
        for r in reps:
            r.stop()
        eng.pg.drop_database(dsn)


# --------------------------------------------------------------------------- gallery


def _seed_sqlite(db: Path, n: int) -> None:
    from benchmarks.gallery import _RATIO_MIX, _RES_MIX, SeedImage, seed_store

    rng = random.Random(3)
    images = [
        SeedImage(f"{rng.getrandbits(256):064x}", "", "", 1024, 1024, 1_500_000, 40_000,
                  _RATIO_MIX[i % len(_RATIO_MIX)], _RES_MIX[i % len(_RES_MIX)], "")
        for i in range(48)
    ]  # fmt: skip
    seed_store(db, images, n)


def _copy_to_pg(db: Path, dsn: str) -> None:
    """The seeded rows, table by table, into a migrated PostgreSQL database (same ids)."""
    import psycopg

    from studio.config import Settings
    from studio.postgres.store import PgStore

    PgStore.open(Settings.load(env={"DATABASE_URL": dsn}, secrets={}).database).close()  # migrate
    src = sqlite3.connect(db)
    try:
        with psycopg.connect(dsn) as conn:
            for table in (
                "submissions",
                "task_events",
                "outputs",
                "favourites",
                "collections",
                "collection_items",
            ):
                pg_cols = {
                    r[0]
                    for r in conn.execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                        " AND is_generated = 'NEVER'",
                        (table,),
                    )
                }
                cur = src.execute(f"SELECT * FROM {table}")
                names = [d[0] for d in cur.description]
                keep = [i for i, c in enumerate(names) if c in pg_cols]
                cols = ", ".join(names[i] for i in keep)
                with conn.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for row in cur:
                        copy.write_row([row[i] for i in keep])
            for table in ("submissions", "task_events", "outputs", "collections"):
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
                )
            conn.commit()
            conn.execute("ANALYZE")
    finally:
        src.close()


def _gallery_times(eng: Engines, n: int, rounds: int) -> dict[str, Any]:
    from studio.config import Settings
    from studio.postgres.store import PgStore
    from studio.records import GalleryQuery
    from studio.sqlite.store import Store

    db = eng.tmp / "gallery.db"
    t0 = time.monotonic()
    _seed_sqlite(db, n)
    dsn = eng.pg.create_database()
    _copy_to_pg(db, dsn)
    seeded_s = time.monotonic() - t0
    queries = {
        "newest": GalleryQuery(),
        "oldest, page 10": GalleryQuery(newest_first=False),
        "1:1 at 1K": GalleryQuery(ratios=("1:1",), resolutions=("1K",)),
        "favourites": GalleryQuery(favourites_only=True),
        "collection": GalleryQuery(collection_id=1),
        "search 'ramen'": GalleryQuery(text="ramen"),
    }
    stores = {
        "sqlite": Store(db),
        "postgres": PgStore.open(Settings.load(env={"DATABASE_URL": dsn}, secrets={}).database),
    }
    times: dict[str, list[float]] = {k: [] for k in stores}
    per_query: dict[str, dict[str, list[float]]] = {k: {q: [] for q in queries} for k in stores}
    counts: dict[str, dict[str, int]] = {k: {} for k in stores}
    try:
        for r in range(rounds + 1):  # round 0 warms caches and pools, not timed
            for name, store in stores.items():
                for qname, q in queries.items():
                    offset = 9 * 24 if qname.startswith("oldest") else 0
                    t = time.perf_counter()
                    items, total = store.gallery(q, limit=24, offset=offset)
                    ms = (time.perf_counter() - t) * 1000
                    counts[name][qname] = total
                    if r:
                        times[name].append(ms)
                        per_query[name][qname].append(ms)
    finally:
        for s in stores.values():
            s.close()
        eng.pg.drop_database(dsn)
    if counts["sqlite"] != counts["postgres"]:
        raise RuntimeError(f"the two stores disagree on the gallery counts: {counts}")
    return {
        "times": times,
        "per_query": per_query,
        "counts": counts["sqlite"],
        "seeded_s": seeded_s,
        "items": n,
    }


# --------------------------------------------------------------------------- push to an open page

PUSH_TARGET_S = 1.0
PUSH_TASK_S = (0.3, 0.6)  # simulated task seconds: the wait between images, not part of the figure

#: Put in every gallery page before its scripts: the first moment each card (`.g-card[data-id]`)
#: is in the DOM and the first moment its thumbnail has loaded, by output id, on the page's
#: Date.now() (the machine's wall clock, as `outputs.kept_at` is); and every push `change`
#: message's arrival with what it says, to split a delay into "reached the page" and "drawn".
_PAGE_PROBE = """
window.__seen = {}; window.__painted = {}; window.__changes = [];
(() => {
  const mark = () => {
    const now = Date.now();
    for (const card of document.querySelectorAll(".studio-gallery .g-card[data-id]")) {
      const id = card.dataset.id;
      if (!(id in window.__seen)) window.__seen[id] = now;
      const img = card.querySelector("img");
      if (img && img.complete && img.naturalWidth > 0 && !(id in window.__painted)) window.__painted[id] = now;
    }
  };
  const start = () => {
    new MutationObserver(mark).observe(document.body, { subtree: true, childList: true });
    document.addEventListener("load", mark, true);
  };
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("change", (e) => window.__changes.push([Date.now(), e.data]));
    }
  };
})();
"""


def _kept(dsn: str, marker: str) -> tuple[int, float] | None:
    rows = _rows(
        dsn,
        "SELECT o.id, o.kept_at FROM outputs o JOIN submissions s ON s.id = o.submission_id"
        f" WHERE o.state = 'kept' AND s.prompt LIKE '%{marker}%'",
    )
    return (int(rows[0][0]), float(rows[0][1])) if rows else None


def _heard_at(changes: list, output_id: int) -> float | None:
    """When the first push message naming `output_id` as kept reached the page (ms), or None."""
    import json

    for at, data in changes:
        for e in json.loads(data).get("events") or ():
            if e.get("kind") == "kept" and e.get("oid") == output_id:
                return float(at)
    return None


def _push_times(eng: Engines, n: int) -> dict[str, Any]:
    """Seconds from an image kept on replica A (`outputs.kept_at`) to its card in an open
    Gallery page on replica B, and on A itself (the baseline), for `n` images made one at a
    time by Generate clicks in A's Studio page. B is a web replica (STUDIO_ROLE=web), so A's
    tracker keeps every image. The first image (into an empty gallery) is timed apart."""
    from playwright.sync_api import sync_playwright

    from studio.simulator import Simulator
    from tests.support import CHROMIUM, CHROMIUM_ARGS, StudioServer
    from tests.test_browser_studio import generate, open_studio, set_prompt

    dsn = eng.pg.create_database()
    prefix = f"push-{uuid.uuid4().hex[:8]}"
    sim = Simulator(api_keys=[KEY], min_duration=PUSH_TASK_S[0], max_duration=PUSH_TASK_S[1]).start()
    env = {
        "HIAPI_API_KEY": KEY,
        "HIAPI_BASE_URL": sim.base_url,
        "DATABASE_URL": dsn,
        "STORAGE_URL": f"s3://{eng.s3.bucket}/{prefix}",
        "S3_ENDPOINT_URL": eng.s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": eng.s3.access_key,
        "AWS_SECRET_ACCESS_KEY": eng.s3.secret_key,
        "AWS_REGION": eng.s3.REGION,
    }
    servers: list[Any] = []
    try:
        a = StudioServer(eng.tmp / f"{prefix}-a", env={**env, "STUDIO_ROLE": "all"}).start()
        servers.append(a)
        b = StudioServer(eng.tmp / f"{prefix}-b", env={**env, "STUDIO_ROLE": "web"}).start()
        servers.append(b)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                return _push_run(browser, a, b, dsn, n, generate, open_studio, set_prompt)
            finally:
                browser.close()
    finally:
        for server in servers:
            server.stop()
        sim.stop()
        eng.pg.drop_database(dsn)


def _push_run(browser: Any, a: Any, b: Any, dsn: str, n: int, generate: Any, open_studio: Any, set_prompt: Any
              ) -> dict[str, Any]:  # fmt: skip
    def new_page(url: str | None = None) -> Any:
        page = browser.new_context(viewport={"width": 1440, "height": 1200}).new_page()
        page.set_default_timeout(120_000)
        if url is not None:
            page.add_init_script(_PAGE_PROBE)
            page.goto(url + "/gallery")
            page.wait_for_selector("h1:has-text('Gallery')")
        return page

    studio = new_page()
    open_studio(studio, a)
    watchers = {"B": new_page(b.url), "A": new_page(a.url)}
    got: dict[str, dict[str, list[float]]] = {
        k: {"card": [], "thumb": [], "heard": [], "drawn": []} for k in watchers
    }
    first: dict[str, float] = {}
    for i in range(n + 1):
        marker = uuid.uuid4().hex[:10]
        set_prompt(studio, f"Push poster {i} {marker}")
        generate(studio).click()
        oid, kept_at = _wait_value(lambda m=marker: _kept(dsn, m), 120, f"image {i} kept on A")
        for name, page in watchers.items():
            page.wait_for_function(
                "id => window.__seen[id] && window.__painted[id]", arg=str(oid), timeout=120_000
            )
            seen, painted, changes = page.evaluate(
                "id => [window.__seen[id], window.__painted[id], window.__changes]", str(oid)
            )
            if i == 0:  # into an empty gallery, on connections not used yet: apart
                first[name] = seen / 1000 - kept_at
                continue
            heard = _heard_at(changes, oid)
            got[name]["card"].append(seen / 1000 - kept_at)
            got[name]["thumb"].append(painted / 1000 - kept_at)
            if heard is not None:
                got[name]["heard"].append(heard / 1000 - kept_at)
                got[name]["drawn"].append((seen - heard) / 1000)
    return {**got, "first": first}


def _wait_value(get: Any, timeout: float, what: str) -> Any:
    t0 = time.monotonic()
    while (value := get()) is None:
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)
    return value


# --------------------------------------------------------------------------- the section


def _engines(tmp: Path) -> Engines:
    from studio.simulator import Simulator
    from tools.engines import PostgresServer, S3Server

    pg = PostgresServer().start()
    try:
        s3 = S3Server().start()
    except BaseException:
        pg.stop()
        raise
    sim = Simulator(api_keys=[KEY], min_duration=TASK_S[0], max_duration=TASK_S[1]).start()
    return Engines(pg, s3, sim, tmp)


def measure(
    tasks: int, gallery_items: int, rounds: int, pushes: int, only_push: bool = False
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-team-") as tmp:
        eng = _engines(Path(tmp))
        try:
            got: dict[str, Any] = {"load_start": _load()}
            got["push"] = _push_times(eng, pushes)
            got["load_push"] = _load()
            if only_push:
                return got
            timeout = 120 + tasks
            got["one"] = _scenario(eng, 1, tasks, kill=False, timeout=timeout)
            got["two"] = _scenario(eng, 2, tasks, kill=False, timeout=timeout)
            got["load_runs"] = _load()
            got["kill"] = _scenario(eng, 2, tasks, kill=True, timeout=timeout)
            got["load_kill"] = _load()
            got["gallery"] = _gallery_times(eng, gallery_items, rounds)
            got["load_gallery"] = _load()
            return got
        finally:
            eng.sim.stop()
            eng.s3.stop()
            eng.pg.stop()


def push_rows(got: dict[str, Any]) -> list[Row]:
    push = got["push"]
    cross, local = push["B"], push["A"]

    def split(d: dict[str, list[float]]) -> str:
        return (f"push message at the page p50 {pct(d['heard'], 0.5) * 1000:.0f} / p95 "
                f"{pct(d['heard'], 0.95) * 1000:.0f} ms, then card drawn p50 {pct(d['drawn'], 0.5) * 1000:.0f} / "
                f"p95 {pct(d['drawn'], 0.95) * 1000:.0f} ms; thumbnail loaded p50 "
                f"{pct(d['thumb'], 0.5) * 1000:.0f} / p95 {pct(d['thumb'], 0.95) * 1000:.0f} ms")  # fmt: skip

    n = len(cross["card"])
    p95, base95 = pct(cross["card"], 0.95), pct(local["card"], 0.95)
    return [
        Row(
            SECTION, f"image kept on replica A → card on B's open Gallery page, p95 of {n}", p95 * 1000, "ms",
            baseline=base95 * 1000, baseline_name="the page on A itself, same images",
            target=f"≤ {PUSH_TARGET_S * 1000:g} ms", met=p95 <= PUSH_TARGET_S,
            note=(f"from `outputs.kept_at` (A's clock just before its UPDATE commits) to the card in B's DOM "
                  f"(a MutationObserver's Date.now(), one machine's clock); A = STUDIO_ROLE=all keeps every "
                  f"image, B = web, one PostgreSQL (LISTEN/NOTIFY) and one SeaweedFS bucket; images made one at "
                  f"a time by Generate in A's Studio page; the first, into an empty gallery, "
                  f"apart: {push['first']['B'] * 1000:.0f} ms on B, {push['first']['A'] * 1000:.0f} ms on A; p50 "
                  f"{pct(cross['card'], 0.5) * 1000:.0f} ms on B vs {pct(local['card'], 0.5) * 1000:.0f} ms on A; "
                  f"max {max(cross['card']) * 1000:.0f} ms on B; on B: {split(cross)}; on A: {split(local)}; "
                  f"load average {got['load_push']} after"),
        ),
    ]  # fmt: skip


def rows_from(got: dict[str, Any], tasks: int) -> list[Row]:
    one, two, kill, gal = got["one"], got["two"], got["kill"], got["gallery"]
    ratio = two["gets_per_task"] / one["gets_per_task"] if one["gets_per_task"] else float("nan")
    pg, lite = gal["times"]["postgres"], gal["times"]["sqlite"]
    per_query = "; ".join(
        f"{q} {statistics.median(gal['per_query']['postgres'][q]):.1f}/"
        f"{statistics.median(gal['per_query']['sqlite'][q]):.1f} ms ({gal['counts'][q]:,})"
        for q in gal["counts"]
    )
    load = f"load average (1/5/15 min) {got['load_start']} at the start"
    return [
        Row(
            SECTION, f"GETs per task, 2 replicas × {tasks} tasks", two["gets_per_task"], "",
            baseline=one["gets_per_task"], baseline_name="1 replica, same simulator",
            target="≤ 1.1× (at most 10 % more)", met=ratio <= 1 + GETS_TARGET,
            note=(f"simulated tasks {TASK_S[0]:g}-{TASK_S[1]:g} s; all terminal in {two['run_s']:.1f} s "
                  f"(1 replica {one['run_s']:.1f} s); states {two['states']}; {load}, "
                  f"{got['load_runs']} after both runs"),
        ),
        Row(
            SECTION, f"tasks created twice, 2 replicas × {tasks}", two["created_twice"], "",
            target="0", met=two["created_twice"] == 0 and one["created_twice"] == 0,
            note=(f"{two['tasks_created']} tasks created for {two['submissions']} idempotency keys; "
                  f"{two['replays']} idempotent replays; 1 replica: {one['created_twice']}"),
        ),
        Row(
            SECTION, f"extra downloads per kept output, 2 replicas × {tasks}", two["extra_downloads"], "",
            target="0", met=two["extra_downloads"] == 0,
            note=f"{two['downloads']} downloads for {two['kept']} kept outputs; 1 replica: {one['extra_downloads']} extra",
        ),
        Row(
            SECTION, "one replica stopped mid-run → every task terminal", kill["takeover_s"], "s",
            target=f"≤ {TAKEOVER_TARGET_S:g} s", met=kill["takeover_s"] <= TAKEOVER_TARGET_S,
            note=(f"{tasks} tasks on 2 replicas; stopped without releasing its leases (as a SIGKILL leaves "
                  f"them; lease 15 s) with {kill['terminal_at_kill']} terminal and {kill['held_at_kill']} "
                  f"leases held by it; lost {len(kill['lost'])}, created twice {kill['created_twice']}, "
                  f"extra downloads {kill['extra_downloads']}; states {kill['states']}; load average "
                  f"{got['load_kill']} after"),
        ),
        Row(
            SECTION, "lost / created twice after the stop", len(kill["lost"]) + kill["created_twice"], "",
            target="0", met=not kill["lost"] and kill["created_twice"] == 0,
        ),
        Row(
            SECTION, f"gallery page (24 + count) p95, {gal['items']:,} items, PostgreSQL", pct(pg, 0.95), "ms",
            baseline=pct(lite, 0.95), baseline_name="SQLite, same rows",
            note=(f"`gallery` through the repository Protocol, {len(pg)} calls per store, turn about; p50 "
                  f"{pct(pg, 0.5):.1f} vs {pct(lite, 0.5):.1f} ms; median per query PostgreSQL/SQLite (matches): "
                  f"{per_query}; seeding {gal['seeded_s']:.0f} s; load average {got['load_gallery']} after"),
        ),
        *push_rows(got),
    ]  # fmt: skip


def run(quick: bool = False, tasks: int | None = None, *, pushes: int | None = None, only_push: bool = False
        ) -> list[Row]:  # fmt: skip
    tasks = tasks or (30 if quick else 100)
    pushes = pushes or (5 if quick else 20)
    got = measure(tasks, 2_000 if quick else GALLERY_ITEMS, 5 if quick else 20, pushes, only_push)
    return push_rows(got) if only_push else rows_from(got, tasks)


RESULTS = Path(__file__).with_name("RESULTS.md")
_HEADING = "## Team"


def write_results(rows: list[Row], command: str) -> None:
    """Put the team figures in benchmarks/RESULTS.md under "## Team", replacing an earlier one."""
    from benchmarks.common import table

    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    head, _, rest = text.partition("\n" + _HEADING + "\n")
    tail = ""
    if rest and "\n## " in rest:
        tail = rest[rest.index("\n## ") :]
    section = (
        f"\n{_HEADING}\n\n"
        f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{command}`; load average "
        f"(1/5/15 min) {_load()} at the end. Two replicas in one process on one PostgreSQL database and "
        "one SeaweedFS bucket (tools/engines.py), against one simulator; the open-page row runs two studio "
        "servers on them (A tracks, B serves pages only) and Chromium; see benchmarks/team.py.\n\n"
        + table(rows)
        + "\n\n"
        + "\n".join(f"- {r.metric}: {r.note}" for r in rows if r.note)
        + "\n"
    )
    RESULTS.write_text(head.rstrip("\n") + "\n" + section + tail)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import table

    ap = argparse.ArgumentParser(prog="python -m benchmarks.team", description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=None, help="tasks per run (default 100; 30 with --quick)")
    ap.add_argument(
        "--images", type=int, default=None, help="images timed to an open page (default 20; 5 with --quick)"
    )
    ap.add_argument("--push-only", action="store_true", help="only the open-page figure (not for RESULTS.md)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rows = run(quick=args.quick, tasks=args.tasks, pushes=args.images, only_push=args.push_only)
    print(table(rows))
    print("\n".join(f"- {r.metric}: {r.note}" for r in rows if r.note))
    if not args.quick and not args.push_only:
        command = "python -m benchmarks.team" + (f" --tasks {args.tasks}" if args.tasks else "")
        write_results(rows, command + (f" --images {args.images}" if args.images else ""))
        print(f"wrote the Team section of {RESULTS}")
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
