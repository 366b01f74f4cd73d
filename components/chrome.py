"""Page chrome: the mode (simulator or HiAPI) in the header of every page, and how spend is labelled.

The mode shows in the page header, not only in the sidebar, because a phone
keeps the sidebar collapsed. In simulator mode no money is spent, so every
amount the studio shows is marked simulated (`spend_suffix`).
"""

from __future__ import annotations

import streamlit as st

from components.services import get_services
from components.text import literal
from studio import routes

SIMULATED = "simulated"

# The mode sits in Streamlit's header bar (fixed, on every page and viewport),
# between the sidebar toggle and the menu; the page then needs less room above it.
_PAGE_CSS = """
<style>
.stMainBlockContainer { padding-top: 4rem; }
.st-key-mode_header {
  position: fixed; top: 0.85rem; left: 50%; transform: translateX(-50%);
  width: auto !important; z-index: 999991; pointer-events: none;
}
.st-key-mode_header p { white-space: nowrap; }
@media (max-width: 480px) { .st-key-mode_header [data-testid="stCaptionContainer"] { display: none; } }
/* Kept images and thumbnails (queue, gallery, lightbox, compare) sit on a checkerboard,
   so a transparent background reads as transparent; opaque images cover it. */
img[src*="@IMAGES@"], img[src*="@THUMBS@"] {
  background-color: #fff;
  background-image: linear-gradient(45deg, #d0d0d0 25%, transparent 25%),
    linear-gradient(-45deg, #d0d0d0 25%, transparent 25%),
    linear-gradient(45deg, transparent 75%, #d0d0d0 75%),
    linear-gradient(-45deg, transparent 75%, #d0d0d0 75%);
  background-size: 16px 16px;
  background-position: 0 0, 0 8px, 8px -8px, -8px 0;
}
</style>
""".replace("@IMAGES@", routes.IMAGE_PREFIX).replace("@THUMBS@", routes.THUMB_PREFIX)


def simulated() -> bool:
    return bool(get_services().settings.simulated)


def spend_suffix() -> str:
    """Appended to an amount wherever spend is shown: ' simulated' in simulator mode, else ''."""
    return f" {SIMULATED}" if simulated() else ""


def mode_badge() -> None:
    """The mode in the page header (every viewport) and, with details, in the sidebar."""
    services = get_services()
    with st.container(horizontal=True, vertical_alignment="center", gap="small", key="mode_header"):
        st.html(_PAGE_CSS)  # inside the fixed header row: takes no room in the page
        if services.settings.simulated:
            st.badge("Simulator", icon=":material/science:", color="orange")
            st.caption("nothing is charged; prices are simulated")
        else:
            st.badge("HiAPI", icon=":material/cloud_done:", color="green")
            st.caption("live: HiAPI bills every image")
    with st.sidebar:
        if services.settings.simulated:
            st.badge("Simulator", icon=":material/science:", color="orange")
            st.caption("No API key set: images come from the built-in HiAPI simulator, not GPT Image 2.")
        else:
            st.badge("HiAPI", icon=":material/cloud_done:", color="green")
            st.caption(f"Model {literal(services.settings.model)} at {literal(services.settings.base_url)}")
