"""Delete with Undo: a bar pinned to the bottom of the page, like a toast with a button.

`st.toast` cannot hold a button, so the "Deleted 3 images · Undo" notice is a
small fixed-position bar, a fragment, shown while the undo window lasts
(`studio.trash`: rows and files are kept until it passes; the window is in the
database, so Undo works whichever replica it reaches). The seconds left
count down in the browser (`components.watch`); when the window ends the
watch reruns the fragment once and the bar goes. Undo restores the images as
they were.
"""

from __future__ import annotations

import streamlit as st

from components import outage
from components.services import get_services
from components.watch import version, watch
from studio.usecases import delete_images, undo_delete

UNDO = "gallery_undo"  # the token of this session's last deletion
SELECTED = "gallery_selected"

_BAR_CSS = """
<style>
.st-key-undo_bar {
  position: fixed; left: 50%; bottom: 1.5rem; transform: translateX(-50%); z-index: 999990;
  width: auto; max-width: calc(100vw - 2rem); padding: 0.4rem 0.6rem 0.4rem 1rem;
  background: #262730; color: #fafafa; border-radius: 0.6rem; box-shadow: 0 6px 24px rgba(0,0,0,.35);
}
.st-key-undo_bar [data-testid="stMarkdown"] p { color: #fafafa; margin: 0; }
.st-key-undo_bar .studio-watch { color: #fafafa; }
.st-key-undo_bar button, .st-key-undo_bar button p { color: #262730; }
</style>
"""


def _plural(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"


def delete(output_ids: list[int]) -> None:
    """Hide the images now (undoable for the window), drop them from the selection, show the bar."""
    trash = get_services().trash
    if trash is None:
        return
    deletion = delete_images(trash, output_ids)
    sel = st.session_state.setdefault(SELECTED, set())
    for i in output_ids:
        sel.discard(i)
        st.session_state.pop(f"sel_{i}", None)
    if deletion.output_ids:
        st.session_state[UNDO] = deletion.token


@outage.callback
def _undo(token: str) -> None:
    trash = get_services().trash
    restored = undo_delete(trash, token) if trash is not None else 0
    st.session_state.pop(UNDO, None)
    if restored:
        st.toast(f"Restored {_plural(restored)}.", icon=":material/undo:")
    else:
        st.toast("Too late to undo: those images are already deleted.", icon=":material/info:")


def undo_bar() -> None:
    """The Undo bar of this session's last deletion, while it can still be undone."""
    token = st.session_state.get(UNDO)
    if not token:
        return
    deletion = get_services().trash.pending(token)
    if deletion is None or deletion.left() <= 0:
        st.session_state.pop(UNDO, None)
        return
    _bar(token)


@st.fragment
@outage.guarded
def _bar(token: str) -> None:
    since = version(get_services().events)
    deletion = get_services().trash.pending(token)
    if deletion is None or deletion.left() <= 0 or st.session_state.get(UNDO) != token:
        if st.session_state.get(UNDO) == token:
            del st.session_state[UNDO]
        st.rerun()  # the window is over (or a newer deletion took over): one full run redraws
    st.html(_BAR_CSS)
    with st.container(key="undo_bar", horizontal=True, vertical_alignment="center", gap="small"):
        st.markdown(f"Deleted **{_plural(len(deletion.output_ids))}** ·")
        watch("undo_watch", since, due_in=deletion.left(), countdown="{s} s to undo")
        st.button("Undo", key="undo_delete", icon=":material/undo:", on_click=_undo, args=(token,))
