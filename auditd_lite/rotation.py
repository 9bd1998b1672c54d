"""Rotated database files: their names, retention, and free space.

A rotated file is named for the UTC times of its first and last record, in
ISO basic format, so sorting names sorts time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

ROTATED_GLOB = "audit-*.db"
ROTATED_MODE = 0o440


@dataclass(frozen=True)
class RotationPolicy:
    size_mb: float | None = None  # rotate when the live file (with its WAL) passes this
    interval_s: float | None = None  # or when it has been open this long
    keep: int = 0  # rotated files to keep; 0 keeps all
    min_free_mb: float = 0  # below this free space, remove the oldest rotated files (keep > 0)


def _stamp(ns: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ns // 1_000_000_000))


def rotated_path(db_dir: Path, first_ns: int, last_ns: int) -> Path:
    base = f"audit-{_stamp(first_ns)}-{_stamp(last_ns)}"
    path = db_dir / f"{base}.db"
    n = 1
    while path.exists():  # two rotations within one second: never overwrite
        path = db_dir / f"{base}-{n}.db"
        n += 1
    return path


def rotated_files(db_dir: Path) -> list[Path]:
    """Oldest first."""
    return sorted(db_dir.glob(ROTATED_GLOB), key=lambda p: p.name)


def apply_retention(db_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` rotated files (0 keeps all); returns what was deleted."""
    if keep <= 0:
        return []
    files = rotated_files(db_dir)
    doomed = files[:-keep] if len(files) > keep else []
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def free_mb(db_dir: Path) -> float:
    st = os.statvfs(db_dir)
    return st.f_bavail * st.f_frsize / (1024 * 1024)


def make_room(db_dir: Path, policy: RotationPolicy) -> list[Path]:
    """Remove the oldest rotated files while free space is under the floor.

    Only when retention is on (keep > 0): with keep = 0 the user asked to keep
    all evidence, and that is not ours to delete.
    """
    removed: list[Path] = []
    if policy.min_free_mb <= 0 or policy.keep <= 0:
        return removed
    files = rotated_files(db_dir)
    while files and free_mb(db_dir) < policy.min_free_mb:
        p = files.pop(0)
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
