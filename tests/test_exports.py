"""Exports: spreadsheet-safe CSV, swept like kits, and links that expire with a sentence."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile

import httpx
import pytest

from studio import services as core
from studio.blob_keys import export_key
from studio.config import Settings
from studio.export import EXPORT_LIFETIME_S, campaign_manifest_rows, csv_cell, write_zip
from studio.images import ImageKeeper
from studio.kit import KIT_LIFETIME_S, write_kit
from studio.simulator import render_png
from studio.store import GalleryItem
from tests.support import StudioServer

HOSTILE = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def _item(keeper: ImageKeeper, prompt: str, output_id: int = 1) -> GalleryItem:
    kept = keeper.keep_bytes(render_png(prompt, "1:1", "1K"), {"prompt": prompt})
    return GalleryItem(
        output_id=output_id, submission_id=output_id, creative_id="c0ffee12", prompt=prompt,
        aspect_ratio="1:1", resolution="1K", model="gpt-image-2", task_id=None, created_at=0.0,
        sha256=kept.sha256, width=kept.width, height=kept.height, bytes=1, url="", expire_at=0,
        favourite=False,
    )  # fmt: skip


def _csv(zf: zipfile.ZipFile, name: str = "manifest.csv") -> list[dict]:
    return list(csv.DictReader(io.StringIO(zf.read(name).decode())))


def test_csv_cells_that_would_run_as_formulas_are_quoted_and_json_keeps_them(tmp_path):
    keeper = ImageKeeper(tmp_path / "images")
    items = [_item(keeper, p, n) for n, p in enumerate(HOSTILE, start=1)]
    plain = write_zip(items, keeper.blobs)
    with zipfile.ZipFile(keeper.blobs.open(export_key(plain))) as zf:
        assert [r["prompt"] for r in _csv(zf)] == ["'" + p for p in HOSTILE]
        assert [r["prompt"] for r in json.loads(zf.read("manifest.json"))] == HOSTILE

    rows = [(n, it, {"headline": it.prompt}) for n, it in enumerate(items, start=1)]
    manifest = campaign_manifest_rows("=cmd|' /C calc'!A0", ["headline"], rows)
    campaign = write_zip(items, keeper.blobs, manifest=manifest)
    with zipfile.ZipFile(keeper.blobs.open(export_key(campaign))) as zf:
        got = _csv(zf)
        assert [r["{{headline}}"] for r in got] == ["'" + p for p in HOSTILE]
        assert {r["campaign"] for r in got} == {"'=cmd|' /C calc'!A0"}
        data = json.loads(zf.read("manifest.json"))
        assert [r["values"]["headline"] for r in data] == HOSTILE
    assert csv_cell("a poster") == "a poster" and csv_cell(-3) == -3  # only text that starts a formula


def test_a_new_export_sweeps_the_expired_ones(tmp_path):
    keeper = ImageKeeper(tmp_path / "images")
    items = [_item(keeper, "a kite")]
    long_ago = time.time() - EXPORT_LIFETIME_S - 60
    old = write_zip(items, keeper.blobs, now=long_ago)
    assert keeper.blobs.exists(export_key(old))
    fresh = write_zip(items, keeper.blobs)
    assert not keeper.blobs.exists(export_key(old)) and keeper.blobs.exists(export_key(fresh))


def test_boot_sweeps_expired_exports_and_kits(tmp_path):
    data = tmp_path / "d"
    keeper = ImageKeeper(data / core.BLOB_FOLDER)
    items = [_item(keeper, "a kite")]
    long_ago = time.time() - EXPORT_LIFETIME_S - 60
    fresh = export_key(write_zip(items, keeper.blobs))
    # Written last, so no later export or kit swept them before the boot does.
    stale = [export_key(write_zip(items, keeper.blobs, now=long_ago))]
    stale += [write_kit(items, ["square"], keeper.blobs, now=long_ago).zip_key]
    # The folders of a studio from before the blob store: one-off links, removed.
    (data / "exports").mkdir(parents=True)
    (data / "kits" / ("K" * 22)).mkdir(parents=True)
    (data / "exports" / f"{'A' * 22}.zip").write_bytes(b"PK")
    assert all(keeper.blobs.exists(k) for k in stale)
    core.shutdown()
    core.boot(Settings.load(env={"STUDIO_DATA_DIR": str(data)}))
    try:
        assert not any(keeper.blobs.exists(k) for k in stale)
        assert keeper.blobs.exists(fresh)
        assert not (data / "exports").exists() and not (data / "kits").exists()
    finally:
        core.shutdown()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("exports-data")
    keeper = ImageKeeper(data / core.BLOB_FOLDER)
    items = [_item(keeper, "a kite")]
    server = StudioServer(data).start()
    long_ago = time.time() - max(EXPORT_LIFETIME_S, KIT_LIFETIME_S) - 60
    tokens = {
        "fresh": write_zip(items, keeper.blobs),
        "expired": write_zip(items, keeper.blobs, now=long_ago),  # expired while the server runs
    }
    kit = write_kit(items, ["square"], keeper.blobs)
    old_kit = write_kit(items, ["square"], keeper.blobs, now=long_ago)
    yield server, tokens, kit, old_kit
    server.stop()


def test_export_and_kit_links_expire_with_a_sentence(served):
    server, tokens, kit, old_kit = served

    def get(route: str) -> httpx.Response:
        return httpx.get(server.url + route, timeout=10)

    assert get(f"/exports/{tokens['fresh']}.zip").status_code == 200
    assert get(kit.zip_route).status_code == 200
    expired = get(f"/exports/{tokens['expired']}.zip")
    assert expired.status_code == 410
    assert expired.text == (
        "This export link has expired (links work for 60 minutes); prepare the zip again in the Gallery."
    )
    gone_kit = get(old_kit.zip_route)
    assert gone_kit.status_code == 410 and "make the kit again" in gone_kit.text
    assert get(old_kit.contact_route).status_code == 410
    unknown = get(f"/exports/{'Z' * 22}.zip")
    assert unknown.status_code == 404
    assert unknown.text == "This export link is unknown or has expired; prepare the zip again in the Gallery."
