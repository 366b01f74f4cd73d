"""The one validation function for a gpt-image-2 task request.

The UI calls it before enabling Generate, the client calls it before sending
(an invalid request never leaves the machine), and the simulator calls it to
answer 400 INVALID_REQUEST for exactly the same cases.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

from .ratios import EXT_ROUTE, RATIO_NAMES, RESOLUTIONS, combination_problem

MAX_PROMPT_CHARS = 20_000
MAX_REFERENCES = 16
MAX_EXT_REFERENCES = 6  # `ext` takes its references as `image_urls`, 1-6 of them
ROUTES = (EXT_ROUTE,)  # top-level `route` values this studio sends (omitted = default route)
QUALITIES = ("low", "medium", "high")  # `ext` only, required there
BACKGROUNDS = ("auto", "opaque", "transparent")  # default route only, at 1K only
BACKGROUND_RESOLUTION = "1K"
STORAGE_PERSISTENT = "persistent"  # top-level `storage`: billed long-term output storage
CALLBACK_WHEN = ("final",)
# Half of a UTF-16 pair on its own: Python can hold it, UTF-8 (the wire, SQLite) cannot.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Nothing to see: whitespace, control and format characters (zero-width spaces, direction marks).
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def _is_blank(text: str) -> bool:
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in text)


@dataclass(frozen=True)
class Problem:
    """One failed rule: the field it concerns and a sentence saying what to do."""

    field: str
    message: str

    def __str__(self) -> str:
        return self.message


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_request(
    prompt: object,
    aspect_ratio: object = "auto",
    resolution: object = "1K",
    callback_url: object = None,
    callback_when: object = "final",
    *,
    allow_loopback_http: bool = False,
    image_to_image: bool = False,
    references: object = None,
    route: object = None,
    quality: object = None,
    background: object = None,
    storage: object = None,
) -> list[Problem]:
    """Return every problem with a request; an empty list means it may be sent.

    `allow_loopback_http` lets http://127.0.0.1 callbacks through; only the
    simulator sets it, so local demos can receive callbacks without TLS.

    `image_to_image` selects that model's limits (it allows 1:1 at 4K) and
    requires `references` (`input.input_urls`): 1-16 http(s) image URLs. A
    text-to-image request must not carry any.

    The prompt's length is counted in Unicode code points (an emoji or a
    letter with a combining accent counts once per code point, as HiAPI's
    limit is stated in characters). A prompt of only invisible characters
    counts as empty; NUL and unpaired surrogates are refused, wherever they are.

    `route` None is HiAPI's default route; `"ext"` requires `quality` (low,
    medium, high), refuses `background`, accepts every ratio at every
    resolution and takes 1-6 references (`image_urls`). `background` (auto,
    opaque, transparent) is for the default route at 1K only. `storage` may be
    None or "persistent".
    """
    problems: list[Problem] = []
    if not isinstance(prompt, str) or _is_blank(prompt):
        problems.append(Problem("prompt", "Prompt is required: describe the image you want."))
    elif len(prompt) > MAX_PROMPT_CHARS:
        over = len(prompt) - MAX_PROMPT_CHARS
        problems.append(
            Problem(
                "prompt",
                f"Prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}. "
                f"Shorten it by {over:,} character{'s' if over != 1 else ''}.",
            )
        )
    if isinstance(prompt, str) and "\x00" in prompt:
        problems.append(Problem("prompt", "Prompt contains a NUL character; remove it."))
    if isinstance(prompt, str) and _LONE_SURROGATE.search(prompt):
        problems.append(
            Problem(
                "prompt",
                "Prompt contains a broken character (half of an emoji or symbol); retype the "
                "emoji or symbols near it.",
            )
        )

    ratio_ok = isinstance(aspect_ratio, str) and aspect_ratio in RATIO_NAMES
    res_ok = isinstance(resolution, str) and resolution in RESOLUTIONS
    if not ratio_ok:
        problems.append(
            Problem(
                "aspect_ratio",
                f"Aspect ratio {aspect_ratio!r} is not supported; choose one of "
                + ", ".join(RATIO_NAMES)
                + ".",
            )
        )
    if not res_ok:
        problems.append(
            Problem(
                "resolution",
                f"Resolution {resolution!r} is not supported; choose 1K, 2K or 4K.",
            )
        )
    ext = route == EXT_ROUTE
    if route is not None and not ext:
        problems.append(Problem("route", f"Route {route!r} is not supported; omit it or use 'ext'."))
    if ratio_ok and res_ok:
        why = combination_problem(
            aspect_ratio,  # type: ignore[arg-type]
            resolution,  # type: ignore[arg-type]
            image_to_image=image_to_image,
            route=EXT_ROUTE if ext else None,
        )
        if why:
            problems.append(Problem("aspect_ratio", why))
    problems.extend(_route_problems(ext, quality, background, resolution))
    if storage is not None and storage != STORAGE_PERSISTENT:
        problems.append(
            Problem("storage", f"Storage {storage!r} is not supported; omit it or use 'persistent'.")
        )
    problems.extend(
        _reference_problems(
            references,
            image_to_image,
            MAX_EXT_REFERENCES if ext else MAX_REFERENCES,
            "image_urls" if ext else "input_urls",
        )
    )

    if callback_url is not None:
        problems.extend(_callback_problems(callback_url, callback_when, allow_loopback_http))
    return problems


def _route_problems(ext: bool, quality: object, background: object, resolution: object) -> list[Problem]:
    """Quality belongs to `ext` (and is required there); background to the default route at 1K."""
    out: list[Problem] = []
    if ext and quality is None:
        out.append(
            Problem(
                "quality",
                "Quality is required on the ext route: pick Draft, Standard or Final (low, medium or high).",
            )
        )
    elif ext and quality not in QUALITIES:
        out.append(Problem("quality", f"Quality {quality!r} is not supported; pick low, medium or high."))
    elif not ext and quality is not None:
        out.append(Problem("quality", "Quality needs the ext route; send route 'ext' or drop quality."))
    if background is None:
        return out
    if ext:
        out.append(
            Problem(
                "background", "Background cannot be set on the ext route; drop the quality or the background."
            )
        )
    elif background not in BACKGROUNDS:
        out.append(
            Problem(
                "background", f"Background {background!r} is not supported; pick auto, opaque or transparent."
            )
        )
    elif resolution != BACKGROUND_RESOLUTION:  # HiAPI refuses any background above 1K
        out.append(
            Problem(
                "background",
                f"A {background} background works only at 1K; switch the resolution to 1K "
                "or set the background back to Auto.",
            )
        )
    return out


def _reference_problems(
    references: object, image_to_image: bool, most: int = MAX_REFERENCES, wire_name: str = "input_urls"
) -> list[Problem]:
    if not image_to_image:
        if references is None or references == []:
            return []
        return [
            Problem(
                "references",
                "Reference images (input_urls) need the image-to-image model; remove them or "
                "use gpt-image-2/image-to-image.",
            )
        ]
    if not isinstance(references, list | tuple) or not 1 <= len(references) <= most:
        if not references:
            fix = "add at least one."
        elif isinstance(references, list | tuple):
            fix = f"remove {len(references) - most}."
        else:  # one URL or some other value where the list belongs
            fix = "give them as a list."
        return [
            Problem("references", f"Image-to-image needs 1-{most} reference image URLs ({wire_name}); {fix}")
        ]
    for url in references:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return [
                Problem(
                    "references",
                    f"Reference image {repr(url)[:80]} is not an http(s) URL; give a public image address.",
                )
            ]
    return []


def _callback_problems(url: object, when: object, allow_loopback_http: bool) -> list[Problem]:
    out: list[Problem] = []
    if not isinstance(url, str) or not url:
        return [Problem("callback.url", "Callback URL must be a non-empty https:// URL.")]
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return [Problem("callback.url", f"Callback URL {url!r} is not a valid URL; use https://host/path.")]
    if not host:
        out.append(Problem("callback.url", "Callback URL has no host; use https://host/path."))
    elif parts.scheme == "https":
        pass
    elif parts.scheme == "http" and allow_loopback_http and is_loopback_host(host):
        pass
    else:
        out.append(
            Problem("callback.url", "Callback URL must use https://; HiAPI refuses plain http callbacks.")
        )
    if when not in CALLBACK_WHEN:
        out.append(Problem("callback.when", f"Callback 'when' must be 'final' (got {when!r})."))
    return out


def first_problem_by_field(problems: list[Problem]) -> dict[str, str]:
    """Map each field to its first problem, for showing messages beside widgets."""
    out: dict[str, str] = {}
    for p in problems:
        out.setdefault(p.field, p.message)
    return out
