"""Delivery kits: source choice, crop/resize to exact pixels, upscale notes, zip layout, sweeping."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from studio.blob_keys import kit_key, new_token
from studio.blobs import LocalBlobStore
from studio.images import ImageKeeper, read_recipe
from studio.kit import (
    CONTACT_SHEET,
    DEFAULT_PLACEMENTS,
    PLACEMENTS,
    PLACEMENTS_BY_KEY,
    KitEntry,
    choose_source,
    cover_box,
    plan_kit,
    render_entry,
    sweep_kits,
    write_kit,
)
from studio.ratios import RATIO_NAMES, RESOLUTIONS, combination_problem, pixel_size
from studio.simulator import render_png
from studio.store import GalleryItem
from tests.support import wait_for

PROMPT = 'Poster with the headline "SUMMER DROP"'


def item(ratio: str, res: str = "1K", *, output_id: int = 1, sha: str = "0" * 64, size=None) -> GalleryItem:
    w, h = size or pixel_size(ratio, res)
    return GalleryItem(
        output_id=output_id, submission_id=output_id, creative_id="c0ffee12", prompt=PROMPT,
        aspect_ratio=ratio, resolution=res, model="gpt-image-2", task_id=None, created_at=0.0,
        sha256=sha, width=w, height=h, bytes=1, url="", expire_at=0, favourite=False,
    )  # fmt: skip


# ------------------------------------------------------------------ crop / resize


@settings(max_examples=300, deadline=None)
@given(sw=st.integers(16, 8000), sh=st.integers(16, 8000), tw=st.integers(16, 8000), th=st.integers(16, 8000))
def test_cover_box_is_centred_inside_the_source_and_has_the_target_shape(sw, sh, tw, th):
    (x0, y0, x1, y1), scale = cover_box((sw, sh), (tw, th))
    eps = 1e-6 * max(sw, sh)
    assert -eps <= x0 and -eps <= y0 and x1 <= sw + eps and y1 <= sh + eps
    assert x0 == pytest.approx(sw - x1) and y0 == pytest.approx(sh - y1)  # centred
    assert (x1 - x0) * scale == pytest.approx(tw) and (y1 - y0) * scale == pytest.approx(th)
    # One side is used whole: the crop only ever trims the other.
    assert (x1 - x0) == pytest.approx(sw) or (y1 - y0) == pytest.approx(sh)


@pytest.mark.parametrize("placement", PLACEMENTS, ids=lambda p: p.key)
def test_every_placement_comes_out_at_exact_pixels_from_every_ratio(placement):
    for ratio in RATIO_NAMES[1:]:
        # Small stand-ins of each shape keep the test quick; the maths is the same at any size.
        w, h = pixel_size(ratio, "1K")
        src = Image.new("RGB", (w // 8, h // 8), (200, 40, 40))
        entry = plan_kit([item(ratio, size=src.size)], [placement.key])[0]
        out = render_entry(entry, src)
        assert out.size == (placement.width, placement.height), (ratio, placement.key)


def test_the_crop_keeps_the_centre_of_the_source():
    # A 16:9 source with a red centre band and blue edges, cut to a square: the square is red
    # in the middle and keeps only a sliver of each edge.
    src = Image.new("RGB", (1600, 900), (0, 0, 255))
    src.paste((255, 0, 0), (400, 0, 1200, 900))  # the crop keeps 350..1250: 50 px of blue each side
    entry = plan_kit([item("16:9", size=src.size)], ["square"])[0]
    out = render_entry(entry, src)
    assert out.size == (1080, 1080)
    assert out.getpixel((540, 540)) == (255, 0, 0)
    assert out.getpixel((5, 540))[2] > 200 and out.getpixel((1074, 540))[2] > 200
    assert entry.box == pytest.approx((350, 0, 1250, 900))
    assert entry.upscaled and entry.scale == pytest.approx(1.2)  # 900 px tall, 1080 wanted


# ------------------------------------------------------------------ which source


def test_each_placement_takes_the_closest_ratio():
    items = [
        item("9:16", output_id=1),
        item("1:1", output_id=2),
        item("16:9", output_id=3),
        item("21:9", output_id=4),
    ]
    chosen = {e.placement.key: e.source.aspect_ratio for e in plan_kit(items, [p.key for p in PLACEMENTS])}
    assert chosen["story"] == "9:16"
    assert chosen["square"] == "1:1"
    assert chosen["feed-portrait"] == "1:1"  # 4:5 is nearer 1:1 than 9:16
    assert chosen["landscape"] == "16:9"
    assert chosen["banner"] == "21:9"  # 2560x1097 is 21:9
    assert chosen["x-header"] == "21:9"  # 3:1 is nearest the widest
    assert chosen["poster-a4"] == "9:16"  # A-series 1:1.41 sits between 1:1 and 9:16, nearer 9:16


def test_the_same_shape_at_a_higher_resolution_wins():
    small, big = item("9:16", "1K", output_id=1), item("9:16", "2K", output_id=2)
    assert choose_source(PLACEMENTS_BY_KEY["story"], [small, big]).output_id == 2
    assert choose_source(PLACEMENTS_BY_KEY["story"], [big, small]).output_id == 2


def test_a_smaller_source_is_never_upscaled_silently():
    [entry] = plan_kit([item("9:16", "1K")], ["poster-a4"])
    assert entry.upscaled and entry.scale == pytest.approx(2480 / 1024)  # the width is what falls short
    assert "upscaled ×2.42" in entry.note and "1024×1824" in entry.note
    [fine] = plan_kit([item("9:16", "4K")], ["story"])
    assert not fine.upscaled and fine.note == ""


def test_bad_placement_choices_name_the_field():
    with pytest.raises(ValueError, match="Placements: pick at least one"):
        plan_kit([item("1:1")], [])
    with pytest.raises(ValueError, match="Placements: unknown placement 'billboard'"):
        plan_kit([item("1:1")], ["billboard"])
    with pytest.raises(ValueError, match="no kept image"):
        plan_kit([], ["story"])


# ------------------------------------------------------------------ the written kit


@pytest.fixture
def creative(tmp_path):
    """One creative kept in three ratios, as the tracker leaves it."""
    keeper = ImageKeeper(tmp_path / "images")
    items = []
    for n, (ratio, res) in enumerate((("9:16", "2K"), ("1:1", "1K"), ("16:9", "2K")), start=1):
        kept = keeper.keep_bytes(render_png(PROMPT, ratio, res), {"prompt": PROMPT, "aspect_ratio": ratio})
        items.append(item(ratio, res, output_id=n, sha=kept.sha256, size=(kept.width, kept.height)))
    return keeper, items


def test_kit_zip_layout_exact_sizes_manifest_and_contact_sheet(creative, tmp_path):
    keeper, items = creative
    picks = [*DEFAULT_PLACEMENTS, "x-header"]
    kit = write_kit(items, picks, keeper.blobs)
    name = kit.name
    assert name == "poster-with-the-headline-summer-c0ffee"
    assert kit.zip_key == f"kits/{kit.token}/{name}.zip"
    assert kit.zip_route == f"/kits/{kit.token}/{name}.zip"
    with zipfile.ZipFile(keeper.blobs.open(kit.zip_key)) as zf:
        names = zf.namelist()
        expected = [
            f"{name}/{PLACEMENTS_BY_KEY[k].key}_{PLACEMENTS_BY_KEY[k].width}x{PLACEMENTS_BY_KEY[k].height}.png"
            for k in picks
        ]
        assert names == [
            *expected,
            f"{name}/{CONTACT_SHEET}",
            f"{name}/manifest.csv",
            f"{name}/manifest.json",
        ]
        for k, arc in zip(picks, expected, strict=True):
            p = PLACEMENTS_BY_KEY[k]
            data = zf.read(arc)
            with Image.open(io.BytesIO(data)) as im:
                assert im.size == (p.width, p.height) and im.format == "PNG"
                if p.dpi != 72:
                    assert round(im.info["dpi"][0]) == p.dpi
            recipe = read_recipe(data)
            assert recipe["prompt"] == PROMPT and recipe["placement"] == k  # restorable like any export
        manifest = json.loads(zf.read(f"{name}/manifest.json"))
        rows = list(csv.DictReader(io.StringIO(zf.read(f"{name}/manifest.csv").decode())))
        with Image.open(io.BytesIO(zf.read(f"{name}/{CONTACT_SHEET}"))) as sheet:
            sheet_size = sheet.size
    assert manifest["prompt"] == PROMPT and manifest["contact_sheet"] == f"{name}/{CONTACT_SHEET}"
    assert [f["file"] for f in manifest["files"]] == expected == [r["file"] for r in rows]
    by_key = {f["placement"]: f for f in manifest["files"]}
    assert by_key["story"]["source_ratio"] == "9:16" and by_key["story"]["upscaled"] is False
    assert by_key["square"]["source_ratio"] == "1:1" and by_key["square"]["upscaled"] is True  # 1K is 1024
    assert by_key["poster-a4"]["upscaled"] is True and by_key["poster-a4"]["scale"] > 1
    assert by_key["x-header"]["used_share"] < 0.75  # a 3:1 strip of a 16:9 image
    assert {r["upscaled"] for r in rows} == {"True", "False"}
    # The contact sheet holds every format (all seven tiles at one height, in rows) and is served too.
    assert keeper.blobs.exists(kit.contact_key) and sheet_size[0] >= 900 and sheet_size[1] > 2 * 360
    assert sorted(keeper.blobs.keys("kits/")) == sorted([kit.zip_key, kit.contact_key])  # no temp file left
    assert list((keeper.root / ".tmp").iterdir()) == []


def test_contact_sheet_shows_each_tile_with_its_true_shape(creative, tmp_path):
    keeper, items = creative
    kit = write_kit(items, ["story", "landscape"], keeper.blobs)
    with Image.open(keeper.blobs.open(kit.contact_key)) as sheet:
        sheet = sheet.convert("RGB")
        # The sheet's background is a flat dark grey; the tiles are the only other pixels in a tile row.
        row = [sheet.getpixel((x, 96 + 180)) for x in range(sheet.width)]
    bg = (24, 24, 30)
    runs, inside, start = [], False, 0
    for x, px in enumerate(row):
        if px != bg and not inside:
            inside, start = True, x
        elif px == bg and inside:
            inside = False
            runs.append(x - start)
    # Story 1080x1920 and landscape 1920x1080 at 360 px tall (plus their 1 px frames).
    assert [round(r / 2) * 2 for r in runs[:2]] == pytest.approx([204, 642], abs=4)


def test_old_kits_are_swept(tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    old, new = new_token(time.time() - 7200), new_token()
    for token in (old, new):
        for name in ("x.zip", CONTACT_SHEET):
            blobs.put(kit_key(token, name), b"zip")
    blobs.put(f"kits/{'u' * 22}/x.zip", b"a token that does not say when: swept too")
    assert sweep_kits(blobs) == 2
    assert sorted(blobs.keys("kits/")) == sorted([kit_key(new, "x.zip"), kit_key(new, CONTACT_SHEET)])


def test_every_ratio_and_resolution_pair_plans_every_placement():
    for ratio in RATIO_NAMES[1:]:
        for res in RESOLUTIONS:
            if combination_problem(ratio, res):
                continue
            plan = plan_kit([item(ratio, res)], [p.key for p in PLACEMENTS])
            for e in plan:
                assert isinstance(e, KitEntry)
                assert e.scale * (e.box[2] - e.box[0]) == pytest.approx(e.placement.width)
                assert e.upscaled == (e.scale > 1 + 1e-6)


# ------------------------------------------------------------------ off the page thread


def test_kits_are_built_on_a_worker_thread_with_progress(tmp_path, monkeypatch):
    import threading

    import studio.kit as kit_module

    keeper = ImageKeeper(tmp_path / "images")
    kept = keeper.keep_bytes(render_png(PROMPT, "9:16", "1K"), {"prompt": PROMPT})
    items = [item("9:16", sha=kept.sha256, size=(kept.width, kept.height))]
    release = threading.Event()
    threads = []
    real = kit_module.write_kit

    def held(*args, **kw):
        threads.append(threading.current_thread())
        assert release.wait(30)  # the caller must get its job back while this is still running
        return real(*args, **kw)

    monkeypatch.setattr(kit_module, "write_kit", held)
    builder = kit_module.KitBuilder(keeper.blobs)
    try:
        job = builder.start(items, ["story", "square"])
        assert job.state == "running" and job.total == 3 and job.done == 0
        assert builder.status(job.id).state == "running"
        release.set()
        wait_for(lambda: builder.status(job.id).state != "running", step=0.02)
        done = builder.status(job.id)
        assert done.state == "done" and done.done == 3 and done.fraction == 1.0
        assert keeper.blobs.exists(done.kit.zip_key) and threads[0] is not threading.main_thread()
        with pytest.raises(ValueError, match="Placements: pick at least one"):
            builder.start(items, [])  # refused before anything is queued
    finally:
        builder.close()


def test_a_kit_whose_image_vanished_fails_with_a_sentence(tmp_path):
    from studio.kit import KitBuilder

    keeper = ImageKeeper(tmp_path / "images")
    builder = KitBuilder(keeper.blobs)
    try:
        job = builder.start([item("1:1", sha="f" * 64)], ["square"])
        wait_for(lambda: builder.status(job.id).state != "running", step=0.02)
        failed = builder.status(job.id)
        assert failed.state == "failed" and "deleted meanwhile" in failed.error
    finally:
        builder.close()


def test_write_kit_reports_each_file(tmp_path):
    keeper = ImageKeeper(tmp_path / "images")
    kept = keeper.keep_bytes(render_png(PROMPT, "1:1", "1K"), {"prompt": PROMPT})
    seen = []
    write_kit(
        [item("1:1", sha=kept.sha256, size=(kept.width, kept.height))], ["square", "story"],
        keeper.blobs, progress=lambda d, t: seen.append((d, t)),
    )  # fmt: skip
    assert seen == [(1, 3), (2, 3), (3, 3)]
