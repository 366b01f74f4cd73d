"""Reruns of live views told by the push channel: a watch in a fragment, instead of a timer.

A fragment that shows something the tracker (or a kit build) changes puts a
`watch` in it: an invisible components-v2 element that listens to the push
channel (/api/events) and reruns the fragment only when a change concerns what
it draws (one of its tasks, images, kinds of event, or its kit job), at most
once per `gap`; or once, when a moment it waits for comes (`due_in`: an undo
window ending), counting the seconds down in the browser meanwhile if given a
`countdown` text. Nothing reruns while nothing it shows changes. A watch given the
`outage` the page was drawn with ("" for none) reruns when the push channel reports
another (the database or storage going away or coming back: `studio.health`).

`version(bus)` must be read *before* the fragment reads what it draws: a change
after it reruns the fragment, one before it is already drawn.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import streamlit as st

from components import scripts
from components.services import image_url
from studio import events as ev
from studio import routes
from studio.events import EventBus

_component = st.components.v2.component(
    "studio_watch",
    js=scripts.script("watch.js"),
    css=scripts.style("watch.css"),
    isolate_styles=False,  # the page's font inside the undo bar; the one rule hides an idle watch
)


def version(bus: EventBus | None) -> dict[str, Any]:
    """The bus's (boot, seq) now, for a `watch` drawn with what is read after this."""
    return {"boot": bus.boot if bus else "", "seq": bus.seq if bus else 0}


def concerns(
    events: list[dict[str, Any]] | None,
    *,
    submissions: Iterable[int] = (),
    outputs: Iterable[int] = (),
    kinds: Iterable[str] = (),
    job: str | None = None,
    unknown: bool = False,
) -> bool:
    """Does a push message's `events` (`events.described`) concern a watch with these filters?

    The rule the browser applies (components/frontend/watch.js), here as a plain
    function: an event concerns it when it names one of `submissions`, `outputs`
    or the `job`, or is of one of `kinds`; a message that cannot tell (None) or
    an event that names nothing (another process committed) when `unknown`.
    """
    if events is None:
        return unknown
    sids, oids, wanted = set(submissions), set(outputs), set(kinds)
    for e in events:
        if e.get("kind") in wanted:
            return True
        if e.get("sid") in sids or e.get("oid") in oids:
            return True
        if job is not None and e.get("job") == job:
            return True
        if unknown and e.get("sid") is None and e.get("oid") is None and e.get("job") is None:
            return True
    return False


def watch(
    key: str,
    since: dict[str, Any],
    *,
    submissions: Iterable[int] = (),
    outputs: Iterable[int] = (),
    kinds: Iterable[str] = (),
    job: str | None = None,
    unknown: bool = False,
    gap: float = 1.0,
    due_in: float | None = None,
    countdown: str | None = None,
    outage: str | None = None,
) -> None:
    """Rerun the enclosing fragment when a change after `since` concerns it (see `concerns`),
    or `due_in` seconds from now. `countdown` ("{s} s to undo") is shown, ticking, until then."""
    unknown_kinds = set(kinds) - ev.KINDS
    if unknown_kinds:
        raise ValueError(f"not event kinds: {sorted(unknown_kinds)}")
    _component(
        key=key,
        data={
            "v": since,
            "feed": image_url(routes.events()),
            "sids": sorted(set(submissions)),
            "oids": sorted(set(outputs)),
            "kinds": sorted(set(kinds)),
            "job": job,
            "unknown": unknown,
            "gap": int(gap * 1000),
            "due": None if due_in is None else max(0, int(due_in * 1000)),
            "text": countdown,
            "outage": outage,
        },
        on_changed_change=lambda: None,  # the trigger itself is the point: it reruns the fragment
    )
