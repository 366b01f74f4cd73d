"""Placeholder: text checks on PostgreSQL are written in their own change; this module only
names `PgTextCheckRows` so `PgStore` can be composed until it lands."""

from __future__ import annotations

from .db import PgDatabase


class PgTextCheckRows(PgDatabase):
    """Placeholder mixin (no methods yet)."""
