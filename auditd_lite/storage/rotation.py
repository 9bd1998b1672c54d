"""When files rotate, and which rotated files retention removes (docs/design.md, "Retention").

Their names and their order belong to auditd_lite.dbfiles (docs/design.md, "One owner for the
database files"): retention removes the oldest by that order, never the live file. What it
removes the batch writer records in the chain (removed_files, chain format 5) before the file
goes; this module decides, and reads what a file holds for that record.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..dbfiles import COMPANIONS, LIVE_NAME, chain_files, connect_ro, has_table, is_rotated

MIB = 1024 * 1024
# the defaults, as journald's SystemMaxUse= and SystemKeepFree= (journald.conf(5)): 10% and 15% of
# the file system, each at most 4 GiB; and as its SystemMaxFileSize=, the live file rotates at an
# eighth of the cap, so that removing rotated files can always keep the directory under it
AUTO_MAX_SHARE, AUTO_FREE_SHARE, AUTO_CAP_MB = 0.10, 0.15, 4096
LIVE_SHARE = 8
# the live file's WAL: SQLite checkpoints it at store.WAL_CHECKPOINT_PAGES; under a small cap it
# is kept to a quarter of the rotation size (at least this many pages), or the WAL alone would
# pass the cap
MIN_WAL_PAGES = 64
PAGE_BYTES = 4096  # SQLite's default page size, the daemon's
SHM_BYTES = 64 * 1024  # a -shm file, rounded up (32 KiB for the daemon's WAL)
MIN_STEP = 64 * 1024  # a batch's growth taken at least this until one is seen
# why a file was removed (removed_files.reason)
REASONS = ("keep", "max_size", "min_free")


@dataclass(frozen=True)
class RotationPolicy:
    size_mb: float | None = None  # rotate when the live file (with its WAL) passes this
    interval_s: float | None = None  # or when it has been open this long
    retention: bool = False  # remove the oldest rotated files to keep within the limits below
    keep: int = 0  # rotated files to keep; 0: no limit by count
    max_size_mb: float = 0  # the directory's files at most this; 0: the default (AUTO_*)
    min_free_mb: float = 0  # free space in the file system at least this; 0: the default


@dataclass(frozen=True)
class Limits:
    """A policy's figures for one directory's file system, in bytes."""

    max_bytes: int | None  # None: retention off
    floor_bytes: int | None
    rotate_bytes: int | None  # the live file rotates at this size (None: not by size)
    wal_pages: int  # the live file's WAL checkpoints at this many pages

    def live_room(self, step: int) -> int:
        """What the live file may take on disk before it rotates, when it grows by at most
        ``step`` bytes at a time (a batch): its pages up to the rotation size and a step past it,
        its WAL up to the checkpoint and a step past it (the checkpoint comes after the
        transaction that passed the mark), and the -shm."""
        step = max(step, MIN_STEP)
        return (self.rotate_bytes or 0) + self.wal_pages * PAGE_BYTES + 2 * step + SHM_BYTES


def limits(db_dir, policy: RotationPolicy, default_wal_pages: int) -> Limits:
    rotate = int(policy.size_mb * MIB) if policy.size_mb else None
    if not policy.retention:
        return Limits(None, None, rotate, default_wal_pages)
    st = os.statvfs(db_dir)
    fs = st.f_blocks * st.f_frsize

    def auto(mb, share):
        return int(mb * MIB) if mb else int(min(fs * share, AUTO_CAP_MB * MIB))

    max_bytes = auto(policy.max_size_mb, AUTO_MAX_SHARE)
    share = max_bytes // LIVE_SHARE
    rotate = share if rotate is None else min(rotate, share)
    wal = max(MIN_WAL_PAGES, min(default_wal_pages, rotate // PAGE_BYTES // 4))
    return Limits(max_bytes, auto(policy.min_free_mb, AUTO_FREE_SHARE), rotate, wal)


def free_bytes(db_dir) -> int:
    st = os.statvfs(db_dir)
    return st.f_bavail * st.f_frsize


def free_mb(db_dir) -> float:
    return free_bytes(db_dir) / MIB


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
