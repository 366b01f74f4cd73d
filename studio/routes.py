"""Every route of the studio's server, and the one place that builds their URLs.

`server.py` takes its path templates from here; widgets, pages and the core
build links with the functions below, never with f-strings of their own
(`tests/test_layers.py` fails when a route literal appears anywhere else).
URLs are relative to the studio's origin unless a `base` is given. Nothing
here does I/O or imports anything studio-specific.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

# -- path templates (Starlette syntax), as server.py mounts them -----------------
HEALTH = "/api/health"
IMAGE = "/images/{sha}.png"
THUMB = "/thumbs/{sha}.webp"
EXPORT = "/exports/{token}.zip"
KIT = "/kits/{token}/{name}"
REFERENCE = "/refs/{name}"
CALLBACK = "/hiapi/callback/{token}"
EVENTS = "/api/events"
QUEUE_VIEW = "/api/view/queue"
GALLERY_VIEW = "/api/view/gallery"

#: What every kept original's and thumbnail's URL starts with (CSS selectors match on it).
IMAGE_PREFIX = IMAGE.removesuffix("{sha}.png")
THUMB_PREFIX = THUMB.removesuffix("{sha}.webp")
#: What precedes the token in a callback URL (`<base>/hiapi/callback/<token>`).
CALLBACK_PREFIX = CALLBACK.removesuffix("{token}")
#: What precedes a reference's name in its signed URL.
REFERENCE_PREFIX = REFERENCE.removesuffix("{name}")


def image(sha256: str, *, download: str | None = None) -> str:
    """A kept original; `download` names the file the browser saves (Content-Disposition)."""
    path = IMAGE.format(sha=sha256)
    return f"{path}?download={quote(download, safe='')}" if download else path


def thumb(sha256: str) -> str:
    return THUMB.format(sha=sha256)


def export(token: str, name: str | None = None) -> str:
    """A bulk export's zip; `name` is the file name the browser saves it as."""
    path = EXPORT.format(token=token)
    return f"{path}?{urlencode({'name': name})}" if name else path


def kit(token: str, name: str) -> str:
    return KIT.format(token=token, name=name)


def reference(base: str, name: str, *, exp: int, sig: str) -> str:
    """A reference's signed URL, absolute under `base` (HiAPI fetches it)."""
    return f"{base.rstrip('/')}{REFERENCE.format(name=name)}?exp={exp}&sig={sig}"


def callback(base: str, token: str) -> str:
    """`<base>/hiapi/callback/<token>`; a path in `base` (a proxy prefix) is kept."""
    return base.rstrip("/") + CALLBACK.format(token=token)


def events() -> str:
    return EVENTS


def queue_view(limit: int | None = None) -> str:
    return QUEUE_VIEW if limit is None else f"{QUEUE_VIEW}?limit={int(limit)}"


def gallery_view(query: str | None = None) -> str:
    """The gallery grid's view route; `query` is the filter string the grid writes
    (given, even empty, the URL ends in `?` plus it, ready for `&offset=`)."""
    return GALLERY_VIEW if query is None else f"{GALLERY_VIEW}?{query}"
