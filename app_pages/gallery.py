"""Gallery: every generation kept on disk, searchable and reusable."""

import streamlit as st

from components.campaign_view import campaign_gallery, spend_summary
from components.gallery import PAGE_SIZE, bulk_bar, card, clear_filters, filters, restore_from_file, style
from components.lightbox import open_lightbox
from components.services import get_services
from studio.store import GalleryQuery

services = get_services()
st.title("Gallery")
spend_summary()
view = st.segmented_control("View", ["Images", "Campaigns"], default="Images", key="g_view")
if view == "Campaigns":
    campaign_gallery()
    st.stop()
style()
restore_from_file()
query = filters()
total = services.store.gallery_count(query)
pages = max(1, -(-total // PAGE_SIZE))
page = st.session_state.get("g_page", 1)
page = min(page, pages)
items, _ = services.store.gallery(query, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, count=False)
noun = "image" if query.status == "kept" else "item"
count, clear = st.columns([5, 1], vertical_alignment="center")
count.caption(f"{total:,} {noun}{'s' if total != 1 else ''}")
filtered = query != GalleryQuery()
clear.button(
    "Clear filters", key="g_clear", icon=":material/filter_alt_off:", on_click=clear_filters,
    disabled=not filtered, width="stretch",
)  # fmt: skip
bulk_bar()
if not items:
    st.info(
        "No images match. Generate some in the Studio, or loosen the filters.", icon=":material/image_search:"
    )
checks = services.store.text_checks_for([i.output_id for i in items if i.kept])
sequence = tuple(i.output_id for i in items if i.kept)
grid = st.columns(4)
for i, item in enumerate(items):
    with grid[i % 4]:
        card(item, checks.get(item.output_id), sequence)
if pages > 1:
    st.pagination(pages, key="g_page")
open_lightbox()
