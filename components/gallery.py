"""Gallery widgets: filters, cards, the lightbox, compare, bulk actions and restore-from-file."""

from __future__ import annotations

import datetime as dt
import time
from urllib.parse import quote

import streamlit as st

from components import draft
from components.fidelity import badge as text_badge
from components.fidelity import text_check
from components.kit import kit_panel
from components.services import get_services, image_url, show_image
from components.text import literal
from studio.export import file_name, write_zip
from studio.images import read_recipe
from studio.ratios import RATIO_NAMES, RESOLUTIONS
from studio.store import GalleryItem, GalleryQuery, TextCheck

PAGE_SIZE = 24
SELECTED = "gallery_selected"
LIGHTBOX = "gallery_lightbox"


def selected() -> set[int]:
    return st.session_state.setdefault(SELECTED, set())


def _toggle(output_id: int) -> None:
    sel = selected()
    if st.session_state.get(f"sel_{output_id}"):
        sel.add(output_id)
    else:
        sel.discard(output_id)


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
        st.text(item.prompt[:90] + ("…" if len(item.prompt) > 90 else ""))
        st.caption(time.strftime("%Y-%m-%d %H:%M", time.localtime(item.created_at)))
        st.button(
            "Edit in Studio", key=f"refail_{item.submission_id}_{item.output_id or 0}", icon=":material/edit:",
            on_click=draft.load, args=(item.prompt, [item.aspect_ratio], item.resolution),
        )  # fmt: skip


def card(item: GalleryItem, check: TextCheck | None = None) -> None:
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
        st.text(item.prompt[:90] + ("…" if len(item.prompt) > 90 else ""))
        b1, b2 = st.columns([1, 1], vertical_alignment="center")
        if b1.button("Open", key=f"open_{item.output_id}", icon=":material/open_in_full:", width="stretch"):
            st.session_state[LIGHTBOX] = item.output_id
        b2.checkbox(
            "Select", key=f"sel_{item.output_id}", value=item.output_id in selected(),
            on_change=_toggle, args=(item.output_id,),
        )  # fmt: skip


def reuse(item: GalleryItem) -> None:
    st.session_state.pop(LIGHTBOX, None)
    draft.load(item.prompt, [item.aspect_ratio], item.resolution)
    st.switch_page("pages/studio.py")


def _close_lightbox() -> None:
    st.session_state.pop(LIGHTBOX, None)


def open_lightbox() -> None:
    """Show the lightbox if one is open: it stays open across full reruns
    (a timer elsewhere on the page, a slow kit build) until dismissed."""
    if st.session_state.get(LIGHTBOX):
        lightbox(st.session_state[LIGHTBOX])


@st.dialog("Image", width="large", on_dismiss=_close_lightbox)
def lightbox(output_id: int) -> None:
    services = get_services()
    found = services.store.gallery_items([output_id])
    if not found:
        _close_lightbox()
        st.info("This image was deleted.")
        return
    item = found[0]
    show_image(f"/images/{item.sha256}.png")
    st.caption("Prompt — shown exactly as sent; the copy button is at the top right")
    st.code(item.prompt, language=None, wrap_lines=True)
    meta = st.columns(4)
    meta[0].metric("Ratio", item.aspect_ratio)
    meta[1].metric("Resolution", item.resolution)
    meta[2].metric("Pixels", f"{item.width}×{item.height}")
    meta[3].metric("Size", f"{item.bytes / 1e6:.1f} MB")
    st.caption(
        f"Model {literal(item.model)} · task {literal(item.task_id)} · "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(item.created_at))}"
    )
    st.markdown("**Text in the image**")
    text_check(item.prompt, services.store.text_check(item.output_id), key="lb_textcheck", detail=True)
    in_cols = services.store.output_collections(item.output_id)
    if in_cols:
        st.caption("In collections: " + ", ".join(literal(c) for c in in_cols))
    a, b, c = st.columns(3)
    if a.button("Reuse in Studio", key="lb_reuse", type="primary", icon=":material/replay:", width="stretch"):
        reuse(item)
    a.link_button(
        "Download original", image_url(f"/images/{item.sha256}.png?download={quote(file_name(item))}"),
        icon=":material/download:", width="stretch",
    )  # fmt: skip
    fav = b.toggle("Favourite", value=item.favourite, key="lb_fav")
    if fav != item.favourite:
        services.store.set_favourite(item.output_id, fav)
    with b.popover("Add to collection", icon=":material/bookmark_add:", width="stretch"):
        _collection_picker([item.output_id], key="lb")
    with c.popover("Delete", icon=":material/delete:", width="stretch"):
        st.write("Delete this image and its file? This cannot be undone.")
        if st.button("Yes, delete", key="lb_delete", type="primary"):
            delete([item.output_id])
            _close_lightbox()
            st.rerun()
    kit = st.expander(
        "Delivery kit for this creative", icon=":material/package_2:", key="lb_kitx", on_change="rerun"
    )
    if kit.open:
        with kit:
            kit_panel(item.creative_id, key="lb_kit")


def _collection_picker(output_ids: list[int], key: str) -> None:
    services = get_services()
    existing = {name: cid for cid, name, _ in services.store.collections()}
    choice = st.selectbox("Collection", [*existing, "New collection…"], key=f"{key}_coll")
    name = choice
    if choice == "New collection…":
        name = st.text_input("Name", key=f"{key}_coll_name", placeholder="e.g. Summer campaign")
    if st.button("Add", key=f"{key}_coll_add"):
        if not name or not name.strip():
            st.error("Collection name is required: type a name.")
            return
        cid = services.store.add_collection(name)
        services.store.add_to_collection(cid, output_ids)
        st.success(f"Added {len(output_ids)} to {literal(name.strip())}.")


def delete(output_ids: list[int]) -> None:
    services = get_services()
    for sha in services.store.delete_outputs(output_ids):
        services.keeper.delete(sha)
    sel = selected()
    for i in output_ids:
        sel.discard(i)
        st.session_state.pop(f"sel_{i}", None)


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
            st.session_state["export_url"] = image_url(f"/exports/{path.name}")
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
            _collection_picker(sel, key="bulk")
        with c4.popover("Delete", icon=":material/delete:", width="stretch"):
            st.write(f"Delete {len(sel)} images and their files? This cannot be undone.")
            if st.button("Yes, delete them", key="bulk_delete", type="primary"):
                delete(sel)
                st.rerun()
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
            draft.load(
                recipe["prompt"],
                [str(recipe.get("aspect_ratio", "1:1"))],
                str(recipe.get("resolution", "1K")),
            )
            st.switch_page("pages/studio.py")
