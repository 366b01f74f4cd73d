"""Gallery widgets: filters, the grid, compare, bulk actions and restore-from-file.

The grid is a custom component (components v2, no iframe; its JS and CSS are
components/frontend/gallery.*), drawn in the browser from a compact JSON view
model (`gallery_view`). In the scroll view it renders only the rows near the
viewport and fetches the items it lacks from GET /api/view/gallery
(offset, limit and the filters as `query_string` writes them), so 10,000
images scroll without paging; the paged view (PAGE_SIZE a page) remains.
Either way it listens to the push channel (GET /api/events) and refetches what
it shows when told something changed: a new kept image appears without a rerun.

Clicks come back as component events: `open` (the lightbox, stepping through
the images loaded around it), `select` (the selection the bulk bar acts on),
`favourite`, `reference` (`use_as_reference`) and `edit` (a failed task's
recipe into the Studio). Download is a plain link to the original.

The lightbox is components/lightbox.py; Delete with Undo is components/deletion.py.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import streamlit as st

from access.page import current_author, team_login_on
from components import deletion, draft, outage, scripts
from components.lightbox import collection_labels, collection_picker, open_item
from components.references import use_as_reference
from components.services import get_services, image_url, show_image
from components.text import literal
from studio import routes
from studio.events import EventBus
from studio.export import file_name
from studio.fidelity import MISMATCH, PASS
from studio.images import read_recipe
from studio.ratios import RATIO_NAMES, RESOLUTIONS
from studio.records import GalleryItem, GalleryQuery, TextCheck
from studio.references import reference_names
from studio.repositories import Repositories as Store
from studio.usecases import export_images, set_favourite

PAGE_SIZE = 24  # a page of the paged view (the scroll view fetches WINDOW at a time)
WINDOW = 60  # items the script hands the grid, and a fetched page of the scroll view
MAX_LIMIT = 200  # the most items one GET /api/view/gallery answers with
SELECTED = deletion.SELECTED
PROMPT_CHARS = 160  # what a card carries; CSS cuts it to one line, the lightbox has it all
FEED = routes.events()
SOURCE = routes.gallery_view()
#: What the grid says while nothing matches (it stays mounted and listening, so the first image
#: of an empty gallery arrives by the push channel like every later one, without a rerun).
NO_MATCHES = "No images match. Generate some in the Studio, or loosen the filters."
# Filter widgets and the value "Clear filters" puts back.
FILTER_DEFAULTS = {
    "g_text": "", "g_ratios": [], "g_res": [], "g_collection": None, "g_dates": (),
    "g_sort": "Newest", "g_status": "kept", "g_fav": False, "g_text_mismatch": False,
    "g_scope": "Everyone", "g_person": None,
}  # fmt: skip
#: Whose generations the gallery shows, with the team login on.
MINE, EVERYONE = "Mine", "Everyone"


def selected() -> set[int]:
    return st.session_state.setdefault(SELECTED, set())


def clear_filters() -> None:
    """Button callback: every filter back to showing everything (and page 1)."""
    for key, value in FILTER_DEFAULTS.items():
        st.session_state[key] = value
    st.session_state.pop("g_page", None)


def toggle_pages() -> None:
    """Button callback: the paged view (`?pages=1`) or back to one scroll."""
    if st.query_params.get("pages") == "1":
        del st.query_params["pages"]
    else:
        st.query_params["pages"] = "1"
        st.session_state.pop("g_page", None)


def author_filter(scope: str | None, person: str | None, me: str, *, login_on: bool) -> str | None:
    """The gallery's author filter from its controls (None: everyone's).

    Without a login there are no people to tell apart: everyone's. With it,
    "Mine" is the signed-in person's (`me`), and "Everyone" is everyone's or,
    when one is picked, that person's.
    """
    if not login_on:
        return None
    if scope == MINE:
        return me
    return person or None


def author_controls(store: Store, key: str = "g") -> str | None:
    """Mine / Everyone and a person picker (widgets `<key>_scope`, `<key>_person`), drawn only
    when the team login is on; returns `author_filter` of them (None: everyone's)."""
    if not team_login_on():
        return None
    p1, p2, _ = st.columns([2, 3, 7], vertical_alignment="bottom")
    scope = p1.segmented_control("Made by", [MINE, EVERYONE], default=EVERYONE, key=f"{key}_scope")
    person = None
    if scope != MINE:
        people = store.authors()
        if st.session_state.get(f"{key}_person") not in (None, *people):
            st.session_state[f"{key}_person"] = None  # someone who made nothing (any more)
        person = p2.selectbox(
            "Person", [None, *people], format_func=lambda a: "Everyone" if a is None else str(a),
            key=f"{key}_person",
        )  # fmt: skip
    return author_filter(scope, person, current_author(), login_on=True)


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
    names = collection_labels(services.store)
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
        author=author_controls(services.store),
    )


def _one_line(prompt: str) -> str:
    """The start of a prompt on one line (newlines would break the ellipsis)."""
    flat = " ".join(prompt[: PROMPT_CHARS * 2].split())
    return flat[:PROMPT_CHARS] + ("…" if len(flat) > PROMPT_CHARS or len(prompt) > PROMPT_CHARS * 2 else "")


# -- the grid's view model (no Streamlit here: GET /api/view/gallery builds it too) ---------


def query_string(q: GalleryQuery) -> str:
    """The filters as URL parameters (what `parse_query` reads back)."""
    params: list[tuple[str, str]] = [("q", q.text)] if q.text else []
    params += [("ratio", r) for r in q.ratios] + [("res", r) for r in q.resolutions]
    if q.favourites_only:
        params.append(("fav", "1"))
    if q.collection_id is not None:
        params.append(("coll", str(q.collection_id)))
    if q.since is not None:
        params.append(("since", repr(float(q.since))))
    if q.until is not None:
        params.append(("until", repr(float(q.until))))
    if not q.newest_first:
        params.append(("order", "oldest"))
    if q.status != "kept":
        params.append(("status", q.status))
    if q.text_mismatch:
        params.append(("mismatch", "1"))
    if q.author is not None:
        params.append(("by", q.author))
    return urlencode(params)


def _number(text: str | None, kind: type) -> Any:
    try:
        return kind(text) if text not in (None, "") else None
    except ValueError:
        return None


def parse_query(params: Mapping[str, str], lists: Callable[[str], list[str]]) -> GalleryQuery:
    """GalleryQuery from URL parameters; what is malformed or unknown is ignored (shows more, never fails)."""
    status = params.get("status", "kept")
    return GalleryQuery(
        text=params.get("q", "")[:500],
        ratios=tuple(r for r in lists("ratio") if r in RATIO_NAMES),
        resolutions=tuple(r for r in lists("res") if r in RESOLUTIONS),
        favourites_only=params.get("fav") == "1",
        collection_id=_number(params.get("coll"), int),
        since=_number(params.get("since"), float),
        until=_number(params.get("until"), float),
        newest_first=params.get("order") != "oldest",
        status=status if status in ("kept", "failed", "all") else "kept",
        text_mismatch=params.get("mismatch") == "1",
        author=(params.get("by") or "")[:320] or None,
    )


def _check_chip(check: TextCheck | None) -> list[str] | None:
    """components/fidelity.py's `badge` as [label, colour, tooltip]."""
    if check is None:
        return None
    if check.state == PASS:
        return ["Text ✓", "green", "Every quoted string reads right."]
    if check.state == MISMATCH:
        return [
            f"Text ✗ {check.matched}/{len(check.checks)}",
            "red",
            "A quoted string is missing or misspelled: open the image.",
        ]
    return ["Text ?", "gray", "The text could not be checked."]


def _item_view(item: GalleryItem, check: TextCheck | None, *, show_author: bool = False) -> dict[str, Any]:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(item.created_at))
    # Who made it, only with the team login (without one everything is "local": nothing to tell).
    by = {"by": item.author} if show_author else {}
    if not item.kept:
        what = "Image could not be kept" if item.state == "download_failed" else "Generation failed"
        return {
            "kind": "failed", "key": f"{item.submission_id}_{item.output_id or 0}", "sid": item.submission_id,
            "error": f"{what}: {item.error or 'no reason given'}", "ratio": item.aspect_ratio,
            "prompt": _one_line(item.prompt), "when": when, **by,
        }  # fmt: skip
    return {
        "id": item.output_id, "sha": item.sha256, "ratio": item.aspect_ratio, "res": item.resolution,
        "fav": item.favourite, "when": when, "prompt": _one_line(item.prompt), "check": _check_chip(check),
        "thumb": routes.thumb(item.sha256 or ""), "download": routes.image(item.sha256 or "", download=file_name(item)),
        **by,
    }  # fmt: skip


def gallery_view(
    store: Store,
    bus: EventBus | None,
    q: GalleryQuery,
    offset: int = 0,
    limit: int = WINDOW,
    *,
    show_author: bool = False,
) -> dict[str, Any]:
    """`limit` items of the filtered gallery from `offset`, the number of matches and the bus's (boot, seq).

    (boot, seq) is read before the store, so a view never claims to be newer
    than what it holds. Text is raw: the browser sets it as text. With
    `show_author` (the team login is on) every item carries its author as `by`.
    """
    v = {"boot": bus.boot if bus else "", "seq": bus.seq if bus else 0}
    offset, limit = max(0, offset), max(1, min(MAX_LIMIT, limit))
    items, total = store.gallery(q, limit=limit, offset=offset)
    checks = store.text_checks_for([i.output_id for i in items if i.kept])
    return {
        "v": v, "total": total, "offset": offset,
        "items": [
            _item_view(i, checks.get(i.output_id) if i.output_id else None, show_author=show_author)
            for i in items
        ],
    }  # fmt: skip


# -- the component and its events ------------------------------------------------------

_component = st.components.v2.component(
    "studio_gallery",
    js=scripts.script("gallery.js"),
    css=scripts.style("gallery.css"),
    isolate_styles=False,  # the page's fonts and theme; every rule is scoped to .studio-gallery
)


def _event(name: str) -> Any:
    value = st.session_state.get("gallery")
    try:
        ev = value[name] if value is not None else None
    except (KeyError, TypeError):
        return None
    return ev if isinstance(ev, dict) else None


def _on_open() -> None:
    ev = _event("open")
    if ev and isinstance(ev.get("id"), int):
        open_item(ev["id"], tuple(i for i in ev.get("sequence") or () if isinstance(i, int)))


def _on_select() -> None:
    ev = _event("select")
    if ev and isinstance(ev.get("id"), int):
        (selected().add if ev.get("on") else selected().discard)(ev["id"])
        st.session_state.pop("export_url", None)  # a zip prepared before no longer matches


def _on_favourite() -> None:
    ev = _event("favourite")
    if ev and isinstance(ev.get("id"), int):
        services = get_services()
        # Other open pages redraw the star.
        set_favourite(services.store, services.events, ev["id"], bool(ev.get("on")))


def _on_reference() -> None:
    ev = _event("reference")
    if ev and isinstance(ev.get("id"), int):
        use_as_reference(ev["id"])  # a refusal is a toast


def _on_edit() -> None:
    ev = _event("edit")
    if ev and isinstance(ev.get("sid"), int):
        sub = get_services().store.submission(ev["sid"])
        if sub is not None:
            draft.load(
                sub.prompt, [sub.aspect_ratio], sub.resolution, references=reference_names(sub.references)
            )


def grid(q: GalleryQuery, *, page: int | None = None) -> dict[str, Any]:
    """The gallery grid for the filters `q`; returns the view it was drawn from.

    Scroll view (`page` None): every match in one scroll, the browser fetching
    what comes into view. Paged view: page `page` of PAGE_SIZE, nothing fetched
    beyond it. Both are kept current by the push channel, an empty one too (it
    shows NO_MATCHES until an image matches).
    """
    services = get_services()
    size = WINDOW if page is None else PAGE_SIZE
    offset = 0 if page is None else (page - 1) * size
    view = gallery_view(services.store, services.events, q, offset, size, show_author=team_login_on())
    _component(
        key="gallery",
        data={
            "view": view,
            "selected": sorted(selected()),
            "base": image_url(""),
            "feed": FEED,
            "source": routes.gallery_view(query_string(q)),
            "paged": page is not None,
            "size": size,
            "empty": NO_MATCHES,
            "noun": "image" if q.status == "kept" else "item",  # the page's count caption, kept current
        },
        on_open_change=_on_open,
        on_select_change=_on_select,
        on_favourite_change=_on_favourite,
        on_reference_change=_on_reference,
        on_edit_change=_on_edit,
    )
    return view


@outage.callback
def _delete_selected(output_ids: list[int]) -> None:
    deletion.delete(output_ids)
    st.session_state.pop("export_url", None)


@st.dialog("Compare", width="large")
def compare(output_ids: list[int]) -> None:
    items = get_services().store.gallery_items(output_ids)
    cols = st.columns(len(items))
    for col, item in zip(cols, items, strict=True):
        with col:
            show_image(routes.image(item.sha256 or ""))
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
            export = export_images(services.store, services.blobs, sel)
            st.session_state["export_url"] = image_url(export.route)
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
