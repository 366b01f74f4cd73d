"""Page chrome: the mode badge in the sidebar."""

from __future__ import annotations

import streamlit as st

from components.services import get_services
from components.text import literal


def mode_badge() -> None:
    services = get_services()
    with st.sidebar:
        if services.settings.simulated:
            st.badge("Simulator", icon=":material/science:", color="orange")
            st.caption("No API key set: images come from the built-in HiAPI simulator, not GPT Image 2.")
        else:
            st.badge("HiAPI", icon=":material/cloud_done:", color="green")
            st.caption(f"Model {literal(services.settings.model)} at {literal(services.settings.base_url)}")
