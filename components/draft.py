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
EDITOR_KEY = "prompt_editor"
RES_KEY = "resolution_picker"


def ratio_key(name: str) -> str:
    return f"ratio_pick_{name}"


def init() -> None:
    ss = st.session_state
    ss.setdefault(PROMPT, "")
    ss.setdefault(RATIOS, ["1:1"])
    ss.setdefault(RESOLUTION, DEFAULT_RESOLUTION)
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


def load(prompt: str, ratios: Sequence[str], resolution: str) -> None:
    """Put a recipe into the editor (templates, reuse, edit-and-resubmit)."""
    ss = st.session_state
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
