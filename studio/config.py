"""Settings from the environment and Streamlit secrets (passed in as a mapping).

With no `HIAPI_API_KEY` the studio runs against its embedded simulator.
`HIAPI_MODEL` overrides the model (default `gpt-image-2/text-to-image`; a request
with reference images is sent to `gpt-image-2/image-to-image`, see
`models.model_for`). The key
is kept in `Settings.api_key`, which is excluded from repr so it never lands in
a log line or a page by accident.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import DEFAULT_MODEL
from .startup import DEFAULT_MIN_FREE_MB

DEFAULT_BASE_URL = "https://api.hiapi.ai"
#: STUDIO_ROLE: "web" serves pages and routes (no tracker), "worker" follows tasks
#: (no pages), "all" (the default, `make run`) does both in one process.
ROLES = ("web", "worker", "all")
PRICING_KEYS = (
    "STUDIO_PRICE_1K",
    "STUDIO_PRICE_2K",
    "STUDIO_PRICE_4K",
    *(f"STUDIO_PRICE_{r}_{q}" for q in ("LOW", "MEDIUM", "HIGH") for r in ("1K", "2K", "4K")),
    "STUDIO_CURRENCY",
    "STUDIO_CONFIRM_IMAGES",
    "STUDIO_CONFIRM_COST",
    "STUDIO_MAX_ACTIVE_TASKS",
)


def _pick(name: str, env: Mapping[str, str], secrets: Mapping[str, Any]) -> str | None:
    value = env.get(name)
    if value is None:
        value = secrets.get(name)
        if value is None and isinstance(secrets.get("hiapi"), Mapping):
            value = secrets["hiapi"].get(name.removeprefix("HIAPI_").lower())
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


@dataclass(frozen=True)
class Settings:
    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    data_dir: Path = Path("data")
    sim_min_duration: float = 3.0
    sim_max_duration: float = 8.0
    sim_fail_rate: float = 0.0
    callback_url: str | None = None
    callback_token: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    # Price table and pacing defaults (see pricing.py); Settings can override them.
    pricing_env: dict[str, str | None] = field(default_factory=dict, compare=False)
    min_free_mb: float = DEFAULT_MIN_FREE_MB
    allow_remote: bool = False
    # The studio's public base URL (https), where HiAPI fetches reference images from.
    public_url: str | None = None
    # What this process does (STUDIO_ROLE): see ROLES. Kept as written; `role_problem` refuses others.
    role: str = "all"

    @property
    def simulated(self) -> bool:
        """True when no API key is set: the studio talks to its own simulator."""
        return not self.api_key

    @property
    def role_problem(self) -> str | None:
        """Why STUDIO_ROLE cannot be used (with what to write instead), or None."""
        if self.role in ROLES:
            return None
        shown = self.role if len(self.role) <= 40 and self.role.isprintable() else self.role[:40] + "…"
        return (
            f"STUDIO_ROLE={shown!r} is not a role. Write STUDIO_ROLE=web (pages and routes, no tracker), "
            "STUDIO_ROLE=worker (the tracker, no pages: `python -m studio.worker`) or STUDIO_ROLE=all "
            "(both, the default), or leave it unset."
        )

    @property
    def mode(self) -> str:
        return "Simulator" if self.simulated else "HiAPI"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None) -> Settings:
        env = os.environ if env is None else env
        secrets = secrets or {}
        return cls(
            api_key=_pick("HIAPI_API_KEY", env, secrets),
            base_url=(_pick("HIAPI_BASE_URL", env, secrets) or DEFAULT_BASE_URL).rstrip("/"),
            model=_pick("HIAPI_MODEL", env, secrets) or DEFAULT_MODEL,
            data_dir=Path(_pick("STUDIO_DATA_DIR", env, secrets) or "data"),
            sim_min_duration=_float(_pick("STUDIO_SIM_MIN_DURATION", env, secrets), 3.0),
            sim_max_duration=_float(_pick("STUDIO_SIM_MAX_DURATION", env, secrets), 8.0),
            sim_fail_rate=_float(_pick("STUDIO_SIM_FAIL_RATE", env, secrets), 0.0),
            callback_url=_pick("HIAPI_CALLBACK_URL", env, secrets),
            callback_token=_pick("HIAPI_CALLBACK_TOKEN", env, secrets),
            webhook_secret=_pick("HIAPI_WEBHOOK_SECRET", env, secrets),
            pricing_env={name: _pick(name, env, secrets) for name in PRICING_KEYS},
            min_free_mb=_float(_pick("STUDIO_MIN_FREE_MB", env, secrets), DEFAULT_MIN_FREE_MB),
            allow_remote=(_pick("STUDIO_ALLOW_REMOTE", env, secrets) or "").lower() in ("1", "true", "yes"),
            public_url=(_pick("STUDIO_PUBLIC_URL", env, secrets) or "").rstrip("/") or None,
            role=(_pick("STUDIO_ROLE", env, secrets) or "all").lower(),
        )
