"""Placeholder: campaigns and spend on PostgreSQL are written in their own change; this module only
names `PgCampaignRows` so `PgStore` can be composed until it lands."""

from __future__ import annotations

from .db import PgDatabase


class PgCampaignRows(PgDatabase):
    """Placeholder mixin (no methods yet)."""
