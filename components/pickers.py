"""Aspect-ratio tiles (multi-select, grouped, with shape previews) and the resolution picker."""

from __future__ import annotations

import streamlit as st

from components import draft
from studio.ratios import (
    GROUPS,
    RATIOS,
    RESOLUTIONS,
    combination_problem,
    limits_summary,
    pixel_size,
    size_label,
)

_GROUP_TITLES = {
    "square": "Square",
    "landscape": "Landscape",
    "portrait": "Portrait",
    "wide": "Wide",
    "tall": "Tall",
}


def shape_svg(ratio: str, box: int = 44, *, muted: bool = False) -> str:
    """A small rectangle of the ratio's shape, centred in a square box."""
    r = RATIOS[ratio]
    w, h = (box, box * r.height / r.width) if r.width >= r.height else (box * r.width / r.height, box)
    x, y = (box - w) / 2, (box - h) / 2
    stroke = "#6b6b76" if muted else "#FF5C39"
    fill = "#2a2a31" if muted else "rgba(255,92,57,0.18)"
    return (
        f'<svg width="{box}" height="{box}" viewBox="0 0 {box} {box}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="3" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="2"/></svg>'
    )


def resolution_picker(error: str | None = None) -> str:
    draft.init()
    st.segmented_control(
        "Resolution",
        RESOLUTIONS,
        key=draft.RES_KEY,
        on_change=draft.sync_resolution,
        help="Approximate sizes; the real image is measured when it arrives. " + limits_summary(),
    )
    res = draft.resolution()
    st.caption(
        f"16:9 ≈ {'×'.join(map(str, pixel_size('16:9', res)))} · "
        f"9:16 ≈ {'×'.join(map(str, pixel_size('9:16', res)))} px"
    )
    if error:
        st.error(error, icon=":material/error:")
    return res


def _tile(name: str, res: str) -> None:
    problem = combination_problem(name, res)
    picked = bool(st.session_state.get(draft.ratio_key(name)))
    with st.container(border=True, key=f"tile_{name.replace(':', 'x')}", gap="xsmall"):
        with st.container(horizontal=True, vertical_alignment="center", gap="small"):
            st.image(shape_svg(name, box=30, muted=bool(problem)), width=30)
            st.checkbox(
                name,
                key=draft.ratio_key(name),
                on_change=draft.sync_ratios,
                # A picked tile stays clickable so it can be un-picked.
                disabled=bool(problem) and not picked,
                help=problem or ("Suits: " + ", ".join(RATIOS[name].placements)),
            )
        if problem:
            st.caption("✕ " + ("not with " + res))
        else:
            st.caption(f"{size_label(name, res)} · {RATIOS[name].placements[0]}")


def ratio_picker(error: str | None = None) -> list[str]:
    """Tiles for all 16 ratios; several may be picked (one task each)."""
    draft.init()
    res = draft.resolution()
    st.markdown("**Aspect ratios** — pick one or several; each becomes one image")
    auto_problem = combination_problem("auto", res)
    st.checkbox(
        "auto — let the model choose",
        key=draft.ratio_key("auto"),
        on_change=draft.sync_ratios,
        disabled=bool(auto_problem) and not st.session_state.get(draft.ratio_key("auto")),
        help=auto_problem or "The model picks the shape; 1K only.",
    )
    group_cols = st.columns(len(GROUPS), gap="small")
    for col, group in zip(group_cols, GROUPS, strict=True):
        col.caption(_GROUP_TITLES[group])
        for name in (r.name for r in RATIOS.values() if r.group == group):
            with col:
                _tile(name, res)
    picked = draft.ratios()
    skipped = [(n, combination_problem(n, res)) for n in picked if combination_problem(n, res)]
    for name, why in skipped:
        st.warning(f"{name} will be skipped: {why}", icon=":material/block:")
    if error:
        st.error(error, icon=":material/error:")
    return picked
