"""Old import path of the SQLite store, kept so `from studio.store import Store` still works.

The store lives in `studio/sqlite/store.py` (the SQLite adapter).
"""

from .sqlite.store import *  # noqa: F403
