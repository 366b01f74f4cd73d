"""Quality and background: the two optional choices beside the resolution picker.

Quality: Default (HiAPI's default route, as the studio always sent) or one of
the `ext` route's three tiers, named as a designer would (Draft, Standard,
Final), each with its price per image at the picked resolution. Picking a tier
sends on `ext`, where every ratio works at every resolution.

Background: Auto (HiAPI's default, never sent), Opaque or Transparent. HiAPI
takes a background only on the default route at 1K; elsewhere the control is
disabled with the reason under it, unless a non-default value is still picked
(then it stays enabled so it can be set back; Generate names the problem and
sends nothing).
"""

from __future__ import annotations

import streamlit as st

from components import draft
from components.services import get_services
from studio.pricing import QUALITY_NAMES
from studio.validation import BACKGROUND_RESOLUTION

QUALITY_HELP: dict[str, str] = {
    draft.DEFAULT_ROUTE_CHOICE: "Default — HiAPI's usual route; a few ratios are off at 2K and 4K.",
    "low": "Draft — quick and cheap, for trying ideas.",
    "medium": "Standard — clean enough to show a client.",
    "high": "Final — the most detail, for delivery; slowest and dearest.",
}
BACKGROUND_NAMES = {"auto": "Auto", "opaque": "Opaque", "transparent": "Transparent"}


def background_blocked(resolution: str, route: str | None) -> str | None:
    """Why no background can be picked now (None when it can)."""
    if route is not None:
        return "Background: not on Draft/Standard/Final; pick Default quality to set it."
    if resolution != BACKGROUND_RESOLUTION:
        return f"Background: 1K only; pick 1K to set it (now {resolution})."
    return None


def _quality_label(choice: str) -> str:
    return "Default" if choice == draft.DEFAULT_ROUTE_CHOICE else QUALITY_NAMES[choice]


def options_panel() -> None:
    """The quality and background pickers and their explanations (a click's errors show under Generate)."""
    draft.init()
    pricing = get_services().pricing
    res = draft.resolution()
    summary = f"Quality: {_quality_label(draft.quality() or draft.DEFAULT_ROUTE_CHOICE)}"
    if draft.background():
        summary += f" · Background: {BACKGROUND_NAMES.get(draft.background(), draft.background())}"
    # Folded, its choice in the label: the defaults suit most images and the phone's first screen is short.
    with st.container(key="options", gap="small"), st.expander(summary, icon=":material/tune:"):
        st.segmented_control(
            "Quality",
            [draft.DEFAULT_ROUTE_CHOICE, *QUALITY_NAMES],
            key=draft.QUALITY_KEY,
            on_change=draft.sync_quality,
            format_func=_quality_label,
            help="Draft, Standard and Final use HiAPI's ext route: every ratio at every resolution, "
            "each tier priced on its own (Settings).",
        )
        chosen = draft.quality() or draft.DEFAULT_ROUTE_CHOICE
        price = pricing.money(pricing.unit(res, draft.quality()))
        with st.container(key="quality_note"):
            st.caption(f"{QUALITY_HELP[chosen]} ≈{price} per {res} image.")
        blocked = background_blocked(res, draft.route())
        st.segmented_control(
            "Background",
            list(BACKGROUND_NAMES),
            key=draft.BACKGROUND_KEY,
            on_change=draft.sync_background,
            format_func=BACKGROUND_NAMES.get,
            # A value that no longer applies stays changeable, so it can be set back to Auto.
            disabled=blocked is not None and draft.background() is None,
            help="Transparent keeps the subject and drops the backdrop (a PNG with alpha). "
            "HiAPI takes a background at 1K on the Default quality only.",
        )
        if blocked:
            with st.container(key="background_note"):
                st.caption(f":material/block: {blocked}")
