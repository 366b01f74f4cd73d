"""The blob-store contract (studio/blobs.py), run unchanged against every implementation.

`blob_store` is parametrised over every implementation; an implementation joins by adding
a factory to BLOB_FACTORIES. A factory gets the test's request (to reach engine fixtures such
as `s3_server`, SeaweedFS on loopback) and its tmp_path.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from studio.blobs import BlobNotFound, BlobStore, LocalBlobStore, check_key
from studio.blobstores.s3 import S3BlobStore


def _s3(request: pytest.FixtureRequest, tmp: Path) -> BlobStore:
    """A store under a prefix of its own in the session's SeaweedFS bucket."""
    server = request.getfixturevalue("s3_server")
    return S3BlobStore(server.bucket, f"contract/{uuid.uuid4().hex}", server.client())


BLOB_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], BlobStore]] = {
    "local": lambda request, tmp: LocalBlobStore(tmp / "blobs"),
    "s3": _s3,
}


@pytest.fixture(params=sorted(BLOB_FACTORIES))
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    yield BLOB_FACTORIES[request.param](request, tmp_path)


def test_is_a_blob_store(blob_store: BlobStore) -> None:
    assert isinstance(blob_store, BlobStore)


def test_put_then_open_returns_the_same_bytes(blob_store: BlobStore) -> None:
    data = bytes(range(256)) * 1000
    assert blob_store.put("originals/ab/abc.png", data) == len(data)
    with blob_store.open("originals/ab/abc.png") as f:
        assert f.read() == data
    assert blob_store.exists("originals/ab/abc.png")
    assert blob_store.size("originals/ab/abc.png") == len(data)


def test_put_takes_a_file_object_and_a_local_path(blob_store: BlobStore, tmp_path: Path) -> None:
    blob_store.put("a/from-stream", io.BytesIO(b"stream"))
    src = tmp_path / "src.bin"
    src.write_bytes(b"path")
    blob_store.put("a/from-path", src)
    with blob_store.open("a/from-stream") as f:
        assert f.read() == b"stream"
    with blob_store.open("a/from-path") as f:
        assert f.read() == b"path"


def test_put_again_replaces_whole(blob_store: BlobStore) -> None:
    blob_store.put("k", b"a much longer first version")
    blob_store.put("k", b"short")
    with blob_store.open("k") as f:
        assert f.read() == b"short"


def test_missing_keys(blob_store: BlobStore) -> None:
    assert not blob_store.exists("nope/x")
    assert blob_store.size("nope/x") is None
    assert blob_store.delete("nope/x") is False
    with pytest.raises(BlobNotFound):
        blob_store.open("nope/x")


def test_delete(blob_store: BlobStore) -> None:
    blob_store.put("exports/t.zip", b"zip")
    assert blob_store.delete("exports/t.zip") is True
    assert not blob_store.exists("exports/t.zip")


def test_keys_lists_a_prefix(blob_store: BlobStore) -> None:
    for k in ("exports/a.zip", "exports/b.zip", "kits/t/c.zip", "exportsx/d"):
        blob_store.put(k, b"x")
    assert sorted(blob_store.keys("exports/")) == ["exports/a.zip", "exports/b.zip"]
    assert set(blob_store.keys()) >= {"exports/a.zip", "kits/t/c.zip", "exportsx/d"}


@pytest.mark.parametrize(
    "bad", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a b", "a\\b", "x" * 513]
)
def test_unsafe_keys_are_refused_before_any_io(blob_store: BlobStore, bad: str) -> None:
    with pytest.raises(ValueError):
        check_key(bad)
    with pytest.raises(ValueError):
        blob_store.put(bad, b"x")
    with pytest.raises(ValueError):
        blob_store.exists(bad)


def test_a_reader_never_sees_a_partial_blob(blob_store: BlobStore) -> None:
    """Writers replace a 1 MiB blob of one byte value with another; every read sees one value only."""
    size = 1 << 20
    blob_store.put("race", b"\x00" * size)
    stop = threading.Event()
    seen: list[bytes] = []

    def writer() -> None:
        for i in range(1, 20):
            blob_store.put("race", bytes([i]) * size)
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    while not stop.is_set():
        with blob_store.open("race") as f:
            data = f.read()
        assert len(data) == size
        seen.append(data[:1])
        assert data.count(data[:1]) == size
    t.join()
    assert seen


def test_url_is_none_or_a_fetchable_http_url(blob_store: BlobStore) -> None:
    blob_store.put("refs/r.png", b"ref")
    url = blob_store.url("refs/r.png", expires_s=60)
    assert url is None or url.startswith(("http://", "https://"))
    if url is not None:  # fetched with no credential but the URL's own
        answer = httpx.get(url, timeout=10)
        assert (answer.status_code, answer.content) == (200, b"ref")


def test_local_blobs_are_private_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "b")
    store.put("originals/x.png", b"png")
    mode = store.path("originals/x.png").stat().st_mode & 0o777
    assert mode == 0o600
    assert list((tmp_path / "b" / ".tmp").iterdir()) == []
