"""The user's draft (prompt, ratios, resolution, rows, campaign name, quality, background), kept in session state
and in the database per browser.

The widgets' own keys are dropped by Streamlit on a page switch, so the draft
lives under separate keys and each widget is re-seeded from it. Nothing typed
is ever cleared by an error, a rerun or a page switch.

A reload or a new tab is a new session: the draft is restored from the store
under the browser's draft cookie (`studio.drafts`). The first session in a
browser makes a random id and sets the cookie with a tiny script; `persist()`,
called at the end of the Studio page, saves the draft when it changed.

A ratio the resolution forbids is never left ticked: changing the resolution
unticks it and says so next to the picker (`unticked_note`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import streamlit as st

from components import outage
from components.services import get_services
from studio.drafts import COOKIE, MAX_AGE_DAYS, Drafts, new_id, valid_id
from studio.ratios import DEFAULT_RESOLUTION, EXT_ROUTE, RATIO_NAMES, RESOLUTIONS, combination_problem
from studio.validation import BACKGROUNDS, QUALITIES

PROMPT = "draft_prompt"
RATIOS = "draft_ratios"
RESOLUTION = "draft_resolution"
ROWS = "draft_rows"  # campaign rows: one dict of variable values per row
ROWS_BASE = "draft_rows_base"  # what the table editor was last seeded with
ROWS_EPOCH = "draft_rows_epoch"  # bumped to re-seed the table editor
CAMPAIGN_NAME = "draft_campaign_name"
EDITOR_KEY = "prompt_editor"
RES_KEY = "resolution_picker"
DRAFT_ID = "draft_id"  # the browser's draft id (its cookie), once per session
RESTORE_PENDING = "draft_restore_pending"  # the stored draft could not be read yet (database away)
UNTICKED = "draft_unticked"  # (ratios, resolution) the last resolution change unticked
REFERENCES = "draft_references"  # kept reference images (`<sha256>.<ext>`), in the order sent
QUALITY = "draft_quality"  # None (HiAPI's default route) or an `ext` quality: low, medium, high
BACKGROUND = "draft_background"  # None (auto: not sent), "opaque" or "transparent"
QUALITY_KEY = "quality_picker"
BACKGROUND_KEY = "background_picker"
DEFAULT_ROUTE_CHOICE = "default"  # the quality picker's value for "no quality"
KEEP = object()  # `load(quality=KEEP)`: leave the draft's choice as it is


#: A session's draft before anything was chosen (`init`'s defaults), as `snapshot()` gives it.
_EMPTY: dict[str, Any] = {
    "prompt": "",
    "ratios": ["1:1"],
    "resolution": DEFAULT_RESOLUTION,
    "rows": [],
    "campaign_name": "",
    "references": [],
    "quality": None,
    "background": None,
}


def ratio_key(name: str) -> str:
    return f"ratio_pick_{name}"


def init() -> None:
    ss = st.session_state
    if DRAFT_ID not in ss:
        _restore()
    elif ss.get(RESTORE_PENDING) and not outage.database_down():
        _restore_late()
    ss.setdefault(PROMPT, "")
    ss.setdefault(RATIOS, ["1:1"])
    ss.setdefault(RESOLUTION, DEFAULT_RESOLUTION)
    ss.setdefault(ROWS, [])
    ss.setdefault(ROWS_BASE, [])
    ss.setdefault(ROWS_EPOCH, 0)
    ss.setdefault(CAMPAIGN_NAME, "")
    ss.setdefault(REFERENCES, [])
    ss.setdefault(QUALITY, None)
    ss.setdefault(BACKGROUND, None)
    # Re-seed widget keys that Streamlit dropped on a page switch.
    if QUALITY_KEY not in ss:
        ss[QUALITY_KEY] = ss[QUALITY] or DEFAULT_ROUTE_CHOICE
    if BACKGROUND_KEY not in ss:
        ss[BACKGROUND_KEY] = ss[BACKGROUND] or "auto"
    if EDITOR_KEY not in ss:
        ss[EDITOR_KEY] = ss[PROMPT]
    if RES_KEY not in ss:
        ss[RES_KEY] = ss[RESOLUTION]
    for name in RATIO_NAMES:
        if ratio_key(name) not in ss:
            ss[ratio_key(name)] = name in ss[RATIOS]


def sync_prompt() -> None:
    st.session_state[PROMPT] = st.session_state[EDITOR_KEY]


def sync_resolution() -> None:
    value = st.session_state.get(RES_KEY)
    if value:
        st.session_state[RESOLUTION] = value
        _untick_forbidden()
    else:  # segmented control deselected: keep the previous choice
        st.session_state[RES_KEY] = st.session_state[RESOLUTION]


def sync_quality() -> None:
    """The quality picker: "default" is HiAPI's default route; a quality switches to `ext`."""
    value = st.session_state.get(QUALITY_KEY)
    if value is None:  # deselected: keep the previous choice
        st.session_state[QUALITY_KEY] = st.session_state.get(QUALITY) or DEFAULT_ROUTE_CHOICE
        return
    st.session_state[QUALITY] = value if value in QUALITIES else None
    _untick_forbidden()  # back on the default route, its limits apply again


def sync_background() -> None:
    value = st.session_state.get(BACKGROUND_KEY)
    if value is None:
        st.session_state[BACKGROUND_KEY] = st.session_state.get(BACKGROUND) or "auto"
        return
    # Auto is HiAPI's default: it is never sent, so the draft holds None for it.
    st.session_state[BACKGROUND] = value if value in BACKGROUNDS and value != "auto" else None


def _untick_forbidden() -> None:
    """Untick every picked ratio the resolution (on this route) forbids, and remember which for the note."""
    ss = st.session_state
    res = ss[RESOLUTION]
    i2i = bool(ss.get(REFERENCES))  # image-to-image has its own limits (1:1 at 4K is fine)
    gone = [n for n in ss.get(RATIOS, []) if combination_problem(n, res, image_to_image=i2i, route=route())]
    ss[UNTICKED] = (gone, res) if gone else None
    if gone:
        for name in gone:
            ss[ratio_key(name)] = False
        ss[RATIOS] = [n for n in ss[RATIOS] if n not in gone]


def unticked_note() -> str | None:
    """'Unticked 1:1: not available at 4K', while the resolution that caused it is picked."""
    info = st.session_state.get(UNTICKED)
    if not info or info[1] != resolution():
        return None
    gone, res = info
    return f"Unticked {', '.join(gone)}: not available at {res}"


def sync_ratios() -> None:
    st.session_state[RATIOS] = [n for n in RATIO_NAMES if st.session_state.get(ratio_key(n))]
    st.session_state[UNTICKED] = None


def set_ratio(name: str, on: bool) -> None:
    """Tick or untick one ratio from outside its checkbox (the picked-ratio chips)."""
    st.session_state[ratio_key(name)] = on
    sync_ratios()


def set_rows(rows: Sequence[dict[str, str]]) -> None:
    """Replace the campaign rows (a file, a template) and re-seed the table editor."""
    ss = st.session_state
    old = ss.get(ROWS_EPOCH, 0)
    ss.pop(f"rows_editor_{old}", None)  # the old editor's edits are in `rows` already
    ss[ROWS] = [dict(r) for r in rows]
    ss[ROWS_BASE] = [dict(r) for r in rows]
    ss[ROWS_EPOCH] = old + 1


def rows() -> list[dict[str, str]]:
    return list(st.session_state.get(ROWS, []))


def references() -> list[str]:
    return list(st.session_state.get(REFERENCES, []))


def image_to_image() -> bool:
    """True while the draft has reference images: image-to-image's limits apply."""
    return bool(st.session_state.get(REFERENCES))


def set_references(names: Sequence[str]) -> None:
    """The reference images, in order (at most 16: HiAPI's image-to-image limit)."""
    st.session_state[REFERENCES] = list(dict.fromkeys(names))[:16]
    _untick_forbidden()


def load(
    prompt: str,
    ratios: Sequence[str],
    resolution: str,
    rows: Sequence[dict[str, str]] | None = None,
    references: Sequence[str] | None = None,
    *,
    quality: str | None | object = KEEP,
    background: str | None | object = KEEP,
) -> None:
    """Put a recipe into the editor (templates, reuse, edit-and-resubmit); `rows` for a campaign,
    `references` (kept reference names) for image-to-image; a recipe without them clears them.

    `quality` and `background` are a sent recipe's (None: default route, auto
    background); left out (a template), the draft's own choices stay.
    """
    ss = st.session_state
    ss[REFERENCES] = list(references or [])
    if rows is not None:
        set_rows(rows)
    if quality is not KEEP:
        ss[QUALITY] = quality if quality in QUALITIES else None
        ss[QUALITY_KEY] = ss[QUALITY] or DEFAULT_ROUTE_CHOICE
    if background is not KEEP:
        ss[BACKGROUND] = background if background in BACKGROUNDS and background != "auto" else None
        ss[BACKGROUND_KEY] = ss[BACKGROUND] or "auto"
    ss[PROMPT] = prompt
    ss[EDITOR_KEY] = prompt
    ss[RESOLUTION] = resolution
    ss[RES_KEY] = resolution
    chosen = [r for r in ratios if r in RATIO_NAMES] or ["1:1"]
    ss[RATIOS] = chosen
    for name in RATIO_NAMES:
        ss[ratio_key(name)] = name in chosen
    _untick_forbidden()


# -- kept per browser -----------------------------------------------------------
def _drafts() -> Drafts:
    services = get_services()
    # Keyed by the database: SQLite's file, or (team mode, no file) the masked PostgreSQL URL.
    path = getattr(services.store, "path", None)
    return _drafts_for(str(path) if path is not None else services.settings.database.safe_url)


@st.cache_resource(show_spinner=False)
def _drafts_for(path: str) -> Drafts:  # keyed by the database
    return Drafts(get_services().store)


def _cookie() -> str | None:
    try:
        value = st.context.cookies.get(COOKIE)
    except Exception:  # no browser behind this session (AppTest)
        return None
    return value if valid_id(value) else None


def _store_key(draft_id: str) -> str:
    """The row a draft lives in: per browser, and per signed-in account when there is a login."""
    try:
        email = st.user.get("email") if st.user.is_logged_in else None
    except Exception:
        email = None
    if not email:
        return draft_id
    return f"{draft_id}.{hashlib.sha256(email.encode()).hexdigest()[:16]}"


def snapshot() -> dict[str, Any]:
    """The draft as stored: only what the user chose, no widget state."""
    ss = st.session_state
    return {
        "prompt": prompt(),
        "ratios": ratios(),
        "resolution": resolution(),
        "rows": rows(),
        "campaign_name": str(ss.get(CAMPAIGN_NAME, "") or ""),
        "references": references(),
        "quality": quality(),
        "background": background(),
    }


def _restore() -> None:
    """Once per session: find the browser's draft id and put its stored draft in the editor."""
    ss = st.session_state
    ss[DRAFT_ID] = _cookie() or new_id()
    # A session begun while the database is away starts empty and saves nothing until the
    # stored draft could be read (`_restore_late`), so it never overwrites it with an empty one.
    ss[RESTORE_PENDING] = True
    with outage.tolerant():
        body = _drafts().load(_store_key(ss[DRAFT_ID]))
        ss.pop(RESTORE_PENDING, None)
        _apply(body)


def _restore_late() -> None:
    """The database is back in a session begun without it: the stored draft comes into the
    editor unless something was typed meanwhile (then what was typed is kept, and saved)."""
    ss = st.session_state
    with outage.tolerant():
        body = _drafts().load(_store_key(ss[DRAFT_ID]))
        ss.pop(RESTORE_PENDING, None)
        if snapshot() != _EMPTY:
            return
        _apply(body)
        # The widgets were seeded from the empty draft: seeded again from the stored one below.
        for key in (QUALITY_KEY, BACKGROUND_KEY, EDITOR_KEY, RES_KEY, *map(ratio_key, RATIO_NAMES)):
            ss.pop(key, None)


def _apply(body: dict[str, Any] | None) -> None:
    """Put a stored draft into the session's draft keys (the widgets are seeded from them)."""
    ss = st.session_state
    if not body:
        return
    text = body.get("prompt")
    ss[PROMPT] = text if isinstance(text, str) else ""
    res = body.get("resolution")
    ss[RESOLUTION] = res if res in RESOLUTIONS else DEFAULT_RESOLUTION
    ss[QUALITY] = body.get("quality") if body.get("quality") in QUALITIES else None
    bg = body.get("background")
    ss[BACKGROUND] = bg if bg in BACKGROUNDS and bg != "auto" else None
    picked = body.get("ratios")
    picked = [r for r in picked if r in RATIO_NAMES] if isinstance(picked, list) else ["1:1"]
    refs = body.get("references")
    if isinstance(refs, list):
        ss[REFERENCES] = [r for r in refs if isinstance(r, str)][:16]
    i2i = bool(ss.get(REFERENCES))
    ss[RATIOS] = [
        r for r in picked if not combination_problem(r, ss[RESOLUTION], image_to_image=i2i, route=route())
    ]
    saved_rows = body.get("rows")
    if isinstance(saved_rows, list):
        clean = [{str(k): str(v) for k, v in r.items()} for r in saved_rows if isinstance(r, dict)]
        set_rows(clean)
    name = body.get("campaign_name")
    if isinstance(name, str):
        ss[CAMPAIGN_NAME] = name


# Sets the draft cookie in the browser (not HttpOnly: a script sets it; it only names a draft).
_COOKIE_JS = """
<script>
(function () {
  const doc = (window.parent || window).document;
  const secure = (window.parent || window).location.protocol === "https:" ? "; Secure" : "";
  doc.cookie = "__NAME__=__ID__; Max-Age=__AGE__; Path=/; SameSite=Lax" + secure;
})();
</script>
"""


def persist() -> None:
    """Save the draft if it changed, and make sure the browser keeps its id (call at the end of a page)."""
    ss = st.session_state
    init()
    if ss.get(RESTORE_PENDING):  # the stored draft is not read yet: never overwrite it blindly
        return
    with outage.tolerant():  # saved by the first run after the database is back
        _drafts().save(_store_key(ss[DRAFT_ID]), snapshot())
    if _cookie() != ss[DRAFT_ID]:
        script = (
            _COOKIE_JS.replace("__NAME__", COOKIE)
            .replace("__ID__", json.dumps(ss[DRAFT_ID])[1:-1])
            .replace("__AGE__", str(MAX_AGE_DAYS * 86_400))
        )
        st.html(script, unsafe_allow_javascript=True)


def prompt() -> str:
    return st.session_state.get(PROMPT, "")


def ratios() -> list[str]:
    return list(st.session_state.get(RATIOS, []))


def resolution() -> str:
    return st.session_state.get(RESOLUTION, DEFAULT_RESOLUTION)


def quality() -> str | None:
    """The picked `ext` quality (low, medium, high), or None for HiAPI's default route."""
    value = st.session_state.get(QUALITY)
    return value if value in QUALITIES else None


def background() -> str | None:
    """The picked background when it is not auto ("opaque", "transparent"), else None (not sent)."""
    value = st.session_state.get(BACKGROUND)
    return value if value in BACKGROUNDS and value != "auto" else None


def route() -> str | None:
    """HiAPI's route for the draft: "ext" once a quality is picked, else the default (None)."""
    return EXT_ROUTE if quality() is not None else None
