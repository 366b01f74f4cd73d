"""Typed views of HiAPI's payloads.

Each model parses tolerantly and keeps the raw payload: an unknown status or
an extra field is kept as-is, a malformed output item is skipped, and nothing
here raises on odd input from the server. Requests are built only from
validated values (see `validation.validate_request`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

TEXT_TO_IMAGE_MODEL = "gpt-image-2/text-to-image"
IMAGE_TO_IMAGE_MODEL = "gpt-image-2/image-to-image"
#: The model page's older "fixed value", kept by HiAPI as an alias of text-to-image.
LEGACY_MODEL = "gpt-image-2"
KNOWN_MODELS: tuple[str, ...] = (TEXT_TO_IMAGE_MODEL, IMAGE_TO_IMAGE_MODEL, LEGACY_MODEL)
DEFAULT_MODEL = TEXT_TO_IMAGE_MODEL
#: Usable output items taken from one task report. GPT Image 2 makes one image
#: per task; the headroom is for a few variants, while a report listing more (a
#: broken or hostile answer) is cut here, so it cannot start thousands of rows
#: and downloads. The rest are counted in `Task.refused_outputs`, never fetched.
MAX_OUTPUTS = 8


def model_for(model: str, *, image_to_image: bool) -> str:
    """The model ID to send for a request, from the configured one and the request's mode.

    HiAPI's known GPT Image 2 IDs follow the request: one with reference images
    goes to `gpt-image-2/image-to-image`, one without to text-to-image (the
    legacy `gpt-image-2` stays as it is for text). Any other name is the
    operator's explicit choice (`HIAPI_MODEL`) and is sent unchanged.
    """
    if model not in KNOWN_MODELS:
        return model
    if image_to_image:
        return IMAGE_TO_IMAGE_MODEL
    return TEXT_TO_IMAGE_MODEL if model == IMAGE_TO_IMAGE_MODEL else model


def unknown_model_message(model: str) -> str:
    """The one sentence shown when HiAPI does not know the configured model."""
    return (
        f"HiAPI does not know the model {model!r}: set HIAPI_MODEL to {TEXT_TO_IMAGE_MODEL!r} "
        "(or remove it to use the default), then generate again."
    )


MAX_STATUS_CHARS = 40  # documented statuses are short; an unknown one is shown and stored, so cap it


class TaskStatus:
    """Documented statuses. Anything else is carried as an unknown, non-terminal one."""

    QUEUED = "queued"
    HANDLING = "handling"
    ARCHIVING = "archiving"
    SUCCESS = "success"
    FAIL = "fail"

    KNOWN = (QUEUED, HANDLING, ARCHIVING, SUCCESS, FAIL)
    TERMINAL = (SUCCESS, FAIL)


def is_terminal(status: str | None) -> bool:
    return status in TaskStatus.TERMINAL


def _millis(value: Any) -> int:
    """A timestamp in milliseconds, or 0 when absent or beyond any real date (a 64-bit
    database column must be able to keep whatever this returns)."""
    n = _int(value)
    return n if 0 <= n < 10**15 else 0


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 1e15:
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except (ValueError, OverflowError):  # "inf", "1e400"
            return default
    return default


def _str(value: Any, default: str = "") -> str:
    if not isinstance(value, str):
        return default
    # JSON may carry "\ud800" escapes: lone surrogates cannot be stored or
    # shown, so they become U+FFFD and everything else is kept as sent.
    return _SURROGATE.sub("\ufffd", value)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


@dataclass(frozen=True)
class Callback:
    url: str
    when: str = "final"

    def to_dict(self) -> dict[str, str]:
        return {"url": self.url, "when": self.when}


@dataclass(frozen=True)
class TaskRequest:
    """What one Generate asks of HiAPI: a prompt, a ratio and a resolution.

    `callback` sits at the top level of the body, never inside `input`.
    `references` (public image URLs, sent as `input.input_urls`) make it an
    image-to-image request; the model sent follows from that (`model_for`).

    `quality` (low, medium, high) sends the request on HiAPI's `ext` route
    (top-level `route: "ext"`, `input.quality`; references go as
    `input.image_urls` there); None keeps the default route. `background`
    (default route, 1K) is sent as `input.background` only when set; `storage`
    ("persistent") is sent at the top level only when set.
    """

    prompt: str
    aspect_ratio: str = "auto"
    resolution: str = "1K"
    model: str = DEFAULT_MODEL
    callback: Callback | None = None
    references: tuple[str, ...] = ()
    quality: str | None = None
    background: str | None = None
    storage: str | None = None

    @property
    def image_to_image(self) -> bool:
        return bool(self.references)

    @property
    def route(self) -> str | None:
        """HiAPI's route for this request: "ext" when a quality is picked, else the default (None)."""
        return "ext" if self.quality is not None else None

    @property
    def wire_model(self) -> str:
        """The model ID this request is sent with."""
        return model_for(self.model, image_to_image=self.image_to_image)

    def to_body(self) -> dict[str, Any]:
        inp: dict[str, Any] = {
            "prompt": self.prompt,
            "aspect_ratio": self.aspect_ratio,
            "resolution": self.resolution,
        }
        if self.quality is not None:
            inp["quality"] = self.quality
        if self.background is not None:
            inp["background"] = self.background
        if self.references:
            inp["image_urls" if self.route == "ext" else "input_urls"] = list(self.references)
        body: dict[str, Any] = {"model": self.wire_model, "input": inp}
        if self.route is not None:
            body["route"] = self.route
        if self.storage is not None:
            body["storage"] = self.storage
        if self.callback is not None:
            body["callback"] = self.callback.to_dict()
        return body

    def problems(self, *, allow_loopback_http: bool = False) -> list:
        from ..validation import validate_request

        cb = self.callback
        return validate_request(
            self.prompt,
            self.aspect_ratio,
            self.resolution,
            cb.url if cb else None,
            cb.when if cb else "final",
            allow_loopback_http=allow_loopback_http,
            image_to_image=self.image_to_image,
            references=list(self.references) if self.references else None,
            route=self.route,
            quality=self.quality,
            background=self.background,
            storage=self.storage,
        )

    @classmethod
    def from_body(cls, body: Any) -> TaskRequest:
        """Best-effort parse of a create body; validate the raw body (the simulator does).

        The route follows from `quality`, so a body with `route: "ext"` and no
        quality comes back on the default route: check such bodies before parsing.
        """
        body = body if isinstance(body, dict) else {}
        inp = body.get("input") if isinstance(body.get("input"), dict) else {}
        cb = body.get("callback")
        callback = None
        if isinstance(cb, dict):
            callback = Callback(url=cb.get("url"), when=cb.get("when", "final"))  # type: ignore[arg-type]
        ext = body.get("route") == "ext"
        urls = inp.get("image_urls" if ext else "input_urls")
        quality = inp.get("quality")
        return cls(
            prompt=inp.get("prompt"),  # type: ignore[arg-type]
            aspect_ratio=inp.get("aspect_ratio", "auto"),
            resolution=inp.get("resolution", "1K"),
            model=body.get("model"),  # type: ignore[arg-type]
            callback=callback,
            references=tuple(urls) if isinstance(urls, list) else (),
            quality=quality if isinstance(quality, str) else None,
            background=inp.get("background"),
            storage=body.get("storage"),
        )


@dataclass(frozen=True)
class Output:
    """One result file. Its URL is temporary: download it at once."""

    url: str
    type: str = "image"
    expire_at: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, item: Any) -> Output | None:
        if not isinstance(item, dict):
            return None
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return None
        return cls(
            url=_str(url),
            type=_str(item.get("type"), "image"),
            expire_at=_int(item.get("expireAt")),
            raw=item,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "type": self.type, "expireAt": self.expire_at}


@dataclass(frozen=True)
class TaskFailure:
    """HiAPI's reason for a failed task, e.g. TASK_FAILED: upstream rejected the prompt."""

    code: str
    message: str

    @classmethod
    def parse(cls, value: Any) -> TaskFailure | None:
        if isinstance(value, dict):
            return cls(code=_str(value.get("code"), "UNKNOWN"), message=_str(value.get("message")))
        if isinstance(value, str) and value:
            return cls(code="UNKNOWN", message=value)
        return None

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


def capped_output_items(items: Any) -> tuple[list[Any], int]:
    """A report's output list cut after its `MAX_OUTPUTS`-th usable item, and how many usable ones follow.

    Malformed items are skipped, not counted; the list is returned as sent up to the cut.
    """
    if not isinstance(items, list):
        return [], 0
    usable = 0
    for i, item in enumerate(items):
        if Output.parse(item) is not None:
            usable += 1
            if usable == MAX_OUTPUTS:
                rest = items[i + 1 :]
                return items[: i + 1], sum(1 for r in rest if Output.parse(r) is not None)
    return items, 0


@dataclass(frozen=True)
class Task:
    """A task as `GET /v1/tasks/{taskId}` (or a callback) describes it."""

    task_id: str
    status: str
    model: str = ""
    created: int = 0
    completed: int = 0
    outputs: tuple[Output, ...] = ()
    error: TaskFailure | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: Output items past `MAX_OUTPUTS`, never read (the store records how many were refused).
    refused_outputs: int = 0

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.status)

    @property
    def is_known_status(self) -> bool:
        return self.status in TaskStatus.KNOWN

    @classmethod
    def parse(cls, data: Any) -> Task | None:
        """Parse a task object; None only if it has no usable taskId."""
        if not isinstance(data, dict):
            return None
        task_id = data.get("taskId")
        if not isinstance(task_id, str) or not task_id or _has_surrogate(task_id):
            return None
        items, refused = capped_output_items(data.get("output"))
        outputs = tuple(o for o in (Output.parse(i) for i in items) if o)
        return cls(
            task_id=task_id,
            status=(_str(data.get("status"), "unknown") or "unknown")[:MAX_STATUS_CHARS],
            model=_str(data.get("model")),
            created=_millis(data.get("created")),
            completed=_millis(data.get("completed")),
            outputs=outputs,
            error=TaskFailure.parse(data.get("error")),
            raw=data,
            refused_outputs=refused,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "taskId": self.task_id,
            "model": self.model,
            "status": self.status,
            "created": self.created,
            "completed": self.completed,
        }
        if self.outputs:
            d["output"] = [o.to_dict() for o in self.outputs]
        if self.error:
            d["error"] = self.error.to_dict()
        return d


@dataclass(frozen=True)
class TaskPage:
    """One page of `GET /v1/tasks`, newest first. The list shape is not documented,
    so the parser accepts a bare list or an object holding one."""

    tasks: tuple[Task, ...]
    page: int = 1
    size: int = 0
    total: int | None = None
    raw: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Any, page: int = 1, size: int = 0) -> TaskPage:
        items: Any = data
        total = None
        if isinstance(data, dict):
            for key in ("list", "items", "tasks", "records", "data"):
                if isinstance(data.get(key), list):
                    items = data[key]
                    break
            else:
                items = []
            total = _int(data.get("total"), 0) if "total" in data else None
            page = _int(data.get("page"), page) or page
            size = _int(data.get("size"), size) or size
        tasks = tuple(t for t in (Task.parse(i) for i in items) if t) if isinstance(items, list) else ()
        return cls(tasks=tasks, page=page, size=size, total=total, raw=data)


@dataclass(frozen=True)
class Created:
    """The answer to a create: the new (or replayed) task id."""

    task_id: str
    replayed: bool = False
    idempotency_key: str | None = None
