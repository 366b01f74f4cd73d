"""Where each kind of blob lives in the blob store: the one table of keys.

- `originals/<first two hex>/<sha256>.png`: a kept image (content-addressed).
- `thumbs/<first two hex>/<sha256>.webp`: its WebP thumbnail.
- `refs/<sha256>.<ext>`: a reference image (image-to-image), its original bytes.
- `exports/<token>.zip`: a bulk export, a one-off download.
- `kits/<token>/<name>`: a delivery kit's zip and its contact sheet.

Exports and kits are one-off downloads that live `lifetime_s`; their token
starts with the hex second they were made (`new_token`), so expiry needs no
file date and works the same on any store. The database keeps none of these
keys: originals, thumbnails and references are named by their hash, exports and
kits by their token. Nothing here does I/O or imports streamlit.
"""

from __future__ import annotations

import re
import secrets
import time

ORIGINALS = "originals/"
THUMBS = "thumbs/"
REFERENCES = "refs/"
EXPORTS = "exports/"
KITS = "kits/"

_SHA = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_REFERENCE = re.compile(r"[0-9a-f]{64}\.(?:jpg|png|webp)")
_KIT_FILE = re.compile(r"(?:[a-z0-9-]{1,80}\.zip|contact-sheet\.png)")
_STAMP = 8  # hex digits of the time a token was made


def checked_sha(sha256: str) -> str:
    """The digest itself if it is 64 lowercase hex digits; ValueError otherwise."""
    if not isinstance(sha256, str) or not _SHA.fullmatch(sha256):
        raise ValueError("not a sha256 hex digest")
    return sha256


def original_key(sha256: str) -> str:
    sha = checked_sha(sha256)
    return f"{ORIGINALS}{sha[:2]}/{sha}.png"


def thumb_key(sha256: str) -> str:
    sha = checked_sha(sha256)
    return f"{THUMBS}{sha[:2]}/{sha}.webp"


def is_reference_name(name: str) -> bool:
    return isinstance(name, str) and bool(_REFERENCE.fullmatch(name))


def reference_key(name: str) -> str:
    """The key of a reference named `<sha256>.<ext>`; ValueError for any other name."""
    if not is_reference_name(name):
        raise ValueError("not a reference name")
    return REFERENCES + name


def is_token(token: str) -> bool:
    return isinstance(token, str) and bool(_TOKEN.fullmatch(token))


def is_kit_file(name: str) -> bool:
    return isinstance(name, str) and bool(_KIT_FILE.fullmatch(name))


def new_token(now: float | None = None) -> str:
    """An unguessable download token that says when it was made (8 hex digits, then 24 random)."""
    stamp = int(time.time() if now is None else now)
    return f"{stamp:08x}{secrets.token_hex(12)}"


def token_made(token: str) -> float | None:
    """When a token from `new_token` was made (unix seconds); None for any other token."""
    head = token[:_STAMP] if is_token(token) and len(token) == _STAMP + 24 else ""
    try:
        return float(int(head, 16)) if head else None
    except ValueError:
        return None


def token_expired(token: str, lifetime_s: float, *, now: float | None = None) -> bool:
    """True when the token's link has outlived `lifetime_s` (or never said when it was made)."""
    made = token_made(token)
    now = time.time() if now is None else now
    return made is None or made < now - lifetime_s


def export_key(token: str) -> str:
    if not is_token(token):
        raise ValueError("not an export token")
    return f"{EXPORTS}{token}.zip"


def kit_key(token: str, name: str) -> str:
    if not is_token(token) or not is_kit_file(name):
        raise ValueError("not a kit file")
    return f"{KITS}{token}/{name}"


def token_of(key: str) -> str | None:
    """The token of an export or kit key (`exports/<token>.zip`, `kits/<token>/<name>`), else None."""
    if key.startswith(EXPORTS):
        token = key[len(EXPORTS) :].removesuffix(".zip")
    elif key.startswith(KITS):
        token = key[len(KITS) :].split("/", 1)[0]
    else:
        return None
    return token if is_token(token) else None
