"""The studio's records and states: what the store and the campaign store hand out.

Contract:
- Every record is a frozen dataclass holding exactly what was read (or is about
  to be written); properties derive, never fetch.
- States are `enum.StrEnum`s: a member *is* its string, so values stored in
  SQLite, read back as plain `str`, compare equal to the members and old
  comparisons keep working. A record's `state` field stays typed `str` because a
  task can carry a status HiAPI added after us (stored as sent, never terminal).
- "Cancelled" is not a stored state: it is `TaskState.REJECTED` with error code
  `CANCELLED` (a campaign cell stopped before it was sent). `is_cancelled` is the
  one place that rule is written.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from .campaigns import variables
from .models import Callback, TaskRequest
from .pricing import from_micros


class TaskState(enum.StrEnum):
    """A submission's state: HiAPI's five statuses plus the studio's own two."""

    SUBMITTING = "submitting"  # written, POST not yet answered
    QUEUED = "queued"
    HANDLING = "handling"
    ARCHIVING = "archiving"
    SUCCESS = "success"
    FAIL = "fail"
    REJECTED = "rejected"  # HiAPI (or we) refused the request; never sent again


TERMINAL_STATES = (TaskState.SUCCESS, TaskState.FAIL, TaskState.REJECTED)

#: Who made a submission, campaign, collection or spend entry when there is no team login.
LOCAL_AUTHOR = "local"


class OutputState(enum.StrEnum):
    """One output file's state: waiting for its download, on disk, given up on, or deleted (undoable)."""

    PENDING = "pending"
    KEPT = "kept"
    FAILED = "failed"
    TRASHED = "trashed"  # deleted, still undoable (see studio/trash.py)


class CampaignState(enum.StrEnum):
    """A campaign's stored state (`finished` is derived from its progress, never stored)."""

    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"


class TextCheckState(enum.StrEnum):
    """The outcome of one image's text-fidelity check (see studio/fidelity.py)."""

    PASS = "pass"
    MISMATCH = "mismatch"
    UNAVAILABLE = "unavailable"
    ERROR = "error"


CANCELLED = "CANCELLED"  # error_code of a cell cancelled before it was sent
NO_OUTPUT = "NO_OUTPUT"  # error_code of a success that carried no usable image link
OUTPUTS_REFUSED = "outputs_refused"  # task event: a report listed more outputs than MAX_OUTPUTS


def is_cancelled(state: str, error_code: str | None) -> bool:
    """A cancelled submission: refused by us before it was sent (nothing created or billed)."""
    return state == TaskState.REJECTED and error_code == CANCELLED


def urls_from_json(text: str | None) -> tuple[str, ...]:
    """A stored JSON list of URLs (tolerant: anything else is no URLs)."""
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        return ()
    return tuple(u for u in value if isinstance(u, str)) if isinstance(value, list) else ()


# ---------------------------------------------------------------------- the store's records


@dataclass(frozen=True)
class Submission:
    id: int
    creative_id: str
    prompt: str
    aspect_ratio: str
    resolution: str
    model: str
    idempotency_key: str
    state: str  # a TaskState, or a status HiAPI sent that we do not know
    task_id: str | None
    error_code: str | None
    error_message: str | None
    created_at: float
    submitted_at: float | None
    finished_at: float | None
    remote_created: int | None
    remote_completed: int | None
    attempts: int
    finish_estimate: float | None = None
    callback_url: str | None = None
    input_urls: str | None = None  # JSON list of the reference URLs first sent (image-to-image)
    quality: str | None = None  # the `ext` route's quality; None = the default route
    background: str | None = None
    storage: str | None = None
    author: str = LOCAL_AUTHOR  # who asked for it: the signed-in person, or "local" without a login

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def cancelled(self) -> bool:
        return is_cancelled(self.state, self.error_code)

    @property
    def references(self) -> tuple[str, ...]:
        return urls_from_json(self.input_urls)

    @property
    def request(self) -> TaskRequest:
        """The request exactly as first sent (callback and references included), so a resend replays."""
        callback = Callback(self.callback_url) if self.callback_url else None
        return TaskRequest(
            self.prompt,
            self.aspect_ratio,
            self.resolution,
            self.model,
            callback,
            references=self.references,
            quality=self.quality,
            background=self.background,
            storage=self.storage,
        )

    def elapsed(self, now: float | None = None) -> float:
        end = self.finished_at if self.finished_at else (now or time.time())
        return max(0.0, end - self.created_at)


@dataclass(frozen=True)
class OutputRow:
    id: int
    submission_id: int
    idx: int
    url: str
    expire_at: int
    state: str  # an OutputState
    attempts: int
    next_try_at: float
    error: str | None
    sha256: str | None  # names the kept blobs (`blob_keys`); no path is stored
    width: int | None
    height: int | None
    bytes: int | None
    kept_at: float | None


@dataclass(frozen=True)
class Deletion:
    """One press of Delete: the outputs it hid (still trashed) and the wall-clock second
    `until` which Undo can put them back; after it any process may purge them."""

    token: str
    output_ids: tuple[int, ...]
    until: float  # the stored `purge_after`

    def left(self, now: float | None = None) -> float:
        return max(0.0, self.until - (time.time() if now is None else now))


@dataclass(frozen=True)
class GalleryItem:
    """One generation as the gallery shows it: a kept image with its recipe, or,
    under the "failed" filter, a task or download that failed, with the reason."""

    output_id: int | None
    submission_id: int
    creative_id: str
    prompt: str
    aspect_ratio: str
    resolution: str
    model: str
    task_id: str | None
    created_at: float
    sha256: str | None
    width: int | None
    height: int | None
    bytes: int | None
    url: str | None
    expire_at: int | None
    favourite: bool
    state: str = OutputState.KEPT  # kept | fail | rejected | download_failed | trashed
    quality: str | None = None  # the `ext` quality it was sent at; None = the default route
    background: str | None = None
    error: str | None = None
    input_urls: str | None = None  # JSON list: the reference URLs it was made from
    author: str = LOCAL_AUTHOR  # who made it

    @property
    def kept(self) -> bool:
        return self.state == OutputState.KEPT

    @property
    def references(self) -> tuple[str, ...]:
        return urls_from_json(self.input_urls)


@dataclass(frozen=True)
class GalleryQuery:
    """Filters for the gallery; every field optional."""

    text: str = ""
    ratios: tuple[str, ...] = ()
    resolutions: tuple[str, ...] = ()
    favourites_only: bool = False
    collection_id: int | None = None
    since: float | None = None
    until: float | None = None
    newest_first: bool = True
    status: str = "kept"  # kept | failed | all (in-flight work is in the Studio queue)
    text_mismatch: bool = False  # only images whose text check found a wanted string missing or misspelled
    author: str | None = None  # only this person's generations; None = everyone's


def click_keys(token: str, n: int) -> list[str]:
    """The idempotency keys of one click's `n` creates: derived from its token, so every
    recording or resend of the click carries the same keys (HiAPI replays, never re-bills)."""
    return [f"{token}-{i}" for i in range(n)]


@dataclass(frozen=True)
class SpendRate:
    """The price a click's images were sent at (one resolution, one unit price)."""

    resolution: str
    unit_micros: int
    currency: str


# ---------------------------------------------------------------------- text fidelity


@dataclass(frozen=True)
class StringCheck:
    """One wanted string and what the image showed for it."""

    wanted: str
    read: str  # the closest stretch of what was read, as read ("" when nothing was close)
    similarity: float  # 0..1 on folded text
    matched: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StringCheck:
        return cls(str(d["wanted"]), str(d.get("read", "")), float(d["similarity"]), bool(d["matched"]))


@dataclass(frozen=True)
class FidelityReport:
    """The outcome of checking one image."""

    state: str  # a TextCheckState
    checks: tuple[StringCheck, ...]
    read_text: str  # everything read, passes joined (for the record)
    engine: str
    seconds: float
    passes: int = 0
    message: str = ""

    @property
    def matched(self) -> int:
        return sum(c.matched for c in self.checks)


@dataclass(frozen=True)
class TextCheck:
    """The stored text-fidelity result of one image (see studio/fidelity.py)."""

    output_id: int
    state: str  # a TextCheckState
    checks: tuple[StringCheck, ...]
    read_text: str
    engine: str
    seconds: float
    passes: int
    message: str | None
    checked_at: float

    @property
    def matched(self) -> int:
        return sum(c.matched for c in self.checks)


# ---------------------------------------------------------------------- campaigns


@dataclass(frozen=True)
class Progress:
    """Counts over the newest submission of every cell."""

    total: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    left: int = 0
    held: int = 0  # left and never tried (what pause holds back)

    @property
    def finished(self) -> bool:
        return self.left == 0

    @classmethod
    def of(cls, cells: Sequence[CellView]) -> Progress:
        """The counts over `cells` (the newest submission of each)."""
        done = sum(c.state == TaskState.SUCCESS for c in cells)
        cancelled = sum(c.cancelled for c in cells)
        failed = sum(c.failed for c in cells)
        left = len(cells) - done - cancelled - failed
        held = sum(c.state == TaskState.SUBMITTING and c.attempts == 0 for c in cells)
        return cls(len(cells), done, failed, cancelled, left, held)


@dataclass(frozen=True)
class Campaign:
    id: int
    name: str
    template: str
    variables: tuple[str, ...]
    ratios: tuple[str, ...]
    resolution: str
    state: str  # a CampaignState
    unit_micros: int
    currency: str
    created_at: float
    progress: Progress
    author: str = LOCAL_AUTHOR

    @property
    def unit_price(self) -> Decimal:
        return from_micros(self.unit_micros)

    @property
    def status(self) -> str:
        """running | paused | cancelled | finished, as the user reads it."""
        if self.progress.finished:
            cancelled = self.state == CampaignState.CANCELLED and self.progress.cancelled
            return CampaignState.CANCELLED if cancelled else "finished"
        return self.state


@dataclass(frozen=True)
class NewCampaign:
    """A campaign about to be launched: its template, variables, ratios and rows (values, prompt)."""

    name: str
    template: str
    variables: tuple[str, ...]
    ratios: tuple[str, ...]
    resolution: str
    rows: tuple[tuple[dict[str, str], str], ...]
    author: str = LOCAL_AUTHOR  # who launches it; its cells and spend are recorded as theirs


@dataclass(frozen=True)
class CampaignRow:
    idx: int
    values: dict[str, str]
    prompt: str


@dataclass(frozen=True)
class CellView:
    """The newest submission of one (row, ratio) cell."""

    row: int
    aspect_ratio: str
    submission_id: int
    state: str  # a TaskState
    error_code: str | None
    error_message: str | None
    attempts: int
    task_id: str | None

    @property
    def failed(self) -> bool:
        # a HiAPI failure that happens to carry code CANCELLED is not ours: still not counted as failed
        return self.state in (TaskState.FAIL, TaskState.REJECTED) and self.error_code != CANCELLED

    @property
    def cancelled(self) -> bool:
        return is_cancelled(self.state, self.error_code)


@dataclass(frozen=True)
class SpendLine:
    key: str  # a day (YYYY-MM-DD), a campaign name, or "all"
    currency: str
    spent: Decimal
    images: int
    pending: Decimal
    pending_images: int


@dataclass(frozen=True)
class CreateBudget:
    """The create budget every worker on one HiAPI key shares (`Store.create_budget`).

    `hold_until`: no create is sent before this (a 429's Retry-After, seen by any
    worker). `pace`: how many campaign tasks may be at HiAPI at once right now,
    halved by each 429 and regrown by successful creates, never above `max_active`
    (the Settings limit).
    """

    hold_until: float
    pace: float
    max_active: int

    @property
    def limit(self) -> int:
        return max(1, min(self.max_active, int(self.pace)))


# ---------------------------------------------------------------------- library


@dataclass(frozen=True)
class Template:
    """One prompt-library entry. `rows` are sample values for the prompt's variables."""

    name: str
    prompt: str
    ratios: tuple[str, ...] = ("1:1",)
    resolution: str = "1K"
    note: str = ""
    rows: tuple[dict[str, str], ...] = field(default=())
    id: int | None = None
    starter: str | None = None
    updated_at: float = 0.0

    @property
    def variables(self) -> list[str]:
        return variables(self.prompt)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prompt": self.prompt,
            "ratios": list(self.ratios),
            "resolution": self.resolution,
            "note": self.note,
            "rows": [dict(r) for r in self.rows],
        }
