"""Reference images in the Studio: add (upload, drag and drop, paste), reorder, remove, use a result.

The draft holds the kept references' names in the order they are sent; the
first one leads (the model and the simulator build on it most). Files are
checked by `studio.references` before anything else happens: a refused file is
named with the reason, and the rest of the draft is untouched.
"""

from __future__ import annotations

import streamlit as st

from components import draft, outage
from components.services import get_services, show_image
from components.text import literal
from studio.references import MAX_BYTES, MAX_REFERENCES
from studio.usecases import keep_references, output_as_reference

EPOCH = "ref_upload_epoch"  # bumped to empty the uploader once its files are kept
PROBLEMS = "ref_problems"  # refusals from the last files added
_ACCEPT = ["png", "jpg", "jpeg", "webp"]

# Paste (Ctrl/⌘+V anywhere outside a text field; drawn with the editor's script) hands clipboard images to the uploader,
# which then behaves exactly as if they had been dropped on it.
PASTE_JS = r"""
<script>
(function () {
  const win = window.parent || window;
  const doc = win.document;
  if (win.__studioPasteWired) return;
  win.__studioPasteWired = true;
  doc.addEventListener("paste", (e) => {
    const t = e.target;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT")) return;  // pasting text
    const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith("image/"));
    const input = doc.querySelector('[class*="st-key-ref_upload"] input[type=file]');
    if (!files.length || !input) return;
    e.preventDefault();
    const dt = new DataTransfer();
    files.forEach((f, i) => dt.items.add(new File([f], f.name || `pasted-${Date.now()}-${i}.png`, { type: f.type })));
    input.files = dt.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  });
})();
</script>
"""


def _uploader_key() -> str:
    return f"ref_upload_{st.session_state.get(EPOCH, 0)}"


def add_files(files: list[tuple[str, bytes]]) -> list[str]:
    """Keep each (name, bytes) as a reference of the draft; returns the refusals, one sentence each."""
    shelf = get_services().references
    if shelf is None:
        return ["References cannot be kept here: the reference shelf is off."]
    names, problems = keep_references(shelf, draft.references(), files)
    draft.set_references(names)
    return problems


@outage.callback
def _on_upload() -> None:
    ss = st.session_state
    files = ss.get(_uploader_key()) or []
    ss[PROBLEMS] = add_files([(f.name, f.getvalue()) for f in files])
    ss[EPOCH] = ss.get(EPOCH, 0) + 1  # a fresh uploader: the files are kept, not re-added each run


def _remove(i: int) -> None:
    names = draft.references()
    if 0 <= i < len(names):
        del names[i]
    draft.set_references(names)
    st.session_state[PROBLEMS] = []


def _move(i: int, delta: int) -> None:
    names = draft.references()
    j = i + delta
    if 0 <= i < len(names) and 0 <= j < len(names):
        names[i], names[j] = names[j], names[i]
    draft.set_references(names)


def use_output_as_reference(output_id: int) -> str | None:
    """Add a kept result to the draft's references (queue, gallery, lightbox); None or the refusal."""
    services = get_services()
    found = output_as_reference(services.store, services.keeper.open_original, output_id)
    if isinstance(found, str):
        return found
    problems = add_files([found])
    if problems:
        return problems[0]
    st.toast("Added as a reference image in the Studio.", icon=":material/add_photo_alternate:")
    return None


@outage.callback
def use_as_reference(output_id: int) -> None:
    """Button callback ("Use as reference"): a refusal is shown as a toast, nothing else changes."""
    problem = use_output_as_reference(output_id)
    if problem:
        st.toast(literal(problem), icon=":material/block:")


def references_fold() -> None:
    """The uploader, folded (most images start from words, and a phone's first screen is short)."""
    services = get_services()
    names = draft.references()
    with st.container(key="references"):
        label = f"References · {len(names)}" if names else "References"
        with st.expander(label, icon=":material/add_photo_alternate:"):
            st.file_uploader(
                "Add reference images",
                type=_ACCEPT,
                accept_multiple_files=True,
                key=_uploader_key(),
                on_change=_on_upload,
                max_upload_size=MAX_BYTES // (1024 * 1024),
                help=(
                    "Start from a product photo, a sketch, a logo or a past result: drop or paste JPEG, PNG or "
                    f"WebP files (up to {MAX_BYTES // (1024 * 1024)} MB each, {MAX_REFERENCES} in all). "
                    "The first one leads."
                ),
                disabled=len(names) >= MAX_REFERENCES,
            )
            if services.reference_base(st.config.get_option("server.port")) is None:
                st.caption(
                    ":material/info: HiAPI fetches references from the studio: set STUDIO_PUBLIC_URL to its "
                    "public https address to use them."
                )


def references_strip(error: str | None = None) -> None:
    """The draft's references as small thumbnails with ← → ✕, and any refusal, under the folds."""
    shelf = get_services().references
    names = draft.references()
    problems = st.session_state.get(PROBLEMS) or []
    if not (names or problems or error):
        return
    with st.container(key="reference_images"):
        for problem in problems:
            st.warning(literal(problem), icon=":material/block:")
        if error:
            st.error(literal(error), icon=":material/error:")
        if names and shelf is not None:
            cols = st.columns(4)  # small thumbnails, four to a row
            for i, name in enumerate(names):
                with cols[i % len(cols)], st.container(key=f"ref_{i}", border=True):
                    if shelf.get(name) is None:
                        st.caption("No longer kept")
                    else:
                        show_image(shelf.url("", name, lifetime=3600))
                    st.caption("Leads" if i == 0 else f"#{i + 1}")
                    with st.container(horizontal=True, gap=None, key=f"ref_tools_{i}"):
                        st.button("←", key=f"ref_left_{i}", help="Earlier", on_click=_move, args=(i, -1),
                                  disabled=i == 0, type="tertiary")  # fmt: skip
                        st.button("→", key=f"ref_right_{i}", help="Later", on_click=_move, args=(i, 1),
                                  disabled=i == len(names) - 1, type="tertiary")  # fmt: skip
                        st.button("✕", key=f"ref_remove_{i}", help="Remove", on_click=_remove, args=(i,),
                                  type="tertiary")  # fmt: skip
