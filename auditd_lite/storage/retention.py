"""Retention: which rotated (and set-aside) files go, oldest first and never the live file, and
the record of each removal in the chain (docs/design.md, "Retention").

The limits are storage/rotation.py's; the names and the order of the files auditd_lite.dbfiles'
(docs/design.md, "One owner for the database files"). What is removed is recorded before it goes,
in a batch of the live file (removed_files, chain format 5), with the records the removed file
held of earlier removals carried on; if the live file cannot take the record now (the disk is
full), it rides on the next batch written.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog

from ..dbfiles import COMPANIONS, LIVE_NAME, chain_files, connect_ro, has_table, is_rotated
from .rotation import MIB, Limits, RotationPolicy, free_bytes

log = structlog.get_logger("auditd_lite.writer")

# why a file was removed (removed_files.reason)
REASONS = ("keep", "max_size", "min_free")
CHECK_EVERY_S = 1.0  # how often the directory is looked at between rotations


def footprint(path) -> int:
    """A database file's bytes on disk with what SQLite keeps beside it."""
    total = 0
    for suffix in COMPANIONS + ("-journal",):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except FileNotFoundError:
            pass
    return total


@dataclass(frozen=True)
class Removal:
    path: Path
    reason: str  # REASONS
    detail: str
    size: int


def _mb(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def plan(db_dir, policy: RotationPolicy, lim: Limits, step: int = 0) -> list[Removal]:
    """The files to remove now, oldest first: beyond ``keep`` rotated files; while the directory's
    files, the live one counted at its full room (Limits.live_room, growing ``step`` bytes a
    batch), pass the cap; while free space is under the floor. Rotated and set-aside files, never
    the live file. Rotated files come only at a rotation, when this is asked again, so between
    two rotations the directory stays under the cap as the live file grows."""
    if not policy.retention:
        return []
    db_dir = Path(db_dir)
    candidates = chain_files(db_dir)
    sizes = {p: footprint(p) for p in candidates}
    others = sum(sizes.values())
    live = max(footprint(db_dir / LIVE_NAME), lim.live_room(step))
    free = free_bytes(db_dir)
    excess = max(0, sum(1 for p in candidates if is_rotated(p)) - policy.keep) if policy.keep else 0
    out = []
    for p in candidates:
        if excess and is_rotated(p):
            reason, detail = "keep", f"more than keep = {policy.keep} rotated files"
        elif others + live > lim.max_bytes:
            reason, detail = "max_size", (f"the directory would hold {_mb(others + live)} with the live "
                                          f"file at its full size, above max_size {_mb(lim.max_bytes)}")
        elif free < lim.floor_bytes:
            reason, detail = "min_free", f"{_mb(free)} free, below min_free {_mb(lim.floor_bytes)}"
        else:
            continue  # a set-aside file, while keep still removes rotated files after it
        out.append(Removal(p, reason, detail, sizes[p]))
        others -= sizes[p]
        free += sizes[p]
        if reason == "keep":
            excess -= 1
    return out


def what_it_held(path) -> tuple[dict, list[dict]]:
    """For the record of ``path``'s removal: where it stood in the chain (its first batch and
    the hash before it, its last batch and hash, its records and their time span), and the
    removed_files rows it holds itself, to be carried on. NULLs where it cannot be read."""
    facts = dict.fromkeys(("first_batch_id", "first_prev_hash", "last_batch_id", "last_hash",
                           "records", "first_ns", "last_ns"))
    carried: list[dict] = []
    try:
        con = connect_ro(path)
        try:
            cols = {r[1] for r in con.execute("PRAGMA table_info(batches)")}
            links = "prev_hash" if "prev_hash" in cols else "NULL"
            first = con.execute(f"SELECT id, {links} FROM batches ORDER BY id LIMIT 1").fetchone()
            last = con.execute(f"SELECT id, {'hash' if 'hash' in cols else 'NULL'} FROM batches "
                               "ORDER BY id DESC LIMIT 1").fetchone()
            if first is not None:
                facts.update(first_batch_id=first[0], first_prev_hash=first[1], last_batch_id=last[0],
                             last_hash=last[1])
            facts["records"], facts["first_ns"], facts["last_ns"] = con.execute(
                "SELECT (SELECT count(*) FROM events), (SELECT min(time_ns) FROM events), "
                "(SELECT max(time_ns) FROM events)").fetchone()
            if has_table(con, "removed_files"):
                con.row_factory = sqlite3.Row
                carried = [{k: r[k] for k in r.keys() if k not in ("id", "batch_id")}
                           for r in con.execute("SELECT * FROM removed_files ORDER BY id")]
        finally:
            con.close()
    except sqlite3.DatabaseError:
        pass  # a damaged set-aside file: its removal is recorded without what it held
    return facts, carried


def unlink(path) -> None:
    """Remove a database file with what SQLite keeps beside it."""
    for suffix in COMPANIONS + ("-journal",):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class Retainer:
    """Retention for one batch writer: when to look, and the records of removals no batch holds
    yet (``pending``, which the writer's next batch carries)."""

    def __init__(self):
        self.pending: list[dict] = []
        self._next = 0.0

    def reset(self) -> None:
        """A new policy: look at once."""
        self._next = 0.0

    def run(self, db_dir: Path, policy: RotationPolicy, lim: Limits, step: int, now: bool,
            record: Callable[[], None] | None) -> list[Path]:
        """Remove what the policy says must go (at most every CHECK_EVERY_S unless ``now``), each
        removal recorded first by ``record()`` (a batch of no records, which carries ``pending``;
        None or a failure: the next batch does) and logged; the files removed. ``step``: the live
        file's largest growth between two looks (plan)."""
        if not policy.retention or (not now and time.monotonic() < self._next):
            return []
        self._next = time.monotonic() + CHECK_EVERY_S
        try:
            doomed = plan(db_dir, policy, lim, step)
        except OSError as e:
            log.error("retention_failed", error=e.strerror or str(e), path=str(db_dir))
            return []
        if not doomed:
            return []
        removed_ns = time.time_ns()
        records = []
        for r in doomed:
            held, carried = what_it_held(r.path)
            records.append(dict(held, removed_ns=removed_ns, name=r.path.name, reason=r.reason,
                                detail=r.detail, size=r.size))
            self.pending += [records[-1]] + carried  # earlier removals' records go on too
        if record is not None:
            try:
                record()
            except Exception as e:  # noqa: BLE001 - kept for the next batch; the files go anyway
                log.warning("removal_not_recorded_yet", error=str(getattr(e, "orig", None) or e),
                            files=len(doomed))
        for r, rec in zip(doomed, records):
            unlink(r.path)
            log.warning("retention_removed", path=str(r.path), reason=r.reason, detail=r.detail,
                        size=r.size, records=rec["records"], first_batch_id=rec["first_batch_id"],
                        last_batch_id=rec["last_batch_id"], first_prev_hash=rec["first_prev_hash"],
                        last_hash=rec["last_hash"], recorded=not self.pending)
        return [r.path for r in doomed]
