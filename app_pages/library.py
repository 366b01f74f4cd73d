"""Library: saved prompt templates (with their variables, ratios, resolution and sample rows)."""

import streamlit as st

from components.library import import_export, library, template_card

st.title("Library")
query = st.text_input(
    "Search templates", key="lib_query", placeholder="name, words of the prompt, note", live="400ms"
)
items = library().list(query or "")
st.caption(f"{len(items)} template{'s' if len(items) != 1 else ''} — save new ones from the Studio")
if not items:
    st.info("No template matches.", icon=":material/search_off:")
cols = st.columns(2)
for i, t in enumerate(items):
    with cols[i % 2]:
        template_card(t)
with st.expander("Import and export", icon=":material/import_export:"):
    import_export()
