"""What tests share besides fixtures: the studio as a child process, condition waits,
Chromium's launch flags, a simulator factory and a clock tests move by hand.

Import from here (`from tests.support import wait_for`); conftest.py builds its
fixtures from these and re-exports them for older imports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing as contextlib_closing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tools.engines import (  # noqa: F401 (the team-mode engines, shared with `make team`)
    PG_MISSING,
    PG_USER,
    WEED_MISSING,
    PostgresServer,
    S3Server,
    end_process_group,
    free_port,
    postgres_bin,
    weed_binary,
)

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
        proc = self.proc

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"studio exited early:\n{self.log()}")
            try:
                return httpx.get(self.url + "/_stcore/health", timeout=1).text.strip() == "ok"
            except httpx.HTTPError:
                return False

        try:
            wait_for(healthy, timeout=timeout, step=0.2)
        except AssertionError:
            raise RuntimeError(f"studio did not become healthy:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            end_process_group(self.proc, sig)


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


#: In the page, once: every WebSocket Streamlit sends on is read as well, and while a
#: wait is armed (`window.__studioRuns.armed`) the script runs that begin after its first
#: rerun request are logged: ForwardMsg's `new_session` (field 4) and `script_finished`
#: (field 6) carry `metadata.run` (field 2 → 6: `script_run_id` 1, `fragment_ids` 2), and
#: a full-page run's `delta`s (field 5) are searched for the text it must draw.
_RUNS_JS = r"""
(want) => {
  if (!window.__studioRuns) {
    const runs = (window.__studioRuns = { armed: null, current: null, sockets: new WeakSet() });
    const varint = (b, i) => {
      let v = 0, scale = 1, c;
      do { c = b[i++]; v += (c & 0x7f) * scale; scale *= 128; } while (c & 0x80);
      return [v, i];
    };
    const fields = (b) => {  // [number, varint value | bytes] of one protobuf message
      const out = [];
      let i = 0;
      while (i < b.length) {
        let key, v;
        [key, i] = varint(b, i);
        const type = key & 7;
        if (type === 0) { [v, i] = varint(b, i); }
        else if (type === 2) { [v, i] = varint(b, i); v = b.subarray(i, i + v); i += v.length; }
        else if (type === 1 || type === 5) { i += type === 1 ? 8 : 4; continue; }
        else break;
        out.push([Math.floor(key / 8), v]);
      }
      return out;
    };
    const field = (fs, n) => (fs.find((f) => f[0] === n) || [])[1];
    const utf8 = new TextDecoder();
    const read = (e) => {
      const a = runs.armed;
      if (!a || !a.sent || !(e.data instanceof ArrayBuffer)) return;
      const top = fields(new Uint8Array(e.data));
      const meta = field(top, 2);
      const run = meta ? field(fields(meta), 6) : undefined;
      const ids = run ? fields(run) : [];
      const id = ids.filter((f) => f[0] === 1).map((f) => utf8.decode(f[1]))[0];
      const full = !ids.some((f) => f[0] === 2);
      if (field(top, 4) !== undefined) {
        runs.current = id;
        if (full) { a.latest = id; a.runs[id] = { drew: !a.want, ended: false }; }
      } else if (field(top, 6) !== undefined) {
        if (a.runs[id]) a.runs[id].ended = true;
      } else if (field(top, 5) !== undefined && a.want) {
        const r = a.runs[runs.current];
        if (r && !r.drew && utf8.decode(field(top, 5)).includes(a.want)) r.drew = true;
      }
    };
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
      if (!runs.sockets.has(this)) { runs.sockets.add(this); this.addEventListener("message", read); }
      const a = runs.armed;
      // A BackMsg whose first field is rerun_script (11, length-delimited: tag 0x5a).
      if (a && !a.sent && data instanceof Uint8Array && data[0] === 0x5a) a.sent = true;
      return send.call(this, data);
    };
  }
  window.__studioRuns.armed = { want, sent: false, latest: null, runs: {} };
}
"""

_RUN_DONE_JS = """() => {
  const a = window.__studioRuns && window.__studioRuns.armed;
  const r = a && a.latest && a.runs[a.latest];
  return !!(r && r.ended && r.drew);
}"""


def after_rerun(
    page: Any, action: Callable[[], Any], *, drawn: str | None = None, timeout_ms: float = ARRIVAL_MS
) -> None:
    """Do `action` (a blur, a click) in a Streamlit page; return once the page run it asked for is over.

    Over means: the newest full-page run begun after the action's rerun request
    has finished and, with `drawn`, sent that text to the page. The runs are read
    off the page's own WebSocket by a reader armed before the action, so a run
    that begins and ends between two looks is still seen and one that ended
    before the request never counts. The action must make Streamlit rerun.
    """
    page.evaluate(_RUNS_JS, drawn)
    action()
    page.wait_for_function(_RUN_DONE_JS, timeout=timeout_ms, polling=50)


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
