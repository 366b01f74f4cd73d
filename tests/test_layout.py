"""The tree's layout: what must (not) be where for Streamlit and for the layers."""

from __future__ import annotations

from streamlit.runtime.pages_manager import PagesManager

from tests.support import ROOT


def test_no_legacy_pages_folder_so_deep_links_run_app_py_first(monkeypatch):
    """A `pages/` folder beside app.py switches Streamlit to the legacy multipage layout,
    where a deep link such as /gallery skips app.py (no page config, login or navigation)."""
    assert not (ROOT / "pages").exists()
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)
    PagesManager(str(ROOT / "app.py"))
    assert PagesManager.uses_pages_directory is False
