"""Prompt library widgets: save the current draft as a template; list, search, edit, delete,
import and export on the Library page."""

from __future__ import annotations

import time

import streamlit as st

from components import draft
from components.services import get_services
from components.text import literal
from studio.campaigns import variables
from studio.library import CONFLICT_MODES, Library, LibraryError, Template
from studio.ratios import RATIO_NAMES, RESOLUTIONS


def library() -> Library:
    return Library(get_services().store)


def save_to_library() -> None:
    """A popover in the Studio: the prompt, its ratios, resolution and rows under a name."""
    with st.popover("Save to library", icon=":material/bookmark_add:"):
        text = draft.prompt()
        names = variables(text)
        rows = [r for r in draft.rows() if any(str(v).strip() for v in r.values())] if names else []
        st.caption(
            f"{', '.join(draft.ratios()) or 'no ratio'} at {draft.resolution()}"
            + (
                f" · {len(names)} variable{'s' if len(names) != 1 else ''}, {len(rows)} sample rows"
                if names
                else ""
            )
        )
        name = st.text_input("Template name", key="lib_save_name", placeholder="e.g. Product poster")
        note = st.text_input("Note (optional)", key="lib_save_note", placeholder="what it is for")
        overwrite = st.toggle("Overwrite a template with this name", key="lib_save_overwrite")
        if st.button("Save template", key="lib_save", type="primary", width="stretch"):
            t = Template(name, text, tuple(draft.ratios()), draft.resolution(), note, tuple(rows))
            try:
                saved = library().save(t, overwrite=overwrite)
            except LibraryError as exc:
                st.error(literal(exc), icon=":material/error:")
                return
            st.success(f"Saved “{literal(saved.name)}” to the library.", icon=":material/bookmark_added:")


def use(t: Template) -> None:
    draft.load(t.prompt, list(t.ratios), t.resolution, list(t.rows) if t.variables else None)
    st.switch_page("app_pages/studio.py")


@st.dialog("Edit template", width="large")
def edit(template_id: int) -> None:
    t = library().get(template_id)
    if t is None:
        st.info("This template was deleted.")
        return
    k = f"edit_{template_id}"
    name = st.text_input("Name", value=t.name, key=f"{k}_name")
    prompt = st.text_area("Prompt", value=t.prompt, height=200, key=f"{k}_prompt")
    a, b = st.columns([3, 1])
    ratios = a.multiselect("Ratios", RATIO_NAMES, default=list(t.ratios), key=f"{k}_ratios")
    resolution = b.selectbox("Resolution", RESOLUTIONS, index=RESOLUTIONS.index(t.resolution), key=f"{k}_res")
    note = st.text_input("Note", value=t.note, key=f"{k}_note")
    if st.button("Save changes", key=f"{k}_save", type="primary"):
        changed = Template(name, prompt, tuple(ratios), resolution, note, t.rows, t.id, t.starter)
        try:
            library().save(changed)
        except LibraryError as exc:
            st.error(literal(exc), icon=":material/error:")
            return
        st.rerun()


def template_card(t: Template) -> None:
    with st.container(border=True, key=f"lib_card_{t.id}"):
        head = st.columns([4, 1], vertical_alignment="center")
        head[0].markdown(f"**{literal(t.name)}**")
        if t.starter:
            with head[1]:
                st.badge("starter", color="gray")
        # st.text shows the prompt literally: no markdown, no HTML.
        st.text(t.prompt[:220] + ("…" if len(t.prompt) > 220 else ""))
        info = f"{', '.join(t.ratios)} at {t.resolution}"
        if t.variables:
            info += " · " + ", ".join("{{" + v + "}}" for v in t.variables)
            info += f" · {len(t.rows)} sample row{'s' if len(t.rows) != 1 else ''}"
        if t.note:
            info += f" · {t.note}"
        st.caption(literal(info))  # name lists and the note are typed (or imported)
        a, b, c = st.columns(3)
        if a.button(
            "Use in Studio", key=f"lib_use_{t.id}", type="primary", icon=":material/brush:", width="stretch"
        ):
            use(t)
        if b.button("Edit", key=f"lib_edit_{t.id}", icon=":material/edit:", width="stretch"):
            edit(t.id)
        with c.popover("Delete", icon=":material/delete:", width="stretch"):
            st.write(f"Delete “{literal(t.name)}” from the library?")
            if st.button("Yes, delete", key=f"lib_delete_{t.id}", type="primary"):
                library().delete(t.id)
                st.rerun()


def import_export() -> None:
    lib = library()
    a, b = st.columns(2)
    with a.container(border=True):
        st.markdown("**Export**")
        st.download_button(
            "Download the library as JSON",
            lib.export(),
            file_name=f"prompt-library-{time.strftime('%Y%m%d')}.json",
            mime="application/json",
            key="lib_export",
            icon=":material/download:",
            on_click="ignore",
        )
        if st.button("Restore missing starter templates", key="lib_restore", icon=":material/restore:"):
            n = lib.restore_starters()
            st.toast(f"Restored {n} starter template{'s' if n != 1 else ''}.")
    with b.container(border=True):
        st.markdown("**Import**")
        up = st.file_uploader("A library JSON file", type=["json"], key="lib_import_file")
        mode = st.radio(
            "When a name is taken",
            CONFLICT_MODES,
            format_func={
                "rename": "keep both (add a number)",
                "skip": "keep mine",
                "replace": "replace mine",
            }.get,
            horizontal=True,
            key="lib_import_mode",
        )
        if up is not None and st.button("Import", key="lib_import", type="primary"):
            try:
                counts = lib.import_json(up.getvalue(), on_conflict=mode)
            except LibraryError as exc:
                st.error(f"{literal(up.name)}: {literal(exc)}", icon=":material/error:")
                return
            st.success(", ".join(f"{v} {k}" for k, v in counts.items() if v) or "Nothing to import.")
