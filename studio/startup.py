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
- `hold_data_lock`: one server per data folder. An exclusive `flock` on
  `<data>/.studio.lock`, held for the life of the process; a second process
  gets one sentence naming the first one's pid.
- `protect_data_dir`: the data folder and everything the studio writes in it
  are owner-only. The process umask becomes 0o077 (new folders 0700, new
  files 0600: database, WAL/SHM, images, thumbnails, exports, kits, token),
  and an existing folder, its sub-folders and database files lose any
  group/other bits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

from .repositories import DatabaseProblem
from .sqlite.probe import probe_database
from .validation import is_loopback_host

#: Default free-space floor; a 4K PNG is ~20 MB, a day's work a few hundred.
DEFAULT_MIN_FREE_MB = 200.0
#: How long to wait for another program's write lock before calling it locked.
LOCK_WAIT_S = 2.0
#: The data folder's lock file (see `hold_data_lock`).
LOCK_FILE = ".studio.lock"
#: What the studio writes: owner-only (group and other bits are cleared at start-up).
PRIVATE_UMASK = 0o077
_PRIVATE_DIRS = ("images", "exports", "kits")
_PRIVATE_FILES = ("studio.db", "studio.db-wal", "studio.db-shm", "callback-token", LOCK_FILE)
_held_locks: dict[Path, int] = {}


class StartupError(Exception):
    """The studio cannot start safely; `message` says why and what to do.

    `transient`: the cause is a server that does not answer yet (the database or the object
    store down or still starting), not a setting to fix, so trying again later may succeed:
    pages try again by themselves and a worker waits instead of exiting."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class DataFolderInUse(StartupError):
    """Another studio process holds the data folder's lock."""


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


def protect_data_dir(data_dir: Path) -> None:
    """Make new files owner-only (process umask 0o077) and tighten what already exists.

    Only group/other bits are removed; the owner's are left alone (a folder the
    owner may not write stays that way, so `check_data_dir` still says so).
    """
    os.umask(PRIVATE_UMASK)
    if not data_dir.is_dir():  # absent (made 0700 by check_data_dir), or not a folder (it says so)
        return
    dirs = [data_dir, *(data_dir / d for d in _PRIVATE_DIRS)]
    for path in dirs + [data_dir / f for f in _PRIVATE_FILES]:
        try:
            if path.is_dir() != (path in dirs):
                continue
            mode = path.stat().st_mode & 0o7777
            if mode & 0o077:
                path.chmod(mode & ~0o077)
        except OSError:  # absent, or not ours: nothing to tighten
            pass


def hold_data_lock(data_dir: Path, *, shared: bool = False) -> None:
    """Take the data folder's lock for the rest of this process (again: no-op).

    Exclusive for the all-in-one studio (STUDIO_ROLE=all), which therefore knows
    no other worker is alive and may take every claim over at start. Shared
    (`shared=True`) for web and worker processes, which claim their work with
    leases and so may run side by side on one folder. Raises DataFolderInUse
    when the two kinds meet.
    """
    key = data_dir.resolve()
    if key in _held_locks:
        return
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StartupError(
            f"The lock file {path} cannot be created ({_why(exc)}). "
            "Fix the data folder's permissions or point STUDIO_DATA_DIR elsewhere, and restart."
        ) from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as exc:
        other = (
            os.read(fd, 32).decode("ascii", "replace").strip()
            if exc.errno in (errno.EAGAIN, errno.EACCES)
            else ""
        )
        os.close(fd)
        who = f"process {other}" if other.isdigit() else "another process"
        raise DataFolderInUse(
            f"Another studio ({who}) is already running on the data folder {data_dir}; "
            "stop it, or point STUDIO_DATA_DIR at another folder, and restart."
            + (
                " (Web and worker processes may share a folder; an all-in-one studio, STUDIO_ROLE=all, may not.)"
                if shared
                else ""
            )
        ) from None
    if not shared:  # the holder's pid, for the message above; shared holders leave it be
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    _held_locks[key] = fd


def release_data_lock(data_dir: Path) -> None:
    """Let another process have the data folder (at shutdown)."""
    fd = _held_locks.pop(data_dir.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


def check_database(path: Path, *, lock_wait_s: float = LOCK_WAIT_S) -> None:
    """The database at `path` (if it exists) is readable, intact and not locked."""
    found = probe_database(path, lock_wait_s=lock_wait_s)
    if found is None:
        return
    problem, detail = found
    where = str(path)
    moved_aside = (
        f"Stop the studio, move {path.name} aside (your images in {path.parent / 'images'} are kept), "
        "and restart: a fresh database is created."
    )
    if problem == DatabaseProblem.LOCKED:
        raise _locked(where)
    if problem == DatabaseProblem.UNOPENABLE:
        raise StartupError(f"The database {where} cannot be opened ({detail}). {moved_aside}")
    if problem == DatabaseProblem.UNREADABLE:
        raise StartupError(f"The database {where} cannot be read ({detail}). {moved_aside}")
    if problem == DatabaseProblem.DAMAGED:
        raise StartupError(f"The database {where} is damaged ({detail}). {moved_aside}")
    raise StartupError(
        f"The database {where} cannot be written ({detail}). "
        "Fix the file's permissions or point STUDIO_DATA_DIR elsewhere, and restart."
    )


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


def _locked(where: str) -> StartupError:
    return StartupError(
        f"The database {where} is locked by another program (is another studio running on this "
        "data folder?). Close it and restart."
    )


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
