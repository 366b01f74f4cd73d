"""Delete with an undo window: hidden at once, restorable untouched, gone for good after."""

from __future__ import annotations

from typing import Any

import pytest

from studio.store import GalleryQuery, Store
from studio.trash import Trash
from tests.support import FakeClock, sql_rows, wait_for
from tests.test_gallery_page import SEED, seed


@pytest.fixture
def stocked(tmp_path):
    from studio.images import ImageKeeper

    store = Store(tmp_path / "studio.db")
    keeper = ImageKeeper(tmp_path / "images")
    return store, keeper, seed(store, keeper)


def test_delete_hides_at_once_and_undo_restores_everything(stocked):
    store, keeper, ids = stocked
    trash = Trash(store, keeper, window_s=600)
    store.set_favourite(ids[0], True)
    cid = store.add_collection("Keep")
    store.add_to_collection(cid, [ids[0], ids[1]])
    [first] = store.gallery_items([ids[0]])
    d = trash.delete([ids[0], ids[1]])
    assert d.output_ids == (ids[0], ids[1]) and 590 < d.left() <= 600
    assert store.gallery(GalleryQuery())[1] == 2
    assert store.gallery(GalleryQuery(status="all"))[1] == 2  # not listed as failed either
    assert store.creative_items(first.creative_id) == []
    assert keeper.original_path(first.sha256).exists()  # the file waits for the window
    assert trash.undo(d.token) == 2
    assert store.gallery(GalleryQuery())[1] == 4
    [back] = store.gallery_items([ids[0]])
    assert back == first and back.favourite  # favourite and everything else as before
    assert store.gallery(GalleryQuery(collection_id=cid))[1] == 2
    assert trash.undo(d.token) == 0  # undone once
    trash.close()


def test_the_window_passing_deletes_rows_and_files_and_undo_is_then_too_late(stocked):
    store, keeper, ids = stocked
    trash = Trash(store, keeper, window_s=0.2)
    [item] = store.gallery_items([ids[2]])
    d = trash.delete([ids[2]])
    wait_for(lambda: not keeper.original_path(item.sha256).exists())
    assert store.gallery_items([ids[2]]) == [] and store.submission(item.submission_id) is None
    assert trash.undo(d.token) == 0 and trash.pending(d.token) is None
    assert store.gallery(GalleryQuery())[1] == 3


def test_a_stop_inside_the_window_leaves_it_open_and_a_later_sweep_purges_only_what_is_due(stocked):
    """The window is in the database: a stopped process (or a crashed one) no longer ends it.
    (Before, a stop purged at once and a start purged everything trashed.)"""
    store, keeper, ids = stocked
    clock = FakeClock()
    stopped = Trash(store, keeper, window_s=600, clock=clock)
    early = stopped.delete([ids[0]])
    clock.advance(300)
    late = stopped.delete([ids[1]])
    stopped.close()
    assert store.trashed_outputs() == [ids[0], ids[1]]  # nothing purged by the stop
    restarted = Trash(store, keeper, window_s=600, clock=clock)
    assert restarted.sweep() == 0  # at start: neither window has ended
    clock.advance(301)  # the first deletion's window is over, the second's is not
    [first] = store.gallery_items([ids[0]])
    assert restarted.sweep() == 1
    assert not keeper.original_path(first.sha256).exists() and restarted.pending(early.token) is None
    assert restarted.undo(early.token) == 0
    assert restarted.undo(late.token) == 1  # still inside its window, from another process
    assert store.trashed_outputs() == [] and store.gallery(GalleryQuery())[1] == 3
    restarted.close()


def test_a_process_that_did_not_delete_purges_it_by_its_periodic_sweep_when_due(stocked):
    """The deleting process died inside the window (its timer with it): another one's
    sweeper purges the deletion once its window is over, not before."""
    store, keeper, ids = stocked
    clock = FakeClock()
    died = Trash(store, keeper, window_s=20, clock=clock)
    d = died.delete([ids[0]])
    died.close()
    other = Trash(store, keeper, window_s=20, sweep_every_s=0.01, clock=clock).start()
    try:
        sweeps = store.purge_due
        looked = []

        def counted(now: float) -> list[str]:
            looked.append(now)
            return sweeps(now)

        store.purge_due = counted  # type: ignore[method-assign]
        wait_for(lambda: len(looked) >= 3)  # the sweeper ran, and found nothing due
        assert store.trashed_outputs() == [ids[0]] and other.pending(d.token) is not None
        clock.advance(20)
        wait_for(lambda: store.trashed_outputs() == [])
        assert other.pending(d.token) is None and store.gallery(GalleryQuery())[1] == 3
    finally:
        other.close()


def test_undo_after_the_window_is_too_late_even_before_the_sweep(stocked):
    store, keeper, ids = stocked
    clock = FakeClock()
    trash = Trash(store, keeper, window_s=20, clock=clock)
    d = trash.delete([ids[0], ids[1]])
    clock.advance(19.9)
    pending = trash.pending(d.token)
    assert pending is not None and pending.output_ids == (ids[0], ids[1])
    assert pending.left(clock()) == pytest.approx(0.1)
    clock.advance(0.1)
    assert trash.undo(d.token) == 0  # the window is over: no half-way
    assert store.trashed_outputs() == [ids[0], ids[1]]
    assert trash.sweep() == 2 and store.trashed_outputs() == []
    trash.close()


def _two_replicas(request, tmp_path, engine: str) -> tuple[Any, Any]:
    """Two stores on one database, as two studio processes (or replicas) hold them."""
    if engine == "sqlite":
        return Store(tmp_path / "studio.db"), Store(tmp_path / "studio.db")
    from studio.config import DatabaseSettings
    from studio.postgres.store import PgStore

    settings = DatabaseSettings.parse(request.getfixturevalue("postgres_db"), tmp_path)
    return PgStore.open(settings, max_size=2), PgStore.open(settings, max_size=2)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_deletion_made_by_one_replica_is_undone_by_another(request, tmp_path, engine):
    """An Undo reaching the replica that did not delete restores everything, and the
    deleter's sweep then finds nothing due; a second Undo anywhere is too late."""
    from studio.images import ImageKeeper

    a_store, b_store = _two_replicas(request, tmp_path, engine)
    ids = seed(a_store, ImageKeeper(tmp_path / "images"))
    clock = FakeClock()
    a = Trash(a_store, ImageKeeper(tmp_path / "images"), window_s=20, clock=clock)
    b = Trash(b_store, ImageKeeper(tmp_path / "images"), window_s=20, clock=clock)
    try:
        d = a.delete(ids[:3])
        assert b_store.gallery(GalleryQuery())[1] == 1  # hidden on every replica at once
        seen = b.pending(d.token)
        assert seen is not None and seen.output_ids == tuple(ids[:3]) and seen.until == d.until
        assert b.undo(d.token) == 3
        clock.advance(21)
        assert a.sweep() == 0 and b_store.gallery(GalleryQuery())[1] == 4
        assert a.undo(d.token) == 0
    finally:
        a.close()
        b.close()
        a_store.close()
        b_store.close()


def test_images_trashed_before_the_windows_were_stored_are_purged_by_the_first_sweep(tmp_path):
    """A data folder at schema 12 with a trashed image (its timer died with the process):
    the upgrade gives it a deletion due at once, as the old start-up purge would have."""
    import sqlite3
    import time

    from studio.images import ImageKeeper
    from tests.support import old_database

    path = tmp_path / "studio.db"
    old_database(path, 12)
    conn = sqlite3.connect(path)
    for n, state in enumerate(("kept", "trashed")):
        sub = conn.execute(
            "INSERT INTO submissions (creative_id, prompt, aspect_ratio, resolution, model, idempotency_key,"
            " state, task_id, created_at) VALUES (?, 'old', '1:1', '1K', 'gpt-image-2', ?, 'success', ?, 1.0)",
            (f"c{n}", f"k{n}", f"tk-{n}"),
        ).lastrowid
        conn.execute(
            "INSERT INTO outputs (submission_id, idx, url, state, sha256, width, height, bytes, kept_at)"
            " VALUES (?, 0, 'https://files.example/x.png', ?, ?, 1, 1, 1, 2.0)",
            (sub, state, f"{n}".ljust(64, "0")),
        )
    conn.commit()
    conn.close()
    before = time.time()
    store = Store(path)
    [trashed] = store.trashed_outputs()
    [(token, purge_after)] = sql_rows(path, "SELECT token, purge_after FROM deletions")
    assert before - 1 <= purge_after <= time.time() + 1
    pending = Trash(store, ImageKeeper(tmp_path / "images")).pending(token)
    assert pending is not None and pending.output_ids == (trashed,)
    trash = Trash(store, ImageKeeper(tmp_path / "images"))
    assert trash.sweep() == 1
    assert store.trashed_outputs() == [] and store.output(trashed) is None
    assert len(store.gallery(GalleryQuery())[0]) == 1  # the kept one stays


def test_only_kept_images_are_trashed(stocked):
    store, keeper, ids = stocked
    trash = Trash(store, keeper, window_s=600)
    assert trash.delete([ids[0], 999_999]).output_ids == (ids[0],)
    assert trash.delete([ids[0]]).output_ids == ()  # already trashed
    trash.close()


def test_a_blob_two_outputs_share_goes_only_with_the_last_of_them(tmp_path):
    """Identical bytes and recipe give one sha256, so one blob: deleting one output keeps it."""
    from studio.blob_keys import original_key, thumb_key
    from studio.images import ImageKeeper

    store = Store(tmp_path / "studio.db")
    keeper = ImageKeeper(tmp_path / "images")
    ids = seed(store, keeper, SEED[:2])
    # The second output is kept with the first one's bytes and recipe, as a resent task can be.
    [first] = store.gallery_items([ids[0]])
    store.output_kept(ids[1], sha256=first.sha256 or "", width=1, height=1, nbytes=1)
    a, b = store.gallery_items(ids)
    assert a.sha256 == b.sha256 and a.output_id != b.output_id
    keys = (original_key(a.sha256), thumb_key(a.sha256))
    clock = FakeClock()
    trash = Trash(store, keeper, window_s=600, clock=clock)
    try:
        trash.delete([a.output_id])
        clock.advance(601)
        assert trash.sweep() == 0  # the row is gone; no blob was freed
        assert store.gallery_items([a.output_id]) == [] and store.gallery_items([b.output_id]) != []
        assert all(keeper.blobs.exists(k) for k in keys)
        trash.delete([b.output_id])
        clock.advance(601)
        assert trash.sweep() == 1
        assert not any(keeper.blobs.exists(k) for k in keys)
    finally:
        trash.close()
