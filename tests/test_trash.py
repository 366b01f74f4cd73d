"""Delete with an undo window: hidden at once, restorable untouched, gone for good after."""

from __future__ import annotations

import pytest

from studio.store import GalleryQuery, Store
from studio.trash import Trash
from tests.support import wait_for
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


def test_a_stop_inside_the_window_purges_and_a_restart_purges_leftovers(stocked):
    store, keeper, ids = stocked
    trash = Trash(store, keeper, window_s=600)
    trash.delete([ids[0]])
    trash.close()
    assert store.gallery_items([ids[0]]) == []
    # A crash leaves rows trashed with no timer: the next start purges them.
    store.trash_outputs([ids[1]])
    assert Trash(store, keeper).purge_all() == 1
    assert store.trashed_outputs() == [] and store.gallery(GalleryQuery())[1] == 2


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
    trash = Trash(store, keeper, window_s=600)
    try:
        trash.delete([a.output_id])
        assert trash.purge_all() == 0  # the row is gone; no blob was freed
        assert store.gallery_items([a.output_id]) == [] and store.gallery_items([b.output_id]) != []
        assert all(keeper.blobs.exists(k) for k in keys)
        trash.delete([b.output_id])
        assert trash.purge_all() == 1
        assert not any(keeper.blobs.exists(k) for k in keys)
    finally:
        trash.close()
