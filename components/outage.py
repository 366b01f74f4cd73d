"""The database or the object store going away while the studio runs: one sentence on every page.

- `banner(services)` is drawn by the entry script above every page: the outage's sentence
  (`studio.health.SENTENCES`) while one lasts, and an invisible watch that reruns the page
  the moment the push channel reports another state (down, or back). It returns whether the
  page can run: not while the database is down (every page reads it). The page is then not
  drawn at all, and `st.stop()` keeps every widget's value in the session (a stopped run
  drops nothing), so the prompt typed before is in its box when the page comes back.
- `run(page, services)` runs the page; an outage met while it draws is noticed
  (`Health.noticed`) and told with the same sentence instead of a traceback.
- `guarded(fragment)` does the same for a fragment's own reruns: the first outage it meets
  reruns the whole page (which then shows the sentence); one already told leaves it empty.
- `callback(fn)` does the same for a widget's callback (Streamlit runs those before the page,
  outside `run`): the action is left undone and the page drawn next says why.
- `with tolerant():` lets a page go on without one part that needs the database: the Studio
  stays drawn while the database is away, so the prompt can still be written (Generate says
  why it waits), and only its results and library parts are missing until it is back.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import streamlit as st

from components.services import get_services
from components.watch import version, watch
from studio.health import SENTENCES, Dependency
from studio.services import Services

F = TypeVar("F", bound=Callable[..., Any])

ICON = ":material/cloud_off:"


def banner(services: Services, *, drawn_without_database: bool = False) -> bool:
    """The outage sentence and its watch; False when the page cannot run (the database is down),
    unless it is `drawn_without_database` (the Studio: its parts that need it are `tolerant`)."""
    health = services.health
    state = health.state()
    since = version(services.events)
    problem = health.problem()
    if problem:
        st.warning(problem, icon=ICON)
    if health.probes:  # only what is checked can be reported back
        watch("outage_watch", since, outage=state, gap=0.5)
    return drawn_without_database or Dependency.DATABASE not in health.down()


def database_down() -> bool:
    """Is the database known to be away now (checked, or met by a call)?"""
    return Dependency.DATABASE in get_services().health.down()


@contextlib.contextmanager
def tolerant() -> Iterator[None]:
    """Run a part of a page; an outage it meets is noticed and the part is left out (the banner tells it)."""
    try:
        yield
    except Exception as exc:
        if get_services().health.noticed_error(exc) is None:
            raise


def run(page: Any, services: Services) -> None:
    """`page.run()`, with an outage it meets told as the one sentence (see the module docstring)."""
    try:
        page.run()
    except Exception as exc:
        before = services.health.down()
        dep = services.health.noticed_error(exc)
        if dep is None:
            raise
        if dep not in before:
            st.warning(SENTENCES[dep], icon=ICON)
        st.stop()  # nothing typed is dropped by a stopped run


def callback(fn: F) -> F:
    """Wrap a widget callback that reads or writes the database or the bucket (see the module docstring)."""

    @functools.wraps(fn)
    def body(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if get_services().health.noticed_error(exc) is None:
                raise
            return None  # the banner above the page drawn next says it

    return body  # type: ignore[return-value]


def guarded(fragment: F) -> F:
    """Wrap a fragment's body so an outage it meets is told, not shown as a traceback."""

    @functools.wraps(fragment)
    def body(*args: Any, **kwargs: Any) -> Any:
        try:
            return fragment(*args, **kwargs)
        except Exception as exc:
            health = get_services().health
            before = health.down()
            dep = health.noticed_error(exc)
            if dep is None:
                raise
            if dep not in before:
                st.rerun(scope="app")  # the page above tells it, once
            return None  # already told above the page (drawn, or pushed into its watch)

    return body  # type: ignore[return-value]
