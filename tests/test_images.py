"""Tests for studio.images against a real local HTTP server (127.0.0.1, ephemeral port)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageFile
from PIL.PngImagePlugin import PngInfo

from studio.images import (
    RECIPE_CHUNK,
    RECIPE_KEYS,
    DownloadError,
    DownloadFailed,
    ImageKeeper,
    KeptImage,
    NotAnImage,
    OutputExpired,
    TooLarge,
    TruncatedDownload,
    clean_recipe,
    read_recipe,
)

MAX_BYTES = 1 << 20  # the test keeper's byte cap
THUMB = 128
PNG_SIG = b"\x89PNG\r\n\x1a\n"

RECIPE = {
    "prompt": "A \"quoted\" café sign ☕ — 東京\nsecond line\twith a tab and 'single' quotes 🦊",
    "aspect_ratio": "16:9",
    "resolution": "2K",
    "model": "gpt-image-2",
    "task_id": "tk-hiapi-01HZTQ8BX2N3GM3YFK4Z9D7VQR",
    "created": 1767225600,
}


# --------------------------------------------------------------------------- assets


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of the given size, all zeros: a few KB that decode to width*height pixels.

    Built row by row so making a 20000x20000 one costs neither memory nor time.
    """
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return PNG_SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


@pytest.fixture(scope="module")
def assets() -> dict[str, bytes]:
    # Noise keeps the files from compressing to nothing, so truncation is real.
    noise = Image.merge("RGB", [Image.effect_noise((320, 200), 80 + 20 * i).convert("L") for i in range(3)])
    info = PngInfo()
    info.add_text("Software", "upstream-renderer")
    good_png = _encode(noise, "PNG", pnginfo=info)
    assert len(good_png) < MAX_BYTES
    jpeg = _encode(noise.resize((300, 180)), "JPEG", quality=90)
    palette = noise.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    return {
        "png": good_png,
        "jpeg": jpeg,
        "webp": _encode(noise.resize((240, 160)), "WEBP", lossless=True),
        "palette": _encode(palette, "PNG"),
        "html": b"<!doctype html><html><body><h1>Access denied</h1></body></html>",
        # Over Pillow's hard limit (2 x MAX_IMAGE_PIXELS): Image.open raises.
        "bomb": _bomb_png(20_000, 20_000),
        # Between MAX_IMAGE_PIXELS and twice that: Pillow only warns.
        "bomb_warning": _bomb_png(10_000, 10_000),
        # Made with Pillow; under Pillow's limits but over ours (20 M > 16.6 M pixels).
        "over_our_cap": _encode(Image.new("1", (5000, 4000), 1), "PNG"),
    }


# --------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        route = self.server.routes.get(urlsplit(self.path).path)
        try:
            if route is None:
                self.send_plain(404, b"no such route")
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the keeper hung up on purpose (too large, not an image, ...)

    def send_plain(self, status: int, body: bytes, ctype: str = "text/plain", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Callable[[_Handler], None]]
    seen: list[tuple[str, dict[str, str]]]

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _routes(a: dict[str, bytes]) -> dict[str, Callable[[_Handler], None]]:
    def serve(body: bytes, ctype: str = "image/png") -> Callable[[_Handler], None]:
        return lambda h: h.send_plain(200, body, ctype)

    def status(code: int) -> Callable[[_Handler], None]:
        return lambda h: h.send_plain(code, b"<html>error</html>", "text/html", Retry_After="7")

    def cut_connection(h: _Handler) -> None:
        # Announce the whole file, send half, hang up (HTTP/1.0 closes after the handler).
        body = a["png"]
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()

    def huge_declared(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(50 * MAX_BYTES))
        h.end_headers()
        h.wfile.write(PNG_SIG + b"\x00" * 1024)

    def huge_streamed(h: _Handler) -> None:
        # No Content-Length: only counting while reading can stop this one.
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.end_headers()
        h.wfile.write(PNG_SIG)
        for _ in range(64):
            h.wfile.write(b"\x00" * 65536)

    def slow(h: _Handler) -> None:
        # A server that stays silent (the fault under test) until the module's server stops: far past
        # the keeper's 1 s timeout, however slow the machine, and no sleep.
        _SILENT.wait(60)
        h.send_plain(200, a["png"], "image/png")

    def redirect(to: str) -> Callable[[_Handler], None]:
        def go(h: _Handler) -> None:
            h.send_response(302)
            h.send_header("Location", to)
            h.send_header("Content-Length", "0")
            h.end_headers()

        return go

    return {
        "/good.png": serve(a["png"]),
        "/echo.png": serve(a["png"]),
        "/photo.jpg": serve(a["jpeg"], "image/jpeg"),
        # An error page that claims to be a PNG: content decides, not the header.
        "/page.html": serve(a["html"], "image/png"),
        "/empty.png": serve(b""),
        "/gone404.png": status(404),
        "/gone410.png": status(410),
        "/forbidden.png": status(403),
        "/error500.png": status(500),
        "/busy503.png": status(503),
        "/cut-connection.png": cut_connection,
        "/cut-file.png": serve(a["png"][: len(a["png"]) * 2 // 3]),
        "/huge-declared.png": huge_declared,
        "/huge-streamed.png": huge_streamed,
        "/bomb.png": serve(a["bomb"]),
        "/bomb-warning.png": serve(a["bomb_warning"]),
        "/over-our-cap.png": serve(a["over_our_cap"]),
        "/slow.png": slow,
        "/redirect": redirect("/echo.png"),
        "/redirect-file": redirect("file:///etc/passwd"),
        "/loop": redirect("/loop"),
    }


#: Set when the module's server stops: the slow route answers only then.
_SILENT = threading.Event()


@pytest.fixture(scope="module")
def server(assets: dict[str, bytes]) -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.routes = _routes(assets)
    srv.seen = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    _SILENT.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def base(server: _Server) -> str:
    server.seen.clear()
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[ImageKeeper]:
    k = ImageKeeper(
        tmp_path / "images", max_bytes=MAX_BYTES, thumb_size=THUMB, timeout=1.0, allow_loopback=True
    )
    yield k
    k.close()


def _files(root: Path, sub: str) -> list[Path]:
    return sorted(p for p in (root / sub).rglob("*") if p.is_file())


def _assert_nothing_left(k: ImageKeeper) -> None:
    assert _files(k.root, "tmp") == []
    assert _files(k.root, "originals") == []
    assert _files(k.root, "thumbs") == []


# --------------------------------------------------------------------------- success paths


def test_fetch_png_is_kept_content_addressed_with_thumbnail(keeper: ImageKeeper, base: str, assets) -> None:
    kept = keeper.fetch(f"{base}/good.png", RECIPE)

    assert isinstance(kept, KeptImage)
    data = kept.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == kept.sha256
    assert kept.path == keeper.root / "originals" / kept.sha256[:2] / f"{kept.sha256}.png"
    assert kept.path == keeper.original_path(kept.sha256)
    assert kept.bytes == len(data)
    assert (kept.width, kept.height, kept.format) == (320, 200, "PNG")
    assert data.startswith(PNG_SIG)

    with Image.open(kept.path) as stored, Image.open(io.BytesIO(assets["png"])) as source:
        assert stored.size == (320, 200)
        assert stored.tobytes() == source.tobytes()  # pixels untouched
        assert stored.info["Software"] == "upstream-renderer"  # other metadata kept

    assert kept.thumb_path == keeper.root / "thumbs" / kept.sha256[:2] / f"{kept.sha256}.webp"
    assert kept.thumb_path.read_bytes()[8:12] == b"WEBP"
    with Image.open(kept.thumb_path) as thumb:
        assert thumb.format == "WEBP"
        assert max(thumb.size) <= THUMB
        assert thumb.size == (128, 80)  # aspect ratio kept

    assert _files(keeper.root, "tmp") == []


def test_fetch_jpeg_is_stored_as_png_with_identical_pixels(keeper: ImageKeeper, base: str, assets) -> None:
    kept = keeper.fetch(f"{base}/photo.jpg", RECIPE)

    assert kept.format == "PNG"
    assert (kept.width, kept.height) == (300, 180)
    with Image.open(kept.path) as stored, Image.open(io.BytesIO(assets["jpeg"])) as source:
        assert stored.format == "PNG"
        assert stored.tobytes() == source.convert("RGB").tobytes()
    assert read_recipe(kept.path) == RECIPE


def test_keep_bytes_webp_and_palette_sources(keeper: ImageKeeper, assets) -> None:
    webp = keeper.keep_bytes(assets["webp"], RECIPE)
    assert (webp.width, webp.height) == (240, 160)
    with Image.open(webp.path) as stored, Image.open(io.BytesIO(assets["webp"])) as source:
        assert stored.format == "PNG"
        assert stored.tobytes() == source.convert(stored.mode).tobytes()

    pal = keeper.keep_bytes(assets["palette"], RECIPE)
    with Image.open(pal.thumb_path) as thumb:
        assert thumb.format == "WEBP"
        assert thumb.mode == "RGBA"  # palette transparency survives into the thumbnail
        assert max(thumb.size) == THUMB


def test_recipe_round_trip(keeper: ImageKeeper, assets) -> None:
    kept = keeper.keep_bytes(assets["png"], {**RECIPE, "extra": {"seed": 7, "tags": ["a", "b"]}})
    expected = {**RECIPE, "extra": {"seed": 7, "tags": ["a", "b"]}}

    assert read_recipe(kept.path) == expected
    assert read_recipe(str(kept.path)) == expected
    assert read_recipe(kept.path.read_bytes()) == expected
    with open(kept.path, "rb") as f:
        assert read_recipe(f) == expected
        assert not f.closed  # a caller's file object stays theirs

    # Other tools see the individual text keys (Pillow parses tEXt and iTXt).
    with Image.open(kept.path) as im:
        assert im.info[RECIPE_CHUNK]
        assert im.text["prompt"] == RECIPE["prompt"]
        assert im.text["aspect_ratio"] == "16:9"
        assert im.text["created"] == "1767225600"
        assert set(RECIPE_KEYS) <= set(im.text)


def test_read_recipe_falls_back_to_individual_text_keys(assets) -> None:
    info = PngInfo()
    info.add_text("prompt", "a lighthouse at dusk, ünïcode")
    info.add_text("aspect_ratio", "3:2")
    with Image.open(io.BytesIO(assets["png"])) as im:
        data = _encode(im, "PNG", pnginfo=info)
    assert read_recipe(data) == {"prompt": "a lighthouse at dusk, ünïcode", "aspect_ratio": "3:2"}


def test_reimport_replaces_the_old_recipe(keeper: ImageKeeper, assets) -> None:
    first = keeper.keep_bytes(assets["png"], RECIPE)
    second = keeper.keep_bytes(first.path, {**RECIPE, "prompt": "second take"})

    data = second.path.read_bytes()
    assert second.sha256 != first.sha256
    assert data.count(RECIPE_CHUNK.encode()) == 1
    assert read_recipe(second.path)["prompt"] == "second take"
    with Image.open(second.path) as a, Image.open(first.path) as b:
        assert a.tobytes() == b.tobytes()
        assert a.text["prompt"] == "second take"


def test_secrets_are_scrubbed_from_the_file(keeper: ImageKeeper, assets) -> None:
    recipe = {
        **RECIPE,
        "prompt": "a red fox reading a note that says sk-secret123456",
        "api_key": "sk-secret123456",
        "Authorization": "Bearer sk-secret123456",
        "headers": {"X-Api-Key": "sk-secret123456", "Accept": "image/png"},
        "note": "Bearer abcdefghijklmnop",
        "history": [{"access_token": "tok-123456789"}],
    }
    kept = keeper.keep_bytes(assets["png"], recipe)

    data = kept.path.read_bytes()
    assert b"a red fox reading a note" in data  # stored uncompressed, so the next checks mean something
    assert b"sk-secret123456" not in data
    assert b"secret123456" not in data
    assert b"abcdefghijklmnop" not in data
    assert b"tok-123456789" not in data
    got = read_recipe(kept.path)
    assert "api_key" not in got and "Authorization" not in got
    assert got["headers"] == {"Accept": "image/png"}
    assert got["history"] == [{}]
    assert "[redacted]" in got["prompt"] and got["prompt"].startswith("a red fox")
    assert got["note"] == "Bearer [redacted]"


def test_clean_recipe_rules() -> None:
    cleaned = clean_recipe({"prompt": "x", "key": "k", "apiKey": "k", "author": "Ann", "ratio": float("nan")})
    assert cleaned == {"prompt": "x", "author": "Ann", "ratio": None}
    assert clean_recipe(None) == {}
    assert clean_recipe({1: "lone \ud800 surrogate", "tags": ("a",)}) == {
        "1": "lone ? surrogate",
        "tags": ["a"],
    }
    with pytest.raises(TypeError):
        clean_recipe(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_no_authorization_header_is_ever_sent(tmp_path: Path, server: _Server, base: str) -> None:
    with ImageKeeper(tmp_path / "a", max_bytes=MAX_BYTES, timeout=1.0, allow_loopback=True) as own:
        own.fetch(f"{base}/echo.png", RECIPE)

    # Even a client carrying the API key, basic auth and cookies is used as a
    # bare transport only; a redirect and URL credentials change nothing.
    hostile = httpx.Client(
        headers={"Authorization": "Bearer sk-live-abcdef123456", "X-Api-Key": "sk-live-abcdef123456"},
        auth=("user", "sk-live-abcdef123456"),
        cookies={"session": "sk-live-abcdef123456"},
    )
    host = base.removeprefix("http://")
    with ImageKeeper(
        tmp_path / "b", http=hostile, max_bytes=MAX_BYTES, timeout=1.0, allow_loopback=True
    ) as shared:
        shared.fetch(f"{base}/redirect", RECIPE)
        shared.fetch(f"http://user:pw@{host}/echo.png", RECIPE)
    assert not hostile.is_closed  # not ours to close
    hostile.close()

    paths = [p for p, _ in server.seen]
    assert paths == ["/echo.png", "/redirect", "/echo.png", "/echo.png"]
    for _, headers in server.seen:
        assert "authorization" not in headers
        assert "x-api-key" not in headers
        assert "cookie" not in headers
        assert not any("sk-" in v for v in headers.values())


def test_identical_content_is_deduplicated(keeper: ImageKeeper, base: str, assets) -> None:
    a = keeper.fetch(f"{base}/good.png", RECIPE)
    inode = a.path.stat().st_ino
    b = keeper.fetch(f"{base}/good.png", RECIPE)
    # Checked at once: a rewrite would free the first inode for reuse later.
    assert b.path.stat().st_ino == inode  # reused, not rewritten
    c = keeper.keep_bytes(assets["png"], RECIPE)
    assert c.path.stat().st_ino == inode

    assert a == b == c
    assert _files(keeper.root, "originals") == [a.path]
    assert _files(keeper.root, "thumbs") == [a.thumb_path]
    # The recipe is part of the bytes: the same pixels with another recipe are another file.
    d = keeper.keep_bytes(assets["png"], {**RECIPE, "task_id": "tk-hiapi-other"})
    assert d.sha256 != a.sha256
    assert _files(keeper.root, "tmp") == []


def test_concurrent_fetches_of_one_url(keeper: ImageKeeper, base: str) -> None:
    results: list[KeptImage] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(keeper.fetch(f"{base}/good.png", RECIPE))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert len({r.sha256 for r in results}) == 1 and len(results) == 4
    assert len(_files(keeper.root, "originals")) == 1
    assert _files(keeper.root, "tmp") == []


def test_delete_removes_both_files(keeper: ImageKeeper, assets) -> None:
    kept = keeper.keep_bytes(assets["png"], RECIPE)
    assert kept.path.exists() and kept.thumb_path.exists()

    keeper.delete(kept.sha256)
    assert not kept.path.exists()
    assert not kept.thumb_path.exists()
    keeper.delete(kept.sha256)  # idempotent

    again = keeper.keep_bytes(assets["png"], RECIPE)  # and it can come back
    assert again.path.exists() and again.thumb_path.exists()


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "abc", "0" * 63 + "/"])
def test_paths_refuse_anything_but_a_sha256(keeper: ImageKeeper, bad: str) -> None:
    with pytest.raises(ValueError):
        keeper.original_path(bad)
    with pytest.raises(ValueError):
        keeper.delete(bad)


# --------------------------------------------------------------------------- failure paths


@pytest.mark.parametrize(
    ("path", "cls", "retryable", "code"),
    [
        ("/gone404.png", OutputExpired, False, "expired"),
        ("/gone410.png", OutputExpired, False, "expired"),
        ("/forbidden.png", DownloadFailed, False, "http_403"),
        ("/error500.png", DownloadFailed, True, "http_500"),
        ("/busy503.png", DownloadFailed, True, "http_503"),
        ("/page.html", NotAnImage, False, "not_image"),
        ("/empty.png", NotAnImage, False, "not_image"),
        ("/cut-connection.png", TruncatedDownload, True, "truncated"),
        ("/cut-file.png", TruncatedDownload, True, "truncated"),
        ("/huge-declared.png", TooLarge, False, "too_large"),
        ("/huge-streamed.png", TooLarge, False, "too_large"),
        ("/bomb.png", TooLarge, False, "too_large"),
        ("/bomb-warning.png", TooLarge, False, "too_large"),
        ("/over-our-cap.png", TooLarge, False, "too_large"),
        ("/slow.png", DownloadFailed, True, "timeout"),
        ("/redirect-file", DownloadFailed, False, "bad_url"),
        ("/loop", DownloadFailed, False, "redirects"),
    ],
)
def test_fetch_failures(
    keeper: ImageKeeper, base: str, path: str, cls: type, retryable: bool, code: str
) -> None:
    with pytest.raises(DownloadError) as info:
        keeper.fetch(f"{base}{path}", RECIPE)

    err = info.value
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.code == code
    assert err.message and "127.0.0.1" not in err.message and path not in err.message
    _assert_nothing_left(keeper)


def test_status_errors_carry_status_and_retry_after(keeper: ImageKeeper, base: str) -> None:
    with pytest.raises(DownloadFailed) as info:
        keeper.fetch(f"{base}/busy503.png", RECIPE)
    assert info.value.status == 503
    assert info.value.retry_after == 7.0
    with pytest.raises(OutputExpired) as gone:
        keeper.fetch(f"{base}/gone410.png", RECIPE)
    assert gone.value.status == 410


def test_bombs_are_refused_without_touching_global_state(keeper: ImageKeeper, base: str) -> None:
    filters_before = list(warnings.filters)
    limit_before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TooLarge) as info:
            keeper.fetch(f"{base}/bomb-warning.png", RECIPE)
    assert "unreasonably large" in info.value.message  # Pillow's warning, turned into our error
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert warnings.filters == filters_before
    assert Image.MAX_IMAGE_PIXELS == limit_before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_own_pixel_cap_holds_when_pillow_limit_is_off(
    keeper: ImageKeeper, assets, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(TooLarge) as info:
        keeper.keep_bytes(assets["bomb"], RECIPE)
    assert "pixel limit" in info.value.message  # refused from the header, before decoding
    _assert_nothing_left(keeper)


def test_network_failure_is_retryable(keeper: ImageKeeper) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    with pytest.raises(DownloadFailed) as info:
        keeper.fetch(f"http://127.0.0.1:{port}/x.png", RECIPE)
    assert info.value.retryable is True
    assert info.value.code == "network"
    _assert_nothing_left(keeper)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.png", "not a url", "http://"])
def test_non_web_urls_are_refused(keeper: ImageKeeper, url: str) -> None:
    with pytest.raises(DownloadFailed) as info:
        keeper.fetch(url, RECIPE)
    assert info.value.code == "bad_url"
    assert info.value.retryable is False
    _assert_nothing_left(keeper)


def test_keep_bytes_failures(keeper: ImageKeeper, assets, tmp_path: Path) -> None:
    cases: list[tuple[object, type[DownloadError]]] = [
        (assets["html"], NotAnImage),
        (b"\x00" * (MAX_BYTES + 1), TooLarge),
        (assets["jpeg"][: len(assets["jpeg"]) // 2], TruncatedDownload),
        (assets["webp"][: len(assets["webp"]) - 100], TruncatedDownload),
        (assets["png"][:-6], TruncatedDownload),  # IEND cut: Pillow alone would accept this
        (tmp_path / "missing.png", DownloadFailed),
    ]
    for source, cls in cases:
        with pytest.raises(cls):
            keeper.keep_bytes(source, RECIPE)  # type: ignore[arg-type]
        _assert_nothing_left(keeper)

    corrupt = bytearray(assets["png"])
    corrupt[100] ^= 0xFF  # inside IDAT: the CRC no longer matches
    with pytest.raises(NotAnImage) as info:
        keeper.keep_bytes(bytes(corrupt), RECIPE)
    assert info.value.code == "corrupt"
    _assert_nothing_left(keeper)


def test_png_cut_anywhere_is_truncated(keeper: ImageKeeper, assets) -> None:
    png = assets["png"]
    # Pillow words these cuts differently ("broken PNG file", "truncated", or
    # nothing at all for a missing IEND CRC); all must read as truncation.
    for cut in (*range(1, 14), 100, len(png) // 3, len(png) - 40):
        with pytest.raises(TruncatedDownload):
            keeper.keep_bytes(png[:-cut], RECIPE)
    _assert_nothing_left(keeper)


def test_sweep_temp_removes_only_stale_files(keeper: ImageKeeper) -> None:
    tmp = keeper.root / "tmp"
    stale, fresh = tmp / "dl-stale.part", tmp / "dl-fresh.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - 7200
    os.utime(stale, (old, old))

    assert keeper.sweep_temp(older_than_s=3600) == 1
    assert not stale.exists()
    assert fresh.exists()


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"junk",
        b"<!doctype html><html></html>",
        PNG_SIG,
        PNG_SIG + b"\x00\x00\x00\x0dIHDR",
        PNG_SIG
        + _chunk(b"IHDR", b"\x00" * 13)
        + _chunk(b"iTXt", RECIPE_CHUNK.encode() + b"\x00" * 5 + b"{nope"),
        PNG_SIG + b"\xff\xff\xff\xffIDAT",
        os.urandom(256),
    ],
)
def test_read_recipe_never_raises_on_junk(junk: bytes) -> None:
    assert read_recipe(junk) is None
    assert read_recipe(io.BytesIO(junk)) is None


def test_read_recipe_none_for_images_without_one(assets, tmp_path: Path) -> None:
    assert read_recipe(assets["png"]) is None
    assert read_recipe(assets["jpeg"]) is None
    assert read_recipe(tmp_path / "does-not-exist.png") is None
    # A damaged recipe chunk (bad CRC) is ignored, not trusted.
    good = json.dumps({"prompt": "x"}).encode()
    chunk = bytearray(_chunk(b"iTXt", RECIPE_CHUNK.encode() + b"\x00" * 5 + good))
    chunk[-1] ^= 0xFF
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    assert read_recipe(PNG_SIG + ihdr + bytes(chunk) + _chunk(b"IEND", b"")) is None
