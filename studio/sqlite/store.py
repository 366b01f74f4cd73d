"""The studio's memory: one SQLite file (WAL) in the data folder, behind the repository Protocols.

`Store` is the facade the rest of the studio holds: it composes one adapter
module per aggregate, each a mixin over the shared `Database` plumbing, so one
object (one connection per thread, one write lock) satisfies every Protocol in
`studio/repositories.py`:

| aggregate | module | Protocol |
| --- | --- | --- |
| submissions, task reports, held callbacks | `submissions.py` | `SubmissionRepository` |
| claims and leases on work, the shared create budget | `claims.py` | `WorkClaimRepository` |
| outputs, trash | `outputs.py` | `OutputRepository`, `TrashRepository` |
| gallery queries and search, favourites, collections | `gallery.py` | `GalleryRepository`, `CollectionRepository` |
| text checks | `text_checks.py` | `TextCheckRepository` |
| campaigns, spend | `campaigns.py` | `CampaignRepository`, `SpendRepository` |
| prompt library | `library.py` | `TemplateRepository` |
| drafts | `drafts.py` | `DraftRepository` |
| app settings | `settings.py` | `SettingsRepository` |

Every table is created by `schema.py`'s numbered migrations, run when the
store opens (nothing runs for an up-to-date file). A file SQLite cannot use
raises `DatabaseUnusable` (`SchemaTooNew` when a newer studio wrote it). Each
module's docstring states the contract of its aggregate.
"""

from __future__ import annotations

from ..callbacks import CallbackOutcome  # the receiver's vocabulary; re-exported for the tracker
from ..records import (  # the records and states live there; re-exported so `from .store import …` keeps working
    NO_OUTPUT,
    OUTPUTS_REFUSED,
    TERMINAL_STATES,
    FidelityReport,
    GalleryItem,
    GalleryQuery,
    OutputRow,
    OutputState,
    SpendRate,
    StringCheck,
    Submission,
    TaskState,
    TextCheck,
    click_keys,
)
from .campaigns import CampaignRows
from .claims import WorkClaims
from .drafts import DraftRows
from .gallery import GalleryRows, fts_query
from .library import TemplateRows
from .outputs import TRASHED, OutputRows
from .schema import SCHEMA_VERSION
from .settings import SettingRows
from .submissions import (
    HELD_CALLBACK_TTL,
    REJECTED,
    SUBMITTING,
    SubmissionRows,
)
from .text_checks import TextCheckRows

__all__ = [
    "HELD_CALLBACK_TTL",
    "NO_OUTPUT",
    "OUTPUTS_REFUSED",
    "REJECTED",
    "SCHEMA_VERSION",
    "SUBMITTING",
    "TERMINAL_STATES",
    "TRASHED",
    "CallbackOutcome",
    "FidelityReport",
    "GalleryItem",
    "GalleryQuery",
    "OutputRow",
    "OutputState",
    "SpendRate",
    "Store",
    "StringCheck",
    "Submission",
    "TaskState",
    "TextCheck",
    "click_keys",
    "fts_query",
]


class Store(
    SubmissionRows,
    WorkClaims,
    OutputRows,
    GalleryRows,
    TextCheckRows,
    CampaignRows,
    TemplateRows,
    DraftRows,
    SettingRows,
):
    """Thread-safe access to the studio database (one connection per thread)."""
