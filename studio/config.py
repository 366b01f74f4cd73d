"""Settings from the environment and Streamlit secrets (passed in as a mapping).

With no `HIAPI_API_KEY` the studio runs against its embedded simulator.
`HIAPI_MODEL` overrides the model (default `gpt-image-2/text-to-image`; a request
with reference images is sent to `gpt-image-2/image-to-image`, see
`models.model_for`). The key
is kept in `Settings.api_key`, which is excluded from repr so it never lands in
a log line or a page by accident.

Where the studio keeps its records and bytes (`Settings.database`, `Settings.storage`):
- `DATABASE_URL`: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (the default
  is `studio.db` in the data folder) or `postgresql://user:password@host:5432/database`.
- `STORAGE_URL`: `file:///absolute/folder` (the default is the data folder) or
  `s3://bucket/prefix`, with `S3_ENDPOINT_URL` for an S3-compatible store (R2, MinIO,
  SeaweedFS; AWS when unset) and the usual `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
  `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`); without keys boto3's own chain
  (a profile, an instance role) applies.
A URL the studio cannot use is a `ConfigError` from `Settings.load`: one sentence naming the
variable and what to put there. Passwords, secret keys and session tokens are masked (`***`)
in every message and repr.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .models import DEFAULT_MODEL
from .startup import DEFAULT_MIN_FREE_MB, StartupError

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


class ConfigError(StartupError):
    """A setting the studio cannot start with; `message` names the variable and the fix."""


class DatabaseKind(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class StorageKind(StrEnum):
    FILE = "file"
    S3 = "s3"


MASK = "***"
#: libpq keywords whose values are secrets when they appear in a URL's query.
_SECRET_PARAMS = ("password", "sslpassword")
_SECRET_QUERY = re.compile(r"(?i)\b(" + "|".join(_SECRET_PARAMS) + r")=([^&#]*)")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def mask_url(url: str) -> str:
    """`url` with the password of its user-info and any password=... query value as ***.

    Works on text that does not parse as a URL too (it is used in the messages that say a
    URL is wrong): the user-info ends at the last `@` before the query, so a password with
    an unescaped `@`, `/` or `:` is masked whole."""
    scheme, sep, tail = url.partition("://")
    if sep:
        before_query, q, query = tail.partition("?")
        if "@" in before_query:
            userinfo, _, rest = before_query.rpartition("@")
            user, colon, _password = userinfo.partition(":")
            before_query = f"{user}:{MASK}@{rest}" if colon else f"{userinfo}@{rest}"
        url = f"{scheme}{sep}{before_query}{q}{query}"
    return _SECRET_QUERY.sub(lambda m: f"{m.group(1)}={MASK}", url)


def _refuse(variable: str, value: str, reason: str, fix: str) -> ConfigError:
    """One sentence: the variable, its value masked (left out when it is not even a URL:
    it may be a pasted secret), why it cannot be used and what to set instead."""
    shown = f" {mask_url(value)!r}" if "://" in value else ""
    return ConfigError(f"{variable}{shown} cannot be used: {reason}; {fix}.")


_DATABASE_FIX = (
    "set it to sqlite:///path/to/studio.db (four slashes for an absolute path) or "
    "postgresql://user:password@host:5432/database, or unset it for studio.db in the data folder"
)
_STORAGE_FIX = (
    "set it to file:///absolute/folder or s3://bucket/prefix (with S3_ENDPOINT_URL for a store "
    "other than AWS), or unset it for the data folder"
)


@dataclass(frozen=True, repr=False)
class DatabaseSettings:
    """Which database the studio uses. `url` is the whole URL, password included: hand it
    to the driver only; `safe_url` (also the repr and str) has the password masked."""

    kind: DatabaseKind
    url: str
    path: Path | None = None  # SQLite's file

    @property
    def safe_url(self) -> str:
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"DatabaseSettings(kind={self.kind.value!r}, url={self.safe_url!r})"

    __str__ = __repr__

    @classmethod
    def parse(cls, value: str | None, data_dir: Path) -> DatabaseSettings:
        """`DATABASE_URL` (None: studio.db in the data folder) or ConfigError."""
        if value is None:
            path = data_dir / "studio.db"
            return cls(DatabaseKind.SQLITE, f"sqlite:///{path.as_posix()}", path)
        scheme, sep, rest = value.partition("://")
        scheme = scheme.lower()
        if not sep:
            raise _refuse("DATABASE_URL", value, "it is not a URL", _DATABASE_FIX)
        if scheme == "sqlite":
            if not rest.startswith("/") or rest.strip("/") == "" or "?" in rest or "#" in rest:
                raise _refuse(
                    "DATABASE_URL",
                    value,
                    "a SQLite URL is sqlite:/// and a file path, nothing else",
                    _DATABASE_FIX,
                )
            path = Path(rest[1:])
            if path.name in ("", ":memory:") or str(path).endswith("/"):
                raise _refuse("DATABASE_URL", value, "the studio keeps its records in a file", _DATABASE_FIX)
            return cls(DatabaseKind.SQLITE, value, path)
        if scheme in ("postgresql", "postgres"):
            try:
                parts = urlsplit(value)
                parts.port  # noqa: B018 (a port that is not a number raises here)
            except ValueError:
                raise _refuse(
                    "DATABASE_URL", value, "its host or port does not parse", _DATABASE_FIX
                ) from None
            query = dict(parse_qsl(parts.query))
            if not (parts.hostname or query.get("host")):
                raise _refuse("DATABASE_URL", value, "it names no host", _DATABASE_FIX)
            if not parts.path.strip("/") and not query.get("dbname"):
                raise _refuse("DATABASE_URL", value, "it names no database", _DATABASE_FIX)
            return cls(DatabaseKind.POSTGRESQL, value)
        reason = f"the studio speaks SQLite and PostgreSQL, not {scheme or 'an empty scheme'}"
        if scheme.startswith(("postgresql+", "sqlite+")):
            reason = "driver suffixes such as +psycopg are not needed"
        raise _refuse("DATABASE_URL", value, reason, _DATABASE_FIX)


@dataclass(frozen=True, repr=False)
class StorageSettings:
    """Where the studio keeps its bytes: a local folder or an S3 bucket under a prefix.
    The secret key and session token are never in the repr or str."""

    kind: StorageKind
    url: str
    root: Path | None = None  # the local folder
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None

    def __repr__(self) -> str:
        if self.kind is StorageKind.FILE:
            return f"StorageSettings(kind='file', root={str(self.root)!r})"
        keys = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" if self.access_key else "boto3's default chain"
        return (
            f"StorageSettings(kind='s3', bucket={self.bucket!r}, prefix={self.prefix!r}, "
            f"endpoint_url={self.endpoint_url!r}, region={self.region!r}, credentials={keys!r})"
        )

    __str__ = __repr__

    @classmethod
    def parse(cls, value: str | None, data_dir: Path, env: Mapping[str, str | None]) -> StorageSettings:
        """`STORAGE_URL` (None: the data folder) and, for s3://, the S3_ENDPOINT_URL and
        AWS_* variables in `env`; or ConfigError."""
        if value is None:
            return cls(StorageKind.FILE, data_dir.absolute().as_uri(), root=data_dir)
        scheme, sep, rest = value.partition("://")
        scheme = scheme.lower()
        if not sep:
            raise _refuse("STORAGE_URL", value, "it is not a URL", _STORAGE_FIX)
        if scheme == "file":
            host, _, path = rest.partition("/")
            if host not in ("", "localhost") or not path.strip("/") or "?" in rest or "#" in rest:
                raise _refuse(
                    "STORAGE_URL", value, "a file URL is file:// and an absolute folder", _STORAGE_FIX
                )
            return cls(StorageKind.FILE, value, root=Path("/" + path))
        if scheme != "s3":
            raise _refuse(
                "STORAGE_URL",
                value,
                f"the studio stores in a folder or S3, not {scheme or 'an empty scheme'}",
                _STORAGE_FIX,
            )
        bucket, _, prefix = rest.partition("/")
        if "@" in bucket:
            raise _refuse(
                "STORAGE_URL",
                value,
                "credentials do not belong in the URL",
                "put them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and set STORAGE_URL to s3://bucket/prefix",
            )
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise _refuse(
                "STORAGE_URL",
                value,
                "the bucket name is 3 to 63 lower-case letters, digits, dots or hyphens",
                _STORAGE_FIX,
            )
        prefix = prefix.strip("/")
        if (
            "?" in prefix
            or "#" in prefix
            or any(not _PREFIX_SEGMENT.fullmatch(s) for s in prefix.split("/") if prefix)
        ):
            raise _refuse(
                "STORAGE_URL",
                value,
                "the prefix is /-separated segments of letters, digits, dots, hyphens and underscores",
                _STORAGE_FIX,
            )
        if any(s in (".", "..") for s in prefix.split("/")):
            raise _refuse(
                "STORAGE_URL",
                value,
                "the prefix may not have a segment that is one or two dots",
                _STORAGE_FIX,
            )
        endpoint = env.get("S3_ENDPOINT_URL")
        if endpoint is not None:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
                raise _refuse(
                    "S3_ENDPOINT_URL",
                    endpoint,
                    "it is the store's http(s) address without credentials",
                    "set it to an address such as https://<account>.r2.cloudflarestorage.com or http://127.0.0.1:8333",
                )
            endpoint = endpoint.rstrip("/")
        access_key, secret_key = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if bool(access_key) != bool(secret_key):
            missing = "AWS_SECRET_ACCESS_KEY" if access_key else "AWS_ACCESS_KEY_ID"
            raise ConfigError(
                f"{missing} is not set while its partner is; set both AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or neither to use boto3's default credential chain."
            )
        return cls(
            StorageKind.S3,
            value,
            bucket=bucket,
            prefix=prefix,
            endpoint_url=endpoint,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            access_key=access_key,
            secret_key=secret_key,
            session_token=env.get("AWS_SESSION_TOKEN"),
        )


_STORAGE_ENV = (
    "S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


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
    # STUDIO_SIGNING_KEY: the reference-URL signing key replicas share (else the data folder's
    # file on SQLite, or one generated once into the PostgreSQL database).
    signing_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    # Price table and pacing defaults (see pricing.py); Settings can override them.
    pricing_env: dict[str, str | None] = field(default_factory=dict, compare=False)
    min_free_mb: float = DEFAULT_MIN_FREE_MB
    allow_remote: bool = False
    # The studio's public base URL (https), where HiAPI fetches reference images from.
    public_url: str | None = None
    # What this process does (STUDIO_ROLE): see ROLES. Kept as written; `role_problem` refuses others.
    role: str = "all"
    # None: derived from data_dir (studio.db and the data folder itself).
    database: DatabaseSettings = None  # type: ignore[assignment]
    storage: StorageSettings = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.database is None:
            object.__setattr__(self, "database", DatabaseSettings.parse(None, self.data_dir))
        if self.storage is None:
            object.__setattr__(self, "storage", StorageSettings.parse(None, self.data_dir, {}))

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
    def team(self) -> bool:
        """True on PostgreSQL: replicas may share the database, so nothing shared lives in the data folder."""
        return self.database.kind is DatabaseKind.POSTGRESQL

    @property
    def mode(self) -> str:
        return "Simulator" if self.simulated else "HiAPI"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None) -> Settings:
        env = os.environ if env is None else env
        secrets = secrets or {}
        data_dir = Path(_pick("STUDIO_DATA_DIR", env, secrets) or "data")
        storage_env = {name: _pick(name, env, secrets) for name in _STORAGE_ENV}
        return cls(
            api_key=_pick("HIAPI_API_KEY", env, secrets),
            base_url=(_pick("HIAPI_BASE_URL", env, secrets) or DEFAULT_BASE_URL).rstrip("/"),
            model=_pick("HIAPI_MODEL", env, secrets) or DEFAULT_MODEL,
            data_dir=data_dir,
            sim_min_duration=_float(_pick("STUDIO_SIM_MIN_DURATION", env, secrets), 3.0),
            sim_max_duration=_float(_pick("STUDIO_SIM_MAX_DURATION", env, secrets), 8.0),
            sim_fail_rate=_float(_pick("STUDIO_SIM_FAIL_RATE", env, secrets), 0.0),
            callback_url=_pick("HIAPI_CALLBACK_URL", env, secrets),
            callback_token=_pick("HIAPI_CALLBACK_TOKEN", env, secrets),
            signing_key=_pick("STUDIO_SIGNING_KEY", env, secrets),
            webhook_secret=_pick("HIAPI_WEBHOOK_SECRET", env, secrets),
            pricing_env={name: _pick(name, env, secrets) for name in PRICING_KEYS},
            min_free_mb=_float(_pick("STUDIO_MIN_FREE_MB", env, secrets), DEFAULT_MIN_FREE_MB),
            allow_remote=(_pick("STUDIO_ALLOW_REMOTE", env, secrets) or "").lower() in ("1", "true", "yes"),
            public_url=(_pick("STUDIO_PUBLIC_URL", env, secrets) or "").rstrip("/") or None,
            role=(_pick("STUDIO_ROLE", env, secrets) or "all").lower(),
            database=DatabaseSettings.parse(_pick("DATABASE_URL", env, secrets), data_dir),
            storage=StorageSettings.parse(_pick("STORAGE_URL", env, secrets), data_dir, storage_env),
        )
