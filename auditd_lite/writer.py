"""The writer thread: batches records into the live database, one transaction a batch.

It owns the only read-write connection (DESIGN decision 8) and is the only
thread that touches it: it opens it, migrates, records the run and closes it.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Callable

import structlog
from sqlalchemy import func, select, update

from . import __version__, hostinfo, store
from .collector import STOP, Handover
from .records import ROW_FIELDS, Decoder
from .schema import Batch, Event, Run, SeenProcess

log = structlog.get_logger("auditd_lite.writer")

_EVENT_COLUMNS = ("id", "run_id", "batch_id") + ROW_FIELDS
# Core on the hot path, at driver level: one executemany per batch with
# tuples in column order; the ORM's unit of work has no place here.
INSERT_EVENTS = (f"INSERT INTO {Event.__tablename__} ({', '.join(_EVENT_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(_EVENT_COLUMNS))})")


class Attached:
    """Message: every program is attached (time in UTC ns)."""

    def __init__(self, time_ns: int):
        self.time_ns = time_ns


class Seeds:
    """Message: processes found running at start."""

    def __init__(self, processes: list[dict]):
        self.processes = processes


class Writer(threading.Thread):
    def __init__(self, db_dir: Path, inbox: queue.Queue, decoder: Decoder, settings: dict,
                 batch_size: int = 1000, batch_ms: int = 200, synchronous: str = "NORMAL",
                 printer: Callable[[list], None] | None = None):
        super().__init__(name="writer", daemon=True)
        self.db_dir = db_dir
        self.inbox = inbox
        self.decoder = decoder
        self.settings = settings
        self.batch_size = batch_size
        self.batch_s = batch_ms / 1000
        self.synchronous = synchronous
        self.printer = printer
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.heartbeat = time.monotonic()
        self.events_written = 0
        self.lost_kernel = 0
        self.run_id = None
        self._conn = None
        self._pending: list = []
        self._first_at = 0.0
        self._lost_seen = 0
        self._lost_written = 0

    # -- thread body ---------------------------------------------------------

    def run(self) -> None:
        try:
            self._open()
        except BaseException as e:  # reported to the main thread, which exits with it
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        try:
            self._loop()
            self._close(clean=True)
        except BaseException as e:
            self.error = e
            log.error("writer_failed", error=str(e))

    def _open(self) -> None:
        _engine, self._conn = store.open_live(self.db_dir, self.synchronous)
        conn = self._conn
        self._next_event_id = (conn.scalar(select(func.max(Event.id))) or 0) + 1
        self._next_batch_id = (conn.scalar(select(func.max(Batch.id))) or 0) + 1
        now = time.time_ns()
        self.run_id = conn.execute(Run.__table__.insert().values(
            boot_id=hostinfo.boot_id(), host=hostinfo.host(), kernel=hostinfo.kernel(),
            version=__version__, settings=json.dumps(self.settings, sort_keys=True),
            started_ns=now, lost_kernel=0, lost_user=0, events_written=0,
        )).inserted_primary_key[0]
        conn.commit()
        log.info("database_opened", path=str(self.db_dir / store.LIVE_NAME), run_id=self.run_id)

    def _loop(self) -> None:
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
                    log.warning("events_lost", lost_total=item.lost_kernel,
                                new=item.lost_kernel - self._lost_seen)
                    self._lost_seen = item.lost_kernel
            elif isinstance(item, Attached):
                self._conn.execute(update(Run).where(Run.id == self.run_id)
                                   .values(attached_ns=item.time_ns))
                self._conn.commit()
            elif isinstance(item, Seeds):
                self._write_seeds(item.processes)
            if len(self._pending) >= self.batch_size or (
                    self._pending and time.monotonic() - self._first_at >= self.batch_s):
                self._flush()
            elif not self._pending and self._lost_seen != self._lost_written:
                self._flush()

    # -- writing -------------------------------------------------------------

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self.decoder.realtime_offset_ns = hostinfo.realtime_offset_ns()
        rows = [self.decoder.decode(raw) for raw in pending]
        if self.printer is not None and rows:
            self.printer(rows)
        for i in range(0, len(rows), self.batch_size):
            self._write_batch(rows[i:i + self.batch_size])
        if not rows and self._lost_seen != self._lost_written:
            self._write_batch([])

    def _write_batch(self, rows: list[tuple]) -> None:
        conn = self._conn
        batch_id = self._next_batch_id
        first = self._next_event_id
        last = first + len(rows) - 1
        lost = self._lost_seen - self._lost_written
        with conn.begin():
            conn.execute(Batch.__table__.insert().values(
                id=batch_id, run_id=self.run_id, written_ns=time.time_ns(),
                first_event_id=first if rows else None, last_event_id=last if rows else None,
                count=len(rows), lost_kernel=lost, lost_user=0))
            if rows:
                run_id = self.run_id
                conn.exec_driver_sql(INSERT_EVENTS, [
                    (first + i, run_id, batch_id) + row for i, row in enumerate(rows)])
            conn.execute(update(Run).where(Run.id == self.run_id).values(
                events_written=Run.events_written + len(rows),
                lost_kernel=Run.lost_kernel + lost))
        self._next_batch_id += 1
        self._next_event_id = last + 1
        self._lost_written = self._lost_seen
        self.events_written += len(rows)
        self.lost_kernel = self._lost_written
        log.debug("batch_written", batch_id=batch_id, records=len(rows), lost=lost)

    def _write_seeds(self, processes: list[dict]) -> None:
        now = time.time_ns()
        with self._conn.begin():
            if processes:
                self._conn.execute(SeenProcess.__table__.insert(), [
                    dict(p, run_id=self.run_id, time_ns=now) for p in processes])
        log.info("processes_seeded", count=len(processes))

    def _close(self, clean: bool) -> None:
        conn = self._conn
        if clean:
            conn.execute(update(Run).where(Run.id == self.run_id).values(stopped_ns=time.time_ns()))
            conn.commit()
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        log.info("database_closed", run_id=self.run_id, events_written=self.events_written,
                 lost_kernel=self.lost_kernel, clean=clean)
