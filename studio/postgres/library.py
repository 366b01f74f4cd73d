"""The prompt library's templates on PostgreSQL, with the methods, rows and meaning of
`studio/sqlite/library.py`.

Contract (as on SQLite):
- Names are unique ignoring case (a unique index on `lower(name)`). Saving under a name
  another template holds raises `NameTaken`, unless `on_conflict` is "skip" (the holder is
  returned, nothing written), "replace" (the holder is deleted) or "rename" (" (2)",
  " (3)"… until free), decided in the same transaction as the write.
- A template with an id that still exists is updated in place; otherwise it is inserted
  (keeping its starter key).
- Search matches every typed word inside the name, prompt or note, ignoring case; typed
  text is never a wildcard. Starters come first, then names in case-folded order.

Several replicas: every save takes `pg_advisory_xact_lock(LIBRARY_LOCK)` first, so the
look for a clash and the write that follows are one step for the whole library, as SQLite's
single writer made them (saves are rare; nobody waits long). Two replicas seeding the
starters at once therefore add each starter once: a starter whose key another replica has
just added is returned as stored, never added twice under a second name.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from ..records import Template
from ..repositories import NameTaken
from .db import PgDatabase

#: pg_advisory_xact_lock key held while a template is saved ("lib" in ASCII).
LIBRARY_LOCK = 0x6C6962


def _template(r: dict[str, Any]) -> Template:
    return Template(
        name=r["name"],
        prompt=r["prompt"],
        ratios=tuple(json.loads(r["ratios"])),
        resolution=r["resolution"],
        note=r["note"],
        rows=tuple(json.loads(r["rows"])),
        id=int(r["id"]),
        starter=r["starter"],
        updated_at=r["updated_at"],
    )


def _free_name(c: Any, name: str) -> str:
    n = 2
    while c.execute(
        "SELECT 1 FROM prompt_library WHERE lower(name) = lower(%s)", (f"{name} ({n})",)
    ).fetchone():
        n += 1
    return f"{name} ({n})"


def _like(word: str) -> str:
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class PgTemplateRows(PgDatabase):
    """`TemplateRepository` over PostgreSQL."""

    def has_starter(self, key: str) -> bool:
        """Whether the starter template `key` is in the library (under any name)."""
        with self._read() as c:
            return c.execute("SELECT 1 FROM prompt_library WHERE starter = %s", (key,)).fetchone() is not None

    def templates(self, query: str = "", *, limit: int = 500) -> list[Template]:
        """Templates whose name, prompt or note contain every word of `query`; starters first, then by name."""
        where: list[str] = []
        params: list[Any] = []
        for word in query.split():
            where.append(
                "(name ILIKE %s OR prompt ILIKE %s OR note ILIKE %s)"
            )  # backslash escapes by default
            params += [_like(word)] * 3
        sql = "SELECT * FROM prompt_library"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += ' ORDER BY starter IS NULL, lower(name) COLLATE "C", id LIMIT %s'
        with self._read() as c:
            rows = c.execute(sql, [*params, limit]).fetchall()
        return [_template(r) for r in rows]

    def template(self, template_id: int) -> Template | None:
        with self._read() as c:
            r = c.execute("SELECT * FROM prompt_library WHERE id = %s", (template_id,)).fetchone()
        return _template(r) if r else None

    def template_by_name(self, name: str) -> Template | None:
        """The template named `name`, ignoring case."""
        with self._read() as c:
            r = c.execute("SELECT * FROM prompt_library WHERE lower(name) = lower(%s)", (name,)).fetchone()
        return _template(r) if r else None

    def starter_templates(self) -> list[Template]:
        with self._read() as c:
            rows = c.execute("SELECT * FROM prompt_library WHERE starter IS NOT NULL ORDER BY id").fetchall()
        return [_template(r) for r in rows]

    def save_template(
        self, t: Template, *, on_conflict: str | None = None, now: float | None = None
    ) -> Template:
        """Insert `t`, or update it when its id exists; returns the stored template (see the contract)."""
        now = time.time() if now is None else now
        with self._tx() as c:
            c.execute("SELECT pg_advisory_xact_lock(%s)", (LIBRARY_LOCK,))
            if t.starter is not None:
                held = c.execute("SELECT * FROM prompt_library WHERE starter = %s", (t.starter,)).fetchone()
                if held is not None and int(held["id"]) != t.id:
                    return _template(held)  # another replica added this starter a moment ago
            clash = c.execute(
                "SELECT id FROM prompt_library WHERE lower(name) = lower(%s)", (t.name,)
            ).fetchone()
            if clash and int(clash["id"]) != t.id:
                if on_conflict == "skip":
                    r = c.execute("SELECT * FROM prompt_library WHERE id = %s", (clash["id"],)).fetchone()
                    return _template(r)
                if on_conflict == "rename":
                    t = replace(t, name=_free_name(c, t.name), id=None)
                elif on_conflict == "replace":
                    c.execute("DELETE FROM prompt_library WHERE id = %s", (clash["id"],))
                else:
                    raise NameTaken(t.name)
            values = (
                t.name,
                t.prompt,
                json.dumps(list(t.ratios)),
                t.resolution,
                json.dumps([dict(r) for r in t.rows], ensure_ascii=False),
                t.note,
                now,
            )
            updated = None
            if t.id is not None:
                updated = c.execute(
                    "UPDATE prompt_library SET name = %s, prompt = %s, ratios = %s, resolution = %s, rows = %s,"
                    " note = %s, updated_at = %s WHERE id = %s RETURNING *",
                    (*values, t.id),
                ).fetchone()
            if updated is None:
                updated = c.execute(
                    "INSERT INTO prompt_library (name, prompt, ratios, resolution, rows, note, updated_at,"
                    " starter, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                    (*values, t.starter, now),
                ).fetchone()
            return _template(updated)

    def delete_template(self, template_id: int) -> bool:
        return self._write("DELETE FROM prompt_library WHERE id = %s", (template_id,)) > 0
