"""Wiring: one set of services per server process.

`boot` is idempotent and thread-safe: the page layer (through
`st.cache_resource`) and the HTTP routes both get the same store, client and
tracker. With no API key it starts the embedded simulator and points the
client at it.

With `HIAPI_CALLBACK_URL` set, tasks are created with a callback to
`<base>/hiapi/callback/<token>` and `Services.callbacks` is the receiver the
server's route hands deliveries to. A setting that cannot work (plain http
towards HiAPI, a weak token) leaves the studio polling and says why in
`Services.callback_problems`, shown on the Settings page. In simulator mode
the simulator may call a plain-http loopback URL (the studio's own port) and
signs its callbacks with `HIAPI_WEBHOOK_SECRET`, so the whole path can be
tried locally.

Roles (`Settings.role`, STUDIO_ROLE): `all` (the default) builds everything,
holds the data folder alone and so takes over every claim left by its
previous run at once. `web` builds no tracker and no simulator: pages and
routes work, clicks are recorded for a worker to claim (`Services.intake`),
callbacks are verified and stored, and changes other processes commit reach
this process's event bus (`events.ChangeWatch`). `worker` runs the tracker and
the text-check backfill and serves nothing (`python -m studio.worker`). Web
and worker processes share the folder's lock; an all-in-one studio excludes
them.

Team mode (`DATABASE_URL=postgresql://…`): the store is `postgres.store.PgStore` and
replicas share nothing but the database and, with `STORAGE_URL=s3://…`, the bucket
(`blobstores.blob_store_for`). So the data folder is neither locked nor probed, an
all-in-one replica does not take over claims at start (other replicas hold live leases;
expired ones pass on by their lease), the callback token (HIAPI_CALLBACK_TOKEN) and the
reference signing key (STUDIO_SIGNING_KEY) come from configuration or, when unset, are
generated once into the database's settings (insert-if-absent, so replicas starting
together agree), and the event bus is `postgres.events.PgEventBus`: pages on every replica
hear what any replica's tracker did through LISTEN/NOTIFY.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import callbacks as cb
from . import errors as E
from . import events as ev
from .blob_keys import EXPORTS, KITS
from .blobs import BlobStore, BlobStoreUnavailable, LocalBlobStore
from .blobstores import blob_store_for
from .client import HiAPIClient
from .config import Settings, StorageKind
from .export import sweep_exports
from .fidelity import FidelityChecker, FidelityReport
from .health import Dependency, Health
from .images import ImageKeeper
from .intake import Intake, budget_key
from .kit import KitBuilder, sweep_kits
from .library import Library
from .pricing import Pricing
from .pricing import defaults_from as pricing_defaults
from .pricing import load as load_pricing
from .references import ReferenceShelf, load_or_create_key
from .repositories import DatabaseUnusable, Repositories, SchemaTooNew, StoreUnavailable
from .sqlite.store import Store
from .startup import (
    StartupError,
    check_data_dir,
    check_database,
    hold_data_lock,
    protect_data_dir,
    release_data_lock,
)
from .tracker import Tracker
from .trash import Trash
from .validation import is_loopback_host

log = logging.getLogger("studio.services")

#: The blob store's folder inside the data folder.
BLOB_FOLDER = "images"
#: Team mode keeps these generated secrets in the database's settings (see `_shared_secret`).
CALLBACK_TOKEN_SETTING = "callback_token"
SIGNING_KEY_SETTING = "reference_signing_key"
#: The shortest STUDIO_SIGNING_KEY accepted (characters).
MIN_SIGNING_KEY = 32

SIMULATOR_KEY = "sk-simulator-local"
# The tracker schedules its own retries (honouring Retry-After), so one client
# call never holds a worker thread for long.
_TRACKER_RETRIES: dict[str, Any] = {"max_retries": 1, "retry_after_cap": 10.0}


@dataclass
class Services:
    settings: Settings
    store: Repositories  # `sqlite.store.Store`, or `postgres.store.PgStore` in team mode
    client: HiAPIClient
    keeper: ImageKeeper
    tracker: Tracker | None  # None in the web role: a worker process follows the tasks
    simulator: Any | None = None
    pricing_defaults: Pricing | None = None
    pricing_problems: list = field(default_factory=list)
    fidelity: FidelityChecker | None = None
    references: ReferenceShelf | None = None

    callbacks: cb.CallbackReceiver | None = None
    callback_problems: tuple[str, ...] = ()
    trash: Trash | None = None  # Delete with an undo window; sweeps what is due in every role
    kits: KitBuilder | None = None  # delivery kits, built off the page thread
    web_intake: Intake | None = None  # the web role's intake (no tracker); see `intake`
    change_watch: ev.ChangeWatch | None = None  # web role: other processes' commits reach the bus
    shared_bus: Any | None = None  # team mode: the PgEventBus every replica's pages hear
    health: Health = field(default_factory=lambda: Health({}))  # team mode: the database and bucket checked
    _pricing_seen: Pricing | None = field(default=None, repr=False)

    @property
    def intake(self) -> Intake:
        """Where pages hand work in: the tracker (which is an intake), or the web role's bare intake."""
        if self.tracker is not None:
            return self.tracker
        if self.web_intake is None:
            self.web_intake = Intake(self.store)
        return self.web_intake

    @property
    def events(self) -> ev.EventBus:
        """The pages' push channel (the tracker's bus, or the web role's own)."""
        return self.intake.events

    @property
    def role(self) -> str:
        return self.settings.role

    @property
    def blobs(self) -> BlobStore:
        """The one blob store: originals, thumbnails, references, exports and kits."""
        return self.keeper.blobs

    @property
    def pricing(self) -> Pricing:
        """Prices, confirmation rule and concurrency: Settings' saved values over env/secrets defaults.

        While the database is away the last prices read are shown (the defaults if none were):
        a page can still say what an image costs, and no click is recorded meanwhile anyway."""
        try:
            return self.read_pricing()
        except StoreUnavailable:
            self.health.noticed(Dependency.DATABASE)
            return self._pricing_seen or self.pricing_defaults or Pricing()

    def read_pricing(self) -> Pricing:
        """The prices as saved now, for a click's quote: `StoreUnavailable` rather than old prices."""
        self._pricing_seen = load_pricing(self.store, self.pricing_defaults or Pricing())
        return self._pricing_seen

    def reference_base(self, studio_port: int | None) -> str | None:
        """Where HiAPI fetches reference images from: STUDIO_PUBLIC_URL, or (simulator
        only) the studio's own loopback address; None when real HiAPI has no way in."""
        if self.settings.public_url:
            return self.settings.public_url
        if self.settings.simulated and studio_port:
            return f"http://127.0.0.1:{int(studio_port)}"
        return None

    @property
    def base_url(self) -> str:
        return self.simulator.base_url if self.simulator else self.settings.base_url

    @property
    def callback_url_masked(self) -> str | None:
        """The callback URL tasks are created with, token hidden (None when polling)."""
        if self.callbacks is None or not self.settings.callback_url:
            return None
        return cb.masked_url(self.settings.callback_url)

    @property
    def callback_token_source(self) -> str | None:
        if self.callbacks is None:
            return None
        if self.settings.callback_token:
            return "HIAPI_CALLBACK_TOKEN"
        if self.settings.team:
            return "the database's settings"
        return str(self.settings.data_dir / cb.TOKEN_FILE)

    def close(self) -> None:
        self.health.stop()
        if self.kits:
            self.kits.close()
        if self.trash:
            self.trash.close()  # open undo windows stay in the database: a sweep anywhere purges them when due
        if self.change_watch:
            self.change_watch.stop()
        if self.tracker is not None:
            self.tracker.stop()
        if self.shared_bus is not None:
            self.shared_bus.stop()
        if self.fidelity:
            self.fidelity.close()
        self.client.close()
        self.keeper.close()
        if self.simulator:
            self.simulator.stop()
        if self.settings.team:
            self.store.close()  # the connection pool (SQLite's store closes with the process, as before)


_lock = threading.Lock()
_current: Services | None = None


def current() -> Services | None:
    return _current


def _shared_secret(settings: Settings, store: Repositories, key: str, make: str) -> str:
    """Team mode's generated secret under `key`: the one already in the database, else `make`
    stored now (the first replica's insert wins, every other replica reads it)."""
    assert settings.team
    return store.setting_once(key, make)


def _signing_key(settings: Settings, store: Repositories) -> bytes:
    """The reference signing key: STUDIO_SIGNING_KEY, the database's (team mode), or the data folder's file."""
    if settings.signing_key:
        if len(settings.signing_key) < MIN_SIGNING_KEY:
            raise StartupError(
                f"STUDIO_SIGNING_KEY is {len(settings.signing_key)} characters; use at least "
                f"{MIN_SIGNING_KEY} random ones (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`) "
                "or unset it."
            )
        return settings.signing_key.encode()
    if settings.team:
        return bytes.fromhex(_shared_secret(settings, store, SIGNING_KEY_SETTING, secrets.token_hex(32)))
    return load_or_create_key(settings.data_dir)


def _callback_plan(settings: Settings, store: Repositories) -> tuple[str | None, str | None, list[str]]:
    """(callback URL, token, problems) for the settings; no URL means polling."""
    problems: list[str] = []
    secret = settings.webhook_secret
    if secret is not None and not 16 <= len(secret) <= 256:
        problems.append(
            f"HIAPI_WEBHOOK_SECRET is {len(secret)} characters; HiAPI's console takes 16-256. "
            "Copy the signing key from the console again."
        )
    base = settings.callback_url
    if not base:
        return None, None, problems
    # Plain http only towards a simulator on this machine (embedded, or HIAPI_BASE_URL on loopback),
    # the same rule the client applies to the callback URL it sends.
    local = settings.simulated or is_loopback_host(urlsplit(settings.base_url).hostname)
    why = cb.base_url_problem(base, allow_loopback_http=local)
    if why is None:
        try:
            if settings.team and not settings.callback_token:
                token = _shared_secret(settings, store, CALLBACK_TOKEN_SETTING, secrets.token_urlsafe(32))
            else:
                token = cb.load_or_create_token(settings.data_dir, settings.callback_token)
        except (ValueError, OSError) as exc:
            why = str(exc)
        else:
            return cb.callback_url(base, token), token, problems
    problems.append(why + " Callbacks are off; the studio polls.")
    return None, None, problems


def boot(settings: Settings) -> Services:
    """Start (once per process) the store, client, image keeper and, as the role says, the tracker.

    Raises `StartupError` (nothing started) when STUDIO_ROLE is not a role, or
    the data folder, the disk or the database is unusable; a later call tries again.
    """
    global _current
    with _lock:
        if _current is not None:
            return _current
        problem = settings.role_problem
        if problem:
            raise StartupError(problem)
        works = settings.role in ("worker", "all")
        pages = settings.role in ("web", "all")
        # A server echoing a secret back (an error, an extra field) is redacted everywhere, logs included.
        E.remember_secret(settings.api_key)
        E.remember_secret(settings.webhook_secret)
        store, keeper = _open_data(settings)
        try:
            return _start(settings, store, keeper, works=works, pages=pages)
        except BaseException:
            keeper.close()
            store.close()
            raise


def _start(
    settings: Settings, store: Repositories, keeper: ImageKeeper, *, works: bool, pages: bool
) -> Services:
    """`boot` after the data is open (called under `_lock`)."""
    global _current
    if settings.role == "all" and not settings.team:
        # This process holds the folder's exclusive lock: no other worker is alive, so the
        # claims its previous run left (a crash) are taken over now, not after their lease.
        store.forget_claims()
    simulator = None
    priors = None
    callback_url, token, callback_problems = _callback_plan(settings, store)
    for problem in callback_problems:
        log.warning("%s", problem)
    key = settings.api_key or SIMULATOR_KEY
    if settings.simulated and works:
        from .simulator import Simulator

        secret = settings.webhook_secret
        simulator = Simulator(
            host="127.0.0.1",
            port=0,
            min_duration=settings.sim_min_duration,
            max_duration=settings.sim_max_duration,
            signing_key=secret if secret and 16 <= len(secret) <= 256 else None,
        ).start()
        if settings.sim_fail_rate:
            simulator.set_faults(fail_rate=settings.sim_fail_rate)
        mid = (settings.sim_min_duration + settings.sim_max_duration) / 2
        priors = {"1K": mid, "2K": mid, "4K": mid}
        base_url = simulator.base_url
    else:
        base_url = settings.base_url
    client = HiAPIClient(key, base_url=base_url, model=settings.model, **_TRACKER_RETRIES)
    # One create budget per HiAPI key (and endpoint), by hash: the database never holds the key.
    pacing = budget_key(key, settings.base_url if not settings.simulated else "simulator")
    Library(store).seed_starters()
    defaults, problems = pricing_defaults(settings.pricing_env)
    max_active = load_pricing(store, defaults).max_active
    # Every kept image with quoted text gets its text read back, off the page thread.
    fidelity = FidelityChecker(store, open_image=keeper.open_original)

    def check_text(output_id: int) -> None:
        fidelity.submit(output_id)  # False means already queued: nothing to do either way

    shared_bus = _shared_bus(settings) if settings.team else None
    tracker: Tracker | None = None
    web_intake: Intake | None = None
    intake: Intake
    if works:
        intake = tracker = Tracker(
            store,
            client,
            keeper,
            priors=priors,
            max_active=max_active,
            callback_url=callback_url,
            on_kept=check_text,
            pacing_key=pacing,
            events=shared_bus,
        ).start()
    else:
        intake = web_intake = Intake(
            store, callback_url=callback_url, pacing_key=pacing, max_active=max_active, events=shared_bus
        )

    # A recorded text check is news to the pages too (the queue shows ✓ / ✗).
    def news_of_check(output_id: int, _report: FidelityReport) -> None:
        intake.events.publish("checked", output_id=output_id)

    fidelity.on_checked = news_of_check
    if works:
        fidelity.backfill()  # images kept before a crash (or before this check existed); claimed
    shelf = ReferenceShelf(keeper.blobs, _signing_key(settings, store))
    try:
        _adopt_legacy_files(settings.data_dir, shelf)
    except OSError as exc:  # the references stay where they were; try again next start
        log.warning("could not move the old reference folder into the blob store: %s", exc)
    # Every role sweeps the deletions due (any replica's: the windows are in the database);
    # only pages delete and undo.
    trash = Trash(store, keeper).start()
    receiver = None
    if callback_url and token and pages:
        receiver = cb.CallbackReceiver(token, intake, secret=settings.webhook_secret)
    health = _health(settings, store, keeper.blobs)

    def outage_changed(down: tuple[Dependency, ...]) -> None:
        if tracker is not None:  # back (or newly down): the tracker's next round is now, not at its retry
            tracker.wake()
        if not down:  # pages reload what they show: they may have missed changes meanwhile
            intake.events.publish(ev.CHANGED)

    health.subscribe(outage_changed)
    watch = None
    if not works and shared_bus is None:  # the workers are other processes: their commits must reach this bus
        watch = ev.ChangeWatch(intake.events, store.data_version).start()
    _current = Services(
        settings,
        store,
        client,
        keeper,
        tracker,
        simulator,
        pricing_defaults=defaults,
        pricing_problems=problems,
        fidelity=fidelity,
        callbacks=receiver,
        callback_problems=tuple(callback_problems),
        trash=trash,
        kits=KitBuilder(keeper.blobs, events=intake.events) if pages else None,
        references=shelf,
        web_intake=web_intake,
        change_watch=watch,
        shared_bus=shared_bus,
        health=health.start(),
    )
    log.info("studio services started in %s mode, role %s, %s", settings.mode, settings.role, intake.mode)
    return _current


def _health(settings: Settings, store: Repositories, blobs: BlobStore) -> Health:
    """Team mode checks its database and bucket every 2 s (they are other machines); a local
    studio's SQLite file and image folder do not go away while it runs, so nothing is checked."""
    probes = {}
    if settings.team:
        probes[Dependency.DATABASE] = store.ping
    if settings.storage.kind is StorageKind.S3:
        probes[Dependency.STORAGE] = blobs.ping
    return Health(probes)


def _shared_bus(settings: Settings) -> Any:
    """Team mode's event bus: LISTEN/NOTIFY on the studio's database, listening before it returns."""
    from .postgres.events import bus_for

    return bus_for(settings.database)


def _open_store(settings: Settings) -> Repositories:
    """The database `settings.database` names, opened and migrated; StartupError otherwise
    (one sentence saying what to fix; a database written by a newer studio is refused on
    either adapter with the adapter's own `SchemaTooNew` sentence)."""
    data = settings.data_dir
    try:
        if settings.team:
            from .postgres.store import PgStore

            # DatabaseUnavailable (a StartupError) says what to fix, the password masked.
            return PgStore.open(settings.database)
        # One all-in-one studio per data folder, or any number of web and worker processes.
        hold_data_lock(data, shared=settings.role != "all")
        check_database(data / "studio.db")
        return Store(data / "studio.db")
    except SchemaTooNew as exc:  # written by a newer studio
        raise StartupError(str(exc)) from None
    except DatabaseUnusable as exc:  # the SQLite file: damaged, locked, not a database
        raise StartupError(
            f"The database {data / 'studio.db'} cannot be used ({exc}). "
            "Stop the studio, move it aside (your images are kept) and restart."
        ) from None


def _open_data(settings: Settings) -> tuple[Repositories, ImageKeeper]:
    """The store and image keeper, after the start-up checks; StartupError otherwise."""
    data = settings.data_dir
    protect_data_dir(data)  # first: the folder and files made below are owner-only
    check_data_dir(data, min_free_mb=settings.min_free_mb)
    store = _open_store(settings)
    s3 = settings.storage.kind is StorageKind.S3
    try:
        # Local: rooted at `images/`, where originals and thumbnails have always been, so an
        # existing data folder keeps every image where it is (`blob_keys`).
        blobs = blob_store_for(settings.storage) if s3 else LocalBlobStore(data / BLOB_FOLDER)
        keeper = ImageKeeper(blobs, thumb_size=512)
        keeper.sweep_temp()  # a crash between download and rename leaves only a temp file
        sweep_exports(blobs)  # one-off downloads whose links have expired
        sweep_kits(blobs)
        if s3:
            _expire_downloads(blobs)
    except OSError as exc:
        store.close()
        raise StartupError(
            f"The image folder {data / 'images'} cannot be used ({exc.strerror or exc}). "
            "Fix its permissions and restart."
        ) from None
    except Exception as exc:  # S3BlobError (names the bucket and S3's code, never a key) or botocore's
        store.close()
        if not s3:
            raise
        raise StartupError(
            f"The object store for {settings.storage.url!r} cannot be used ({_s3_reason(exc)}); check "
            "STORAGE_URL, S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and that the store is running.",
            transient=isinstance(exc, BlobStoreUnavailable),
        ) from None
    return store, keeper


#: Days after which the bucket itself deletes exports and kits, a backstop for the sweeps
#: (S3's lifecycle counts whole days; a link lives `EXPORT_LIFETIME_S`, an hour).
DOWNLOAD_EXPIRY_DAYS = 1


def _expire_downloads(blobs: BlobStore) -> None:
    """Ask the bucket to expire `exports/` and `kits/` after `DOWNLOAD_EXPIRY_DAYS` (a lifecycle
    rule), so one-off downloads go even while no studio runs. Never stops the start: a bucket
    that refuses (NotImplemented, AccessDenied) gets one log line, and the sweeps at start and
    at each new export or kit remove them as before."""
    from .blobstores.s3 import S3BlobStore

    if not isinstance(blobs, S3BlobStore):
        return
    try:
        wrote = blobs.expire_after((EXPORTS, KITS), days=DOWNLOAD_EXPIRY_DAYS)
    except Exception as exc:  # S3BlobError names S3's code; anything else only by its type
        log.warning(
            "The bucket %r keeps no expiry rule for exports and kits (%s); the studio's sweeps remove them.",
            blobs.bucket,
            _s3_reason(exc),
        )
        return
    if wrote:
        log.info(
            "The bucket %r now expires exports and kits after %d day(s).", blobs.bucket, DOWNLOAD_EXPIRY_DAYS
        )


def _s3_reason(exc: Exception) -> str:
    """A short reason for an object store failure, without anything botocore may quote."""
    from .blobstores.s3 import S3BlobError

    if isinstance(exc, S3BlobError):
        return str(exc)
    return type(exc).__name__


def _adopt_legacy_files(data: Path, shelf: ReferenceShelf) -> None:
    """Bring a data folder from before the blob store up to date: references kept
    in `references/` become blobs; the old export and kit folders (one-off links
    of at most an hour) are removed."""
    legacy = data / "references"
    if legacy.is_dir():
        moved = shelf.adopt_folder(legacy)
        if moved:
            log.info("moved %d reference images into the blob store", moved)
        with contextlib.suppress(OSError):
            legacy.rmdir()  # only when empty
    for old in ("exports", "kits"):
        if (data / old).is_dir():
            shutil.rmtree(data / old, ignore_errors=True)


def shutdown() -> None:
    global _current
    with _lock:
        if _current is not None:
            _current.close()
            if not _current.settings.team:
                release_data_lock(_current.settings.data_dir)
            _current = None
