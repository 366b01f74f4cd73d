"""P3 sessions: server CPU with 10 and then 20 open Studio pages and 100 tasks in flight.

The studio (`TimedStudioServer`: as the tests run it, on the simulator, every
script run logged) resumes 100 unsent submissions at start-up, as a crash
would leave them; the simulator keeps every task running for 4-5 minutes, so
all 100 are in flight through the run. Four windows, in one run:
  - no page open: the tracker alone, before the pages open;
  - 10 real sessions: Chromium pages on the Studio page, each in its own
    browser context (its own cookies and connections, as ten colleagues'
    browsers); each holds its Streamlit websocket, its queue component, the
    page's one push-channel EventSource and whatever it fetches on a change;
  - 20 sessions: ten more tabs beside the first ten;
  - no page open again, after they closed: the baseline (the tracker's
    schedule polls densely right after the creates and sparsely later, so
    the window after is the one in the same phase as the sessions').
Chromium runs at nice 10, so the server gets the CPU first. The figure is the
server process's CPU seconds over each window (/proc/<pid>/stat, all its
threads) per wall second; the machine may be shared, so the load average over
each window is reported beside it (it does not enter the figure), with the
events the bus gave out (read from the push channel's `hello`).

`--churn`: the same with tasks of 60-150 s, so statuses change and images are
kept while the pages are open (each change is pushed to every page, which
fetches its view); by the last window many have finished.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import Row, cpu_seconds, rss_kb
from benchmarks.load import KEY, _health, _write_submissions
from benchmarks.startup import TimedStudioServer, launch_niced_browser, stop_group

SECTION = "P3 sessions"
CPU_TARGET_PCT = 10.0
TASK_S = (1800, 2400)  # simulated task durations: all 100 stay in flight however slow the tabs open
CHURN_S = (60, 150)  # `--churn`: tasks that move (statuses, kept images) while the pages are open
QUEUE_CARD = ".studio-queue [class*='st-key-creative_']"


def _bus_seq(server: TimedStudioServer) -> int:
    """The event bus's sequence number: the `hello` the push channel sends first."""
    with httpx.stream("GET", server.url + "/api/events", timeout=10) as answer:
        for line in answer.iter_lines():
            if line.startswith("data:"):
                return int(json.loads(line[5:])["seq"])
    raise RuntimeError("the push channel sent no hello")


def _start_simulator(task_s: tuple[int, int]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.startup", "simulator", "--port", "0", "--api-key", KEY,
         "--min-duration", str(task_s[0]), "--max-duration", str(task_s[1]), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        stop_group(proc)
        raise RuntimeError("the simulator did not print its base URL")
    return proc, url


def _open_sessions(
    browser: Any, server: TimedStudioServer, n: int, deadline_s: float
) -> tuple[list[Any], int]:
    """Open `n` Studio pages at once, each in its own browser context (its own Streamlit
    session and its own connections, as n colleagues' browsers would have); the pages, and
    how many drew the queue (its first creative card) within `deadline_s`."""
    pages = [browser.new_context(viewport={"width": 1280, "height": 900}).new_page() for _ in range(n)]
    for page in pages:
        page.goto(server.url + "/", wait_until="commit", timeout=deadline_s * 1000)
    end = time.monotonic() + deadline_s
    shown = 0
    for page in pages:
        try:
            page.wait_for_selector(QUEUE_CARD, timeout=max(1.0, end - time.monotonic()) * 1000)
            shown += 1
        except Exception:  # playwright's TimeoutError: a saturated server is a result, not a crash
            pass
    return pages, shown


def _window(server: TimedStudioServer, seconds: float) -> dict[str, Any]:
    pid = server.proc.pid
    h0 = _health(server)
    l0 = os.getloadavg()[0]
    e0 = _bus_seq(server)
    c0, t0, w0 = cpu_seconds(pid), time.perf_counter(), time.time()
    time.sleep(seconds)
    c1, t1, w1 = cpu_seconds(pid), time.perf_counter(), time.time()
    e1 = _bus_seq(server)
    h1 = _health(server)
    runs = [r for r in server.runs(since=w0) if r["t"] <= w1]
    return {
        "cpu_s": c1 - c0,
        "seconds": t1 - t0,
        "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
        "rss_mb": rss_kb(pid) / 1024,
        "polls_per_s": (h1["polls"] - h0["polls"]) / (t1 - t0),
        "in_flight": h1["in_flight"],
        "script_runs": len(runs),
        "events": e1 - e0,
        "load": (l0, os.getloadavg()[0]),
    }


def _fetches(pages: list[Any]) -> int:
    """View-model fetches the queue components have made so far (their own count)."""
    total = 0
    for page in pages:
        try:
            total += int(
                page.evaluate("() => +(document.querySelector('.studio-queue')?.dataset.fetches || 0)")
            )
        except Exception:  # a tab that did not draw the queue counts nothing
            pass
    return total


def measure(tasks: int, counts: tuple[int, ...], seconds: float, task_s: tuple[int, int]) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        _write_submissions(data / "studio.db", tasks)
        sim, sim_url = _start_simulator(task_s)
        server = None
        try:
            server = TimedStudioServer(data, env={"HIAPI_BASE_URL": sim_url, "HIAPI_API_KEY": KEY}).start()
            t0 = time.perf_counter()
            while _health(server)["creates"] < tasks:
                if time.perf_counter() - t0 > 90:
                    raise RuntimeError(
                        f"the tracker did not create {tasks} tasks within 90 s: {_health(server)}"
                    )
                time.sleep(0.2)
            time.sleep(2.0)  # the creates' own work settles before the baseline window
            out: dict[str, Any] = {"alone": _window(server, seconds), "windows": {}}
            with sync_playwright() as pw:
                browser = launch_niced_browser(pw, Path(tmp))
                try:
                    pages: list[Any] = []
                    for n in counts:
                        t1 = time.perf_counter()
                        opened = n - len(pages)
                        more, shown = _open_sessions(browser, server, opened, 120.0)
                        pages += more
                        opened_s = time.perf_counter() - t1
                        time.sleep(2.0)  # the opening runs finish before the window starts
                        f0 = _fetches(pages)
                        w = _window(server, seconds)
                        w.update(
                            shown=shown,
                            opened=opened,
                            opened_s=opened_s,
                            fetches=_fetches(pages) - f0,
                            pages=len(pages),
                        )
                        out["windows"][n] = w
                finally:
                    browser.close()
            time.sleep(2.0)  # the sessions' websockets and feeds are closed and let go
            out["after"] = _window(server, seconds)
            return out
        finally:
            if server is not None:
                server.stop()
            stop_group(sim)


def run(quick: bool = False, churn: bool = False) -> list[Row]:
    tasks, counts, seconds = (30, (3, 6), 5.0) if quick else (100, (10, 20), 20.0)
    got = measure(tasks, counts, seconds, CHURN_S if churn else TASK_S)
    alone, before = got["after"], got["alone"]
    rows = []
    for n, w in got["windows"].items():
        rows.append(
            Row(
                SECTION, f"server CPU, {n} sessions + {tasks} in flight" + (" (tasks moving)" if churn else ""),
                w["cpu_pct"], "% core",
                baseline=alone["cpu_pct"], baseline_name="tracker alone, after the sessions",
                target=f"≤ {CPU_TARGET_PCT:g} % core", met=w["cpu_pct"] <= CPU_TARGET_PCT,
                note=(f"{w['cpu_s']:.2f} CPU s over {w['seconds']:.1f} s (alone: {alone['cpu_s']:.2f} over "
                      f"{alone['seconds']:.1f} s; before the pages opened {before['cpu_s']:.2f}, polling "
                      f"{before['polls_per_s']:.1f}/s); {w['events']} events (alone {alone['events']}), {w['script_runs']} script "
                      f"runs and {w['fetches']} view fetches in the window; {w['in_flight']} of {tasks} in flight; tracker polls "
                      f"{w['polls_per_s']:.1f}/s (alone {alone['polls_per_s']:.1f}/s); {w['shown']} of the "
                      f"{w['opened']} tabs opened for it showed the queue in "
                      f"{w['opened_s']:.1f} s; RSS {w['rss_mb']:.0f} MB (alone {alone['rss_mb']:.0f}); load "
                      f"average {w['load'][0]:.1f} → {w['load'][1]:.1f} (alone {alone['load'][0]:.1f} → "
                      f"{alone['load'][1]:.1f}); Chromium at nice 10"),
            )
        )  # fmt: skip
    return rows


if __name__ == "__main__":
    from benchmarks.common import table

    rows = run(quick="--quick" in sys.argv, churn="--churn" in sys.argv)
    print(table(rows))
    print("\n".join(f"- {r.metric}: {r.note}" for r in rows if r.note))
