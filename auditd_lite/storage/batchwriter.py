"""The batch writer: storage's one writer of records.

It owns the only read-write connection (docs/design.md, "One writer connection"):
it takes the directory lock, migrates, records the run, writes one
transaction per batch with its link in the hash chain, rotates between
batches, removes the oldest files as retention says (docs/design.md,
"Retention"), holds records in memory while the disk is full, and writes a
batch the live file refuses in a new file (docs/design.md, "A live file that
refuses a batch is set aside"). Every row it writes anywhere is in a batch,
whose hash covers it (chain format 5, docs/design.md "Tamper evidence").
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import structlog
from sqlalchemy.exc import DBAPIError

from .. import __version__, dbfiles, hostinfo
from . import rotation, store
from .retention import Retainer
from .batches import ChainPosition, Evidence
from ..config import RunSettings
from .holding import RETRY_S, Held
from .livefile import LiveFile, live_is_damaged, storage_error, why
from .rotation import RotationPolicy

if TYPE_CHECKING:  # storage/sealer.py is imported only by a daemon that seals (main.sealer_for)
    from .sealer import Sealer


log = structlog.get_logger("auditd_lite.writer")

DEFAULT_BATCH = RunSettings.batch_size


__all__ = ["BatchWriter"]


class BatchWriter:
    """The steps are other modules': the live file (livefile), a batch's chain link and
    transaction (batches), the records a full disk holds (holding). This is the order of them,
    and what happens when one fails."""

    def __init__(self, db_dir: Path, run_settings: dict, batch_size: int = DEFAULT_BATCH,
                 synchronous: str = "NORMAL", rotation: RotationPolicy = RotationPolicy(),
                 hold_limit: int = 200_000,
                 on_commit: Callable[[list[tuple], dict], None] | None = None,
                 stream_counts: Callable[[], tuple[int, int]] | None = None,
                 sealer: Sealer | None = None):
        """``on_commit(rows, run)``: called with each batch's rows once its transaction is
        committed, in commit order, and ``run`` the run row as it stands in the file then (the
        live stream, daemon/stream.py: it never blocks and never raises). ``stream_counts()``:
        the stream's lines written and dropped so far, stored in the run row as lost_user is.
        ``sealer``: seals the chain at its start, at the end of each epoch, at rotation and at a
        clean stop (storage/sealer.py); None: no sealing."""
        self.db_dir = Path(db_dir)
        self.run_settings = run_settings
        self.batch_size = batch_size
        self._live = LiveFile(self.db_dir, synchronous)
        self._limits = None
        self._retainer = Retainer()  # storage/retention.py; its records no batch holds yet: pending
        self.rotation = rotation
        self.run_id = None
        self.events_written = 0
        self.lost_kernel = 0  # as recorded in batches
        self.lost_user = 0  # records dropped because the disk stayed full too long
        self._lost_kernel_pending = 0
        self._lost_user_pending = 0
        self._held = Held(hold_limit)
        self._chain = ChainPosition()
        self._rotate_after = 0.0
        self._lock_fd = None
        self._run_row: dict = {}
        self._seeds: list[dict] = []  # seen processes waiting for the run to reach the file
        # a live file was set aside and no batch has been written since: the next
        # failure is not the file's, so it is not set aside again
        self._set_aside_pending = False
        self._opening = False
        self.on_commit = on_commit
        self.stream_counts = stream_counts
        self._stream_stored = (0, 0)  # the stream's counts the files' run rows hold
        self._file_lost = (0, 0)  # lost_kernel, lost_user in the live file's copy of the run row
        self.sealer = sealer
        self._live_size = 0  # the live file's size at the last look, and its largest growth between
        self._live_step = 0  # two looks (a batch or so): what it may take before it rotates
        # the chain's next batch id at the last look: no batch since, no growth, and no query (an
        # idle daemon looks twice a second)
        self._sized_at: int | None = None

    @property
    def rotation(self) -> RotationPolicy:
        return self._rotation

    @rotation.setter
    def rotation(self, policy: RotationPolicy) -> None:
        """A new policy (at start, or a reload): its figures for this directory are taken again."""
        self._rotation = policy
        self._limits = None
        self._retainer.reset()

    @property
    def limits(self) -> rotation.Limits:
        """The policy's figures for the directory's file system (rotation.limits), once it exists."""
        if self._limits is None:
            self._limits = rotation.limits(self.db_dir, self._rotation, store.WAL_CHECKPOINT_PAGES)
            self._live.wal_pages = self._limits.wal_pages
        return self._limits

    @property
    def _conn(self):
        return self._live.conn

    # -- opening and closing -------------------------------------------------

    def open(self) -> None:
        store.prepare_dir(self.db_dir)
        self._lock_fd = dbfiles.lock_dir(self.db_dir)
        self.limits  # the live file's WAL is sized by them
        live = self._live.path
        reason = live_is_damaged(live)
        if reason:
            aside = dbfiles.set_aside(self.db_dir)
            log.warning("live_database_damaged", path=str(live), moved_to=str(aside), reason=reason)
        self._run_row = dict(
            boot_id=hostinfo.boot_id(), host=hostinfo.host(), kernel=hostinfo.kernel(),
            version=__version__, settings=json.dumps(self.run_settings, sort_keys=True),
            started_ns=time.time_ns(), lost_kernel=0, lost_user=0, events_written=0,
            # NULL without a stream: "none", not "none dropped"
            **dict.fromkeys(dbfiles.STREAM_COUNTERS, 0 if self.stream_counts is not None else None))
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
            self._live.open()
            if not self._chain.known:
                self._chain.read(self._conn, self.db_dir)
            run_id = self._run_row.get("id")
            if run_id is None:  # a new run: after every run id in this file and the files before
                here = self._conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM runs").scalar()
                self._conn.rollback()
                run_id = max(here, self._chain.top_run) + 1
            self.run_id = run_id
            # each file's copy of the run row counts what went into it
            self._file_lost = (0, 0)
            # the run's start in this file: its row (and the processes seen at start, if they
            # came before it) in a batch, whose hash covers them
            row = {k: v for k, v in self._run_row.items() if k != "id"}
            self._insert_batch([], Evidence(run_insert=row, seen=self._seeds))
            self._run_row["id"] = run_id
        except Exception as e:
            self._live.close()
            self.run_id = self._run_row.get("id")  # None until a file took the run
            if storage_error(e):
                self._disk_full(e, 0)
                return False
            log.error("run_not_started", path=str(self._live.path), error=why(e))
            if not self._set_aside_pending:
                return self._set_aside_live(why(e))
            if self._opening:
                raise  # not even a new file takes the run: nothing is captured yet, say so now
            self._disk_full(e, 0, event="database_unwritable")
            return False
        if self.sealer is not None and not self.sealer.started:
            self._seal_start()
        if self._seeds:
            log.info("processes_seeded", count=len(self._seeds))
            self._seeds = []
        log.info("database_opened", path=str(self._live.path), run_id=self.run_id)
        return True

    def _set_aside_live(self, reason: str) -> bool:
        """Move the live file out of the way and begin the run in a new one, whose first batch
        chains on from the last batch written (docs/design.md, "A live file that refuses a
        batch is set aside"); False while the new file cannot be made."""
        self._live.close()
        self._sized_at = None  # a new live file: looked at afresh
        self._set_aside_pending = True
        try:
            aside = dbfiles.set_aside(self.db_dir)
        except OSError as e:  # the directory itself is in trouble: hold, and try again
            self._disk_full(e, 0, event="database_unwritable")
            return False
        if aside is not None:  # else a new file failed as it was made, and is gone already
            log.error("live_database_set_aside", path=str(self._live.path),
                      moved_to=str(aside), reason=reason, next_batch_id=self._chain.next_batch_id,
                      prev_hash=self._chain.last_hash)
        return self._start_run()

    def close(self, clean: bool = True) -> None:
        if self._held.rows or (self._conn is None and self._run_row):
            self._try_write_held(force=True)  # a last try: it also starts a run the disk kept out
        if self._held.rows:
            self._drop_held(len(self._held.rows), "shutdown with the disk still full")
        if self._conn is None:
            log.error("run_not_recorded", path=str(self.db_dir), reason="the disk stayed full until the stop",
                      lost_user=self.lost_user)
        conn = self._conn
        if conn is not None:
            if clean:
                # the stop, with the stream's totals (it is closed by now) and any loss not yet
                # stored, in a batch of its own; then the stop seal, which covers it
                try:
                    self._insert_batch([], Evidence(run_update={"stopped_ns": time.time_ns()}))
                except Exception as e:  # noqa: BLE001 - the stop is said in the log whatever fails
                    log.error("run_not_closed", error=why(e))
                if self.sealer is not None:
                    self._seal("stop")
            try:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except DBAPIError:
                pass
            self._live.close()
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
        held = self._held.rows
        if held or self._held.full_since is not None:
            held.extend(rows)
            self._try_write_held()
            return
        for i in range(0, max(len(rows), 1), self.batch_size):
            chunk = rows[i:i + self.batch_size]
            if not chunk and not self._lost_kernel_pending:
                return
            if not self._write_batch(chunk):
                held.extend(rows[i:])
                self._bound_held()
                return
            self.maybe_rotate()

    def _try_write_held(self, force: bool = False) -> None:
        if not force and not self._held.retry_due():
            self._bound_held()
            return
        self.retain(now=True)  # room the policy can make is made before the records are tried
        if self._conn is None and not self._start_run():
            self._bound_held()
            return
        held = self._held.rows
        while held:
            chunk = held[:self.batch_size]
            if not self._write_batch(chunk):
                self._bound_held()
                return
            del held[:len(chunk)]
        after = self._held.space_returned()
        if after is not None:
            log.info("disk_space_returned", after_s=round(after, 1), lost_user=self.lost_user)
        self.maybe_rotate()

    def _bound_held(self) -> None:
        excess = self._held.excess()
        if excess > 0:
            self._drop_held(excess, "disk full longer than the memory bound")

    def _drop_held(self, n: int, reason: str) -> None:
        del self._held.rows[:n]  # the oldest go first; what is dropped is counted
        self._count_lost(n, reason)

    def _count_lost(self, n: int, reason: str) -> None:
        """Records dropped here: stored with the next batch and the run (docs/design.md, "Loss never silent")."""
        self._lost_user_pending += n
        self.lost_user += n
        log.error("events_lost", where="user", count=n, reason=reason, lost_user=self.lost_user)

    def _disk_full(self, e: Exception, held: int, event: str = "disk_full") -> None:
        """Hold records and try again shortly: the disk is full (or, ``event``, the file cannot
        be made at all)."""
        self._held.disk_full(self.db_dir, e, held, event)

    def _write_batch(self, rows: list[tuple]) -> bool:
        """Write one batch; False while it cannot be written now (the caller holds the rows).

        A batch the live file refuses for any reason but a full disk is written in a new
        file, the old one set aside; one that fails there too is dropped and counted as lost
        (docs/design.md, "A live file that refuses a batch is set aside").
        """
        for attempt in ("live", "new file"):
            try:
                self._insert_batch(rows)
            except Exception as e:
                if storage_error(e):
                    self._disk_full(e, len(rows))
                    return False
                reason = why(e)
                log.error("batch_not_written", batch_id=self._chain.next_batch_id, records=len(rows),
                          error=reason, kind=type(e).__name__, file=attempt)
            else:
                self._set_aside_pending = False
                self._committed(rows)
                return True
            if self._set_aside_pending:
                break
            if not self._set_aside_live(reason):
                return False  # the new file cannot be made now: held, as on a full disk
        self._count_lost(len(rows), f"a batch no file accepted: {reason}")
        return True

    def _insert_batch(self, rows: list[tuple], evidence: Evidence | None = None) -> None:
        """One batch in one transaction, with ``evidence`` (the other rows it writes) and any
        removals retention recorded that no batch holds yet; the writer's counters move only once
        it is committed."""
        lost_k, lost_u = self._lost_kernel_pending, self._lost_user_pending
        batch_id = self._chain.next_batch_id
        removals = self._retainer.pending
        if removals:
            evidence = evidence or Evidence()
            evidence.removals = list(evidence.removals) + removals
        stream = self._stream_delta() if self.stream_counts is not None else None
        if self._conn is not None and self._conn.in_transaction():  # a read autobegun
            self._conn.rollback()
        self._chain.insert(self._conn, rows, self.run_id, time.time_ns(), lost_k, lost_u, stream, evidence)
        if removals:
            del self._retainer.pending[:len(removals)]
        if stream is not None:
            self._stream_stored = (self._stream_stored[0] + stream[0], self._stream_stored[1] + stream[1])
        self._file_lost = (self._file_lost[0] + lost_k, self._file_lost[1] + lost_u)
        self._lost_kernel_pending -= lost_k
        self._lost_user_pending -= lost_u
        self.lost_kernel += lost_k
        self.events_written += len(rows)
        if rows:
            self._live.note_times([r[1] for r in rows])
        log.debug("batch_written", batch_id=batch_id, records=len(rows), lost_kernel=lost_k)

    # -- the live stream (daemon/stream.py) -------------------------------------

    def _stream_delta(self) -> tuple[int, int]:
        """The stream's lines written and dropped that no run row holds yet."""
        if self.stream_counts is None:
            return 0, 0
        written, dropped = self.stream_counts()
        return written - self._stream_stored[0], dropped - self._stream_stored[1]

    def run_facts(self) -> dict:
        """The run row as the live file holds it now: what a reader of the file knows of the run
        (formats.Source.from_run takes it)."""
        row = {k: self._run_row.get(k) for k in ("id", "boot_id", "host", "kernel", "version")}
        row["lost_kernel"], row["lost_user"] = self._file_lost
        row["revision"] = store.HEAD_REVISION  # the live file is migrated before any batch
        return row

    def _committed(self, rows: list[tuple]) -> None:
        """Hand a committed batch on (the live stream); nothing it does can fail the batch,
        which is in the file: a second write of it would be a duplicate."""
        if self.on_commit is None or not rows:
            return
        try:
            self.on_commit(rows, self.run_facts())
        except Exception as e:  # noqa: BLE001 - the batch is written whatever the stream does
            log.error("stream_handover_failed", error=str(e), kind=type(e).__name__, records=len(rows))

    def note_stream(self) -> None:
        """Store the stream's counts in the run row while no batch comes to carry them (idle):
        a stopped reader's dropped lines reach the file within a second."""
        written, dropped = self._stream_delta()
        if not (written or dropped) or self._conn is None or self._held.full_since is not None:
            return
        try:
            self._insert_batch([])  # a batch of no records carries them (and the chain covers them)
        except Exception as e:  # noqa: BLE001 - counts left for the next batch
            log.error("run_not_updated", field="stream_lines", error=why(e))

    def write_seeds(self, processes: list[dict]) -> None:
        now = time.time_ns()
        seeds = [dict(p, time_ns=now) for p in processes]
        if self._conn is None:  # the run is not in the file yet: they go in with it
            self._seeds.extend(seeds)
            return
        try:
            self._insert_batch([], Evidence(seen=seeds))
        except Exception as e:  # noqa: BLE001
            # not records of the capture, and no reason to set the file aside: said, and left
            log.error("seeds_not_written", error=why(e), count=len(processes))
            return
        log.info("processes_seeded", count=len(processes))

    def set_attached(self, time_ns: int, capture: dict | None = None) -> None:
        """Capture began at ``time_ns``; ``capture``, the mode it runs in (loader.Programs.capture),
        goes into the run's settings under "capture": what was asked (capture_mode) is there
        already, what the kernel gave is known only now."""
        self._run_row["attached_ns"] = time_ns
        if capture is not None:
            self.run_settings = {**self.run_settings, "capture": capture}
            self._run_row["settings"] = json.dumps(self.run_settings, sort_keys=True)
        if self._conn is None:
            return  # written with the run row once the disk has room
        try:
            # a batch of its own, rolled back on failure: a full disk here must not leave a
            # transaction open under the next batch; the settings, which now say the capture
            # mode, are set in it too (chain format 5 covers both: "Tamper evidence")
            self._insert_batch([], Evidence(run_update={"attached_ns": time_ns,
                                                        "settings": self._run_row["settings"]}))
        except Exception as e:  # noqa: BLE001
            log.error("run_not_updated", field="attached_ns", error=why(e))

    # -- rotation ------------------------------------------------------------

    def maybe_rotate(self) -> None:
        """Called between batches: seal at the end of an epoch, rotate on size or age, and keep
        free space above the floor."""
        if self.sealer is not None and self.sealer.started and (self.sealer.pending or self.sealer.due()):
            if self.sealer.due():
                self._seal("epoch")
            else:
                self.sealer.insert(self._conn)
        policy = self.rotation
        if (self._held.full_since is None and self._live.first_ns is not None
                and time.monotonic() >= self._rotate_after and self._rotation_due(policy)):
            self.rotate()
        self.retain()

    def _rotation_due(self, policy: RotationPolicy) -> bool:
        due = False
        if self.limits.rotate_bytes:
            if self._sized_at != self._chain.next_batch_id:
                size = self._live.size_bytes()
                self._live_step = max(self._live_step, size - self._live_size)
                self._live_size = size
                self._sized_at = self._chain.next_batch_id
            due = self._live_size >= self.limits.rotate_bytes
        if policy.interval_s and time.monotonic() - self._live.opened >= policy.interval_s:
            due = True
        return due

    def rotate(self) -> Path | None:
        mode = self._live.to_rollback_journal()
        if mode != "delete":
            # a reader with the file open: try again later
            self._rotate_after = time.monotonic() + RETRY_S
            log.warning("rotation_postponed", reason=mode)
            return None
        if self.sealer is not None:
            self._seal("rotate")  # in the file being closed: it ends sealed
        target = self._live.close_as_rotated()
        self._live_size, self._sized_at = 0, None
        # the run goes on in the new file, which needs its own copy of the run
        # row; on a full disk records are held until it can be made
        self._start_run()
        log.info("rotated", path=str(target))
        self.retain(now=True)
        return target

    # -- retention (storage/retention.py; docs/design.md, "Retention") ----------

    def retain(self, now: bool = False) -> list[Path]:
        """Retention's step between batches (storage/retention.py): the files it removed, each
        recorded in a batch of the live file when it can take one now."""
        can_record = self._conn is not None and self._held.full_since is None
        return self._retainer.run(self.db_dir, self.rotation, self.limits, self._live_step, now,
                                  (lambda: self._insert_batch([])) if can_record else None)

    # -- sealing (storage/sealer.py) -----------------------------------------

    def _seal(self, reason: str) -> None:
        """Seal the chain as committed now (its last batch id and hash) and put the seal in the
        live file (or keep it for the next batch, if the file cannot take it now)."""
        self.sealer.seal(reason, self._chain.next_batch_id - 1, self._chain.last_hash)
        self.sealer.insert(self._conn)

    def _seal_start(self) -> None:
        """At the run's start, once the live file is open: seals a crash kept out of the files
        put back, then the start seal over every batch written before (docs/design.md,
        "Forward-secure sealing")."""
        def batch_hashes(ids):
            marks = ", ".join("?" * len(ids))
            return dict(self._conn.exec_driver_sql(
                f"SELECT id, hash FROM batches WHERE id IN ({marks})", tuple(ids)).fetchall())

        self.sealer.started = True  # tried once: a start seal that fails waits for the epoch's
        try:
            self.sealer.recover(self._conn, self.db_dir, batch_hashes)
        except DBAPIError as e:
            log.error("seals_not_recovered", error=why(e))
        self._seal("start")  # Sealer.insert ends the reads recover left open
