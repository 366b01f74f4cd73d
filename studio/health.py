"""Whether the database and the object store answer now: the pages' one sentence during an
outage, and the signal that ends it.

Contract:
- `Health.check()` asks each dependency once (`Repositories.ping`, `BlobStore.ping`, each
  bounded to a few seconds by its adapter) and records which are down. `problem()` is the one
  sentence a page shows for the first of them (the database before the object store, since
  without it nothing else works), None while everything answers.
- `noticed(dependency)` (or `noticed_error(exc)`): a caller that met `StoreUnavailable` /
  `BlobStoreUnavailable` says so; the dependency counts as down at once, until a check finds it
  answering again.
- Listeners (`subscribe`) hear every change (`down()` after it), an outage beginning or ending,
  on the thread that saw it: the push channel tells the pages, the tracker wakes and resumes.
- `start()` runs `check()` every `every_s` seconds on a daemon thread; a probe's own trouble
  (anything it raises) counts as that dependency being down and never stops the thread.

Nothing here names a URL or a credential: the sentences are fixed text.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Mapping

from .blobs import BlobStoreUnavailable
from .repositories import StoreUnavailable

log = logging.getLogger(__name__)


class Dependency(enum.StrEnum):
    """What the studio needs to be reachable while it runs, in the order their outages are told."""

    DATABASE = "database"
    STORAGE = "storage"


SENTENCES: dict[Dependency, str] = {
    Dependency.DATABASE: (
        "The studio's database can't be reached right now: what you typed is kept, nothing is sent, "
        "and the studio picks up where it left off as soon as the database is back."
    ),
    Dependency.STORAGE: (
        "The studio's image storage can't be reached right now: what you typed is kept, and finished "
        "images are saved as soon as the storage is back."
    ),
}

#: What each outage error means, for callers that caught one.
OUTAGES: dict[type[Exception], Dependency] = {
    StoreUnavailable: Dependency.DATABASE,
    BlobStoreUnavailable: Dependency.STORAGE,
}


def dependency_of(exc: BaseException) -> Dependency | None:
    """The dependency an exception says is down, or None when it is another kind of error."""
    for kind, dep in OUTAGES.items():
        if isinstance(exc, kind):
            return dep
    return None


Listener = Callable[[tuple[Dependency, ...]], None]


class Health:
    """The reachability of the studio's database and object store (see the module docstring)."""

    def __init__(self, probes: Mapping[Dependency, Callable[[], None]], *, every_s: float = 2.0) -> None:
        self.probes = dict(probes)
        self.every_s = every_s
        self._down: set[Dependency] = set()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checks = 0

    # -- state ----------------------------------------------------------------
    def down(self) -> tuple[Dependency, ...]:
        """The dependencies down now, in `Dependency` order."""
        with self._lock:
            return tuple(d for d in Dependency if d in self._down)

    def problem(self) -> str | None:
        """The one sentence a page shows now, or None."""
        down = self.down()
        return SENTENCES[down[0]] if down else None

    def state(self) -> str:
        """The outage as a short stable text ("" when none), for the push channel."""
        return ",".join(d.value for d in self.down())

    def noticed(self, dependency: Dependency) -> None:
        """A caller met this dependency's outage: it is down from now until a check says otherwise."""
        self._set(dependency, down=True)

    def noticed_error(self, exc: BaseException) -> Dependency | None:
        """`noticed` for the dependency an exception says is down; None (nothing noticed) when it
        is another kind of error, which the caller re-raises."""
        dep = dependency_of(exc)
        if dep is not None:
            self.noticed(dep)
        return dep

    # -- checking -----------------------------------------------------------------
    def check(self) -> tuple[Dependency, ...]:
        """Ask every dependency once; returns those down."""
        for dep, probe in self.probes.items():
            try:
                probe()
            except Exception as exc:  # the adapter's outage error, or anything a probe met
                if dependency_of(exc) is None:
                    log.warning("%s check failed (%s)", dep.value, type(exc).__name__)
                self._set(dep, down=True)
            else:
                self._set(dep, down=False)
        self.checks += 1
        return self.down()

    def _set(self, dep: Dependency, *, down: bool) -> None:
        with self._lock:
            if (dep in self._down) == down:
                return
            (self._down.add if down else self._down.discard)(dep)
            listeners = list(self._listeners)
        now_down = self.down()
        log.warning("%s %s", dep.value, "is not answering" if down else "answers again")
        for listener in listeners:
            try:
                listener(now_down)
            except Exception as exc:  # one listener's trouble is not the others'
                log.warning("health listener failed: %r", exc)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(down)` on every change; returns a function that unsubscribes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # -- the thread -----------------------------------------------------------------
    def start(self) -> Health:
        if self.probes and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="studio-health", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
