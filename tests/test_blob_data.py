"""The database keeps content hashes, never paths; an older data folder keeps working.

- A schema-9 database (absolute file paths in `outputs`) with its files on disk
  upgrades at boot, and the real server still shows every image and thumbnail.
- After a generation, an export and a kit, no text column of any table holds a
  path into the data folder.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3

import httpx
from PIL import Image

from studio import services as core
from studio.blob_keys import reference_key
from studio.config import Settings
from studio.export import write_zip
from studio.images import ImageKeeper
from studio.kit import write_kit
from studio.models import TaskRequest
from studio.sqlite import schema
from studio.store import SCHEMA_VERSION, GalleryQuery, Store
from tests.support import StudioServer, wait_for


def _png(n: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40 + n, 30), (30 * n, 100, 180)).save(buf, "PNG")
    return buf.getvalue()


def _text_values(db) -> list[tuple[str, str, str]]:
    """(table, column, value) of every text value in every table of the database."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = []
        for table in tables:
            for col in [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]:
                rows = conn.execute(f'SELECT "{col}" FROM "{table}" WHERE typeof("{col}") = \'text\'')
                found += [(table, col, v) for (v,) in rows]
        return found
    finally:
        conn.close()


def _schema_9(data, keeper: ImageKeeper) -> list[str]:
    """A data folder as a schema-9 studio left it: files on disk, absolute paths in the rows."""
    db = data / "studio.db"
    conn = sqlite3.connect(db)
    for migration in schema.MIGRATIONS[:9]:
        for stmt in schema.split_sql(migration):
            conn.execute(stmt)
    shas = []
    for n in range(3):
        kept = keeper.keep_bytes(_png(n), {"prompt": f"old poster {n}", "aspect_ratio": "1:1"})
        sub = conn.execute(
            "INSERT INTO submissions (creative_id, prompt, aspect_ratio, resolution, model, idempotency_key,"
            " state, task_id, created_at) VALUES (?, ?, '1:1', '1K', 'gpt-image-2', ?, 'success', ?, ?)",
            (f"c{n}", f"old poster {n}", f"k{n}", f"tk-{n}", 100.0 + n),
        ).lastrowid
        conn.execute(
            "INSERT INTO outputs (submission_id, idx, url, state, sha256, path, thumb_path, width, height,"
            " bytes, kept_at) VALUES (?, 0, ?, 'kept', ?, ?, ?, ?, ?, ?, ?)",
            (sub, f"https://files.example/{n}.png", kept.sha256, str(kept.path), str(kept.thumb_path),
             kept.width, kept.height, kept.bytes, 200.0 + n),
        )  # fmt: skip
        shas.append(kept.sha256)
    conn.execute("PRAGMA user_version=9")
    conn.commit()
    conn.close()
    return shas


def test_a_schema_9_data_folder_upgrades_and_the_gallery_shows_every_image(tmp_path):
    data = tmp_path / "data"
    keeper = ImageKeeper(data / core.BLOB_FOLDER)  # where schema 9 kept originals and thumbnails
    shas = _schema_9(data, keeper)
    assert any(str(data) in v for _, _, v in _text_values(data / "studio.db"))  # paths, before
    ref = _png(9)
    (data / "references").mkdir()
    (data / "references" / f"{hashlib.sha256(ref).hexdigest()}.png").write_bytes(ref)

    server = StudioServer(data).start()
    try:
        view = httpx.get(server.url + "/api/view/gallery?offset=0&limit=50", timeout=30).json()
        items = view["items"]
        assert sorted(i["sha"] for i in items) == sorted(shas) and view["total"] == 3
        for item in items:
            original = httpx.get(server.url + item["download"], timeout=30)
            assert original.status_code == 200 and original.headers["content-type"] == "image/png"
            assert hashlib.sha256(original.content).hexdigest() == item["sha"]
            assert "attachment" in original.headers["content-disposition"]
            thumb = httpx.get(server.url + item["thumb"], timeout=30)
            assert thumb.status_code == 200 and thumb.content[8:12] == b"WEBP"
    finally:
        server.stop()

    store = Store(data / "studio.db")
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.gallery(GalleryQuery())[1] == 3
    finally:
        store.close()
    assert not any(str(data) in v for _, _, v in _text_values(data / "studio.db"))  # and none after
    # The reference shelf of schema 9 became blobs: same bytes, under their key.
    assert keeper.blobs.open(reference_key(f"{hashlib.sha256(ref).hexdigest()}.png")).read() == ref
    assert not (data / "references").exists()


def test_no_text_column_holds_a_data_folder_path_after_generate_export_and_kit(tmp_path):
    data = tmp_path / "data"
    core.shutdown()
    s = core.boot(
        Settings.load(
            env={
                "STUDIO_DATA_DIR": str(data),
                "STUDIO_SIM_MIN_DURATION": "0.1",
                "STUDIO_SIM_MAX_DURATION": "0.2",
            }
        )
    )
    try:
        ref = s.references.add(_png(5), "product.png")
        url = s.references.url("http://127.0.0.1:9", ref.name)
        [sid] = s.tracker.submit([TaskRequest('A poster saying "HELLO"', "1:1", "1K")])
        [other] = s.tracker.submit([TaskRequest("with a reference", "1:1", "1K", references=(url,))])
        assert wait_for(lambda: any(o.state == "kept" for o in s.store.outputs_for([sid]).get(sid, [])))
        assert wait_for(lambda: s.store.submission(other).is_terminal)
        items = s.store.creative_items(s.store.submission(sid).creative_id)
        token = write_zip(items, s.blobs)
        kit = write_kit(items, ["square"], s.blobs)
        assert s.blobs.exists(f"exports/{token}.zip") and s.blobs.exists(kit.zip_key)
        wait_for(lambda: s.fidelity is None or s.fidelity.pending() == 0)
    finally:
        core.shutdown()
    values = _text_values(data / "studio.db")
    assert len(values) > 20  # prompts, states, reports, URLs...: the scan reads real rows
    roots = {str(data), str(data.resolve()), str(tmp_path)}
    leaks = [(t, c, v[:120]) for t, c, v in values if any(r in v for r in roots)]
    assert leaks == []
