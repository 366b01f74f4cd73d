"""Connections to PostgreSQL: one pool per process, opened from `DatabaseSettings`.

Contract:
- `open_pool` waits until the pool holds a working connection (or `timeout` passes) and
  raises `DatabaseUnavailable`, one sentence with the URL's password masked, when the
  server cannot be reached or refuses the login. psycopg's own message is kept only when
  it cannot carry the password (it never quotes the DSN); the exception has no cause
  attached, so a traceback shows nothing more.
- Connections come out of the pool in a transaction (psycopg's default): `with
  pool.connection() as conn:` commits on a clean exit and rolls back on an error.
"""

from __future__ import annotations

from typing import Any

from ..config import DatabaseKind, DatabaseSettings, mask_url
from ..startup import StartupError
from .db import is_outage


class DatabaseUnavailable(StartupError):
    """The PostgreSQL server cannot be reached or refuses the studio's login."""


def _reason(exc: Exception, secret: str | None) -> str:
    text = " ".join(str(exc).split())
    if secret and secret in text:
        text = text.replace(secret, "***")
    return text[:300] or type(exc).__name__


#: What libpq says when the server answered and turned the studio away: a setting to fix.
_LOGIN_REFUSED = ("authentication failed", "does not exist", "pg_hba.conf", "permission denied", "password")


def _refused_login(reason: str) -> bool:
    """Did the server answer and refuse (wrong user, password or database), rather than not answer?
    libpq reports both at connection time without an SQLSTATE, so its text tells them apart."""
    text = reason.lower()
    return any(marker in text for marker in _LOGIN_REFUSED)


def connection_options(*, timeout: float) -> dict[str, Any]:
    """libpq options for every studio connection: connecting gives up after `timeout`, and a
    server that stops answering without closing the socket (a failover, a dropped route) is
    noticed within about 10 s instead of TCP's minutes, by keepalives and a send timeout."""
    return {
        "connect_timeout": max(1, int(timeout)),
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 10_000,
    }


def open_pool(
    database: DatabaseSettings,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = 10.0,
    name: str = "studio",
) -> Any:
    """A psycopg_pool.ConnectionPool on `database` (PostgreSQL only), open and checked."""
    if database.kind is not DatabaseKind.POSTGRESQL:
        raise ValueError(f"open_pool needs a PostgreSQL database, not {database.kind.value}")
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool, PoolTimeout

    try:
        password = conninfo_to_dict(database.url).get("password")
    except psycopg.ProgrammingError:
        raise DatabaseUnavailable(
            f"DATABASE_URL {mask_url(database.url)!r} is not a connection string PostgreSQL understands; "
            "set it to postgresql://user:password@host:5432/database."
        ) from None
    secret = str(password) if password else None
    pool = ConnectionPool(
        database.url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        timeout=timeout,
        kwargs=connection_options(timeout=timeout),
        check=ConnectionPool.check_connection,
    )
    try:
        pool.open(wait=True, timeout=timeout)
        with pool.connection(timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except (PoolTimeout, psycopg.Error) as exc:
        pool.close()
        transient = True
        try:  # the pool's own error says only "timed out": ask once for the server's reason
            psycopg.connect(database.url, connect_timeout=max(1, int(timeout))).close()
            reason = _reason(exc, secret)
        except psycopg.Error as direct:
            reason = _reason(direct, secret)
            transient = is_outage(direct) and not _refused_login(reason)
        raise DatabaseUnavailable(
            f"The database at {database.safe_url} cannot be used ({reason}); check DATABASE_URL "
            "and that the server is running and accepts this user.",
            transient=transient,
        ) from None
    return pool
