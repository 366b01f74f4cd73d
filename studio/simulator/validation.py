"""What the simulator accepts in a request, before anything reaches the engine.

A create body is checked by the studio's one validation function
(`studio.validation.validate_request`, loopback http callbacks allowed), so the
simulator refuses exactly what HiAPI's documented limits refuse; the checks
only the wire can fail (the model, the body's shape, where `callback` and the
references sit on each route) are here. Every problem is collected, none
raised: the HTTP layer answers them in one 400 INVALID_REQUEST.
"""

from __future__ import annotations

from typing import Any

from ..hiapi.models import IMAGE_TO_IMAGE_MODEL, TEXT_TO_IMAGE_MODEL
from ..ratios import EXT_ROUTE
from ..validation import validate_request

MAX_IDEMPOTENCY_KEY_BYTES = 255
MAX_BODY_BYTES = 1 << 20
DEFAULT_PAGE_SIZE = 10  # HiAPI's documented default
MAX_PAGE_SIZE = 100


def create_problems(body: dict[str, Any], models: frozenset[str]) -> tuple[list[str], dict[str, Any]]:
    """Every problem with a create body (messages), and the values it asks for."""
    messages: list[str] = []
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        messages.append(f"Model is required, e.g. {TEXT_TO_IMAGE_MODEL!r}.")
    elif models and model not in models:
        messages.append(f"Model {model[:100]!r} is not available; use one of {', '.join(sorted(models))}.")
    inp = body.get("input")
    if inp is None:
        inp = {}
    elif not isinstance(inp, dict):
        messages.append("'input' must be an object holding prompt, aspect_ratio and resolution.")
        inp = {}
    if "callback" in inp:
        messages.append("'callback' belongs at the top level of the request body, not inside 'input'.")
    ratio = inp.get("aspect_ratio")
    resolution = inp.get("resolution")
    route = body.get("route")
    urls_key = "image_urls" if route == EXT_ROUTE else "input_urls"  # what each route calls references
    if route == EXT_ROUTE and resolution is None:
        messages.append("'resolution' is required on the ext route: send 1K, 2K or 4K.")
    if route == EXT_ROUTE and "input_urls" in inp:
        messages.append("The ext route takes references as 'image_urls', not 'input_urls'.")
    values: dict[str, Any] = {
        "model": model,
        "prompt": inp.get("prompt"),
        "aspect_ratio": "auto" if ratio is None else ratio,
        "resolution": "1K" if resolution is None else resolution,
        "callback_url": None,
        "input_urls": tuple(u for u in inp.get(urls_key) or () if isinstance(u, str)),
        "quality": inp.get("quality"),
        "background": inp.get("background"),
    }
    callback_when: Any = "final"
    callback = body.get("callback")
    if callback is not None:
        if isinstance(callback, dict):
            url = callback.get("url")
            values["callback_url"] = "" if url is None else url
            callback_when = callback.get("when", "final")
        else:
            messages.append("'callback' must be an object {url, when}.")
    problems = validate_request(
        values["prompt"],
        values["aspect_ratio"],
        values["resolution"],
        values["callback_url"],
        callback_when,
        allow_loopback_http=True,
        image_to_image=model == IMAGE_TO_IMAGE_MODEL,
        references=inp.get(urls_key),
        route=route,
        quality=values["quality"],
        background=values["background"],
        storage=body.get("storage"),
    )
    messages.extend(p.message for p in problems)
    return messages, values


def query_int(qs: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return int(qs.get(name, [""])[-1])
    except ValueError:
        return default


def is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"
