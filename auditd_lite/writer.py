"""Writing records: the batch writer (storage) and the writer thread (the pipeline stage).

The batch writer owns the only read-write connection (docs/design.md, "One writer connection"):
it takes the directory lock, migrates, records the run, writes one
transaction per batch with its link in the hash chain, rotates between
batches, holds records in memory while the disk is full, and writes a batch
the live file refuses in a new file (docs/design.md, "A live file that
refuses a batch is set aside").
"""

from __future__ import annotations

import gc
import json
import operator
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

import structlog
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError

from . import __version__, chain, dbfiles, hostinfo, rotation, store
from .collector import STOP, Handover
from .config import RunSettings
from .records import ROW_FIELDS, Decoder
from .rotation import RotationPolicy
from .schema import Batch, Event, Run, SeenProcess

log = structlog.get_logger("auditd_lite.writer")

assert chain.EVENT_COLUMNS == ("id", "run_id", "batch_id") + ROW_FIELDS
# Core on the hot path, at driver level: one executemany per record type and
# batch, with tuples in column order; the ORM's unit of work has no place
# here. Binding a parameter costs the sqlite3 module more than SQLite's own
# insert, so each record type binds only the columns it can fill: an exit
# leaves the exec columns NULL and the reverse, exactly what binding None
# stored (the hash chain reads the same row back). A multi-row VALUES
# statement measured only ~2-6% faster whole-process: not worth its
# statement-cache memory.
EXIT_ONLY = ("status", "exit_code", "signal", "core_dumped", "duration_ns")
EXEC_ONLY = ("old_pid", "euid", "auid", "sessionid", "cgroup_id", "filename", "argv", "argc",
             "args_truncated", "errno")


def _insert_for(omit: tuple[str, ...]) -> tuple[str, Callable[[tuple], tuple]]:
    """The INSERT binding every column but ``omit``, and the getter picking those values from a row."""
    keep = [i for i, c in enumerate(chain.EVENT_COLUMNS) if c not in omit]
    names = ", ".join(chain.EVENT_COLUMNS[i] for i in keep)
    sql = f"INSERT INTO {Event.__tablename__} ({names}) VALUES ({', '.join('?' * len(keep))})"
    return sql, operator.itemgetter(*keep)


INSERT_EXEC, _EXEC_VALUES = _insert_for(EXIT_ONLY)
INSERT_EXIT, _EXIT_VALUES = _insert_for(EXEC_ONLY)
_EVENT = chain.EVENT_COLUMNS.index("event")
INSERT_BATCH = (f"INSERT INTO {Batch.__tablename__} ({', '.join(chain.BATCH_HEADER)}, prev_hash, hash) "
                f"VALUES ({', '.join('?' * (len(chain.BATCH_HEADER) + 2))})")
COUNT_RUN = (f"UPDATE {Run.__tablename__} SET events_written = events_written + ?, "
             "lost_kernel = lost_kernel + ?, lost_user = lost_user + ? WHERE id = ?")
RETRY_S = 1.0  # how often a full disk is tried again

DEFAULT_BATCH = RunSettings.batch_size


def settle_gc() -> None:
    """Garbage-collector settings for the record path, once everything is loaded.

    Every record makes a few tuples, each of which counts towards a young
    collection (every 700 by default), and the loaded libraries leave
    hundreds of thousands of long-lived objects for the older ones to walk:
    that was about 4% of the writer's instructions. Freezing what start-up
    loaded and collecting less often costs little memory, since records
    form no cycles.
    """
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


__all__ = ["BatchWriter", "Writer", "Attached", "Seeds"]


def _storage_error(e: Exception) -> bool:
    """SQLITE_FULL or an I/O error (extended codes included): the disk, not the data, is the problem."""
    orig = getattr(e, "orig", e)
    code = (getattr(orig, "sqlite_errorcode", 0) or 0) & 0xFF
    return code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) or "disk is full" in str(orig)


def _why(e: BaseException) -> str:
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
        if not _storage_error(e):
            return str(e)
        log.warning("live_database_not_checked", path=str(path), error=str(e))
        return None
    if check != "ok":
        return f"integrity check: {check}"
    if tables and "events" not in tables:
        return "not an auditd-lite database"
    return None


def _tail(query: Callable[[str], list]) -> tuple[int | None, str | None, int]:
    """(highest batch id or None, hash of the last hashed batch or None, highest event id or 0)
    of one file; ``query`` runs a statement on it. Ids count whether or not a batch has a hash:
    the first release wrote none, and the next batch must still follow its batches."""
    columns = {r[1] for r in query("PRAGMA table_info(batches)")}
    top_batch, top_event = query(
        "SELECT (SELECT max(id) FROM batches), max((SELECT coalesce(max(id), 0) FROM events), "
        "(SELECT coalesce(max(last_event_id), 0) FROM batches))")[0]
    last_hash = None
    if "hash" in columns:
        row = query("SELECT hash FROM batches WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1")
        last_hash = row[0][0] if row else None
    return top_batch, last_hash, top_event


class BatchWriter:
    def __init__(self, db_dir: Path, run_settings: dict, batch_size: int = DEFAULT_BATCH,
                 synchronous: str = "NORMAL", rotation: RotationPolicy = RotationPolicy(),
                 hold_limit: int = 200_000):
        self.db_dir = Path(db_dir)
        self.run_settings = run_settings
        self.batch_size = batch_size
        self.synchronous = synchronous
        self.rotation = rotation
        self.hold_limit = hold_limit
        self.run_id = None
        self.events_written = 0
        self.lost_kernel = 0  # as recorded in batches
        self.lost_user = 0  # records dropped because the disk stayed full too long
        self._lost_kernel_pending = 0
        self._lost_user_pending = 0
        self._held: list[tuple] = []
        self._disk_full_since: float | None = None
        self._next_retry = 0.0
        self._conn = None
        self._engine = None
        self._rotate_after = 0.0
        self._lock_fd = None
        self._run_row: dict = {}
        self._seeds: list[dict] = []  # seen processes waiting for the run to reach the file
        self._chain_known = False  # last hash and next ids, read once from the files
        # a live file was set aside and no batch has been written since: the next
        # failure is not the file's, so it is not set aside again
        self._set_aside_pending = False
        self._opening = False
        self._file_first_ns = self._file_last_ns = None
        self._file_opened = time.monotonic()

    # -- opening and closing -------------------------------------------------

    def open(self) -> None:
        store.prepare_dir(self.db_dir)
        self._lock_fd = dbfiles.lock_dir(self.db_dir)
        live = self.db_dir / dbfiles.LIVE_NAME
        why = live_is_damaged(live)
        if why:
            aside = dbfiles.set_aside(self.db_dir)
            log.warning("live_database_damaged", path=str(live), moved_to=str(aside), reason=why)
        self._run_row = dict(
            boot_id=hostinfo.boot_id(), host=hostinfo.host(), kernel=hostinfo.kernel(),
            version=__version__, settings=json.dumps(self.run_settings, sort_keys=True),
            started_ns=time.time_ns(), lost_kernel=0, lost_user=0, events_written=0)
        # a full disk at start is no reason not to capture: records are held
        # as for a disk that fills later, and the run begins in the file once
        # space returns
        self._opening = True
        try:
            self._start_run()
        finally:
            self._opening = False

    def _start_run(self) -> bool:
        """Open the live file and record the run in it (at start, and in each new file after a
        rotation or a set-aside); False while it cannot be, to be tried again."""
        try:
            self._open_live()
            if not self._chain_known:
                # only now, at the head revision: a file of the first release has no hash
                # column until migrated, and its batches still hold ids the next ones follow
                self._last_hash, self._next_event_id, self._next_batch_id = self._chain_tail()
                self._chain_known = True
            with self._conn.begin():
                self.run_id = self._conn.execute(
                    Run.__table__.insert().values(**self._run_row)).inserted_primary_key[0]
                self._run_row["id"] = self.run_id
                self._insert_seeds(self._seeds)
        except Exception as e:
            self._close_live()
            if _storage_error(e):
                self._disk_full(e, 0)
                return False
            log.error("run_not_started", path=str(self.db_dir / dbfiles.LIVE_NAME), error=_why(e))
            if not self._set_aside_pending:
                return self._set_aside_live(_why(e))
            if self._opening:
                raise  # not even a new file takes the run: nothing is captured yet, say so now
            self._disk_full(e, 0, event="database_unwritable")
            return False
        if self._seeds:
            log.info("processes_seeded", count=len(self._seeds))
            self._seeds = []
        log.info("database_opened", path=str(self.db_dir / dbfiles.LIVE_NAME), run_id=self.run_id)
        return True

    def _set_aside_live(self, reason: str) -> bool:
        """Move the live file out of the way and begin the run in a new one, whose first batch
        chains on from the last batch written (docs/design.md, "A live file that refuses a
        batch is set aside"); False while the new file cannot be made."""
        self._close_live()
        self._set_aside_pending = True
        try:
            aside = dbfiles.set_aside(self.db_dir)
        except OSError as e:  # the directory itself is in trouble: hold, and try again
            self._disk_full(e, 0, event="database_unwritable")
            return False
        if aside is not None:  # else a new file failed as it was made, and is gone already
            log.error("live_database_set_aside", path=str(self.db_dir / dbfiles.LIVE_NAME),
                      moved_to=str(aside), reason=reason, next_batch_id=self._next_batch_id,
                      prev_hash=self._last_hash)
        return self._start_run()

    def _chain_tail(self) -> tuple[str, int, int]:
        """(last hash, next event id, next batch id): from the live file (on the writer's own
        connection, migrated), else from the newest rotated file with batches."""
        top_batch, last_hash, top_event = _tail(lambda sql: self._conn.exec_driver_sql(sql).fetchall())
        unclean = self._conn.exec_driver_sql(
            "SELECT id, started_ns FROM runs WHERE stopped_ns IS NULL").fetchall()
        self._conn.rollback()  # end the read so the run's insert can begin its own transaction
        # a rotated file holds copies of run rows that went on in a newer file:
        # only the live file knows how its runs ended
        for run_id, started in unclean:
            log.warning("previous_run_unclean", run_id=run_id, started_ns=started,
                        path=str(self.db_dir / dbfiles.LIVE_NAME))
        if top_batch is None:  # no batches yet: the chain is in an older file
            for path in reversed(dbfiles.rotated_files(self.db_dir)):
                try:
                    con = dbfiles.connect_ro(path)
                    try:
                        top_batch, last_hash, older_top = _tail(lambda sql: con.execute(sql).fetchall())
                    finally:
                        con.close()
                except sqlite3.DatabaseError as e:
                    log.warning("database_unreadable", path=str(path), error=str(e))
                    continue
                if top_batch is not None:
                    top_event = max(top_event, older_top)
                    break
        # batches without a hash were written before the chain: it begins after them
        return last_hash or chain.GENESIS, top_event + 1, (top_batch or 0) + 1

    def _open_live(self) -> None:
        self._engine, self._conn = store.open_live(self.db_dir, self.synchronous)
        # two subqueries: min() and max() in one SELECT would read the whole index
        r = self._conn.exec_driver_sql("SELECT (SELECT min(time_ns) FROM events), "
                                       "(SELECT max(time_ns) FROM events)").fetchone()
        self._file_first_ns, self._file_last_ns = r
        self._conn.rollback()  # end the read so each batch can begin its own transaction
        self._file_opened = time.monotonic()

    def _close_live(self) -> None:
        conn, engine, self._conn, self._engine = self._conn, self._engine, None, None
        try:
            if conn is not None:
                conn.close()
            if engine is not None:
                engine.dispose()
        except Exception as e:  # noqa: BLE001 - a file that failed a write may fail its close too
            log.warning("database_close_failed", error=_why(e))

    def close(self, clean: bool = True) -> None:
        if self._held or (self._conn is None and self._run_row):
            self._try_write_held(force=True)  # a last try: it also starts a run the disk kept out
        if self._held:
            self._drop_held(len(self._held), "shutdown with the disk still full")
        if self._conn is None:
            log.error("run_not_recorded", path=str(self.db_dir), reason="the disk stayed full until the stop",
                      lost_user=self.lost_user)
        conn = self._conn
        if conn is not None:
            if clean:
                try:
                    with conn.begin():
                        conn.execute(update(Run).where(Run.id == self.run_id).values(
                            stopped_ns=time.time_ns()))
                except DBAPIError as e:
                    log.error("run_not_closed", error=_why(e))
            try:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except DBAPIError:
                pass
            self._close_live()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("database_closed", run_id=self.run_id, events_written=self.events_written,
                 lost_kernel=self.lost_kernel, lost_user=self.lost_user, clean=clean)

    # -- writing -------------------------------------------------------------

    def note_lost_kernel(self, n: int) -> None:
        """Records the kernel dropped since the last call; stored with the next batch."""
        self._lost_kernel_pending += n

    def write(self, rows: list[tuple]) -> None:
        """Write ``rows`` in batches; while the disk is full, hold them (bounded)."""
        if self._held or self._disk_full_since is not None:
            self._held.extend(rows)
            self._try_write_held()
            return
        for i in range(0, max(len(rows), 1), self.batch_size):
            chunk = rows[i:i + self.batch_size]
            if not chunk and not self._lost_kernel_pending:
                return
            if not self._write_batch(chunk):
                self._held.extend(rows[i:])
                self._bound_held()
                return
            self.maybe_rotate()

    def _try_write_held(self, force: bool = False) -> None:
        if not force and time.monotonic() < self._next_retry:
            self._bound_held()
            return
        if self._conn is None and not self._start_run():
            self._bound_held()
            return
        while self._held:
            chunk = self._held[:self.batch_size]
            if not self._write_batch(chunk):
                self._bound_held()
                return
            del self._held[:len(chunk)]
        if self._disk_full_since is not None:
            log.info("disk_space_returned", after_s=round(time.monotonic() - self._disk_full_since, 1),
                     lost_user=self.lost_user)
            self._disk_full_since = None
        self.maybe_rotate()

    def _bound_held(self) -> None:
        excess = len(self._held) - self.hold_limit
        if excess > 0:
            self._drop_held(excess, "disk full longer than the memory bound")

    def _drop_held(self, n: int, why: str) -> None:
        del self._held[:n]  # the oldest go first; what is dropped is counted
        self._count_lost(n, why)

    def _count_lost(self, n: int, why: str) -> None:
        """Records dropped here: stored with the next batch and the run (docs/design.md, "Loss never silent")."""
        self._lost_user_pending += n
        self.lost_user += n
        log.error("events_lost", where="user", count=n, reason=why, lost_user=self.lost_user)

    def _disk_full(self, e: Exception, held: int, event: str = "disk_full") -> None:
        """Hold records and try again in RETRY_S: the disk is full (or, ``event``, the file cannot
        be made at all)."""
        if self._disk_full_since is None:
            self._disk_full_since = time.monotonic()
            log.error(event, path=str(self.db_dir), error=_why(e),
                      held=len(self._held) + held, hold_limit=self.hold_limit)
        self._next_retry = time.monotonic() + RETRY_S

    def _write_batch(self, rows: list[tuple]) -> bool:
        """Write one batch; False while it cannot be written now (the caller holds the rows).

        A batch the live file refuses for any reason but a full disk is written in a new
        file, the old one set aside; one that fails there too is dropped and counted as lost
        (docs/design.md, "A live file that refuses a batch is set aside").
        """
        for attempt in ("live", "new file"):
            try:
                self._insert_batch(rows)
                self._set_aside_pending = False
                return True
            except Exception as e:
                if _storage_error(e):
                    self._disk_full(e, len(rows))
                    return False
                reason = _why(e)
                log.error("batch_not_written", batch_id=self._next_batch_id, records=len(rows),
                          error=reason, kind=type(e).__name__, file=attempt)
            if self._set_aside_pending:
                break
            if not self._set_aside_live(reason):
                return False  # the new file cannot be made now: held, as on a full disk
        self._count_lost(len(rows), f"a batch no file accepted: {reason}")
        return True

    def _insert_batch(self, rows: list[tuple]) -> None:
        """One batch in one transaction; the writer's counters move only once it is committed."""
        conn = self._conn
        batch_id = self._next_batch_id
        first = self._next_event_id
        last = first + len(rows) - 1
        lost_k, lost_u = self._lost_kernel_pending, self._lost_user_pending
        run_id = self.run_id
        full = [(first + i, run_id, batch_id) + row for i, row in enumerate(rows)]
        header = (batch_id, run_id, time.time_ns(), first if rows else None,
                  last if rows else None, len(rows), lost_k, lost_u)
        digest = chain.batch_hash(self._last_hash, header, chain.row_digests(full))
        with conn.begin():
            conn.exec_driver_sql(INSERT_BATCH, header + (self._last_hash, digest))
            exits = [_EXIT_VALUES(r) for r in full if r[_EVENT] == "exit"]
            if exits:
                conn.exec_driver_sql(INSERT_EXIT, exits)
            if len(exits) < len(full):
                conn.exec_driver_sql(INSERT_EXEC, [_EXEC_VALUES(r) for r in full if r[_EVENT] != "exit"])
            conn.exec_driver_sql(COUNT_RUN, (len(rows), lost_k, lost_u, run_id))
        self._last_hash = digest
        self._next_batch_id += 1
        self._next_event_id = last + 1
        self._lost_kernel_pending -= lost_k
        self._lost_user_pending -= lost_u
        self.lost_kernel += lost_k
        self.events_written += len(rows)
        if rows:
            times = [r[1] for r in rows]
            lo, hi = min(times), max(times)
            self._file_first_ns = lo if self._file_first_ns is None else min(lo, self._file_first_ns)
            self._file_last_ns = hi if self._file_last_ns is None else max(hi, self._file_last_ns)
        log.debug("batch_written", batch_id=batch_id, records=len(rows), lost_kernel=lost_k)

    def _insert_seeds(self, seeds: list[dict]) -> None:
        if seeds:
            self._conn.execute(SeenProcess.__table__.insert(), [dict(p, run_id=self.run_id) for p in seeds])

    def write_seeds(self, processes: list[dict]) -> None:
        now = time.time_ns()
        seeds = [dict(p, time_ns=now) for p in processes]
        if self._conn is None:  # the run is not in the file yet: they go in with it
            self._seeds.extend(seeds)
            return
        try:
            with self._conn.begin():
                self._insert_seeds(seeds)
        except DBAPIError as e:
            # not records of the capture, and no reason to set the file aside: said, and left
            log.error("seeds_not_written", error=_why(e), count=len(processes))
            return
        log.info("processes_seeded", count=len(processes))

    def set_attached(self, time_ns: int) -> None:
        self._run_row["attached_ns"] = time_ns
        if self._conn is None:
            return  # written with the run row once the disk has room
        try:
            # a transaction of its own, rolled back on failure: a full disk here
            # must not leave one open under the next batch
            with self._conn.begin():
                self._conn.execute(update(Run).where(Run.id == self.run_id).values(
                    attached_ns=time_ns))
        except DBAPIError as e:
            log.error("run_not_updated", field="attached_ns", error=_why(e))

    # -- rotation ------------------------------------------------------------

    def maybe_rotate(self) -> None:
        """Called between batches: rotate on size or age, and keep free space above the floor."""
        policy = self.rotation
        if (self._disk_full_since is None and self._file_first_ns is not None
                and time.monotonic() >= self._rotate_after):
            due = False
            if policy.size_mb:
                # the database's own size, wherever its pages are (file or WAL)
                try:
                    size = self._conn.exec_driver_sql(
                        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()").scalar()
                    self._conn.rollback()
                except DBAPIError as e:  # a file in trouble: the next batch tells, and sets it aside
                    log.warning("rotation_check_failed", error=_why(e))
                    size = 0
                due = size >= policy.size_mb * 1024 * 1024
            if policy.interval_s and time.monotonic() - self._file_opened >= policy.interval_s:
                due = True
            if due:
                self.rotate()
        for p in rotation.make_room(self.db_dir, policy):
            log.warning("rotated_file_removed_for_space", path=str(p), min_free_mb=policy.min_free_mb)

    def rotate(self) -> Path | None:
        conn = self._conn
        # a rotated file is read by users who cannot create its -shm: leave it
        # as a plain rollback-journal database, everything checkpointed in.
        # A reader with the file open makes that fail: try again later.
        try:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            mode = conn.exec_driver_sql("PRAGMA journal_mode=DELETE").scalar()
        except DBAPIError as e:
            mode = _why(e)
        if mode != "delete":
            try:
                conn.rollback()
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                conn.rollback()
            except DBAPIError as e:
                log.warning("journal_mode_not_restored", error=_why(e))
            self._rotate_after = time.monotonic() + RETRY_S
            log.warning("rotation_postponed", reason=mode)
            return None
        self._close_live()
        live = self.db_dir / dbfiles.LIVE_NAME
        target = dbfiles.rotated_path(self.db_dir, self._file_first_ns, self._file_last_ns)
        os.replace(live, target)
        os.chmod(target, dbfiles.ROTATED_MODE)
        # the run goes on in the new file, which needs its own copy of the run
        # row; on a full disk records are held until it can be made
        self._start_run()
        deleted = rotation.apply_retention(self.db_dir, self.rotation.keep)
        log.info("rotated", path=str(target), deleted=[str(p) for p in deleted])
        return target


class Attached:
    """Message: every program is attached (time in UTC ns)."""

    def __init__(self, time_ns: int):
        self.time_ns = time_ns


class Seeds:
    """Message: processes found running at start."""

    def __init__(self, processes: list[dict]):
        self.processes = processes


class Writer(threading.Thread):
    """The pipeline stage: takes hand-overs from the collector, decodes, batches, writes."""

    def __init__(self, batch_writer: BatchWriter, inbox: queue.Queue, decoder: Decoder,
                 batch_ms: int = 200, printer: Callable[[list], None] | None = None):
        super().__init__(name="writer", daemon=True)
        self.bw = batch_writer
        self.inbox = inbox
        self.decoder = decoder
        self.batch_s = batch_ms / 1000
        self.printer = printer
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.heartbeat = time.monotonic()
        self._pending: list = []
        self._first_at = 0.0
        self._lost_seen = 0

    @property
    def run_id(self):
        return self.bw.run_id

    def run(self) -> None:
        try:
            self.bw.open()
        except BaseException as e:  # reported to the main thread, which exits with it
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        try:
            self._loop()
            self.bw.close(clean=True)
        except BaseException as e:
            self.error = e
            log.error("writer_failed", error=str(e))

    def _loop(self) -> None:
        batch_size = self.bw.batch_size
        while True:
            self.heartbeat = time.monotonic()
            timeout = 0.5
            if self._pending:
                timeout = max(0.0, self._first_at + self.batch_s - time.monotonic())
            try:
                item = self.inbox.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is STOP:
                self._flush()
                return
            if isinstance(item, Handover):
                if item.raw:
                    if not self._pending:
                        self._first_at = time.monotonic()
                    self._pending.extend(item.raw)
                if item.lost_kernel != self._lost_seen:
                    new = item.lost_kernel - self._lost_seen
                    log.warning("events_lost", where="kernel", count=new, lost_total=item.lost_kernel)
                    self.bw.note_lost_kernel(new)
                    self._lost_seen = item.lost_kernel
            elif isinstance(item, Attached):
                self.bw.set_attached(item.time_ns)
            elif isinstance(item, Seeds):
                self.bw.write_seeds(item.processes)
            if len(self._pending) >= batch_size or (
                    self._pending and time.monotonic() - self._first_at >= self.batch_s):
                self._flush()
            elif item is None:
                self._flush()  # idle: lost counts, held records and time-based rotation

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self.decoder.realtime_offset_ns = hostinfo.realtime_offset_ns()
        rows = [self.decoder.decode(raw) for raw in pending]
        if self.printer is not None and rows:
            self.printer(rows)
        self.bw.write(rows)
        if not rows:
            self.bw.maybe_rotate()
