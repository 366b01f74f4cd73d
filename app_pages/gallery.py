"""Gallery: every generation kept on disk, searchable and reusable.

One scroll through every match by default; `?pages=1` (the "Show in pages"
button sets it) shows them PAGE_SIZE at a time with a pager instead.
"""

import streamlit as st

from components.campaign_view import campaign_gallery, spend_summary
from components.gallery import (
    PAGE_SIZE,
    bulk_bar,
    clear_filters,
    filters,
    grid,
    restore_from_file,
    toggle_pages,
)
from components.lightbox import open_lightbox
from components.services import get_services
from studio.records import GalleryQuery

services = get_services()
st.title("Gallery")
spend_summary()
view = st.segmented_control("View", ["Images", "Campaigns"], default="Images", key="g_view")
if view == "Campaigns":
    campaign_gallery()
    st.stop()
restore_from_file()
query = filters()
# The layout is the URL's (`?pages=1`), so a paged view can be linked to and survives a reload.
paged = st.query_params.get("pages") == "1"
total = services.store.gallery_count(query)
pages = max(1, -(-total // PAGE_SIZE))
page = min(st.session_state.get("g_page", 1), pages) if paged else None
noun = "image" if query.status == "kept" else "item"
count, layout, clear = st.columns([4, 1, 1], vertical_alignment="center")
with count, st.container(key="g_count"):  # kept current by the grid as images arrive (gallery.js)
    st.caption(f"{total:,} {noun}{'s' if total != 1 else ''}")
layout.button(
    "One scroll" if paged else "Show in pages", key="g_layout", type="tertiary", on_click=toggle_pages,
    icon=":material/view_day:" if paged else ":material/auto_stories:",
    help="Every image in one scroll" if paged else f"{PAGE_SIZE} images a page, with a pager",
)  # fmt: skip
filtered = query != GalleryQuery()
clear.button(
    "Clear filters", key="g_clear", icon=":material/filter_alt_off:", on_click=clear_filters,
    disabled=not filtered, width="stretch",
)  # fmt: skip
bulk_bar()
# Drawn when empty too: it says so, and shows the first image the moment any replica keeps it.
grid(query, page=page)
if paged and pages > 1:
    st.pagination(pages, key="g_page")
open_lightbox()
