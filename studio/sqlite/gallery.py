"""Gallery queries (filters, FTS5 prompt search, counts, pages), favourites and collections.

Contract:
- The gallery lists kept images, failures, or both, newest (or oldest) first,
  filtered by prompt words (every word as a prefix, accents ignored), ratios,
  resolutions, favourites, a collection, a text mismatch and a time window;
  the count matches the filter.
- A favourite or a collection membership goes with its output when it is deleted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from ..records import LOCAL_AUTHOR, GalleryItem, GalleryQuery
from .db import Database


def fts_query(text: str) -> str | None:
    """Turn what a user typed into a safe FTS5 query: every word, as a prefix."""
    words = re.findall(r"\w+", text, flags=re.UNICODE)
    return " ".join(f'"{w}"*' for w in words) or None


GALLERY_FROM = (
    " FROM submissions s LEFT JOIN outputs o ON o.submission_id = s.id"
    " LEFT JOIN favourites f ON f.output_id = o.id"
)
# Kept images only: submissions drive the loop (newest first by index) and the
# unary + stops SQLite from looking outputs up by state, which turns the page
# query quadratic at 10,000 images.
KEPT_FROM = (
    " FROM submissions s CROSS JOIN outputs o ON o.submission_id = s.id"
    " LEFT JOIN favourites f ON f.output_id = o.id"
)
KEPT = "+o.state = 'kept'"
FAILED = "(s.state IN ('fail', 'rejected') OR o.state = 'failed')"
GALLERY_SELECT = (
    "SELECT o.id AS output_id, s.id AS submission_id, s.creative_id, s.prompt, s.aspect_ratio, s.resolution,"
    " s.model, s.task_id, s.created_at, s.quality, s.background, o.sha256, o.width, o.height, o.bytes, o.url, o.expire_at,"
    " (f.output_id IS NOT NULL) AS favourite,"
    " CASE WHEN o.state IN ('kept', 'trashed') THEN o.state WHEN o.state = 'failed' THEN 'download_failed'"
    " ELSE s.state END"
    " AS state,"
    " CASE WHEN o.state = 'failed' THEN o.error"
    " WHEN s.error_code IS NOT NULL THEN s.error_code || ': ' || COALESCE(s.error_message, '') END AS error,"
    " s.input_urls, s.author"
)


def gallery_item(r: Any) -> GalleryItem:
    """A row of `GALLERY_SELECT` as a record."""
    return GalleryItem(**(dict(r) | {"favourite": bool(r["favourite"])}))


def gallery_where(q: GalleryQuery) -> tuple[str, list[Any]]:
    status = {"kept": KEPT, "failed": FAILED}.get(q.status, f"({KEPT} OR {FAILED})")
    where: list[str] = [status]
    params: list[Any] = []
    match = fts_query(q.text)
    if match:
        where.append("s.id IN (SELECT rowid FROM prompt_search WHERE prompt_search MATCH ?)")
        params.append(match)
    if q.ratios:
        where.append(f"s.aspect_ratio IN ({','.join('?' * len(q.ratios))})")
        params.extend(q.ratios)
    if q.resolutions:
        where.append(f"s.resolution IN ({','.join('?' * len(q.resolutions))})")
        params.extend(q.resolutions)
    if q.favourites_only:
        where.append("f.output_id IS NOT NULL")
    if q.author is not None:
        where.append("s.author = ?")
        params.append(q.author)
    if q.collection_id is not None:
        where.append("o.id IN (SELECT output_id FROM collection_items WHERE collection_id = ?)")
        params.append(q.collection_id)
    if q.text_mismatch:
        where.append("o.id IN (SELECT output_id FROM text_checks WHERE state = 'mismatch')")
    if q.since is not None:
        where.append("s.created_at >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append("s.created_at < ?")
        params.append(q.until)
    return " WHERE " + " AND ".join(where), params


class GalleryRows(Database):
    """`GalleryRepository` and `CollectionRepository` over SQLite."""

    def gallery_count(self, q: GalleryQuery) -> int:
        where, params = gallery_where(q)
        source = KEPT_FROM if q.status == "kept" else GALLERY_FROM
        return self._conn().execute("SELECT COUNT(*)" + source + where, params).fetchone()[0]

    def gallery(
        self, q: GalleryQuery, *, limit: int = 24, offset: int = 0, count: bool = True
    ) -> tuple[list[GalleryItem], int]:
        """One page of the gallery and the number of matches (-1 with `count=False`)."""
        where, params = gallery_where(q)
        order = "DESC" if q.newest_first else "ASC"
        source = KEPT_FROM if q.status == "kept" else GALLERY_FROM
        total = self.gallery_count(q) if count else -1
        rows = self._conn().execute(
            GALLERY_SELECT
            + source
            + where
            + f" ORDER BY s.created_at {order}, s.id {order}, o.id {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        items = [gallery_item(r) for r in rows]
        return items, total

    def gallery_items(self, output_ids: Sequence[int]) -> list[GalleryItem]:
        if not output_ids:
            return []
        marks = ",".join("?" * len(output_ids))
        rows = self._conn().execute(
            GALLERY_SELECT + GALLERY_FROM + f" WHERE o.id IN ({marks}) ORDER BY o.id", list(output_ids)
        )
        return [gallery_item(r) for r in rows]

    def creative_items(self, creative_id: str) -> list[GalleryItem]:
        """Every kept image of one creative (all its ratios), oldest first."""
        rows = self._conn().execute(
            GALLERY_SELECT + GALLERY_FROM + f" WHERE s.creative_id = ? AND {KEPT} ORDER BY o.id",
            (creative_id,),
        )
        return [gallery_item(r) for r in rows]

    def set_favourite(self, output_id: int, on: bool) -> None:
        if on:
            self._write(
                "INSERT OR IGNORE INTO favourites (output_id, at) VALUES (?, ?)", (output_id, time.time())
            )
        else:
            self._write("DELETE FROM favourites WHERE output_id = ?", (output_id,))

    def collections(self) -> list[tuple[int, str, int]]:
        rows = self._conn().execute(
            "SELECT c.id, c.name, COUNT(i.output_id) FROM collections c"
            " LEFT JOIN collection_items i ON i.collection_id = c.id GROUP BY c.id ORDER BY c.name"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def add_collection(self, name: str, *, author: str = LOCAL_AUTHOR) -> int:
        """The id of the collection named `name` (trimmed), created by `author` when missing;
        collections are shared: an existing one keeps its first author."""
        name = name.strip()
        if not name:
            raise ValueError("Collection name is required.")
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO collections (name, created_at, author) VALUES (?, ?, ?)",
                (name, time.time(), author),
            )
            return int(c.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()[0])

    def collection_author(self, collection_id: int) -> str | None:
        r = self._conn().execute("SELECT author FROM collections WHERE id = ?", (collection_id,)).fetchone()
        return None if r is None else str(r[0])

    def authors(self) -> list[str]:
        """Everyone who has made a submission, in name order (the gallery's person picker)."""
        rows = self._conn().execute("SELECT DISTINCT author FROM submissions ORDER BY author")
        return [str(r[0]) for r in rows]

    def add_to_collection(self, collection_id: int, output_ids: Sequence[int]) -> None:
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO collection_items (collection_id, output_id) VALUES (?, ?)",
                [(collection_id, o) for o in output_ids],
            )

    def output_collections(self, output_id: int) -> list[str]:
        rows = self._conn().execute(
            "SELECT c.name FROM collections c JOIN collection_items i ON i.collection_id = c.id"
            " WHERE i.output_id = ? ORDER BY c.name",
            (output_id,),
        )
        return [r[0] for r in rows]
