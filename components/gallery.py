"""Gallery widgets: filters, cards, compare, bulk actions and restore-from-file.

The lightbox is components/lightbox.py; Delete with Undo is components/deletion.py.
"""

from __future__ import annotations

import datetime as dt
import time

import streamlit as st

from components import deletion, draft
from components.fidelity import badge as text_badge
from components.lightbox import collection_picker, open_item
from components.references import use_as_reference
from components.services import get_services, image_url, show_image
from components.text import literal
from studio.export import images_zip_name, write_zip
from studio.images import read_recipe
from studio.ratios import RATIO_NAMES, RESOLUTIONS
from studio.references import reference_names
from studio.store import GalleryItem, GalleryQuery, TextCheck

PAGE_SIZE = 24
SELECTED = deletion.SELECTED
PROMPT_CHARS = 160  # what a card carries; CSS cuts it to one line, the lightbox has it all
# Filter widgets and the value "Clear filters" puts back.
FILTER_DEFAULTS = {
    "g_text": "", "g_ratios": [], "g_res": [], "g_collection": None, "g_dates": (),
    "g_sort": "Newest", "g_status": "kept", "g_fav": False, "g_text_mismatch": False,
}  # fmt: skip

# A selected card is outlined (CSS :has, so it shows at the click, before the
# rerun); a card's prompt is one line with an ellipsis. The script scrolls back
# to the top when the page is turned (the pager sits below the grid).
_GALLERY_CSS = """
<style>
[class*="st-key-card_"]:has([class*="st-key-sel_"] input:checked) {
  outline: 3px solid #ff4b4b; outline-offset: 1px; background: rgba(255, 75, 75, 0.07); }
[class*="st-key-card_"] [data-testid="stText"], [class*="st-key-card_"] [data-testid="stText"] *,
[class*="st-key-failed_"] [data-testid="stText"], [class*="st-key-failed_"] [data-testid="stText"] * {
  white-space: nowrap !important; overflow: hidden; text-overflow: ellipsis; }
</style>
"""
_GALLERY_JS = r"""
<script>
(function () {
  const win = window.parent || window;
  const doc = win.document;
  if (win.__studioGalleryWired) return;
  win.__studioGalleryWired = true;
  doc.addEventListener("click", (e) => {
    if (!e.target.closest || !e.target.closest(".st-key-g_page button")) return;
    for (const el of [doc.querySelector("[data-testid=stMain]"), doc.scrollingElement]) {
      if (el) el.scrollTo({ top: 0 });
    }
  }, true);
})();
</script>
"""


def style() -> None:
    st.html(_GALLERY_CSS + _GALLERY_JS, unsafe_allow_javascript=True)


def selected() -> set[int]:
    return st.session_state.setdefault(SELECTED, set())


def _toggle(output_id: int) -> None:
    sel = selected()
    if st.session_state.get(f"sel_{output_id}"):
        sel.add(output_id)
    else:
        sel.discard(output_id)


def clear_filters() -> None:
    """Button callback: every filter back to showing everything (and page 1)."""
    for key, value in FILTER_DEFAULTS.items():
        st.session_state[key] = value
    st.session_state.pop("g_page", None)


def filters() -> GalleryQuery:
    services = get_services()
    c1, c2, c3 = st.columns([3, 2, 2])
    text = c1.text_input(
        "Search prompts", key="g_text", placeholder="e.g. poster, neon, coffee", live="400ms",
        persist_state="session",
    )  # fmt: skip
    ratios = c2.multiselect("Ratio", RATIO_NAMES, key="g_ratios", persist_state="session")
    resolutions = c3.pills(
        "Resolution", RESOLUTIONS, selection_mode="multi", key="g_res", persist_state="session"
    )
    d1, d2, d3, d4, d5, d6 = st.columns([2, 2, 2, 2, 2, 2], vertical_alignment="bottom")
    collections = services.store.collections()
    names = {cid: f"{name} ({n})" for cid, name, n in collections}
    collection = d1.selectbox(
        "Collection", [None, *names], format_func=lambda c: "All images" if c is None else names[c],
        key="g_collection",
    )  # fmt: skip
    dates = d2.date_input("Date", value=(), key="g_dates", format="YYYY-MM-DD")
    newest = d3.segmented_control("Sort", ["Newest", "Oldest"], default="Newest", key="g_sort") != "Oldest"
    status = d4.selectbox(
        "Status", ["kept", "failed", "all"], key="g_status",
        format_func={"kept": "Kept images", "failed": "Failed", "all": "Kept and failed"}.get,
    )  # fmt: skip
    favourites = d5.toggle("Favourites only", key="g_fav")
    text_mismatch = d6.toggle(
        "Text mismatch", key="g_text_mismatch",
        help="Only images where a quoted string of the prompt is missing or misspelled.",
    )  # fmt: skip
    since = until = None
    if isinstance(dates, tuple | list) and dates:
        start = dates[0]
        end = dates[1] if len(dates) > 1 else dates[0]
        since = time.mktime(start.timetuple())
        until = time.mktime((end + dt.timedelta(days=1)).timetuple())
    return GalleryQuery(
        text=text or "",
        ratios=tuple(ratios or ()),
        resolutions=tuple(resolutions or ()),
        favourites_only=favourites,
        collection_id=collection,
        since=since,
        until=until,
        newest_first=newest,
        status=status,
        text_mismatch=text_mismatch,
    )


def failed_card(item: GalleryItem) -> None:
    with st.container(border=True, key=f"failed_{item.submission_id}_{item.output_id or 0}"):
        what = "Image could not be kept" if item.state == "download_failed" else "Generation failed"
        st.error(f"{what}: {literal(item.error or 'no reason given')}", icon=":material/error:")
        st.badge(item.aspect_ratio, color="blue")
        st.text(_one_line(item.prompt))
        st.caption(time.strftime("%Y-%m-%d %H:%M", time.localtime(item.created_at)))
        st.button(
            "Edit in Studio", key=f"refail_{item.submission_id}_{item.output_id or 0}", icon=":material/edit:",
            on_click=draft.load, args=(item.prompt, [item.aspect_ratio], item.resolution),
            kwargs={"references": reference_names(item.references)},
        )  # fmt: skip


def _one_line(prompt: str) -> str:
    """The start of a prompt on one line (newlines would break the ellipsis)."""
    flat = " ".join(prompt[: PROMPT_CHARS * 2].split())
    return flat[:PROMPT_CHARS] + ("…" if len(flat) > PROMPT_CHARS or len(prompt) > PROMPT_CHARS * 2 else "")


def card(item: GalleryItem, check: TextCheck | None = None, sequence: tuple[int, ...] = ()) -> None:
    """One image; `sequence` is the page's image ids, for the lightbox's Previous/Next."""
    if not item.kept:
        failed_card(item)
        return
    with st.container(border=True, key=f"card_{item.output_id}"):
        show_image(f"/thumbs/{item.sha256}.webp")
        # One line for the chips and the time: a page has 24 cards, and every
        # element costs server time on each rerun. Ratio and resolution come
        # from our own table, never from outside, so they are safe in markdown.
        favourite = " :orange-badge[★]" if item.favourite else ""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(item.created_at))
        st.markdown(
            f":blue-badge[{item.aspect_ratio.replace(':', '&#58;')}] :violet-badge[{item.resolution}]{favourite}"
            f" :gray[{when}]"
        )
        text_badge(check)
        st.text(_one_line(item.prompt))
        b1, b3, b2 = st.columns([2, 1, 2], vertical_alignment="center")
        b1.button(
            "Open", key=f"open_{item.output_id}", icon=":material/open_in_full:", width="stretch",
            on_click=open_item, args=(item.output_id, sequence),
        )  # fmt: skip
        b3.button(
            "", key=f"gref_{item.output_id}", icon=":material/add_photo_alternate:",
            help="Use as reference in the Studio", on_click=use_as_reference, args=(item.output_id,),
        )  # fmt: skip
        b2.checkbox(
            "Select", key=f"sel_{item.output_id}", value=item.output_id in selected(),
            on_change=_toggle, args=(item.output_id,),
        )  # fmt: skip


def _delete_selected(output_ids: list[int]) -> None:
    deletion.delete(output_ids)
    st.session_state.pop("export_url", None)


@st.dialog("Compare", width="large")
def compare(output_ids: list[int]) -> None:
    items = get_services().store.gallery_items(output_ids)
    cols = st.columns(len(items))
    for col, item in zip(cols, items, strict=True):
        with col:
            show_image(f"/images/{item.sha256}.png")
            st.caption(f"{item.aspect_ratio} · {item.resolution} · {item.width}×{item.height}")
            st.text(item.prompt[:200])


def bulk_bar() -> None:
    sel = sorted(selected())
    if not sel:
        return
    services = get_services()
    with st.container(border=True, key="bulk_bar"):
        st.write(f"**{len(sel)} selected**")
        c1, c2, c3, c4, c5 = st.columns(5)
        if c1.button("Prepare zip", key="bulk_zip", icon=":material/folder_zip:", width="stretch"):
            items = services.store.gallery_items(sel)
            path = write_zip(items, services.keeper.original_path, services.settings.data_dir / "exports")
            st.session_state["export_url"] = image_url(
                f"/exports/{path.name}?name={images_zip_name(len(items))}"
            )
        if st.session_state.get("export_url"):
            c1.link_button("Download zip", st.session_state["export_url"], icon=":material/download:")
        if c2.button(
            "Compare",
            key="bulk_compare",
            disabled=not 2 <= len(sel) <= 4,
            width="stretch",
            help="Pick 2 to 4 images to compare side by side.",
        ):
            compare(sel)
        with c3.popover("Add to collection", width="stretch"):
            collection_picker(sel, key="bulk")
        with c4.popover("Delete", icon=":material/delete:", width="stretch"):
            st.write(f"Delete {len(sel)} images? You can undo for a few seconds.")
            st.button(
                "Yes, delete them", key="bulk_delete", type="primary", on_click=_delete_selected, args=(sel,)
            )
        if c5.button("Clear selection", key="bulk_clear", width="stretch"):
            for i in sel:
                st.session_state.pop(f"sel_{i}", None)
            selected().clear()
            st.session_state.pop("export_url", None)
            st.rerun()


def restore_from_file() -> None:
    with st.expander("Restore a recipe from an exported image", icon=":material/upload_file:"):
        up = st.file_uploader("Drop a PNG the studio exported", type=["png"], key="restore_upload")
        if up is None:
            return
        recipe = read_recipe(up.getvalue())
        if not recipe or not isinstance(recipe.get("prompt"), str):
            st.error("This image carries no studio recipe: export it from the Gallery, or pick another file.")
            return
        st.code(recipe["prompt"], language=None, wrap_lines=True)
        st.caption(literal(f"{recipe.get('aspect_ratio', 'auto')} · {recipe.get('resolution', '1K')}"))
        if st.button("Load into Studio", key="restore_load", type="primary"):
            shelf = get_services().references
            kept = [
                n for n in recipe.get("references") or [] if isinstance(n, str) and shelf and shelf.get(n)
            ]
            draft.load(
                recipe["prompt"],
                [str(recipe.get("aspect_ratio", "1:1"))],
                str(recipe.get("resolution", "1K")),
                references=kept,
            )
            st.switch_page("app_pages/studio.py")
