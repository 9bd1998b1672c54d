"""The live database as the batch writer holds it: its one read-write connection
(docs/design.md, "One writer connection"), the time range of its records, and the
steps of rotating it."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import structlog
from sqlalchemy.exc import DBAPIError

from .. import dbfiles
from . import store

# the writer's: these steps were its own, and the log keeps naming it
log = structlog.get_logger("auditd_lite.writer")


def storage_error(e: Exception) -> bool:
    """SQLITE_FULL or an I/O error (extended codes included): the disk, not the data, is the problem."""
    orig = getattr(e, "orig", e)
    code = (getattr(orig, "sqlite_errorcode", 0) or 0) & 0xFF
    return code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) or "disk is full" in str(orig)


def why(e: BaseException) -> str:
    return str(getattr(e, "orig", None) or e) or type(e).__name__


def live_is_damaged(path: Path) -> str | None:
    """Why ``path`` cannot serve as the live database, or None if it can."""
    if not path.exists():
        return None
    try:
        con = dbfiles.connect_ro(path)
        try:
            check = con.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        # only what the file says about itself is damage: an I/O error or a
        # full disk (no room for the -shm) says nothing about the file, and
        # moving a healthy live file aside for it would split the evidence
        if not storage_error(e):
            return str(e)
        log.warning("live_database_not_checked", path=str(path), error=str(e))
        return None
    if check != "ok":
        return f"integrity check: {check}"
    if tables and "events" not in tables:
        return "not an auditd-lite database"
    return None


class LiveFile:
    """``conn`` is None while the file is not open (a full disk, between a rotation's steps)."""

    def __init__(self, db_dir: Path, synchronous: str):
        self.db_dir = db_dir
        self.synchronous = synchronous
        self.wal_pages = store.WAL_CHECKPOINT_PAGES  # the batch writer's limits set it
        self.conn = None
        self._engine = None
        self.first_ns = self.last_ns = None  # of the records in it, for the rotated name
        self.opened = time.monotonic()

    @property
    def path(self) -> Path:
        return self.db_dir / dbfiles.LIVE_NAME

    def open(self) -> None:
        self._engine, self.conn = store.open_live(self.db_dir, self.synchronous, self.wal_pages)
        # two subqueries: min() and max() in one SELECT would read the whole index
        r = self.conn.exec_driver_sql("SELECT (SELECT min(time_ns) FROM events), "
                                      "(SELECT max(time_ns) FROM events)").fetchone()
        self.first_ns, self.last_ns = r
        self.conn.rollback()  # end the read so each batch can begin its own transaction
        self.opened = time.monotonic()

    def close(self) -> None:
        conn, engine, self.conn, self._engine = self.conn, self._engine, None, None
        try:
            if conn is not None:
                conn.close()
            if engine is not None:
                engine.dispose()
        except Exception as e:  # noqa: BLE001 - a file that failed a write may fail its close too
            log.warning("database_close_failed", error=why(e))

    def note_times(self, times: list[int]) -> None:
        lo, hi = min(times), max(times)
        self.first_ns = lo if self.first_ns is None else min(lo, self.first_ns)
        self.last_ns = hi if self.last_ns is None else max(hi, self.last_ns)

    def size_bytes(self) -> int:
        """The database's own size, wherever its pages are (file or WAL); 0 when it cannot say."""
        try:
            size = self.conn.exec_driver_sql(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()").scalar()
            self.conn.rollback()
        except DBAPIError as e:  # a file in trouble: the next batch tells, and sets it aside
            log.warning("rotation_check_failed", error=why(e))
            return 0
        return size

    def to_rollback_journal(self) -> str:
        """Checkpoint everything in and leave WAL: a rotated file is read by users who cannot
        create its -shm. Returns the journal mode now, "delete" unless it failed (a reader
        with the file open), in which case the file is back in WAL."""
        conn = self.conn
        try:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            mode = conn.exec_driver_sql("PRAGMA journal_mode=DELETE").scalar()
        except DBAPIError as e:
            mode = why(e)
        if mode != "delete":
            try:
                conn.rollback()
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                conn.rollback()
            except DBAPIError as e:
                log.warning("journal_mode_not_restored", error=why(e))
        return mode

    def close_as_rotated(self) -> Path:
        """Close, rename by the records' time range, make read-only; the rotated file's path."""
        self.close()
        target = dbfiles.rotated_path(self.db_dir, self.first_ns, self.last_ns)
        os.replace(self.path, target)
        os.chmod(target, dbfiles.ROTATED_MODE)
        return target
