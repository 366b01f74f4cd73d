"""Gallery: every kept image."""

import streamlit as st

from components.services import get_services, image_url

services = get_services()
st.title("Gallery")
subs = services.store.recent(limit=48)
outs = services.store.outputs_for([s.id for s in subs])
kept = [(s, o) for s in subs for o in outs.get(s.id, []) if o.state == "kept"]
if not kept:
    st.caption("No images yet.")
cols = st.columns(4)
for i, (s, o) in enumerate(kept):
    with cols[i % 4]:
        st.image(image_url(f"/thumbs/{o.sha256}.webp"), width="stretch")
        st.text(s.prompt[:80])
