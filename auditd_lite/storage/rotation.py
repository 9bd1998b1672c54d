"""When files rotate, and which rotated files go: retention and free space.

Their names and their order belong to auditd_lite.dbfiles (docs/design.md, "One owner for the
database files"): retention and the free-space floor delete the oldest by that order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..dbfiles import rotated_files


@dataclass(frozen=True)
class RotationPolicy:
    size_mb: float | None = None  # rotate when the live file (with its WAL) passes this
    interval_s: float | None = None  # or when it has been open this long
    keep: int = 0  # rotated files to keep; 0 keeps all
    min_free_mb: float = 0  # below this free space, remove the oldest rotated files (keep > 0)


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
