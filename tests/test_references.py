"""Reference images: what is accepted, how it is kept, and the signed URLs HiAPI fetches."""

from __future__ import annotations

import io
import os
import stat

import pytest
from PIL import Image

from studio.references import (
    MAX_BYTES,
    ReferenceRefused,
    ReferenceShelf,
    check,
    load_or_create_key,
)


def _image(fmt: str, size=(64, 48), mode="RGB", **save) -> bytes:
    buf = io.BytesIO()
    color = {"RGB": (200, 40, 90), "RGBA": (200, 40, 90, 128), "1": 0}[mode]
    Image.new(mode, size, color).save(buf, fmt, **save)
    return buf.getvalue()


@pytest.fixture
def shelf(tmp_path):
    return ReferenceShelf(tmp_path / "references", b"k" * 32)


@pytest.mark.parametrize(("fmt", "ext"), [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
def test_jpeg_png_and_webp_are_kept_as_sent_under_their_hash(shelf, fmt, ext):
    data = _image(fmt)
    ref = shelf.add(data, f"photo.{ext}")
    assert (ref.ext, ref.width, ref.height, ref.bytes) == (ext, 64, 48, len(data))
    assert shelf.key(ref.name) == f"refs/{ref.name}"
    assert shelf.read(ref.name) == data
    path = shelf.blobs.path(shelf.key(ref.name))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert shelf.add(data, "again.png") == ref  # the same bytes are one reference
    assert list(shelf.blobs.keys()) == [shelf.key(ref.name)]


def test_the_kind_is_read_from_the_bytes_not_the_name(shelf):
    with pytest.raises(ReferenceRefused, match="“logo.png” is not a JPEG, PNG or WebP"):
        shelf.add(_image("GIF"), "logo.png")
    with pytest.raises(ReferenceRefused, match="“notes.png” is not a JPEG"):
        shelf.add(b"hello, not an image at all", "notes.png")
    assert list(shelf.blobs.keys()) == []


def test_too_big_damaged_animated_and_bomb_files_are_refused_with_the_reason():
    with pytest.raises(ReferenceRefused, match=r"“huge.png” is .* at most 20 MB"):
        check(b"\x89PNG\r\n\x1a\n" + b"0" * MAX_BYTES, "huge.png")
    whole = _image("PNG", (300, 300))
    with pytest.raises(ReferenceRefused, match="“cut.png” is damaged or incomplete"):
        check(whole[: len(whole) // 2], "cut.png")
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(ReferenceRefused, match="“moving.webp” is animated"):
        check(buf.getvalue(), "moving.webp")
    # A small file that claims 9,000 × 9,000 pixels: refused from its header, never decoded.
    bomb = _image("PNG", (9_000, 9_000), mode="1")
    assert len(bomb) < MAX_BYTES
    with pytest.raises(ReferenceRefused, match="bomb.png"):
        check(bomb, "bomb.png")


def test_signed_urls_verify_until_they_expire_and_not_when_touched(shelf):
    ref = shelf.add(_image("PNG"), "a.png")
    url = shelf.url("https://studio.example.com/", ref.name, now=1_000, lifetime=60)
    assert url.startswith(f"https://studio.example.com/refs/{ref.name}?exp=1060&sig=")
    sig = url.rsplit("sig=", 1)[1]
    assert shelf.verify(ref.name, "1060", sig, now=1_030)
    assert not shelf.verify(ref.name, "1060", sig, now=1_061)  # expired
    assert not shelf.verify(ref.name, "9999", sig, now=1_030)  # expiry changed
    assert not shelf.verify(ref.name, "1060", "0" * 64, now=1_030)  # forged
    other = ReferenceShelf(shelf.blobs, b"x" * 32)
    assert not other.verify(ref.name, "1060", sig, now=1_030)  # another studio's key
    assert shelf.name_in(url) == ref.name
    assert shelf.name_in("https://elsewhere.example/x.png") is None


def test_names_outside_the_shelf_are_refused(shelf):
    for bad in ("../studio.db", "x" * 64 + ".gif", "ABC.png", ""):
        with pytest.raises(ValueError):
            shelf.key(bad)
        assert shelf.read(bad) is None


def test_the_signing_key_is_made_once_and_kept_private(tmp_path):
    key = load_or_create_key(tmp_path)
    assert len(key) == 32 and load_or_create_key(tmp_path) == key
    assert stat.S_IMODE(os.stat(tmp_path / "reference-signing-key").st_mode) == 0o600
