"""When the live file rotates, and the limits retention keeps the directory in (docs/design.md,
"Retention"): the policy and its figures for a file system. What retention removes, and its
record of each removal, are storage/retention.py's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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
