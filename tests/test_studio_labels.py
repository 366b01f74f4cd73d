"""Small print on the Studio: the kit's "sharper file" hint, the OCR pass count, the sizes hint."""

from __future__ import annotations

from types import SimpleNamespace

from components.fidelity import passes_label
from components.kit import sharper_hint
from components.pickers import sizes_hint


def _entry(ratio: str, resolution: str):
    return SimpleNamespace(source=SimpleNamespace(aspect_ratio=ratio, resolution=resolution))


def test_kit_hint_suggests_only_larger_resolutions_the_ratio_allows():
    assert sharper_hint([_entry("16:9", "1K")]) == "Generate 16:9 at 2K or 4K for a sharper file."
    assert sharper_hint([_entry("16:9", "2K")]) == "Generate 16:9 at 4K for a sharper file."
    # A square cannot be 4K: at 2K it is already as large as it gets.
    assert (
        sharper_hint([_entry("1:1", "2K")])
        == "1:1 is already at the largest size HiAPI makes for that ratio."
    )
    both = sharper_hint([_entry("16:9", "2K"), _entry("1:1", "1K")])
    assert both == "Generate 16:9 at 4K; 1:1 at 2K for a sharper file."


def test_pass_count_is_singular_for_one():
    assert passes_label(1) == "1 pass"
    assert passes_label(3) == "3 passes"


def test_sizes_hint_shows_the_picked_ratios():
    assert sizes_hint(["21:9", "1:1"], "1K") == "21:9 ≈ 2384×1024 · 1:1 ≈ 1024×1024 px"
    assert "16:9" not in sizes_hint(["1:1"], "2K")
    assert sizes_hint([], "1K") == "Pick a ratio to see its size."
    many = sizes_hint(["16:9", "9:16", "4:3", "3:4", "2:1", "1:2"], "1K")
    assert many.endswith("· and 2 more")
