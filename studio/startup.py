"""Start-up checks: refuse to run, with one clear sentence, when work could be lost.

Every check raises `StartupError`, whose message names the problem, the path
and what to do; callers print it (command line) or show it (page) without a
traceback. Nothing here imports streamlit.

- `check_data_dir`: the data folder can be created and written to, and the
  disk holding it has at least `min_free_mb` free (generating images that
  cannot be saved would spend money for nothing).
- `check_database`: the SQLite file is a database, passes `quick_check`, and
  no other program holds its write lock.
- `bind_problem`: with a real API key the server listens on loopback only,
  unless remote access is deliberately opted into or a login is configured.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

from .validation import is_loopback_host

#: Default free-space floor; a 4K PNG is ~20 MB, a day's work a few hundred.
DEFAULT_MIN_FREE_MB = 200.0
#: How long to wait for another program's write lock before calling it locked.
LOCK_WAIT_S = 2.0


class StartupError(Exception):
    """The studio cannot start safely; `message` says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_data_dir(data_dir: Path, *, min_free_mb: float = DEFAULT_MIN_FREE_MB) -> None:
    """Create `data_dir` if needed and prove it is writable and has room."""
    where = str(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StartupError(
            f"The data folder {where} is a file, not a folder. "
            "Point STUDIO_DATA_DIR at a folder (or move the file away) and restart."
        ) from None
    except OSError as exc:
        raise StartupError(
            f"The data folder {where} cannot be created ({_why(exc)}). "
            "Point STUDIO_DATA_DIR at a folder this user may write to, and restart."
        ) from None
    if not data_dir.is_dir():
        raise StartupError(
            f"The data folder {where} is not a folder. Point STUDIO_DATA_DIR at a folder and restart."
        )
    probe = data_dir / f".write-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StartupError(
                f"The disk holding the data folder {where} is full. Free some space and restart."
            ) from None
        raise StartupError(
            f"The data folder {where} is not writable ({_why(exc)}). "
            "Fix its permissions or point STUDIO_DATA_DIR elsewhere, and restart."
        ) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free_mb = shutil.disk_usage(data_dir).free / 2**20
    if free_mb < min_free_mb:
        raise StartupError(
            f"Only {free_mb:,.0f} MB are free on the disk holding the data folder {where}; "
            f"the studio needs at least {min_free_mb:,.0f} MB to keep the images it pays for. "
            "Free some space (or lower STUDIO_MIN_FREE_MB) and restart."
        )


def check_database(path: Path, *, lock_wait_s: float = LOCK_WAIT_S) -> None:
    """The database at `path` (if it exists) is readable, intact and not locked."""
    if not path.exists():
        return
    where = str(path)
    moved_aside = (
        f"Stop the studio, move {path.name} aside (your images in {path.parent / 'images'} are kept), "
        "and restart: a fresh database is created."
    )
    try:
        conn = sqlite3.connect(path, timeout=lock_wait_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise StartupError(f"The database {where} cannot be opened ({exc}). {moved_aside}") from None
    try:
        try:
            result = conn.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise _locked(where) from None
            raise StartupError(f"The database {where} cannot be read ({exc}). {moved_aside}") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            raise StartupError(f"The database {where} is damaged ({exc}). {moved_aside}") from None
        if not result or result[0] != "ok":
            detail = result[0] if result else "no answer"
            raise StartupError(f"The database {where} is damaged ({detail}). {moved_aside}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise _locked(where) from None
            raise StartupError(
                f"The database {where} cannot be written ({exc}). "
                "Fix the file's permissions or point STUDIO_DATA_DIR elsewhere, and restart."
            ) from None
    finally:
        conn.close()


def bind_problem(
    address: str | None, *, real_key: bool, allow_remote: bool, login_configured: bool
) -> str | None:
    """Why the server must not listen on `address`, or None when it may.

    Whoever can open the studio can spend the key's money: with a real key,
    only loopback addresses are allowed unless remote access is a deliberate
    choice (STUDIO_ALLOW_REMOTE=1) or a login gates every page and route.
    An empty address means Streamlit's default, every interface.
    """
    if not real_key or allow_remote or login_configured:
        return None
    if address and is_loopback_host(address.strip()):
        return None
    shown = address or "every network interface (no server.address set)"
    return (
        f"Refusing to listen on {shown} with a real HiAPI API key: anyone who can reach the studio "
        "could spend the key's money. Use --server.address 127.0.0.1 (what `make run` does), "
        "configure a login ([auth] in .streamlit/secrets.toml, see SECURITY.md), "
        "or set STUDIO_ALLOW_REMOTE=1 if the network is already protected."
    )


def _is_locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _locked(where: str) -> StartupError:
    return StartupError(
        f"The database {where} is locked by another program (is another studio running on this "
        "data folder?). Close it and restart."
    )


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
