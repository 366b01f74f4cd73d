"""The studio's memory on PostgreSQL (team mode), behind the same repository Protocols as
`studio/sqlite/store.py`.

`PgStore` is the facade the rest of the studio holds: one adapter module per aggregate,
each a mixin over the shared `PgDatabase` plumbing (one connection pool, a transaction
per write), so one object satisfies every Protocol in `studio/repositories.py` and passes
`tests/contracts/test_repositories.py` unchanged:

| aggregate | module | Protocol |
| --- | --- | --- |
| submissions, task reports, held callbacks | `submissions.py` | `SubmissionRepository` |
| claims and leases on work, the shared create budget | `claims.py` | `WorkClaimRepository` |
| outputs, trash | `outputs.py` | `OutputRepository`, `TrashRepository` |
| gallery queries and search, favourites, collections | `gallery.py` | `GalleryRepository`, `CollectionRepository` |
| text checks | `text_checks.py` | `TextCheckRepository` |
| campaigns, spend | `campaigns.py` | `CampaignRepository`, `SpendRepository` |
| prompt library | `library.py` | `TemplateRepository` |
| drafts, app settings | `settings.py` | `DraftRepository`, `SettingsRepository` |

Every table is created by `schema.py`'s migrations (numbered like SQLite's), run when the
store opens under an advisory lock, so replicas starting together migrate once. Where
SQLite relied on its single writer, each module states the row lock or advisory lock that
makes the same outcome hold for several replicas at once.
"""

from __future__ import annotations

from typing import Any

from ..config import DatabaseSettings
from .campaigns import PgCampaignRows
from .claims import PgWorkClaims
from .gallery import PgGalleryRows
from .library import PgTemplateRows
from .outputs import PgOutputRows
from .pool import connection_options, open_pool
from .settings import PgDraftRows, PgSettingRows
from .submissions import PgSubmissionRows
from .text_checks import PgTextCheckRows

__all__ = ["PgStore"]


class PgStore(
    PgSubmissionRows,
    PgWorkClaims,
    PgOutputRows,
    PgGalleryRows,
    PgTextCheckRows,
    PgCampaignRows,
    PgTemplateRows,
    PgDraftRows,
    PgSettingRows,
):
    """The studio database on a psycopg_pool.ConnectionPool (migrated when opened; `close`
    closes the pool). Safe to share between threads: each call borrows a pooled connection."""

    @classmethod
    def open(cls, database: DatabaseSettings, **pool_options: Any) -> PgStore:
        """A store on a new pool for `database` (`pool.open_pool`'s options and errors)."""
        pool = open_pool(database, **pool_options)

        def reopen() -> Any:  # after an outage: a fresh pool, or DatabaseUnavailable within seconds
            return open_pool(database, **{**pool_options, "timeout": 2.0})

        def connect() -> Any:  # `ping`'s own connection: the server asked directly, within seconds
            import psycopg

            return psycopg.connect(database.url, **connection_options(timeout=2.0))

        try:
            return cls(pool, reopen=reopen, connect=connect)
        except BaseException:
            pool.close()
            raise
