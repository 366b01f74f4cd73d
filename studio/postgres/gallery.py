"""Gallery queries (filters, tsvector prompt search, counts, pages), favourites and collections
on PostgreSQL, with the methods, rows and meaning of `studio/sqlite/gallery.py`.

Contract (as on SQLite):
- The gallery lists kept images, failures, or both, newest (or oldest) first, filtered by
  prompt words (every word as a prefix, accents and case ignored: `schema.PROMPT_MATCH` on
  the generated `prompt_search` tsvector, answered by its GIN index), ratios, resolutions,
  favourites, a collection, a text mismatch and a time window; the count matches the filter.
- A favourite or a collection membership goes with its output when it is deleted (the
  foreign keys cascade).
- Names sort as on SQLite (by code point, `COLLATE "C"`), whatever the database's locale.
- Adding a favourite, a collection or a membership twice is once, also when two replicas
  add it at the same moment: every such write is one `INSERT … ON CONFLICT DO NOTHING`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..records import LOCAL_AUTHOR, GalleryItem, GalleryQuery
from .db import PgDatabase
from .schema import PROMPT_MATCH, prompt_words

GALLERY_FROM = (
    " FROM submissions s LEFT JOIN outputs o ON o.submission_id = s.id"
    " LEFT JOIN favourites f ON f.output_id = o.id"
)
# Kept images only: an inner join (the planner picks the order; no SQLite hint needed).
KEPT_FROM = " FROM submissions s JOIN outputs o ON o.submission_id = s.id LEFT JOIN favourites f ON f.output_id = o.id"
KEPT = "o.state = 'kept'"
FAILED = "(s.state IN ('fail', 'rejected') OR o.state = 'failed')"
GALLERY_SELECT = (
    "SELECT o.id AS output_id, s.id AS submission_id, s.creative_id, s.prompt, s.aspect_ratio, s.resolution,"
    " s.model, s.task_id, s.created_at, s.quality, s.background, o.sha256, o.width, o.height, o.bytes, o.url,"
    " o.expire_at, (f.output_id IS NOT NULL) AS favourite,"
    " CASE WHEN o.state IN ('kept', 'trashed') THEN o.state WHEN o.state = 'failed' THEN 'download_failed'"
    " ELSE s.state END AS state,"
    " CASE WHEN o.state = 'failed' THEN o.error"
    " WHEN s.error_code IS NOT NULL THEN s.error_code || ': ' || COALESCE(s.error_message, '') END AS error,"
    " s.input_urls, s.author"
)


def gallery_item(r: dict[str, Any]) -> GalleryItem:
    """A row of `GALLERY_SELECT` (a dict row) as a record."""
    return GalleryItem(**(r | {"favourite": bool(r["favourite"])}))


def gallery_where(q: GalleryQuery) -> tuple[str, list[Any]]:
    status = {"kept": KEPT, "failed": FAILED}.get(q.status, f"({KEPT} OR {FAILED})")
    where: list[str] = [status]
    params: list[Any] = []
    words = prompt_words(q.text)
    if words:
        where.append(PROMPT_MATCH)
        params.append(words)
    if q.ratios:
        where.append("s.aspect_ratio = ANY(%s)")
        params.append(list(q.ratios))
    if q.resolutions:
        where.append("s.resolution = ANY(%s)")
        params.append(list(q.resolutions))
    if q.favourites_only:
        where.append("f.output_id IS NOT NULL")
    if q.author is not None:
        where.append("s.author = %s")
        params.append(q.author)
    if q.collection_id is not None:
        where.append("o.id IN (SELECT output_id FROM collection_items WHERE collection_id = %s)")
        params.append(q.collection_id)
    if q.text_mismatch:
        where.append("o.id IN (SELECT output_id FROM text_checks WHERE state = 'mismatch')")
    if q.since is not None:
        where.append("s.created_at >= %s")
        params.append(q.since)
    if q.until is not None:
        where.append("s.created_at < %s")
        params.append(q.until)
    return " WHERE " + " AND ".join(where), params


class PgGalleryRows(PgDatabase):
    """`GalleryRepository` and `CollectionRepository` over PostgreSQL."""

    def gallery_count(self, q: GalleryQuery) -> int:
        where, params = gallery_where(q)
        source = KEPT_FROM if q.status == "kept" else GALLERY_FROM
        with self._read() as c:
            return int(c.execute("SELECT COUNT(*) AS n" + source + where, params).fetchone()["n"])

    def gallery(
        self, q: GalleryQuery, *, limit: int = 24, offset: int = 0, count: bool = True
    ) -> tuple[list[GalleryItem], int]:
        """One page of the gallery and the number of matches (-1 with `count=False`)."""
        where, params = gallery_where(q)
        order = "DESC" if q.newest_first else "ASC"
        source = KEPT_FROM if q.status == "kept" else GALLERY_FROM
        total = self.gallery_count(q) if count else -1
        with self._read() as c:
            rows = c.execute(
                GALLERY_SELECT
                + source
                + where
                + f" ORDER BY s.created_at {order}, s.id {order}, o.id {order} LIMIT %s OFFSET %s",
                [*params, limit, offset],
            ).fetchall()
        return [gallery_item(r) for r in rows], total

    def gallery_items(self, output_ids: Sequence[int]) -> list[GalleryItem]:
        if not output_ids:
            return []
        with self._read() as c:
            rows = c.execute(
                GALLERY_SELECT + GALLERY_FROM + " WHERE o.id = ANY(%s) ORDER BY o.id", (list(output_ids),)
            ).fetchall()
        return [gallery_item(r) for r in rows]

    def creative_items(self, creative_id: str) -> list[GalleryItem]:
        """Every kept image of one creative (all its ratios), oldest first."""
        with self._read() as c:
            rows = c.execute(
                GALLERY_SELECT + GALLERY_FROM + f" WHERE s.creative_id = %s AND {KEPT} ORDER BY o.id",
                (creative_id,),
            ).fetchall()
        return [gallery_item(r) for r in rows]

    def set_favourite(self, output_id: int, on: bool) -> None:
        if on:
            # An output deleted meanwhile is no favourite: insert only while it exists.
            self._write(
                "INSERT INTO favourites (output_id, at) SELECT id, %s FROM outputs WHERE id = %s"
                " ON CONFLICT (output_id) DO NOTHING",
                (time.time(), output_id),
            )
        else:
            self._write("DELETE FROM favourites WHERE output_id = %s", (output_id,))

    def collections(self) -> list[tuple[int, str, int]]:
        with self._read() as c:
            rows = c.execute(
                "SELECT c.id, c.name, COUNT(i.output_id) AS n FROM collections c"
                ' LEFT JOIN collection_items i ON i.collection_id = c.id GROUP BY c.id ORDER BY c.name COLLATE "C"'
            ).fetchall()
        return [(int(r["id"]), str(r["name"]), int(r["n"])) for r in rows]

    def add_collection(self, name: str, *, author: str = LOCAL_AUTHOR) -> int:
        """The id of the collection named `name` (trimmed), created by `author` when missing; two
        replicas creating one name at once get the same id (the unique name decides, no error).
        Collections are shared: an existing one keeps its first author."""
        name = name.strip()
        if not name:
            raise ValueError("Collection name is required.")
        with self._tx() as c:
            c.execute(
                "INSERT INTO collections (name, created_at, author) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (name, time.time(), author),
            )
            # Read in the same transaction: after ON CONFLICT the other replica's row is committed.
            return int(c.execute("SELECT id FROM collections WHERE name = %s", (name,)).fetchone()["id"])

    def collection_author(self, collection_id: int) -> str | None:
        with self._read() as c:
            r = c.execute("SELECT author FROM collections WHERE id = %s", (collection_id,)).fetchone()
        return None if r is None else str(r["author"])

    def authors(self) -> list[str]:
        """Everyone who has made a submission, in name order (the gallery's person picker)."""
        with self._read() as c:
            rows = c.execute(
                'SELECT author FROM submissions GROUP BY author ORDER BY author COLLATE "C"'
            ).fetchall()
        return [str(r["author"]) for r in rows]

    def add_to_collection(self, collection_id: int, output_ids: Sequence[int]) -> None:
        if not output_ids:
            return
        with self._tx() as c:
            # Outputs deleted meanwhile are skipped rather than failing the whole add.
            c.execute(
                "INSERT INTO collection_items (collection_id, output_id)"
                " SELECT %s, o.id FROM outputs o WHERE o.id = ANY(%s) ON CONFLICT DO NOTHING",
                (collection_id, list(output_ids)),
            )

    def output_collections(self, output_id: int) -> list[str]:
        with self._read() as c:
            rows = c.execute(
                "SELECT c.name FROM collections c JOIN collection_items i ON i.collection_id = c.id"
                ' WHERE i.output_id = %s ORDER BY c.name COLLATE "C"',
                (output_id,),
            ).fetchall()
        return [str(r["name"]) for r in rows]
