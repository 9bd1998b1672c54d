"""The writer's side of sealing (auditd_lite/seal.py; docs/design.md, "Forward-secure sealing"):
when a seal is due, making it (which moves the state to the next epoch's key), and putting
seals in the live file, in epoch order, once they are made.

A seal made is in the state file before it is anywhere else; one the live file does not take
(a full disk) waits in memory for the next batch, and one a crash kept out of every file is
put back from the state's ``recent`` seals at the next start.
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog
from sqlalchemy.exc import DBAPIError

from .. import dbfiles, seal
from .batches import unreadable
from .livefile import why
from .schema import seals

log = structlog.get_logger("auditd_lite.writer")

SEAL_COLUMNS = seal.FIELDS + ("mac",)
INSERT_SEAL = (f"INSERT INTO {seals.name} ({', '.join(SEAL_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(SEAL_COLUMNS))})")


def _top_epoch(key_id: str):
    """The reader of a file's last epoch of one key chain (None: the file has none)."""
    def read(query) -> int | None:
        if not query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'seals'"):
            return None
        # key ids are 16 hex digits (seal.key_id): nothing to quote
        return query(f"SELECT max(epoch) FROM seals WHERE key_id = '{key_id}'")[0][0]
    return read


class Sealer:
    """Seals for one BatchWriter. Nothing here may stop capture: a state that cannot be
    written is said in the log and tried again at the next due time."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.state = seal.State.load(self.state_dir)  # SealError: the caller says it, and goes on
        for path, have, want in seal.State.loose_modes(self.state_dir):
            # the next state is written with FILE_MODE anyway
            log.warning("seal_state_permissions", path=str(path), mode=oct(have), fixed_to=oct(want))
            path.chmod(want)
        self.interval_s = self.state.interval_s
        self.pending: list[dict] = []  # made (in the state file), not yet in a database file
        self._due = time.monotonic() + self.interval_s
        self.started = False  # the start seal was tried (BatchWriter._seal_start)

    # -- at start ------------------------------------------------------------

    def recover(self, conn, db_dir: Path, batch_hashes) -> None:
        """Seals of the state's ``recent`` that no file holds: a crash came between the state
        file and the database. ``conn``: the live file (migrated); ``batch_hashes(ids)``: the
        hashes the live file holds for those batch ids. A recent seal whose batch is not there
        as sealed is left out (the directory is not the one it sealed) and said."""
        top_of = _top_epoch(self.state.key_id)
        top = top_of(lambda sql: conn.exec_driver_sql(sql).fetchall())
        if top is None:
            top = dbfiles.from_newest_older(db_dir, top_of, unreadable)
        conn.rollback()
        missing = [s for s in self.state.recent if top is None or s["epoch"] > top]
        if not missing:
            return
        held = batch_hashes([s["batch_id"] for s in missing])
        for s in missing:
            if s["batch_id"] == 0 or held.get(s["batch_id"]) == s["batch_hash"]:
                self.pending.append(s)
                log.warning("seal_recovered", epoch=s["epoch"], batch_id=s["batch_id"],
                            reason="made before a crash, not in any file")
            else:
                log.error("seal_not_recovered", epoch=s["epoch"], batch_id=s["batch_id"],
                          reason="its batch is not in the live file as it was sealed")

    # -- sealing -------------------------------------------------------------

    def due(self) -> bool:
        return time.monotonic() >= self._due

    def seal(self, reason: str, batch_id: int, batch_hash: str) -> bool:
        """Make the current epoch's seal over the last batch written; False (said in the log)
        when the state cannot be written, and then nothing changed."""
        self._due = time.monotonic() + self.interval_s
        try:
            s = self.state.advance(self.state_dir, reason, batch_id, batch_hash)
        except OSError as e:
            log.error("seal_failed", epoch=self.state.epoch, reason=reason,
                      error=e.strerror or str(e), state=str(self.state_dir))
            return False
        self.pending.append(s)
        log.info("sealed", epoch=s["epoch"], reason=reason, batch_id=batch_id)
        return True

    def insert(self, conn) -> None:
        """The pending seals into the live file, in one transaction; kept for the next call if
        the file refuses them."""
        if not self.pending or conn is None:
            return
        try:
            if conn.in_transaction():  # a read or a PRAGMA autobegun (rotation's journal mode)
                conn.rollback()
            with conn.begin():
                conn.exec_driver_sql(INSERT_SEAL, [tuple(s[c] for c in SEAL_COLUMNS) for s in self.pending])
        except DBAPIError as e:
            log.error("seal_not_written", epochs=[s["epoch"] for s in self.pending], error=why(e))
            return
        self.pending = []
