"""The live queue: recent creatives and their tasks, redrawn by a fragment timer.

A kept image's card opens it in the lightbox (stepping through the queue's
images), downloads the original and marks it a favourite; a failed one sends
its recipe again as a new creative (`components.actions.resend`) or loads it
into the editor.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import streamlit as st

from components import actions, draft
from components.fidelity import text_check
from components.kit import kit_panel
from components.lightbox import open_item, open_lightbox
from components.pickers import shape_svg
from components.references import use_as_reference
from components.services import get_services, image_url, show_image
from components.text import literal
from studio.campaign_store import CANCELLED
from studio.export import file_name
from studio.models import TaskStatus
from studio.pricing import QUALITY_NAMES
from studio.references import reference_names
from studio.store import (
    NO_OUTPUT,
    REJECTED,
    SUBMITTING,
    TRASHED,
    GalleryItem,
    OutputRow,
    Submission,
    TextCheck,
)

STATUS_LABEL = {
    SUBMITTING: ("Sending", "gray", ":material/upload:"),
    TaskStatus.QUEUED: ("Queued", "blue", ":material/schedule:"),
    TaskStatus.HANDLING: ("Generating", "violet", ":material/brush:"),
    TaskStatus.ARCHIVING: ("Finishing", "orange", ":material/inventory_2:"),
    TaskStatus.SUCCESS: ("Done", "green", ":material/check_circle:"),
    TaskStatus.FAIL: ("Failed", "red", ":material/error:"),
    REJECTED: ("Refused", "red", ":material/block:"),
}


def status_badge(state: str, error_code: str | None = None) -> None:
    if state == REJECTED and error_code == CANCELLED:
        label, color, icon = ("Cancelled", "gray", ":material/cancel:")
    else:
        # An unknown status is HiAPI's text: shown literally (models.py caps its length).
        label, color, icon = STATUS_LABEL.get(state, (literal(state.title()), "gray", ":material/help:"))
    st.badge(label, color=color, icon=icon)


def _elapsed(sub: Submission) -> str:
    secs = int(sub.elapsed(time.time()))
    return f"{secs // 60}m {secs % 60:02d}s" if secs >= 60 else f"{secs}s"


def _edit_and_resubmit(sub: Submission) -> None:
    draft.load(
        sub.prompt,
        [sub.aspect_ratio],
        sub.resolution,
        references=reference_names(sub.references),
        quality=sub.quality,
        background=sub.background,
    )


def _set_favourite(output_id: int, on: bool) -> None:
    get_services().store.set_favourite(output_id, on)


def image_actions(output_id: int, item: GalleryItem | None, sequence: tuple[int, ...]) -> None:
    """Open in the lightbox, download the original, favourite: one row under a kept image."""
    with st.container(horizontal=True, gap="small", key=f"qact_{output_id}"):
        if st.button(
            "Open", key=f"qopen_{output_id}", icon=":material/open_in_full:",
            on_click=open_item, args=(output_id, sequence),
        ):  # fmt: skip
            st.rerun()  # the lightbox lives outside this fragment
        if item is None:
            return
        st.link_button(
            "Download", image_url(f"/images/{item.sha256}.png?download={quote(file_name(item))}"),
            icon=":material/download:", help="The original PNG, with its recipe inside",
        )  # fmt: skip
        st.button(
            "", key=f"qref_{output_id}", icon=":material/add_photo_alternate:",
            help="Use as reference: build the next image on this one", on_click=use_as_reference, args=(output_id,),
        )  # fmt: skip
        st.button(
            "★" if item.favourite else "☆", key=f"qfav_{output_id}",
            help="Remove from favourites" if item.favourite else "Add to favourites",
            on_click=_set_favourite, args=(output_id, not item.favourite),
        )  # fmt: skip
        if actions.can_make_final(item.quality):
            sid = item.submission_id
            st.button(
                actions.make_final_label(), key=f"qfinal_{output_id}", icon=":material/high_quality:",
                on_click=actions.make_final, args=(sid, actions.final_token(sid)),
                disabled=isinstance(actions.resent().get(sid), list),
                help="Send this recipe again at Final quality (one image is charged at the Final price).",
            )  # fmt: skip


def _retry_row(sub: Submission) -> None:
    outcome = actions.resent().get(sub.id)
    with st.container(horizontal=True, gap="small"):
        st.button(
            "Retry", key=f"retry_{sub.id}", icon=":material/refresh:", type="primary",
            on_click=actions.resend, args=(sub.id, actions.retry_token(sub.id)), disabled=isinstance(outcome, list),
            help="Send the same prompt, ratio and resolution again, as a new creative (one image is charged).",
        )  # fmt: skip
        if st.button(
            "Edit and resubmit", key=f"resubmit_{sub.id}", icon=":material/edit:",
            on_click=_edit_and_resubmit, args=(sub,),
        ):  # fmt: skip
            st.rerun()  # the editor lives outside this fragment
    if isinstance(outcome, list):
        st.caption("Sent again: it is at the top of the queue.")
    elif outcome:
        st.error(literal(outcome), icon=":material/error:")


def task_card(
    sub: Submission,
    outputs: list[OutputRow],
    text_checks: dict[int, TextCheck] | None = None,
    items: dict[int, GalleryItem] | None = None,
    sequence: tuple[int, ...] = (),
) -> None:
    """One task; `items` are its kept images as the gallery sees them, `sequence` the
    queue's kept image ids in order (the lightbox steps through them)."""
    with st.container(border=True, key=f"task_{sub.id}"):
        top = st.columns([3, 2], vertical_alignment="center")
        with top[0]:
            status_badge(sub.state, sub.error_code)
        tier = f" · {QUALITY_NAMES[sub.quality]}" if sub.quality in QUALITY_NAMES else ""
        top[1].caption(f"{sub.aspect_ratio} · {sub.resolution}{tier} · {_elapsed(sub)}")
        if sub.state == TaskStatus.SUCCESS:
            shown = False
            for o in outputs:
                if o.state == "kept" and o.sha256:
                    show_image(f"/thumbs/{o.sha256}.webp")
                    st.caption(f"{o.width}×{o.height} px")
                    text_check(sub.prompt, (text_checks or {}).get(o.id), key=f"textcheck_{o.id}")
                    image_actions(o.id, (items or {}).get(o.id), sequence)
                    shown = True
                elif o.state == TRASHED:
                    st.caption("Deleted from the Gallery (Undo while the bar shows).")
                    shown = True
                elif o.state == "failed":
                    st.warning(f"Image could not be kept: {literal(o.error)}", icon=":material/broken_image:")
                    shown = True
            if not shown and sub.error_code == NO_OUTPUT:
                st.warning(literal(sub.error_message), icon=":material/broken_image:")
            elif not shown:
                st.image(shape_svg(sub.aspect_ratio, box=96), width=96)
                retrying = [o for o in outputs if o.state == "pending" and o.error]
                if retrying:
                    o = retrying[0]
                    st.caption(f"Saving the image… (attempt {o.attempts + 1}; last: {literal(o.error)})")
                else:
                    st.caption("Saving the image…")
        elif sub.state in (TaskStatus.FAIL, REJECTED):
            code = literal(sub.error_code or "FAILED")
            st.error(f"**{code}** — {literal(sub.error_message or 'no reason given')}")
            _retry_row(sub)
        else:
            st.image(shape_svg(sub.aspect_ratio, box=96), width=96)
            if sub.error_message:
                doing = "Sending again" if sub.state == SUBMITTING else "Checking again"
                st.caption(f"{doing} — {literal(sub.error_message)}")


def live_queue(limit: int = 24) -> None:
    """The queue, and the lightbox its cards open (which must live outside the fragment)."""
    open_lightbox()
    _live_queue(limit)


@st.fragment(run_every=0.5)
def _live_queue(limit: int = 24) -> None:
    services = get_services()
    subs = services.store.recent(limit=limit)
    if not subs:
        st.caption("Nothing generated yet. Write a prompt, pick ratios and press Generate.")
        return
    outputs = services.store.outputs_for([s.id for s in subs])
    checks = services.store.text_checks_for([o.id for outs in outputs.values() for o in outs])
    kept = [o.id for s in subs for o in outputs.get(s.id, []) if o.state == "kept" and o.sha256]
    shown = {i.output_id: i for i in services.store.gallery_items(kept)}
    creatives: dict[str, list[Submission]] = {}
    for s in subs:
        creatives.setdefault(s.creative_id, []).append(s)
    for creative_id, items in creatives.items():
        items.sort(key=lambda s: s.id)
        first = items[0]
        with st.container(border=True, key=f"creative_{creative_id}"):
            head = st.columns([5, 1], vertical_alignment="center")
            # st.text shows the prompt literally: no markdown, no HTML.
            head[0].text(first.prompt[:160] + ("…" if len(first.prompt) > 160 else ""))
            head[1].caption(time.strftime("%H:%M:%S", time.localtime(first.created_at)))
            cols = st.columns(min(4, len(items)))
            for i, sub in enumerate(items):
                with cols[i % len(cols)]:
                    task_card(sub, outputs.get(sub.id, []), checks, shown, tuple(kept))
            if any(o.state == "kept" for s in items for o in outputs.get(s.id, [])):
                kit = st.expander(
                    "Delivery kit", icon=":material/package_2:", key=f"kitx_{creative_id}", on_change="rerun"
                )
                if kit.open:
                    with kit:
                        kit_panel(creative_id, key=f"qkit_{creative_id}")
