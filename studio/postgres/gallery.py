"""Placeholder: gallery queries and search, favourites, collections on PostgreSQL are written in their own change; this module only
names `PgGalleryRows` so `PgStore` can be composed until it lands."""

from __future__ import annotations

from .db import PgDatabase


class PgGalleryRows(PgDatabase):
    """Placeholder mixin (no methods yet)."""
