"""The persistence seam: one Protocol per aggregate, and the errors any adapter raises.

Contract:
- Signatures speak records (`studio/records.py`), HiAPI's models and plain
  types; no connection, cursor or driver type ever crosses this seam, so a use
  case or a widget never learns which database is behind it.
- Every adapter (`studio/sqlite/` today) implements every Protocol here and
  passes `tests/contracts/test_repositories.py` unchanged.
- A write that must be atomic is one method: recording a click, a campaign
  launch, a create answer with the callback it outran.
- Driver errors stay inside the adapter: opening a database that cannot be
  used raises `DatabaseUnusable` (`SchemaTooNew` when a newer studio wrote it);
  a database server that stops answering while the studio runs (down, restarting,
  unreachable) makes any method raise `StoreUnavailable`, and the same call works
  again once it is back: nothing it was asked to write is half written.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol, runtime_checkable

from .models import Task, TaskRequest
from .records import (
    LOCAL_AUTHOR,
    Campaign,
    CampaignRow,
    CellView,
    CreateBudget,
    Deletion,
    FidelityReport,
    GalleryItem,
    GalleryQuery,
    NewCampaign,
    OutputRow,
    SpendLine,
    SpendRate,
    Submission,
    Template,
    TextCheck,
)


class DatabaseUnusable(Exception):
    """The database cannot be opened, read or written (damaged, locked, not a database)."""


class SchemaTooNew(DatabaseUnusable, RuntimeError):
    """The database was written by a newer studio; it is refused, never touched."""


class StoreUnavailable(Exception):
    """The database server cannot be reached right now (it was at start): try again later.

    The message names no URL or credential; `studio.health` turns it into the pages' one sentence."""


class NameTaken(ValueError):
    """A template name is taken by another template (names are unique ignoring case)."""


class DatabaseProblem(enum.StrEnum):
    """What the start-up look at a database file found wrong."""

    UNOPENABLE = "unopenable"
    LOCKED = "locked"  # another program holds it
    UNREADABLE = "unreadable"
    DAMAGED = "damaged"  # not a database, or failed its integrity check
    UNWRITABLE = "unwritable"


# ---------------------------------------------------------------------- submissions


@runtime_checkable
class SubmissionRepository(Protocol):
    """Requests recorded before they are sent, and what HiAPI answered about them.

    - A click is recorded at most once: `add_click` with a first key already
      stored writes nothing and returns the first recording's ids with False.
    - Task state is upserted by task id; terminal states are sticky; a stale
      report never moves a task back.
    - A callback for a task id not attached yet is held (`HELD`) while any
      submission waits for its create answer, and applied by `mark_created`.
    - Every submission (and its spend entry) records its `author`: the signed-in
      person with the team login on, `LOCAL_AUTHOR` ("local") without one.
    """

    def add_submission(
        self,
        request: TaskRequest,
        *,
        idempotency_key: str,
        creative_id: str,
        now: float | None = None,
        author: str = LOCAL_AUTHOR,
    ) -> int: ...

    def add_click(
        self,
        keyed: Sequence[tuple[TaskRequest, str]],
        *,
        creative_id: str,
        spend: SpendRate | None = None,
        now: float | None = None,
        author: str = LOCAL_AUTHOR,
    ) -> tuple[list[int], bool]: ...

    def mark_created(self, submission_id: int, task_id: str, *, now: float | None = None) -> bool: ...

    def note_attempt(self, submission_id: int, code: str, message: str) -> None: ...

    def note_problem(self, submission_id: int, code: str | None, message: str | None) -> None: ...

    def mark_rejected(
        self, submission_id: int, code: str, message: str, *, now: float | None = None
    ) -> None: ...

    def record_task(
        self,
        task: Task,
        *,
        source: str = "poll",
        now: float | None = None,
        finish_estimate: float | None = None,
    ) -> bool: ...

    def record_callback(self, task: Task, *, now: float | None = None) -> str: ...

    def held_callbacks(self) -> int: ...

    def submission(self, submission_id: int) -> Submission | None: ...

    def submission_by_task(self, task_id: str) -> Submission | None: ...

    def unfinished(self) -> list[Submission]: ...

    def recent(self, limit: int = 40, *, since: float | None = None) -> list[Submission]: ...

    def events(self, submission_id: int) -> list[tuple[str, float, str]]: ...

    def durations(self, resolution: str, limit: int = 50) -> list[float]: ...

    def counts(self) -> dict[str, int]: ...


# ---------------------------------------------------------------------- claims


@runtime_checkable
class LeaseRepository(Protocol):
    """Named leases guarding one-off jobs (the text-check backfill): one holder at a time."""

    def take_lease(self, name: str, holder: str, lease_s: float, now: float) -> bool: ...

    def release_lease(self, name: str, holder: str) -> None: ...


@runtime_checkable
class WorkClaimRepository(LeaseRepository, Protocol):
    """Work is claimed, not assumed: a claim with a lease on each submission and output;
    an expired lease is claimable by any worker; the create budget is shared per HiAPI key."""

    def claim_due_submissions(
        self, worker_id: str, lease_s: float, now: float, limit: int
    ) -> list[Submission]: ...

    def renew_submission_leases(
        self, worker_id: str, ids: Sequence[int], lease_s: float, now: float
    ) -> set[int]: ...

    def release_submissions(self, worker_id: str, ids: Sequence[int] | None = None) -> None: ...

    def begin_create(self, submission_id: int, now: float) -> bool: ...

    def in_flight_count(self) -> int: ...

    def claimed_by(self, submission_id: int) -> tuple[str | None, float | None]: ...

    def forget_claims(self) -> None: ...

    def claim_due_outputs(
        self, worker_id: str, lease_s: float, now: float, limit: int
    ) -> list[OutputRow]: ...

    def renew_output_leases(
        self, worker_id: str, ids: Sequence[int], lease_s: float, now: float
    ) -> set[int]: ...

    def release_outputs(self, worker_id: str, ids: Sequence[int] | None = None) -> None: ...

    def create_budget(self, key_hash: str, default_max_active: int) -> CreateBudget: ...

    def set_create_limit(self, key_hash: str, max_active: int, now: float) -> CreateBudget: ...

    def hold_creates(
        self, key_hash: str, until: float, default_max_active: int, now: float
    ) -> CreateBudget: ...

    def note_create_accepted(self, key_hash: str, now: float) -> CreateBudget | None: ...

    def data_version(self) -> int: ...


# ---------------------------------------------------------------------- outputs


@runtime_checkable
class OutputRepository(Protocol):
    """Each image of a successful task: pending until downloaded, then kept or failed.

    A failed try with `retry_at` stays pending (due again then); `retry_at=None` is final.
    """

    def outputs_for(self, submission_ids: Sequence[int]) -> dict[int, list[OutputRow]]: ...

    def output(self, output_id: int) -> OutputRow | None: ...

    def pending_outputs(self, now: float | None = None) -> list[OutputRow]: ...

    def next_output_due(self) -> float | None: ...

    def output_kept(
        self,
        output_id: int,
        *,
        sha256: str,
        width: int,
        height: int,
        nbytes: int,
        now: float | None = None,
    ) -> None: ...

    def output_failed(self, output_id: int, message: str, *, retry_at: float | None) -> None: ...


@runtime_checkable
class TrashRepository(Protocol):
    """Trash hides kept outputs under one deletion (a token and the second `purge_after`
    its undo window ends), kept in the database so every process agrees on it.

    - `trash_outputs` hides the kept ones of `output_ids` under `token` (returns those ids;
      no deletion is recorded when none was kept).
    - `restore_deletion(token, now)` puts all of a deletion's outputs back untouched while
      `now < purge_after`, and returns how many; 0 once the window passed or it was purged.
    - `purge_due(now)` deletes for good the outputs of every deletion due at `now`, and
      returns the content hashes no other output uses (the caller removes those blobs).
    - Undo and purge of one deletion exclude each other, also across processes: a deletion
      is either restored whole or purged whole, never half of each.
    - `delete_outputs` removes at once (no window), with the same hash rule."""

    def trash_outputs(
        self, output_ids: Sequence[int], *, token: str, purge_after: float, now: float | None = None
    ) -> list[int]: ...

    def deletion(self, token: str) -> Deletion | None: ...

    def restore_deletion(self, token: str, now: float) -> int: ...

    def purge_due(self, now: float) -> list[str]: ...

    def trashed_outputs(self) -> list[int]: ...

    def delete_outputs(self, output_ids: Sequence[int]) -> list[str]: ...


# ---------------------------------------------------------------------- gallery


@runtime_checkable
class GalleryRepository(Protocol):
    """Gallery pages, counts and prompt search (every word a prefix, accents ignored);
    `GalleryQuery.author` narrows to one person's generations (None: everyone's)."""

    def gallery_count(self, q: GalleryQuery) -> int: ...

    def gallery(
        self, q: GalleryQuery, *, limit: int = 24, offset: int = 0, count: bool = True
    ) -> tuple[list[GalleryItem], int]: ...

    def gallery_items(self, output_ids: Sequence[int]) -> list[GalleryItem]: ...

    def creative_items(self, creative_id: str) -> list[GalleryItem]: ...

    def authors(self) -> list[str]: ...


@runtime_checkable
class CollectionRepository(Protocol):
    """Favourites and named collections of outputs (names unique, adding twice is a no-op).
    Collections are shared by everyone; each records who made it first."""

    def set_favourite(self, output_id: int, on: bool) -> None: ...

    def collections(self) -> list[tuple[int, str, int]]: ...

    def add_collection(self, name: str, *, author: str = LOCAL_AUTHOR) -> int: ...

    def collection_author(self, collection_id: int) -> str | None: ...

    def add_to_collection(self, collection_id: int, output_ids: Sequence[int]) -> None: ...

    def output_collections(self, output_id: int) -> list[str]: ...


# ---------------------------------------------------------------------- text checks


@runtime_checkable
class TextCheckRepository(LeaseRepository, Protocol):
    """One text-fidelity result per kept image; a newer check replaces the older one
    (with the lease that lets one process run the backfill)."""

    def record_text_check(
        self, output_id: int, report: FidelityReport, *, now: float | None = None
    ) -> bool: ...

    def text_checks_for(self, output_ids: Sequence[int]) -> dict[int, TextCheck]: ...

    def text_check(self, output_id: int) -> TextCheck | None: ...

    def text_check_candidate(self, output_id: int) -> tuple[str, str] | None: ...

    def outputs_needing_text_check(
        self, *, redo_unavailable: bool = False, limit: int = 500
    ) -> list[int]: ...


# ---------------------------------------------------------------------- settings, drafts


@runtime_checkable
class SettingsRepository(Protocol):
    """App settings as text under a key."""

    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def delete_setting(self, key: str) -> None: ...

    def setting_once(self, key: str, value: str) -> str:
        """The value stored under `key`; when there is none, `value` is stored first, in one
        atomic insert-if-absent, so processes starting together all get the first writer's."""
        ...


@runtime_checkable
class DraftRepository(Protocol):
    """The unsent draft of each browser, as the JSON text it was saved as."""

    def draft_body(self, draft_id: str) -> str | None: ...

    def save_draft(
        self, draft_id: str, body: str, *, now: float, prune_before: float | None = None
    ) -> None: ...


# ---------------------------------------------------------------------- campaigns, spend

Cell = tuple[int, TaskRequest, str]  # (row, request, idempotency key)


@runtime_checkable
class CampaignRepository(Protocol):
    """Campaigns, their rows and cells; a launch (campaign, rows, cells, spend) is one
    atomic write, at most once per click (the first cell's key decides)."""

    def add_campaign(
        self, new: NewCampaign, *, unit_micros: int, currency: str, now: float | None = None
    ) -> int: ...

    def add_campaign_cells_once(
        self,
        campaign_id: int,
        cells: Sequence[Cell],
        *,
        unit_micros: int,
        currency: str,
        now: float | None = None,
        author: str = LOCAL_AUTHOR,
    ) -> tuple[list[int], bool]: ...

    def launch_campaign_once(
        self,
        new: NewCampaign,
        cells: Sequence[Cell],
        *,
        unit_micros: int,
        currency: str,
        now: float | None = None,
    ) -> tuple[int, list[int], bool]: ...

    def update_campaign_row(
        self, campaign_id: int, idx: int, values: dict[str, str], prompt: str
    ) -> None: ...

    def set_campaign_state(self, campaign_id: int, state: str) -> None: ...

    def cancel_campaign(
        self, campaign_id: int, *, message: str, keep: Sequence[int] = (), now: float | None = None
    ) -> list[int]: ...

    def campaign_gates(
        self, submission_ids: Sequence[int]
    ) -> dict[int, tuple[int, int | None, str | None]]: ...

    def campaign_submission_ids(self, campaign_id: int) -> list[int]: ...

    def campaign_cells(self, campaign_id: int) -> list[CellView]: ...

    def campaign(self, campaign_id: int) -> Campaign | None: ...

    def campaigns(self, limit: int = 50, *, author: str | None = None) -> list[Campaign]:
        """Newest first; only `author`'s campaigns when given (None: everyone's)."""
        ...

    def campaign_rows(self, campaign_id: int) -> list[CampaignRow]: ...

    def campaign_kept_items(self, campaign_id: int) -> list[tuple[int, GalleryItem]]: ...


@runtime_checkable
class SpendRepository(Protocol):
    """The spend ledger: one entry per priced submission, outliving deleted images, each with
    its author; `spend_lines(by="author")` is the spend per person."""

    def record_spend(
        self,
        submission_ids: Sequence[int],
        *,
        resolution: str,
        unit_micros: int,
        currency: str,
        now: float | None = None,
        author: str = LOCAL_AUTHOR,
    ) -> None: ...

    def spend_lines(self, by: str = "all", *, limit: int = 60) -> list[SpendLine]: ...

    def campaign_spend(self, campaign_id: int) -> tuple[Decimal, Decimal]: ...


@runtime_checkable
class CampaignBook(CampaignRepository, SpendRepository, Protocol):
    """What the campaign use cases need: campaigns and their spend."""


# ---------------------------------------------------------------------- library


@runtime_checkable
class TemplateRepository(Protocol):
    """Prompt-library templates, names unique ignoring case; a clash raises `NameTaken`
    unless `on_conflict` is "skip", "replace" or "rename"."""

    def has_starter(self, key: str) -> bool: ...

    def templates(self, query: str = "", *, limit: int = 500) -> list[Template]: ...

    def template(self, template_id: int) -> Template | None: ...

    def template_by_name(self, name: str) -> Template | None: ...

    def starter_templates(self) -> list[Template]: ...

    def save_template(
        self, t: Template, *, on_conflict: str | None = None, now: float | None = None
    ) -> Template: ...

    def delete_template(self, template_id: int) -> bool: ...


@runtime_checkable
class TemplateBook(TemplateRepository, SettingsRepository, Protocol):
    """What the library needs: templates, and a setting noting the starters were seeded."""


# ---------------------------------------------------------------------- all of them


@runtime_checkable
class Repositories(
    SubmissionRepository,
    WorkClaimRepository,
    OutputRepository,
    TrashRepository,
    GalleryRepository,
    CollectionRepository,
    TextCheckRepository,
    SettingsRepository,
    DraftRepository,
    CampaignBook,
    TemplateRepository,
    Protocol,
):
    """Every aggregate at once: what a database adapter's facade (`studio.sqlite.Store`) provides."""

    def schema_version(self) -> int: ...

    def ping(self) -> None:
        """Return when the database answers now; `StoreUnavailable` (within a few seconds) when not."""
        ...

    def close(self) -> None: ...
