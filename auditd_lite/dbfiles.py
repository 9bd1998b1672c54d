"""The database files of a directory: their names, their order, how they are opened read-only,
and the writer's lock (docs/design.md, "One owner for the database files").

Everything that names, lists, orders, opens or locks these files asks this module: the writer,
retention and free space, the chain tail, and every read command. Standard library only (the
analysis side imports it without the capture stack).
"""

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

from .errors import BadInput, CannotCapture
# a run's copies in the files and how readers merge them (runcopies.py): asked of this module too
from .runcopies import (RUN_COUNTERS, RUN_KEY, RUN_MERGE, STREAM_COUNTERS, merge_run, run_key,  # noqa: F401
                        run_merge_sql, run_rows)

DEFAULT_DB_DIR = Path("/var/lib/auditd-lite")
# the sealing state (auditd_lite/seal.py): beside the databases, in a directory of its own that
# no file listing here matches and retention never touches
DEFAULT_SEAL_DIR = DEFAULT_DB_DIR / "seal"
SEAL_STATE_NAME = "state"  # the one file in it
LIVE_NAME = "audit.db"
LOCK_NAME = "audit.lock"  # held by the one writer (lock_dir); daemon_running tests it
# the UTC second in every name the daemon gives a file, ISO basic format: names sort as time
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_STAMP = r"\d{8}T\d{6}Z"
# audit-<first UTC>-<last UTC>[-N].db: the times of the file's first and last record; -N for
# the N-th further file whose records fall in the same seconds
ROTATED_NAME = re.compile(rf"audit-({_STAMP})-({_STAMP})(?:-(\d+))?\.db")
# audit-damaged-<UTC>[-N].db.damaged: a live file the writer moved out of its way at that second
SET_ASIDE_NAME = re.compile(rf"audit-damaged-({_STAMP})(?:-(\d+))?\.db\.damaged")
# what SQLite keeps beside a database: moved with it
COMPANIONS = ("", "-wal", "-shm")
# the evidence is not world-readable; rotated files are never written again
DIR_MODE = 0o750
FILE_MODE = 0o640
ROTATED_MODE = 0o440


def stamp(ns: int) -> str:
    """The UTC second of ``ns`` as the names carry it."""
    return time.strftime(STAMP_FORMAT, time.gmtime(ns // 1_000_000_000))


def stamp_ns(text: str) -> int:
    """The start of the second a name's stamp gives, in UTC ns; ValueError if it is no date."""
    return calendar.timegm(time.strptime(text, STAMP_FORMAT)) * 10**9


def rotated_range(path) -> tuple[int, int] | None:
    """(first, last) UTC ns of a rotated file's records from its name, to the second; None if not one."""
    m = ROTATED_NAME.fullmatch(Path(path).name)
    if m is None:
        return None
    try:
        return stamp_ns(m[1]), stamp_ns(m[2]) + 10**9 - 1
    except ValueError:
        return None


def may_hold(path, since_ns: int | None, until_ns: int | None) -> bool:
    """Can ``path`` hold records of [since, until)? A rotated file's name says its range; any
    other file may hold anything."""
    rng = rotated_range(path)
    return rng is None or ((since_ns is None or rng[1] >= since_ns) and (until_ns is None or rng[0] < until_ns))


def file_order(path) -> tuple:
    """The sort key of rotated files, oldest first: the one order of the daemon's files.

    A newer file's records come after an older one's, so its first and last seconds are never
    earlier; files whose names give the same seconds are told apart by ``-N``, which
    rotated_path makes larger than that of any file of those seconds already there (no
    suffix counts as 0). Comparing names as text would put ``X-1.db`` before ``X.db``.
    """
    m = ROTATED_NAME.fullmatch(Path(path).name)
    return (m[1], m[2], int(m[3] or 0)) if m else (Path(path).name, "", 0)


def rotated_files(db_dir) -> list[Path]:
    """The rotated files of ``db_dir``, oldest first (file_order); files of other names are not."""
    found = [p for p in Path(db_dir).glob("audit-*.db") if ROTATED_NAME.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=file_order)


def is_rotated(path) -> bool:
    return ROTATED_NAME.fullmatch(Path(path).name) is not None


def is_set_aside(path) -> bool:
    return SET_ASIDE_NAME.fullmatch(Path(path).name) is not None


def age_order(path) -> tuple:
    """The sort key of rotated and set-aside files together, oldest first: by the second their
    last record was written (a rotated file's name says it, a set-aside file's the second it was
    set aside, after every record in it), a rotated file of the same second first. Among rotated
    files it is file_order's order: a newer file's seconds are never earlier."""
    m = ROTATED_NAME.fullmatch(Path(path).name)
    if m is not None:
        return (m[2], 0, m[1], int(m[3] or 0))
    m = SET_ASIDE_NAME.fullmatch(Path(path).name)
    if m is not None:
        return (m[1], 1, m[1], int(m[2] or 0))
    return (Path(path).name, 2, "", 0)


def chain_files(db_dir) -> list[Path]:
    """The rotated and set-aside files of ``db_dir``, oldest first (age_order): the files besides
    the live one that hold the chain, which every reader reads and retention removes."""
    return sorted(rotated_files(db_dir) + set_aside_files(db_dir), key=age_order)


def from_newest_older(db_dir, read, unreadable=None):
    """``read(query)`` on each rotated or set-aside file of ``db_dir``, newest first (chain_files),
    until one gives a result that is not None (``query(sql)`` returns its rows); ``unreadable(path,
    error)`` is told of a file SQLite cannot read, which is passed over. The writer's way to what
    an older file holds when the live one has none of it yet (the chain's position, the last
    seal)."""
    for path in reversed(chain_files(db_dir)):
        try:
            con = connect_ro(path)
            try:
                found = read(lambda sql: con.execute(sql).fetchall())
            finally:
                con.close()
        except sqlite3.DatabaseError as e:
            if unreadable is not None:
                unreadable(path, e)
            continue
        if found is not None:
            return found
    return None


def rotated_path(db_dir, first_ns: int, last_ns: int) -> Path:
    """The name for a file rotated now whose records run from ``first_ns`` to ``last_ns``.

    Never an existing name, and always after every file of the same seconds, also when an
    older one of them was deleted meanwhile: reusing a freed name would sort the newest file
    among the oldest, for retention to delete first.
    """
    first, last = stamp(first_ns), stamp(last_ns)
    taken = [file_order(p)[2] for p in rotated_files(db_dir) if file_order(p)[:2] == (first, last)]
    base = Path(db_dir) / f"audit-{first}-{last}"
    return Path(f"{base}.db") if not taken else Path(f"{base}-{max(taken) + 1}.db")


def _set_aside_order(path: Path) -> tuple:
    m = SET_ASIDE_NAME.fullmatch(path.name)
    return (m[1], int(m[2] or 0)) if m else (path.name, 0)


def set_aside_files(db_dir) -> list[Path]:
    """Live files the writer moved out of its way (set_aside), oldest first."""
    found = [p for p in Path(db_dir).glob("audit-damaged-*.db.damaged")
             if SET_ASIDE_NAME.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=_set_aside_order)


def set_aside_time_ns(path) -> int | None:
    """When a file was set aside, to the second, from its name; None if the name says no time."""
    m = SET_ASIDE_NAME.fullmatch(Path(path).name)
    try:
        return stamp_ns(m[1]) if m else None
    except ValueError:
        return None


def set_aside(db_dir) -> Path | None:
    """Move ``db_dir``'s live file (with its -wal and -shm) to a new audit-damaged-<now>[-N].db.damaged;
    None when there is no live file.

    A second file set aside within the same second gets the next -N: evidence is never
    overwritten (docs/design.md, "A live file that refuses a batch is set aside").
    """
    db_dir = Path(db_dir)
    live = db_dir / LIVE_NAME
    if not live.exists():
        return None
    now = stamp(time.time_ns())
    taken = [_set_aside_order(p)[1] for p in db_dir.glob(f"audit-damaged-{now}*.db.damaged")
             if SET_ASIDE_NAME.fullmatch(p.name)]
    target = db_dir / (f"audit-damaged-{now}.db.damaged" if not taken
                       else f"audit-damaged-{now}-{max(taken) + 1}.db.damaged")
    for suffix in COMPANIONS:
        src = Path(f"{live}{suffix}")
        if src.exists():
            os.replace(src, Path(f"{target}{suffix}"))
    return target


def lock_dir(db_dir) -> int:
    """Take the directory's writer lock (one writer per directory); returns the fd to keep open."""
    import fcntl  # here and in daemon_running only: the read side runs where there is no fcntl

    fd = os.open(Path(db_dir) / LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CannotCapture(f"another auditd-lite is already writing to {db_dir}") from None
    os.ftruncate(fd, 0)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # the pid is for people; the lock itself is the flock, and a full disk must not stop capture
    return fd


def ro_uri(path, immutable: bool = False) -> str:
    """The read-only URI of ``path`` for sqlite3.connect(uri=True) or ATTACH.

    Every read-only open goes through here: in a URI, '#', '?' and '%' in a directory's name
    would end the path or decode to other characters, and SQLite would open (and create)
    another file.
    """
    return ("file:" + quote(str(Path(path).absolute())) + "?mode=ro"
            + ("&immutable=1" if immutable else ""))


def connect_ro(path, immutable: bool = False) -> sqlite3.Connection:
    """A plain read-only sqlite3 connection to ``path`` (open_ro adds the checks and messages)."""
    return sqlite3.connect(ro_uri(path, immutable), uri=True)


def is_chain_file(path) -> bool:
    """Is this a name the daemon writes: the live file, a rotated one or one it set aside?"""
    name = Path(path).name
    return name == LIVE_NAME or is_rotated(name) or is_set_aside(name)


def set_aside_note(path) -> str:
    """How every command names a set-aside file it read (docs/design.md, "A live file that refuses
    a batch is set aside")."""
    at = set_aside_time_ns(path)
    when = f" at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at // 10**9))}" if at is not None else ""
    return f"{path}: a live file the writer set aside{when}, read with the others"


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
    """The files every reading command reads, newest first: ``audit.db``, then the rotated and
    set-aside files by age (age_order), then any other ``*.db``; of a file given by name, that
    file. A set-aside file SQLite does not find intact is left out, with a warning: it was set
    aside for that (docs/design.md, "Reading every file")."""
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
        files += set_aside_files(directory)
    except PermissionError:
        raise _no_access(directory) from None

    files = [p for p in files if _usable(p)]
    live = [p for p in files if p.name == LIVE_NAME]
    chained = sorted((p for p in files if is_rotated(p) or is_set_aside(p)), key=age_order, reverse=True)
    others = sorted((p for p in files if p not in live and p not in chained), key=lambda p: p.name, reverse=True)
    return live + chained + others


_warned: set[Path] = set()
# set-aside files found intact, by (path, size, mtime): they never change, and a command lists
# the files more than once (quick_check reads the whole file)
_intact: set[tuple] = set()


def _usable(path: Path) -> bool:
    """A corrupt or foreign file dropped into a database directory is skipped with one warning,
    so that it cannot make every read command fail; an unreadable one is still an error."""
    try:
        conn = open_ro(path)
        try:
            if is_set_aside(path):
                st = path.stat()
                seen = (path, st.st_size, st.st_mtime_ns)
                if seen not in _intact:
                    check = conn.execute("PRAGMA quick_check").fetchone()[0]
                    if check != "ok":
                        raise BadInput(f"a set-aside file SQLite does not find intact ({check}): not read")
                    _intact.add(seen)
        except sqlite3.DatabaseError as exc:
            raise BadInput(f"a set-aside file SQLite cannot read ({exc}): not read") from None
        finally:
            conn.close()
        return True
    except BadInput as exc:
        if _kind(path) is None:
            return False  # gone since it was listed (a rotation, retention): open_all lists again
        if "lacks read access" in str(exc):
            raise
        if path not in _warned:
            _warned.add(path)
            print(f"auditd-lite: warning: skipping {path}: {exc}", file=sys.stderr)
        return False


def _connect(path: Path, immutable: bool) -> tuple[sqlite3.Connection, bool]:
    """Connect and check for an ``events`` table; OperationalError if SQLite cannot read it."""
    conn = connect_ro(path, immutable)
    # kernel strings should already be valid UTF-8, but a hand-edited or
    # foreign file must not make a query fail
    conn.text_factory = lambda raw: raw.decode("utf-8", "backslashreplace")
    try:
        conn.execute("PRAGMA query_only = 1")
        found = has_table(conn, "events")
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
        conn = connect_ro(path)
        try:
            return has_table(conn, "events")
        finally:
            conn.close()
    except sqlite3.Error:
        return True


def _open_ro(path: Path) -> sqlite3.Connection:
    if _kind(path) != "file":
        raise BadInput(f"no such database file: {path}")
    if not os.access(path, os.R_OK):
        if _kind(path) is None:  # renamed or removed a moment ago, not closed to us
            raise BadInput(f"no such database file: {path}")
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


def needs_immutable(path) -> bool:
    """Whether a read-only open of ``path`` must use immutable=1 (a WAL file whose -shm we cannot create).

    Mirrors open_ro: tried only when a plain read-only open failed and no -wal file exists.
    """
    try:
        conn = connect_ro(path)
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
    be the new live file while its predecessor got a name we never listed, or
    a listed file may be gone by the time it is opened: the listing is taken
    again after opening (or after a failed open), and everything reopened if
    it changed. An open connection keeps reading its file after a rename.
    """
    for _ in range(attempts):
        paths = database_files(db_dir=db_dir, db_file=db_file)
        opened = []
        try:
            for path in paths:
                opened.append((path, open_ro(path)))
        except BaseException as exc:
            for _, conn in opened:
                conn.close()
            if isinstance(exc, BadInput) and db_file is None and database_files(db_dir=db_dir) != paths:
                continue  # renamed between the listing and its open: a rotation
            raise
        if db_file is not None or database_files(db_dir=db_dir) == paths:
            return opened
        for _, conn in opened:
            conn.close()
    raise BadInput(f"the files in {db_dir} keep changing (rotating?); try again")


def has_table(conn: sqlite3.Connection, name: str, schema: str = "main") -> bool:
    """Does the database ``schema`` (main, or an ATTACH alias) of ``conn`` have the table ``name``?"""
    return conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def revision_of(conn: sqlite3.Connection) -> str | None:
    """The schema revision a database file was written at (Alembic's ``version_num``); None when
    it has no Alembic table (an export or a foreign tool's copy may have none)."""
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except Exception:
        return None
    return row[0] if row else None


def file_is_export(conn: sqlite3.Connection, schema: str = "main") -> bool:
    """Is this file an export (auditd_lite.investigate.export) rather than one the daemon wrote? It carries a
    manifest table; every command that treats exports apart asks here."""
    return has_table(conn, "manifest", schema)
