"""Which database files a read command looks at, and how it opens them (read-only)."""

from __future__ import annotations

import grp
import os
import pwd
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from .errors import BadInput

DEFAULT_DB_DIR = Path("/var/lib/auditd-lite")
LIVE_NAME = "audit.db"


def _no_access(path: Path) -> BadInput:
    """The message for the usual case: the files belong to root and a group the user is not in."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = f"uid {os.geteuid()}"
    try:
        gid = path.stat().st_gid
        try:
            group = f"the group {grp.getgrgid(gid).gr_name}, which owns it"
        except KeyError:
            group = f"group {gid}, which owns it"
    except OSError:  # not even stat-able: a parent directory is closed too
        group = "the group owning it"
    return BadInput(f"cannot read {path}: user {user} lacks read access; run as root or as a member of {group}")


def _kind(path: Path) -> str | None:
    """'dir', 'file', 'other' or None if missing; BadInput if a parent directory is closed to us."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        raise _no_access(path) from None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def database_files(db_dir=None, db_file=None) -> list[Path]:
    """The files to search, newest first: ``audit.db``, then rotated files, then any other ``*.db``."""
    if db_dir is not None and db_file is not None:
        raise BadInput("give either --db-dir or --db, not both")
    if db_file is not None:
        path = Path(db_file)
        kind = _kind(path)
        if kind is None:
            raise BadInput(f"no such database file: {path}")
        if kind != "file":
            raise BadInput(f"not a file: {path}")
        if not os.access(path, os.R_OK):
            raise _no_access(path)
        return [path]

    directory = Path(db_dir) if db_dir is not None else DEFAULT_DB_DIR
    kind = _kind(directory)
    if kind is None:
        raise BadInput(f"no such database directory: {directory}")
    if kind != "dir":
        raise BadInput(f"not a directory: {directory}")
    # without search (x) permission the listing works but every stat fails,
    # which would silently look like an empty directory
    if not os.access(directory, os.R_OK | os.X_OK):
        raise _no_access(directory)
    try:
        files = [p for p in directory.glob("*.db") if p.is_file() and not p.name.startswith(".")]
    except PermissionError:
        raise _no_access(directory) from None

    live = [p for p in files if p.name == LIVE_NAME]
    # rotated names carry their UTC time range in ISO basic format, so the
    # name order is the time order
    rotated = sorted((p for p in files if p.name.startswith("audit-")), key=lambda p: p.name, reverse=True)
    others = sorted((p for p in files if p not in live and p not in rotated), key=lambda p: p.name, reverse=True)
    return live + rotated + others


def _connect(path: Path, immutable: bool) -> tuple[sqlite3.Connection, bool]:
    """Connect and check for an ``events`` table; OperationalError if SQLite cannot read it."""
    uri = "file:" + quote(str(path.absolute())) + "?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True)
    # kernel strings should already be valid UTF-8, but a hand-edited or
    # foreign file must not make a query fail
    conn.text_factory = lambda raw: raw.decode("utf-8", "backslashreplace")
    try:
        conn.execute("PRAGMA query_only = 1")
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        raise
    except sqlite3.DatabaseError:  # not SQLite at all
        found = None
    return conn, bool(found)


def open_ro(path) -> sqlite3.Connection:
    """A read-only connection to an auditd-lite database; BadInput if it is not one."""
    path = Path(path)
    if _kind(path) != "file":
        raise BadInput(f"no such database file: {path}")
    if not os.access(path, os.R_OK):
        raise _no_access(path)
    try:
        try:
            conn, found = _connect(path, immutable=False)
        except sqlite3.OperationalError:
            # A WAL-mode file without its -shm (a rotated file, or the live
            # one while the daemon is stopped) cannot be opened read-only by a
            # user who may not create the -shm. With no -wal file there is no
            # writer and no pending data, so reading it as immutable is exact.
            if Path(str(path) + "-wal").exists():
                raise
            conn, found = _connect(path, immutable=True)
    except sqlite3.Error as exc:
        raise BadInput(f"cannot open {path}: {exc}") from None
    if not found:
        conn.close()
        raise BadInput(f"not an auditd-lite database: {path}")
    return conn
