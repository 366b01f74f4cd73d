"""`python -m studio.worker`: a worker process, the tracker without pages (STUDIO_ROLE=worker).

It reads the same settings as the server (environment; no Streamlit secrets
here), boots the studio's services in the worker role — the tracker claims
work from the shared database, follows it, downloads the images and runs the
text-check backfill — and runs until SIGTERM or SIGINT, when it stops and
gives up its claims, so another worker takes them over at once. A worker
killed outright loses its claims when their lease runs out (`tracker.LEASE_S`).

Beside it run one or more web processes (`STUDIO_ROLE=web python -m launch`)
on the same STUDIO_DATA_DIR. STUDIO_ROLE may be unset or `worker`; any other
value is refused with exit code 2, as is a data folder an all-in-one studio holds.
A database or object store that does not answer yet (down, still starting) is waited
for: the worker says so once and tries again every `RETRY_S` seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import replace

from . import services as core
from .config import Settings
from .startup import StartupError

#: Seconds between starts while the database or the object store does not answer yet.
RETRY_S = 5.0


def settings_for_worker(env: Mapping[str, str] | None = None) -> Settings:
    """The environment's settings in the worker role; StartupError when STUDIO_ROLE says otherwise."""
    settings = Settings.load(env=os.environ if env is None else env)
    if settings.role_problem:
        raise StartupError(settings.role_problem)
    if settings.role not in ("worker", "all"):
        raise StartupError(
            f"STUDIO_ROLE={settings.role} does not follow tasks; a worker process runs with "
            "STUDIO_ROLE=worker (or unset)."
        )
    return replace(settings, role="worker")


def main(env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    done = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    said = None
    while True:
        try:
            services = core.boot(settings_for_worker(env))
            break
        except StartupError as exc:
            if not exc.transient:  # a setting to fix: say it and exit
                print(f"Worker not started: {exc.message}", file=sys.stderr, flush=True)
                return 2
            if exc.message != said:  # the database or the bucket is not up yet: wait for it
                print(
                    f"Worker waiting: {exc.message} Trying again every {RETRY_S:g} s.",
                    file=sys.stderr,
                    flush=True,
                )
                said = exc.message
            if done.wait(RETRY_S):
                return 0
    tracker = services.tracker
    assert tracker is not None
    print(f"Worker {tracker.worker_id} following tasks in {services.settings.data_dir}", flush=True)
    try:
        while not done.wait(1.0):
            if not tracker.alive:
                print("Worker stopped: the tracker thread ended.", file=sys.stderr, flush=True)
                return 1
    finally:
        core.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
