"""Which database files a read command looks at, and how it opens them (read-only)."""

from __future__ import annotations

import calendar
import grp
import os
import pwd
import re
import sqlite3
import stat
import sys
import time
from pathlib import Path
from urllib.parse import quote

from .errors import BadInput

DEFAULT_DB_DIR = Path("/var/lib/auditd-lite")
LIVE_NAME = "audit.db"
LOCK_NAME = "audit.lock"  # held by the running daemon (auditd_lite.store.lock_dir)
# audit-<first UTC>-<last UTC>[-N].db: the times of the file's first and last record
ROTATED_NAME = re.compile(r"audit-(\d{8}T\d{6}Z)-(\d{8}T\d{6}Z)(?:-(\d+))?\.db")


def _stamp_ns(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")) * 10**9


def rotated_range(path) -> tuple[int, int] | None:
    """(first, last) UTC ns of a rotated file's records from its name, to the second; None if not one."""
    m = ROTATED_NAME.fullmatch(Path(path).name)
    if m is None:
        return None
    try:
        return _stamp_ns(m[1]), _stamp_ns(m[2]) + 10**9 - 1
    except ValueError:
        return None


def _rotated_key(path: Path) -> tuple:
    """Time order of rotated files; ``-N`` marks a later file whose range names the same seconds."""
    m = ROTATED_NAME.fullmatch(path.name)
    return (m[1], m[2], int(m[3] or 0)) if m else (path.name, "", 0)


def is_chain_file(path) -> bool:
    """Is this a name the daemon writes: the live file or a rotated one?"""
    name = Path(path).name
    return name == LIVE_NAME or ROTATED_NAME.fullmatch(name) is not None


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

    files = [p for p in files if _usable(p)]
    live = [p for p in files if p.name == LIVE_NAME]
    # rotated names carry their UTC time range in ISO basic format, so the
    # name order is the time order
    rotated = sorted((p for p in files if p.name.startswith("audit-")), key=_rotated_key, reverse=True)
    others = sorted((p for p in files if p not in live and p not in rotated), key=lambda p: p.name, reverse=True)
    return live + rotated + others


_warned: set[Path] = set()


def _usable(path: Path) -> bool:
    """A corrupt or foreign file dropped into a database directory is skipped with one warning,
    so that it cannot make every read command fail; an unreadable one is still an error."""
    try:
        open_ro(path).close()
        return True
    except BadInput as exc:
        if "lacks read access" in str(exc):
            raise
        if path not in _warned:
            _warned.add(path)
            print(f"auditd-lite: warning: skipping {path}: {exc}", file=sys.stderr)
        return False


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


LIVE_CREATION_WAIT_S = 2.0  # a rotation's new live file gets its tables within milliseconds


def open_ro(path) -> sqlite3.Connection:
    """A read-only connection to an auditd-lite database; BadInput if it is not one.

    The live file is created by a rotation a moment before its tables are: while it has no
    tables yet, it is waited for (briefly) rather than called a foreign file.
    """
    path = Path(path)
    deadline = time.monotonic() + LIVE_CREATION_WAIT_S
    while True:
        try:
            return _open_ro(path)
        except BadInput as exc:
            if (path.name != LIVE_NAME or not str(exc).startswith("not an auditd-lite database")
                    or time.monotonic() > deadline or _has_tables(path)):
                raise
        time.sleep(0.02)


def _has_tables(path: Path) -> bool:
    """Has the file its events table (or is it not SQLite at all, so waiting is pointless)?"""
    try:
        conn = sqlite3.connect(ro_uri(path), uri=True)
        try:
            return conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                "AND name = 'events'").fetchone()[0] > 0
        finally:
            conn.close()
    except sqlite3.Error:
        return True


def _open_ro(path: Path) -> sqlite3.Connection:
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


def ro_uri(path, immutable: bool = False) -> str:
    """The read-only URI of ``path`` for sqlite3.connect(uri=True) or ATTACH."""
    return ("file:" + quote(str(Path(path).absolute())) + "?mode=ro"
            + ("&immutable=1" if immutable else ""))


def needs_immutable(path) -> bool:
    """Whether a read-only open of ``path`` must use immutable=1 (a WAL file whose -shm we cannot create).

    Mirrors open_ro: tried only when a plain read-only open failed and no -wal file exists.
    """
    try:
        conn = sqlite3.connect(ro_uri(path), uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return False
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return not Path(str(path) + "-wal").exists()
    except sqlite3.DatabaseError:
        return False


def daemon_running(db_dir) -> bool | None:
    """True if a daemon holds the directory's lock, False if not, None if that cannot be told."""
    if db_dir is None:
        return None
    import fcntl

    try:
        fd = os.open(Path(db_dir) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)


def open_all(db_dir=None, db_file=None, attempts: int = 5) -> list[tuple[Path, sqlite3.Connection]]:
    """Read-only connections to every file, newest first, opened without missing a rotation.

    If the daemon rotates while the files are being opened, ``audit.db`` may
    be the new live file while its predecessor got a name we never listed:
    the listing is taken again after opening, and everything reopened if it
    changed. An open connection keeps reading its file after a rename.
    """
    for _ in range(attempts):
        paths = database_files(db_dir=db_dir, db_file=db_file)
        opened = []
        try:
            for path in paths:
                opened.append((path, open_ro(path)))
        except BaseException:
            for _, conn in opened:
                conn.close()
            raise
        if db_file is not None or database_files(db_dir=db_dir) == paths:
            return opened
        for _, conn in opened:
            conn.close()
    raise BadInput(f"the files in {db_dir} keep changing (rotating?); try again")


def file_is_export(conn: sqlite3.Connection) -> bool:
    """An export carries a manifest table."""
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'manifest'").fetchone() is not None
