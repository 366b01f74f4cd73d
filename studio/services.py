"""Wiring: one set of services per server process.

`boot` is idempotent and thread-safe: the page layer (through
`st.cache_resource`) and the HTTP routes both get the same store, client and
tracker. With no API key it starts the embedded simulator and points the
client at it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from .campaign_store import ensure_schema as ensure_campaign_schema
from .client import HiAPIClient
from .config import Settings
from .images import ImageKeeper
from .library import Library
from .pricing import Pricing
from .pricing import defaults_from as pricing_defaults
from .pricing import load as load_pricing
from .store import Store
from .tracker import Tracker

log = logging.getLogger("studio.services")

SIMULATOR_KEY = "sk-simulator-local"
# The tracker schedules its own retries (honouring Retry-After), so one client
# call never holds a worker thread for long.
_TRACKER_RETRIES = {"max_retries": 1, "retry_after_cap": 10.0}


@dataclass
class Services:
    settings: Settings
    store: Store
    client: HiAPIClient
    keeper: ImageKeeper
    tracker: Tracker
    simulator: Any | None = None
    pricing_defaults: Pricing | None = None
    pricing_problems: list = field(default_factory=list)

    @property
    def pricing(self) -> Pricing:
        """Prices, confirmation rule and concurrency: Settings' saved values over env/secrets defaults."""
        return load_pricing(self.store, self.pricing_defaults or Pricing())

    @property
    def base_url(self) -> str:
        return self.simulator.base_url if self.simulator else self.settings.base_url

    def close(self) -> None:
        self.tracker.stop()
        self.client.close()
        self.keeper.close()
        if self.simulator:
            self.simulator.stop()


_lock = threading.Lock()
_current: Services | None = None


def current() -> Services | None:
    return _current


def boot(settings: Settings) -> Services:
    """Start (once per process) the store, client, image keeper and tracker."""
    global _current
    with _lock:
        if _current is not None:
            return _current
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        store = Store(data / "studio.db")
        keeper = ImageKeeper(data / "images", thumb_size=512)
        keeper.sweep_temp()  # a crash between download and rename leaves only a temp file
        simulator = None
        priors = None
        if settings.simulated:
            from .simulator import Simulator

            simulator = Simulator(
                host="127.0.0.1",
                port=0,
                min_duration=settings.sim_min_duration,
                max_duration=settings.sim_max_duration,
            ).start()
            if settings.sim_fail_rate:
                simulator.set_faults(fail_rate=settings.sim_fail_rate)
            mid = (settings.sim_min_duration + settings.sim_max_duration) / 2
            priors = {"1K": mid, "2K": mid, "4K": mid}
            client = HiAPIClient(
                SIMULATOR_KEY, base_url=simulator.base_url, model=settings.model, **_TRACKER_RETRIES
            )
        else:
            client = HiAPIClient(
                settings.api_key or "", base_url=settings.base_url, model=settings.model, **_TRACKER_RETRIES
            )
        ensure_campaign_schema(store)
        Library(store).seed_starters()
        defaults, problems = pricing_defaults(settings.pricing_env)
        max_active = load_pricing(store, defaults).max_active
        tracker = Tracker(store, client, keeper, priors=priors, max_active=max_active).start()
        _current = Services(settings, store, client, keeper, tracker, simulator, defaults, problems)
        log.info("studio services started in %s mode", settings.mode)
        return _current


def shutdown() -> None:
    global _current
    with _lock:
        if _current is not None:
            _current.close()
            _current = None
