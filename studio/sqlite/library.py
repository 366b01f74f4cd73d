"""The prompt library's templates (schema slot 4).

Contract:
- Names are unique ignoring case (the column collates NOCASE). Saving under a
  name another template holds raises `NameTaken`, unless `on_conflict` is
  "skip" (the holder is returned, nothing written), "replace" (the holder is
  deleted) or "rename" (" (2)", " (3)"… until free), decided in the same
  transaction as the write.
- A template with an id that still exists is updated in place; otherwise it is
  inserted (keeping its starter key).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from typing import Any

from ..records import Template
from ..repositories import NameTaken
from .db import Database


def _template(r: Any) -> Template:
    return Template(
        name=r["name"],
        prompt=r["prompt"],
        ratios=tuple(json.loads(r["ratios"])),
        resolution=r["resolution"],
        note=r["note"],
        rows=tuple(json.loads(r["rows"])),
        id=r["id"],
        starter=r["starter"],
        updated_at=r["updated_at"],
    )


def _free_name(c: sqlite3.Connection, name: str) -> str:
    n = 2
    while c.execute("SELECT 1 FROM prompt_library WHERE name = ?", (f"{name} ({n})",)).fetchone():
        n += 1
    return f"{name} ({n})"


class TemplateRows(Database):
    """`TemplateRepository` over SQLite."""

    def has_starter(self, key: str) -> bool:
        """Whether the starter template `key` is in the library (under any name)."""
        return bool(self._conn().execute("SELECT 1 FROM prompt_library WHERE starter = ?", (key,)).fetchone())

    def templates(self, query: str = "", *, limit: int = 500) -> list[Template]:
        """Templates whose name, prompt or note contain every word of `query`; starters first, then by name."""
        where, params = [], []
        for word in query.split():
            like = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(name LIKE ? ESCAPE '\\' OR prompt LIKE ? ESCAPE '\\' OR note LIKE ? ESCAPE '\\')")
            params += [like, like, like]
        sql = "SELECT * FROM prompt_library"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY starter IS NULL, name COLLATE NOCASE LIMIT ?"
        return [_template(r) for r in self._conn().execute(sql, [*params, limit])]

    def template(self, template_id: int) -> Template | None:
        r = self._conn().execute("SELECT * FROM prompt_library WHERE id = ?", (template_id,)).fetchone()
        return _template(r) if r else None

    def template_by_name(self, name: str) -> Template | None:
        """The template named `name`, ignoring case."""
        r = self._conn().execute("SELECT * FROM prompt_library WHERE name = ?", (name,)).fetchone()
        return _template(r) if r else None

    def starter_templates(self) -> list[Template]:
        rows = self._conn().execute("SELECT * FROM prompt_library WHERE starter IS NOT NULL ORDER BY id")
        return [_template(r) for r in rows]

    def save_template(
        self, t: Template, *, on_conflict: str | None = None, now: float | None = None
    ) -> Template:
        """Insert `t`, or update it when its id exists; returns the stored template (see the contract)."""
        now = time.time() if now is None else now
        with self._tx() as c:
            clash = c.execute("SELECT id FROM prompt_library WHERE name = ?", (t.name,)).fetchone()
            if clash and clash[0] != t.id:
                if on_conflict == "skip":
                    return _template(
                        c.execute("SELECT * FROM prompt_library WHERE id = ?", (clash[0],)).fetchone()
                    )
                if on_conflict == "rename":
                    t = replace(t, name=_free_name(c, t.name), id=None)
                elif on_conflict == "replace":
                    c.execute("DELETE FROM prompt_library WHERE id = ?", (clash[0],))
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
            if (
                t.id is not None
                and c.execute("SELECT 1 FROM prompt_library WHERE id = ?", (t.id,)).fetchone()
            ):
                c.execute(
                    "UPDATE prompt_library SET name=?, prompt=?, ratios=?, resolution=?, rows=?, note=?,"
                    " updated_at=? WHERE id=?",
                    (*values, t.id),
                )
                tid = t.id
            else:
                cur = c.execute(
                    "INSERT INTO prompt_library (name, prompt, ratios, resolution, rows, note, updated_at,"
                    " starter, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (*values, t.starter, now),
                )
                assert cur.lastrowid is not None  # sqlite3 sets it after every INSERT
                tid = cur.lastrowid
            return _template(c.execute("SELECT * FROM prompt_library WHERE id = ?", (tid,)).fetchone())

    def delete_template(self, template_id: int) -> bool:
        return bool(self._write("DELETE FROM prompt_library WHERE id = ?", (template_id,)).rowcount)
