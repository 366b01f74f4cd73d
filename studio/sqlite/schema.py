"""Every table of the studio database: one numbered list of migrations and its runner.

Contract:
- `MIGRATIONS[i]` takes a database from version `i` to `i + 1` (SQLite's
  `user_version`); a number, once shipped, never changes meaning. A new table
  or column is a new entry at the end, nothing else.
- `migrate` runs, each in its own transaction, the entries a database has not
  had yet, and nothing at all for a database at `SCHEMA_VERSION`: a boot of an
  up-to-date database executes no DDL. A database from a newer studio is
  refused (`SchemaTooNew`), never touched.
- Slots 3 and 4 were placeholders (`SELECT 1`) while later slots shipped, so a
  database written then can be at a later version without their tables. Their
  statements are idempotent (IF NOT EXISTS); when such a database is upgraded,
  `REPAIRS` names the table whose absence means the slot was skipped, and the
  slot is run again before the pending ones.
Only the SQLite adapter (`studio/sqlite/`) reads this module.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..repositories import SchemaTooNew

MIGRATIONS: tuple[str, ...] = (
    # 1: submissions, their task history and outputs
    """
    CREATE TABLE submissions (
        id INTEGER PRIMARY KEY,
        creative_id TEXT NOT NULL,
        prompt TEXT NOT NULL,
        aspect_ratio TEXT NOT NULL,
        resolution TEXT NOT NULL,
        model TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        task_id TEXT UNIQUE,
        error_code TEXT,
        error_message TEXT,
        created_at REAL NOT NULL,
        submitted_at REAL,
        finished_at REAL,
        remote_created INTEGER,
        remote_completed INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        raw_task TEXT
    );
    CREATE INDEX submissions_state ON submissions(state);
    CREATE INDEX submissions_creative ON submissions(creative_id);
    CREATE INDEX submissions_created ON submissions(created_at);
    CREATE TABLE task_events (
        id INTEGER PRIMARY KEY,
        submission_id INTEGER NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        at REAL NOT NULL,
        source TEXT NOT NULL
    );
    CREATE INDEX task_events_submission ON task_events(submission_id);
    CREATE TABLE outputs (
        id INTEGER PRIMARY KEY,
        submission_id INTEGER NOT NULL REFERENCES submissions(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        url TEXT NOT NULL,
        expire_at INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try_at REAL NOT NULL DEFAULT 0,
        error TEXT,
        sha256 TEXT,
        path TEXT,
        thumb_path TEXT,
        width INTEGER,
        height INTEGER,
        bytes INTEGER,
        kept_at REAL,
        UNIQUE(submission_id, idx)
    );
    CREATE INDEX outputs_state ON outputs(state);
    CREATE INDEX outputs_sha ON outputs(sha256);
    """,
    # 2: favourites, collections and prompt search
    """
    CREATE TABLE favourites (
        output_id INTEGER PRIMARY KEY REFERENCES outputs(id) ON DELETE CASCADE,
        at REAL NOT NULL
    );
    CREATE TABLE collections (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE collection_items (
        collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        output_id INTEGER NOT NULL REFERENCES outputs(id) ON DELETE CASCADE,
        PRIMARY KEY (collection_id, output_id)
    );
    CREATE VIRTUAL TABLE prompt_search USING fts5(
        prompt, content='submissions', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER submissions_ai AFTER INSERT ON submissions BEGIN
        INSERT INTO prompt_search(rowid, prompt) VALUES (new.id, new.prompt);
    END;
    CREATE TRIGGER submissions_ad AFTER DELETE ON submissions BEGIN
        INSERT INTO prompt_search(prompt_search, rowid, prompt) VALUES ('delete', old.id, old.prompt);
    END;
    INSERT INTO prompt_search(rowid, prompt) SELECT id, prompt FROM submissions;
    """,
    # 3: text-fidelity results, one row per checked image (see studio/fidelity.py).
    #    Idempotent: a database written while this slot was a placeholder runs it
    #    again when it is upgraded (REPAIRS).
    """
    CREATE TABLE IF NOT EXISTS text_checks (
        output_id INTEGER PRIMARY KEY REFERENCES outputs(id) ON DELETE CASCADE,
        state TEXT NOT NULL,
        wanted INTEGER NOT NULL,
        matched INTEGER NOT NULL,
        checks TEXT NOT NULL,
        read_text TEXT NOT NULL DEFAULT '',
        engine TEXT NOT NULL DEFAULT '',
        seconds REAL NOT NULL DEFAULT 0,
        passes INTEGER NOT NULL DEFAULT 0,
        message TEXT,
        checked_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS text_checks_state ON text_checks(state);
    """,
    # 4: campaigns (rows × ratios of one prompt with variables), the spend ledger,
    #    the prompt library and app settings edited in the Settings page.
    #    Idempotent, like slot 3 (REPAIRS).
    """
    CREATE TABLE IF NOT EXISTS campaigns (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        template TEXT NOT NULL,
        variables TEXT NOT NULL,
        ratios TEXT NOT NULL,
        resolution TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'running',
        unit_micros INTEGER NOT NULL DEFAULT 0,
        currency TEXT NOT NULL DEFAULT 'USD',
        created_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS campaign_rows (
        campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        vals TEXT NOT NULL,
        prompt TEXT NOT NULL,
        PRIMARY KEY (campaign_id, idx)
    );
    CREATE TABLE IF NOT EXISTS campaign_tasks (
        submission_id INTEGER PRIMARY KEY REFERENCES submissions(id) ON DELETE CASCADE,
        campaign_id INTEGER NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
        row_idx INTEGER NOT NULL,
        aspect_ratio TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS campaign_tasks_cell ON campaign_tasks(campaign_id, row_idx, aspect_ratio);
    CREATE TABLE IF NOT EXISTS spend (
        id INTEGER PRIMARY KEY,
        submission_id INTEGER UNIQUE,
        campaign_id INTEGER,
        resolution TEXT NOT NULL,
        unit_micros INTEGER NOT NULL,
        currency TEXT NOT NULL,
        at REAL NOT NULL,
        final_state TEXT
    );
    CREATE INDEX IF NOT EXISTS spend_at ON spend(at);
    CREATE TRIGGER IF NOT EXISTS spend_outlives_submission AFTER DELETE ON submissions BEGIN
        UPDATE spend SET submission_id = NULL, final_state = old.state WHERE submission_id = old.id;
    END;
    CREATE TABLE IF NOT EXISTS prompt_library (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        prompt TEXT NOT NULL,
        ratios TEXT NOT NULL,
        resolution TEXT NOT NULL,
        rows TEXT NOT NULL DEFAULT '[]',
        note TEXT NOT NULL DEFAULT '',
        starter TEXT UNIQUE,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS app_settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 5: our best estimate of when a task finished (midway between the last
    # poll that saw it running and the one that saw it done)
    "ALTER TABLE submissions ADD COLUMN finish_estimate REAL;",
    # 6: callbacks. The callback URL a submission was first sent with (a resend
    # under the same idempotency key must carry the same body), and callbacks
    # held until their task id is known.
    """
    ALTER TABLE submissions ADD COLUMN callback_url TEXT;
    CREATE TABLE pending_callbacks (
        task_id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    """,
    # 7: the Studio's unsent draft per browser (studio/drafts.py), so a reload
    # or a reopened tab finds the prompt, ratios, resolution and rows again.
    """
    CREATE TABLE drafts (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 8: reference images (image-to-image). The signed URLs a submission was
    # first sent with (JSON list; a resend must carry the same body); the kept
    # references they name live in the references folder (studio/references.py).
    """
    ALTER TABLE submissions ADD COLUMN input_urls TEXT;
    """,
    # 9: the options a submission was sent with: its `ext` quality (NULL = the
    # default route), background and storage, so Reuse, resends and "Make
    # final" carry them (a resend under the same key must send the same body).
    """
    ALTER TABLE submissions ADD COLUMN quality TEXT;
    ALTER TABLE submissions ADD COLUMN background TEXT;
    ALTER TABLE submissions ADD COLUMN storage TEXT;
    """,
    # 10: the database keeps content hashes, never file paths. A kept image is
    # the blob named by its sha256 (`blob_keys.original_key` / `thumb_key`), so
    # the absolute paths of schema 1 go; the files stay where they are.
    """
    ALTER TABLE outputs DROP COLUMN path;
    ALTER TABLE outputs DROP COLUMN thumb_path;
    """,
    # 11: work is claimed, not assumed (studio/sqlite/claims.py). A claim and its
    # lease on each submission (create and poll work) and output (download
    # work); when a create was first sent (a cancel leaves such a row alone);
    # the create budget every worker on one HiAPI key shares (by key hash); named
    # leases for one-off jobs such as the text-check backfill.
    """
    ALTER TABLE submissions ADD COLUMN claimed_by TEXT;
    ALTER TABLE submissions ADD COLUMN lease_until REAL;
    ALTER TABLE submissions ADD COLUMN sent_at REAL;
    ALTER TABLE outputs ADD COLUMN claimed_by TEXT;
    ALTER TABLE outputs ADD COLUMN lease_until REAL;
    CREATE INDEX submissions_claim ON submissions(claimed_by);
    CREATE INDEX outputs_claim ON outputs(claimed_by);
    CREATE TABLE create_budget (
        key_hash TEXT PRIMARY KEY,
        hold_until REAL NOT NULL DEFAULT 0,
        pace REAL NOT NULL,
        max_active INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        lease_until REAL NOT NULL
    );
    """,
    # 12: who made what. With the team login on, the signed-in person (email, else name);
    # without one, "local". Spend keeps its own copy: the ledger outlives deleted submissions.
    """
    ALTER TABLE submissions ADD COLUMN author TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE campaigns ADD COLUMN author TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE collections ADD COLUMN author TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE spend ADD COLUMN author TEXT NOT NULL DEFAULT 'local';
    CREATE INDEX submissions_author ON submissions(author);
    """,
    # 13: the trash's undo windows live in the database, so every process agrees on them
    # (studio/trash.py). One row per press of Delete: the row is what Undo and the purge
    # contend for (its window, its token); each trashed output names its deletion.
    # Outputs trashed before this migration get one deletion due at once: the first
    # sweep purges them, as the start-up purge did.
    """
    CREATE TABLE deletions (
        token TEXT PRIMARY KEY,
        purge_after REAL NOT NULL,
        deleted_at REAL NOT NULL
    );
    CREATE INDEX deletions_due ON deletions(purge_after);
    ALTER TABLE outputs ADD COLUMN deletion TEXT;
    CREATE INDEX outputs_deletion ON outputs(deletion);
    INSERT INTO deletions (token, purge_after, deleted_at)
        SELECT 'before-13', CAST(strftime('%s', 'now') AS REAL), CAST(strftime('%s', 'now') AS REAL)
        WHERE EXISTS (SELECT 1 FROM outputs WHERE state = 'trashed');
    UPDATE outputs SET deletion = 'before-13' WHERE state = 'trashed';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
#: Slot number -> the table whose absence means a database skipped that (idempotent) slot.
REPAIRS: dict[int, str] = {3: "text_checks", 4: "campaigns"}


def split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined.endswith(";") and (
            not joined.upper().startswith("CREATE TRIGGER") or joined.upper().endswith("END;")
        ):
            out.append(joined)
            buf = []
    if "\n".join(buf).strip():
        out.append("\n".join(buf).strip())
    return out


def version_of(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _run(conn: sqlite3.Connection, script: str, *, to_version: int | None) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in split_sql(script):
            conn.execute(stmt)
        if to_version is not None:
            conn.execute(f"PRAGMA user_version={to_version}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection, path: Path | str = "") -> int:
    """Bring the database on `conn` (autocommit mode) to `SCHEMA_VERSION`; returns how many
    migrations (repairs included) were run: 0 for an up-to-date database."""
    version = version_of(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"The database {path} was written by a newer studio (schema {version}); upgrade the studio."
        )
    if version == SCHEMA_VERSION:
        return 0
    ran = 0
    for slot, table in sorted(REPAIRS.items()):
        if slot <= version and not _has_table(conn, table):
            _run(conn, MIGRATIONS[slot - 1], to_version=None)
            ran += 1
    for i in range(version, SCHEMA_VERSION):
        _run(conn, MIGRATIONS[i], to_version=i + 1)
        ran += 1
    return ran


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None
