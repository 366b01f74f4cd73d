"""Placeholder: the prompt library on PostgreSQL are written in their own change; this module only
names `PgTemplateRows` so `PgStore` can be composed until it lands."""

from __future__ import annotations

from .db import PgDatabase


class PgTemplateRows(PgDatabase):
    """Placeholder mixin (no methods yet)."""
