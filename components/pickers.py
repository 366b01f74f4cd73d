"""Aspect-ratio tiles (multi-select, grouped, with shape previews) and the resolution picker.

The ratio picker is compact: the picked ratios show as chips (a click removes
one), the full grid of 16 tiles sits in an "All ratios" expander, open only
while nothing is picked. A click anywhere on a tile toggles it. A ratio the new
resolution forbids is unticked when the resolution changes, with a note here.
"""

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
ALL_RATIOS = "ratio_all"  # the expander's key (its open state)
TILE_WIDTH = 136
MAX_SIZES_SHOWN = 4

# A click anywhere on a tile (its shape, its caption, its padding) toggles its checkbox.
# The shape's image toolbar (fullscreen) is hidden: it would sit over a 30 px preview.
_TILE_JS = r"""
<style>
[class*="st-key-tile_"] { cursor: pointer; }
[class*="st-key-tile_"] [data-testid="stElementToolbar"] { display: none; }
</style>
<script>
(function () {
  const win = window.parent || window;
  const doc = win.document;
  if (win.__studioTilesWired) return;
  win.__studioTilesWired = true;
  doc.addEventListener("click", (e) => {
    const tile = e.target.closest && e.target.closest("[class*='st-key-tile_']");
    if (!tile || e.target.closest("label, input, button, a")) return;
    const box = tile.querySelector("input[type=checkbox]");
    if (box && !box.disabled) box.click();  // the input itself: a click on its label is not seen as a press
  }, true);
})();
</script>
"""


def shape_svg(ratio: str, box: int = 44, *, muted: bool = False) -> str:
    """A small rectangle of the ratio's shape, centred in a square box."""
    r = RATIOS[ratio]
    w, h = (box, box * r.height / r.width) if r.width >= r.height else (box * r.width / r.height, box)
    x, y = (box - w) / 2, (box - h) / 2
    # Translucent colours read on the light and the dark theme alike.
    stroke = "rgba(128,128,140,0.8)" if muted else "#FF5C39"
    fill = "rgba(128,128,140,0.18)" if muted else "rgba(255,92,57,0.18)"
    return (
        f'<svg width="{box}" height="{box}" viewBox="0 0 {box} {box}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="3" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="2"/></svg>'
    )


def sizes_hint(ratios: list[str], res: str) -> str:
    """The approximate pixel sizes of the picked ratios at `res` (auto has none)."""
    sized = [
        r
        for r in ratios
        if r != "auto"
        and not combination_problem(r, res, image_to_image=draft.image_to_image(), route=draft.route())
    ]
    if not sized:
        return "Pick a ratio to see its size." if not ratios else "The model picks the size."
    parts = [f"{r} ≈ {'×'.join(map(str, pixel_size(r, res)))}" for r in sized[:MAX_SIZES_SHOWN]]
    more = len(sized) - MAX_SIZES_SHOWN
    return " · ".join(parts) + " px" + (f" · and {more} more" if more > 0 else "")


def resolution_picker(error: str | None = None) -> str:
    draft.init()
    with st.container(horizontal=True, vertical_alignment="bottom", gap="medium", key="resolution_row"):
        st.segmented_control(
            "Resolution",
            RESOLUTIONS,
            key=draft.RES_KEY,
            on_change=draft.sync_resolution,
            help="Approximate sizes; the real image is measured when it arrives. " + limits_summary(),
        )
        res = draft.resolution()
        with st.container(key="resolution_sizes"):
            st.caption(sizes_hint(draft.ratios(), res))
    if error:
        st.error(error, icon=":material/error:")
    return res


def _tile(name: str, res: str) -> None:
    problem = combination_problem(name, res, image_to_image=draft.image_to_image(), route=draft.route())
    picked = bool(st.session_state.get(draft.ratio_key(name)))
    with st.container(border=True, key=f"tile_{name.replace(':', 'x')}", gap="xsmall", width=TILE_WIDTH):
        with st.container(horizontal=True, vertical_alignment="center", gap="small", wrap=False):
            st.image(shape_svg(name, box=30, muted=bool(problem)), width=30)
            st.checkbox(
                name,
                key=draft.ratio_key(name),
                on_change=draft.sync_ratios,
                # A picked tile stays clickable so it can be un-picked.
                disabled=bool(problem) and not picked,
                help=problem,  # why it is off; what it suits is in the caption
            )
        if problem:
            # The table's reason ends with what to pick instead: that part fits a tile.
            instead = problem.split("; ", 1)[1].rstrip(".") if "; " in problem else ""
            st.caption(f"✕ not with {res}" + (f": {instead}" if instead else ""))
        else:
            st.caption(f"{size_label(name, res)}  \n{RATIOS[name].placements[0]}")


def _chips(picked: list[str], res: str) -> None:
    """The picked ratios, compact: one small button each, a click removes it."""
    with st.container(horizontal=True, vertical_alignment="center", gap="small", key="ratio_chips"):
        st.markdown("**Aspect ratios**" if picked else "**Aspect ratios**: none picked yet", width="content")
        st.html(_TILE_JS, width="content", unsafe_allow_javascript=True)  # in this row: no vertical gap
        for name in picked:
            label = name if name == "auto" else f"{name} · {size_label(name, res)}"
            st.button(
                label,
                key=f"unpick_{name.replace(':', 'x')}",
                icon=":material/close:",
                on_click=draft.set_ratio,
                args=(name, False),
                help=f"Remove {name}",
            )


def ratio_picker(error: str | None = None) -> list[str]:
    """The picked ratios as chips, and all 16 tiles in an expander; several may be picked (one task each)."""
    draft.init()
    res = draft.resolution()
    picked = draft.ratios()
    _chips(picked, res)
    note = draft.unticked_note()
    if note:
        with st.container(key="ratio_note"):
            st.caption(f":material/block: {note}")
    # Open by default only while nothing is picked; afterwards the user's open/closed choice holds.
    st.session_state.setdefault(ALL_RATIOS, not picked)
    with st.expander("All ratios", key=ALL_RATIOS, on_change="rerun", icon=":material/aspect_ratio:"):
        auto_problem = combination_problem(
            "auto", res, image_to_image=draft.image_to_image(), route=draft.route()
        )
        st.checkbox(
            "auto — let the model choose",
            key=draft.ratio_key("auto"),
            on_change=draft.sync_ratios,
            disabled=bool(auto_problem) and not st.session_state.get(draft.ratio_key("auto")),
            help=auto_problem or "The model picks the shape; 1K only.",
        )
        # One wrapping row of fixed-width tiles per group: fits a half-width column and a phone alike.
        for group in GROUPS:
            st.caption(_GROUP_TITLES[group])
            with st.container(horizontal=True, gap="small", key=f"ratio_group_{group}"):
                for name in (r.name for r in RATIOS.values() if r.group == group):
                    _tile(name, res)
    if error:
        st.error(error, icon=":material/error:")
    return picked
