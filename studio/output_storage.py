"""Persistent output storage: the Settings switch that sends `storage: "persistent"` with every create.

HiAPI keeps outputs about 7 days by default. With `storage: "persistent"` (top
level of the create body) it keeps them long term, billed at $0.05 per
GB-month with a 100 GB cap; writes past the cap silently fall back to
temporary storage. Off by default; the choice is kept in the database's app
settings. This module never imports streamlit.
"""

from __future__ import annotations

from typing import Any

from .validation import STORAGE_PERSISTENT

SETTINGS_KEY = "output_storage"
PRICE_NOTE = (
    "HiAPI bills persistent storage at $0.05 per GB-month (100 GB cap; past the cap, outputs fall "
    "back to temporary storage without a warning). The studio keeps its own copy of every image either way."
)


def storage_value(store: Any) -> str | None:
    """What to send as top-level `storage`: "persistent" when switched on, else None (omitted)."""
    return STORAGE_PERSISTENT if store.get_setting(SETTINGS_KEY) == STORAGE_PERSISTENT else None


def set_persistent(store: Any, on: bool) -> None:
    if on:
        store.set_setting(SETTINGS_KEY, STORAGE_PERSISTENT)
    else:
        store.delete_setting(SETTINGS_KEY)
