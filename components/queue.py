"""The live queue: recent creatives and their tasks, one element drawn in the browser.

The queue is a custom component (components v2, no iframe; its JS and CSS are
components/frontend/queue.*). The script hands it a compact JSON view model
(`queue_view`); from then on the page keeps itself current: it listens to the
push channel (GET /api/events, fed by the tracker's event bus) and fetches a
fresh view model (GET /api/view/queue) when told something changed. No timer
reruns the script.

Clicks come back as component events: `open` (the lightbox, stepping through
the queue's images), `favourite`, `retry` (`components.actions.resend`: the
recipe again as a new creative), `resubmit` (into the editor), `reference`
(`components.references.use_output_as_reference`) and `kit` (the delivery kit,
in a dialog). Download is a plain link to the original.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from access.page import team_login_on
from components import actions, draft, scripts
from components.kit import kit_panel
from components.lightbox import open_item, open_lightbox
from components.references import use_as_reference
from components.services import get_services, image_url
from components.text import literal
from studio import routes
from studio.events import EventBus
from studio.export import file_name
from studio.fidelity import ERROR, UNAVAILABLE, wanted_strings
from studio.models import TaskStatus
from studio.pricing import QUALITY_NAMES
from studio.ratios import RATIOS
from studio.records import (
    NO_OUTPUT,
    GalleryItem,
    OutputRow,
    OutputState,
    Submission,
    TaskState,
    TextCheck,
    is_cancelled,
)
from studio.references import reference_names
from studio.repositories import Repositories as Store
from studio.usecases import set_favourite

REJECTED, SUBMITTING, TRASHED = TaskState.REJECTED, TaskState.SUBMITTING, OutputState.TRASHED

STATUS_LABEL = {
    SUBMITTING: ("Sending", "gray", ":material/upload:"),
    TaskStatus.QUEUED: ("Queued", "blue", ":material/schedule:"),
    TaskStatus.HANDLING: ("Generating", "violet", ":material/brush:"),
    TaskStatus.ARCHIVING: ("Finishing", "orange", ":material/inventory_2:"),
    TaskStatus.SUCCESS: ("Done", "green", ":material/check_circle:"),
    TaskStatus.FAIL: ("Failed", "red", ":material/error:"),
    REJECTED: ("Refused", "red", ":material/block:"),
}
LIMIT = 24  # creatives' tasks the queue shows
PROMPT_CHARS = 160
FEED = routes.events()
SOURCE = routes.queue_view()
KIT = "queue_kit"  # the creative whose delivery kit dialog is open


def status_badge(state: str, error_code: str | None = None) -> None:
    label, color, icon = _status(state, error_code)
    # An unknown status is HiAPI's text: shown literally (models.py caps its length).
    st.badge(
        label if state in STATUS_LABEL or label == "Cancelled" else literal(label), color=color, icon=icon
    )


def _status(state: str, error_code: str | None) -> tuple[str, str, str]:
    """Label (raw text), colour and icon of a task state."""
    if is_cancelled(state, error_code):
        return ("Cancelled", "gray", ":material/cancel:")
    return STATUS_LABEL.get(state, (state.title(), "gray", ":material/help:"))


# -- the view model (no Streamlit here: the /api/view/queue route builds it too) ---------


def _check_lines(prompt: str, check: TextCheck | None) -> list[dict[str, str]]:
    """What components/fidelity.py's `text_check` shows, as lines of plain text."""
    if not wanted_strings(prompt):
        return []
    if check is None:
        return [{"text": "Checking the text…"}]
    if check.state == UNAVAILABLE:
        return [{"text": "OCR unavailable: the text was not checked."}]
    if check.state == ERROR:
        return [{"text": f"Text check failed: {check.message or 'unknown error'}"}]
    lines = []
    for c in check.checks:
        line = {"mark": "✓" if c.matched else "✗", "text": c.wanted}
        if not c.matched:
            line["note"] = (
                f"read “{c.read}” · {100 * c.similarity:.0f} % alike" if c.read else "not found in the image"
            )
        lines.append(line)
    return lines


def _shape(ratio: str, box: int = 96) -> list[int]:
    r = RATIOS.get(ratio)
    if r is None:
        return [box, box]
    if r.width >= r.height:
        return [box, round(box * r.height / r.width)]
    return [round(box * r.width / r.height), box]


def _task_view(
    sub: Submission,
    outputs: list[OutputRow],
    checks: dict[int, TextCheck],
    items: dict[int, GalleryItem],
    now: float,
) -> dict[str, Any]:
    label, color, _ = _status(sub.state, sub.error_code)
    view: dict[str, Any] = {
        "id": sub.id, "label": label, "color": color, "ratio": sub.aspect_ratio,
        "res": sub.resolution + (f" · {QUALITY_NAMES[sub.quality]}" if sub.quality in QUALITY_NAMES else ""),
        "elapsed": int(sub.elapsed(now)), "running": not sub.is_terminal, "outputs": [],
    }  # fmt: skip
    if sub.state == TaskStatus.SUCCESS:
        for o in outputs:
            if o.state == "kept" and o.sha256:
                item = items.get(o.id)
                name = file_name(item) if item else f"{o.sha256}.png"
                view["outputs"].append({
                    "id": o.id, "kind": "kept", "thumb": routes.thumb(o.sha256),
                    "download": routes.image(o.sha256, download=name), "size": f"{o.width}×{o.height} px",
                    "fav": bool(item and item.favourite), "check": _check_lines(sub.prompt, checks.get(o.id)),
                    # A draft-quality result can be sent again at Final (components/actions.py).
                    "final": actions.make_final_label() if actions.can_make_final(sub.quality) else None,
                })  # fmt: skip
            elif o.state == TRASHED:
                view["outputs"].append({"id": o.id, "kind": "trashed"})
            elif o.state == "failed":
                view["outputs"].append({"id": o.id, "kind": "failed", "error": str(o.error or "")})
        if not view["outputs"] and sub.error_code == NO_OUTPUT:
            view["warning"] = str(sub.error_message or "")
        elif not view["outputs"]:
            view["shape"] = _shape(sub.aspect_ratio)
            retrying = [o for o in outputs if o.state == "pending" and o.error]
            if retrying:
                o = retrying[0]
                view["note"] = f"Saving the image… (attempt {o.attempts + 1}; last: {o.error})"
            else:
                view["note"] = "Saving the image…"
    elif sub.state in (TaskStatus.FAIL, REJECTED):
        view["error"] = {
            "code": sub.error_code or "FAILED",
            "message": sub.error_message or "no reason given",
        }
        view["retry"] = True
    else:
        view["shape"] = _shape(sub.aspect_ratio)
        if sub.error_message:
            doing = "Sending again" if sub.state == SUBMITTING else "Checking again"
            view["note"] = f"{doing} — {sub.error_message}"
    return view


def queue_view(
    store: Store,
    bus: EventBus | None,
    limit: int = LIMIT,
    now: float | None = None,
    *,
    show_author: bool = False,
) -> dict[str, Any]:
    """The queue as JSON: creatives newest first, each with its tasks, and the kept image ids.

    `v` is the bus's (boot, seq) read *before* the store, so a view never claims
    to be newer than what it holds. Text is raw: the browser sets it as text.
    With `show_author` (the team login is on) every creative carries who asked for it as `by`.
    """
    v = {"boot": bus.boot if bus else "", "seq": bus.seq if bus else 0}
    now = time.time() if now is None else now
    subs = store.recent(limit=limit)
    outputs = store.outputs_for([s.id for s in subs]) if subs else {}
    checks = store.text_checks_for([o.id for outs in outputs.values() for o in outs]) if subs else {}
    kept = [o.id for s in subs for o in outputs.get(s.id, []) if o.state == "kept" and o.sha256]
    items = {i.output_id: i for i in store.gallery_items(kept)} if kept else {}
    creatives: dict[str, list[Submission]] = {}
    for s in subs:
        creatives.setdefault(s.creative_id, []).append(s)
    out = []
    for creative_id, group in creatives.items():
        group.sort(key=lambda s: s.id)
        first = group[0]
        out.append({
            "id": creative_id,
            "prompt": first.prompt[:PROMPT_CHARS] + ("…" if len(first.prompt) > PROMPT_CHARS else ""),
            "time": time.strftime("%H:%M:%S", time.localtime(first.created_at)),
            "tasks": [_task_view(s, outputs.get(s.id, []), checks, items, now) for s in group],
            "kit": any(o.state == "kept" for s in group for o in outputs.get(s.id, [])),
            **({"by": first.author} if show_author else {}),
        })  # fmt: skip
    # The lightbox steps through the images in the order they are shown.
    shown = [o["id"] for c in out for t in c["tasks"] for o in t["outputs"] if o["kind"] == "kept"]
    return {"v": v, "creatives": out, "sequence": shown}


# -- the component and its events ------------------------------------------------------

_component = st.components.v2.component(
    "studio_queue",
    js=scripts.script("queue.js"),
    css=scripts.style("queue.css"),
    isolate_styles=False,  # the page's fonts and theme; every rule is scoped to .studio-queue
)


def _event(name: str) -> Any:
    value = st.session_state.get("queue")
    try:
        return value[name] if value is not None else None
    except (KeyError, TypeError):
        return None


def _on_open() -> None:
    ev = _event("open")
    if isinstance(ev, dict) and isinstance(ev.get("id"), int):
        seq = tuple(i for i in ev.get("sequence") or () if isinstance(i, int))
        open_item(ev["id"], seq)


def _on_favourite() -> None:
    ev = _event("favourite")
    if isinstance(ev, dict) and isinstance(ev.get("id"), int):
        services = get_services()
        set_favourite(services.store, services.events, ev["id"], bool(ev.get("on")))


def _on_retry() -> None:
    ev = _event("retry")
    if isinstance(ev, dict) and isinstance(ev.get("id"), int):
        actions.resend(ev["id"], actions.retry_token(ev["id"]))


def _on_resubmit() -> None:
    ev = _event("resubmit")
    if isinstance(ev, dict) and isinstance(ev.get("id"), int):
        sub = get_services().store.submission(ev["id"])
        if sub is not None:
            draft.load(
                sub.prompt,
                [sub.aspect_ratio],
                sub.resolution,
                references=reference_names(sub.references),
                quality=sub.quality,
                background=sub.background,
            )


def _on_final() -> None:
    ev = _event("final")
    if isinstance(ev, dict) and isinstance(ev.get("task"), int):
        actions.make_final(ev["task"], actions.final_token(ev["task"]))


def _on_reference() -> None:
    ev = _event("reference")
    if isinstance(ev, dict) and isinstance(ev.get("id"), int):
        use_as_reference(ev["id"])  # a refusal is a toast


def _on_kit() -> None:
    ev = _event("kit")
    if isinstance(ev, dict) and isinstance(ev.get("creative"), str):
        st.session_state[KIT] = ev["creative"]


def _close_kit() -> None:
    st.session_state.pop(KIT, None)


@st.dialog("Delivery kit", width="large", on_dismiss=_close_kit)
def _kit_dialog(creative_id: str) -> None:
    kit_panel(creative_id, key=f"qkit_{creative_id}")


def live_queue(limit: int = LIMIT) -> None:
    """The queue, and the dialogs its cards open (the lightbox, a delivery kit)."""
    open_lightbox()
    if st.session_state.get(KIT):
        _kit_dialog(st.session_state[KIT])
    services = get_services()
    resent = {str(k): v for k, v in actions.resent().items()}
    _component(
        key="queue",
        data={
            "view": queue_view(services.store, services.events, limit, show_author=team_login_on()),
            "resent": resent,
            "base": image_url(""),
            "feed": FEED,
            "source": f"{SOURCE}?limit={int(limit)}",
        },
        on_open_change=_on_open,
        on_favourite_change=_on_favourite,
        on_retry_change=_on_retry,
        on_resubmit_change=_on_resubmit,
        on_reference_change=_on_reference,
        on_final_change=_on_final,
        on_kit_change=_on_kit,
    )
