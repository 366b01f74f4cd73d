"""The lightbox: one image fitted to the window, its recipe beside it, ← → to step through.

Opened from a Gallery card or a queue card with `open_item(output_id, sequence)`
(the ids the user sees, in order, for Previous/Next). It stays open across full
reruns (a timer elsewhere on the page, a kit build) until dismissed: Esc, the ✕
or a click outside (st.dialog's own dismissal), which clears the state.
The image is fitted to the viewport by CSS; on a wide screen the details sit
beside it, on a phone Streamlit stacks the columns and they follow below.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import streamlit as st

from access.page import current_author, team_login_on
from components import actions, deletion, draft, outage
from components.fidelity import text_check
from components.kit import kit_panel
from components.references import use_as_reference
from components.services import get_services, image_url, show_image
from components.text import literal
from studio import routes
from studio.export import file_name
from studio.pricing import QUALITY_NAMES
from studio.records import GalleryItem
from studio.references import reference_names
from studio.repositories import Repositories as Store
from studio.usecases import add_to_collection, set_favourite

LIGHTBOX = "gallery_lightbox"  # the output id shown
SEQUENCE = "gallery_lightbox_seq"  # the ids Previous/Next step through

# Fits the image to the window (no scrolling to see it whole) and, with the
# keyboard script, maps ← → to Previous/Next while the lightbox is open.
_LIGHTBOX_CSS = """
<style>
.st-key-lb_image img { max-height: calc(100vh - 15rem); width: auto !important; max-width: 100%;
  object-fit: contain; display: block; margin: 0 auto; }
.st-key-lb_image, .st-key-lb_image div { align-items: center; justify-content: center; }
</style>
"""
_LIGHTBOX_JS = r"""
<script>
(function () {
  const win = window.parent || window;
  const doc = win.document;
  if (win.__studioLightboxWired) return;
  win.__studioLightboxWired = true;
  // Delegated: survives Streamlit redrawing the dialog. Typing in a field is left alone.
  doc.addEventListener("keydown", (e) => {
    if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
    if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
    const t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    if (!doc.querySelector("[role=dialog] .st-key-lb_nav")) return;
    const btn = doc.querySelector(e.key === "ArrowLeft" ? ".st-key-lb_prev button" : ".st-key-lb_next button");
    if (btn && !btn.disabled) { e.preventDefault(); btn.click(); }
  }, true);
})();
</script>
"""


def open_item(output_id: int, sequence: Sequence[int] = ()) -> None:
    """Button callback: open the lightbox on `output_id`, stepping through `sequence`."""
    st.session_state[LIGHTBOX] = output_id
    st.session_state[SEQUENCE] = tuple(sequence) or (output_id,)


def close() -> None:
    st.session_state.pop(LIGHTBOX, None)
    st.session_state.pop(SEQUENCE, None)


def neighbours(sequence: Sequence[int], current: int) -> tuple[int | None, int | None]:
    """The ids before and after `current` in `sequence` (None at an end or when absent)."""
    seq = list(sequence)
    if current not in seq:
        return None, None
    i = seq.index(current)
    return (seq[i - 1] if i > 0 else None), (seq[i + 1] if i + 1 < len(seq) else None)


def _step(target: int) -> None:
    st.session_state[LIGHTBOX] = target


def open_lightbox() -> None:
    """Call once per page run, outside any fragment: shows the lightbox if one is
    open, and the Undo bar of a deletion made from it."""
    st.html(_LIGHTBOX_CSS + _LIGHTBOX_JS, unsafe_allow_javascript=True)
    deletion.undo_bar()
    if st.session_state.get(LIGHTBOX):
        lightbox(st.session_state[LIGHTBOX])


@outage.callback
def reuse(item: GalleryItem) -> None:
    """Button callback: the recipe into the Studio's draft. A callback, because the lightbox may
    be open over the Studio itself, whose editor is drawn before the dialog in a run."""
    close()
    draft.load(
        item.prompt,
        [item.aspect_ratio],
        item.resolution,
        references=reference_names(item.references),
        quality=item.quality,
        background=item.background,
    )


def _delete(output_id: int) -> None:
    deletion.delete([output_id])
    close()


@st.dialog("Image", width="large", on_dismiss=close)
def lightbox(output_id: int) -> None:
    # A click inside the dialog reruns it with the arguments it was opened with;
    # Previous/Next move the id in session state, which is the truth.
    output_id = st.session_state.get(LIGHTBOX, output_id)
    services = get_services()
    found = services.store.gallery_items([output_id])
    if not found or not found[0].kept:
        close()
        st.info("This image was deleted.")
        return
    item = found[0]
    sequence = st.session_state.get(SEQUENCE) or (output_id,)
    before, after = neighbours(sequence, output_id)
    pic, info = st.columns([3, 2], gap="medium")
    with pic:
        with st.container(key="lb_image"):
            show_image(routes.image(item.sha256 or ""))
        if len(sequence) > 1:
            with st.container(
                key="lb_nav", horizontal=True, horizontal_alignment="distribute", vertical_alignment="center"
            ):
                st.button(
                    "Previous", key="lb_prev", icon=":material/arrow_back:", disabled=before is None,
                    on_click=_step, args=(before,), help="← key",
                )  # fmt: skip
                st.caption(f"{list(sequence).index(output_id) + 1} of {len(sequence)}")
                st.button(
                    "Next", key="lb_next", icon=":material/arrow_forward:", disabled=after is None,
                    on_click=_step, args=(after,), help="→ key",
                )  # fmt: skip
    with info:
        _details(item)


def _details(item: GalleryItem) -> None:
    services = get_services()
    st.caption("Prompt — shown exactly as sent; the copy button is at the top right")
    # A long prompt scrolls inside its box, so the actions stay in view.
    st.code(item.prompt, language=None, wrap_lines=True, height=260 if len(item.prompt) > 500 else "content")
    size = (
        "—"
        if not item.bytes
        else f"{item.bytes / 1e6:.1f} MB"
        if item.bytes >= 100_000
        else f"{item.bytes / 1e3:.0f} kB"
    )
    ratio = item.aspect_ratio.replace(":", "&#58;")  # our own table's value; no shortcode
    tier = f" · {QUALITY_NAMES[item.quality]}" if item.quality in QUALITY_NAMES else ""
    st.markdown(f"**{ratio}** · **{item.resolution}**{tier} · {item.width}×{item.height} px · {size}")
    # The author is the identity provider's text: literal, like every string from outside.
    by = f" · by {literal(item.author)}" if team_login_on() else ""
    st.caption(
        f"Model {literal(item.model)} · task {literal(item.task_id or '—')} · "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(item.created_at))}{by}",
    )
    a, b = st.columns(2)
    if a.button(
        "Reuse in Studio", key="lb_reuse", type="primary", icon=":material/replay:", width="stretch",
        on_click=reuse, args=(item,),
    ):  # fmt: skip
        st.switch_page("app_pages/studio.py")
    b.link_button(
        "Download original", image_url(routes.image(item.sha256 or "", download=file_name(item))),
        icon=":material/download:", width="stretch",
    )  # fmt: skip
    a.button(
        "Use as reference", key=f"lb_ref_{item.output_id}", icon=":material/add_photo_alternate:",
        width="stretch", on_click=use_as_reference, args=(item.output_id,),
        help="Add this image to the Studio's reference images, to build the next one on it",
    )  # fmt: skip
    if actions.can_make_final(item.quality):
        sid = item.submission_id
        sent = actions.resent().get(sid)
        a.button(
            actions.make_final_label(), key="lb_final", icon=":material/high_quality:", width="stretch",
            on_click=actions.make_final, args=(sid, actions.final_token(sid)), disabled=isinstance(sent, list),
            help="Send this recipe again at Final quality (one image is charged at the Final price).",
        )  # fmt: skip
        if isinstance(sent, list):
            st.caption("Sent at Final: it is at the top of the Studio's queue.")
        elif sent:
            st.error(literal(sent), icon=":material/error:")
    fav = a.toggle("Favourite", value=item.favourite, key=f"lb_fav_{item.output_id}")
    if fav != item.favourite:
        set_favourite(services.store, services.events, item.output_id, fav)
    with b.popover("Add to collection", icon=":material/bookmark_add:", width="stretch"):
        collection_picker([item.output_id], key="lb")
    with b.popover("Delete", icon=":material/delete:", width="stretch"):
        st.write("Delete this image? You can undo for a few seconds.")
        if st.button("Yes, delete", key="lb_delete", type="primary"):
            _delete(item.output_id)
            st.rerun()  # the whole page: the card goes, the Undo bar comes
    st.markdown("**Text in the image**")
    text_check(item.prompt, services.store.text_check(item.output_id), key="lb_textcheck", detail=True)
    in_cols = services.store.output_collections(item.output_id)
    if in_cols:
        st.caption("In collections: " + ", ".join(literal(c) for c in in_cols))
    kit = st.expander(
        "Delivery kit for this creative", icon=":material/package_2:", key="lb_kitx", on_change="rerun"
    )
    if kit.open:
        with kit:
            kit_panel(item.creative_id, key="lb_kit")


def collection_labels(store: Store, *, count: bool = True) -> dict[int, str]:
    """Every collection's label for a picker: its name, `(n)` images, and, with the team login
    on, `· by` whoever made it (collections are shared). Plain text: pickers show options as text."""
    by_author = team_login_on()
    labels = {}
    for cid, name, n in store.collections():
        label = f"{name} ({n})" if count else name
        author = store.collection_author(cid) if by_author else None
        labels[cid] = f"{label} · by {author}" if author else label
    return labels


def collection_picker(output_ids: list[int], key: str) -> None:
    services = get_services()
    labels = collection_labels(services.store, count=False)
    existing = {name: cid for cid, name, _ in services.store.collections()}
    choice = st.selectbox(
        "Collection", [*existing, "New collection…"], key=f"{key}_coll",
        format_func=lambda c: labels.get(existing[c], c) if c in existing else c,
    )  # fmt: skip
    name = choice
    if choice == "New collection…":
        name = st.text_input("Name", key=f"{key}_coll_name", placeholder="e.g. Summer campaign")
    if st.button("Add", key=f"{key}_coll_add"):
        if not name or not name.strip():
            st.error("Collection name is required: type a name.")
            return
        add_to_collection(services.store, name, output_ids, author=current_author())
        st.success(f"Added {len(output_ids)} to {literal(name.strip())}.")
