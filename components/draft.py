"""The user's draft (prompt, ratios, resolution), kept in session state.

The widgets' own keys are dropped by Streamlit on a page switch, so the draft
lives under separate keys and each widget is re-seeded from it. Nothing typed
is ever cleared by an error, a rerun or a page switch.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from studio.ratios import DEFAULT_RESOLUTION, RATIO_NAMES

PROMPT = "draft_prompt"
RATIOS = "draft_ratios"
RESOLUTION = "draft_resolution"
ROWS = "draft_rows"  # campaign rows: one dict of variable values per row
ROWS_BASE = "draft_rows_base"  # what the table editor was last seeded with
ROWS_EPOCH = "draft_rows_epoch"  # bumped to re-seed the table editor
CAMPAIGN_NAME = "draft_campaign_name"
EDITOR_KEY = "prompt_editor"
RES_KEY = "resolution_picker"


def ratio_key(name: str) -> str:
    return f"ratio_pick_{name}"


def init() -> None:
    ss = st.session_state
    ss.setdefault(PROMPT, "")
    ss.setdefault(RATIOS, ["1:1"])
    ss.setdefault(RESOLUTION, DEFAULT_RESOLUTION)
    ss.setdefault(ROWS, [])
    ss.setdefault(ROWS_BASE, [])
    ss.setdefault(ROWS_EPOCH, 0)
    ss.setdefault(CAMPAIGN_NAME, "")
    # Re-seed widget keys that Streamlit dropped on a page switch.
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
    else:  # segmented control deselected: keep the previous choice
        st.session_state[RES_KEY] = st.session_state[RESOLUTION]


def sync_ratios() -> None:
    st.session_state[RATIOS] = [n for n in RATIO_NAMES if st.session_state.get(ratio_key(n))]


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


def load(
    prompt: str, ratios: Sequence[str], resolution: str, rows: Sequence[dict[str, str]] | None = None
) -> None:
    """Put a recipe into the editor (templates, reuse, edit-and-resubmit); `rows` for a campaign."""
    ss = st.session_state
    if rows is not None:
        set_rows(rows)
    ss[PROMPT] = prompt
    ss[EDITOR_KEY] = prompt
    ss[RESOLUTION] = resolution
    ss[RES_KEY] = resolution
    chosen = [r for r in ratios if r in RATIO_NAMES] or ["1:1"]
    ss[RATIOS] = chosen
    for name in RATIO_NAMES:
        ss[ratio_key(name)] = name in chosen


def prompt() -> str:
    return st.session_state.get(PROMPT, "")


def ratios() -> list[str]:
    return list(st.session_state.get(RATIOS, []))


def resolution() -> str:
    return st.session_state.get(RESOLUTION, DEFAULT_RESOLUTION)
