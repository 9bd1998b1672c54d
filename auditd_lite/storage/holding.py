"""Records held in memory while the disk has no room for them, and when to try again."""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from .livefile import why

# the writer's: these steps were its own, and the log keeps naming it
log = structlog.get_logger("auditd_lite.writer")

RETRY_S = 1.0  # how often a full disk is tried again


class Held:
    """Oldest first; beyond ``limit`` the oldest are for the writer to drop and count."""

    def __init__(self, limit: int):
        self.rows: list[tuple] = []
        self.limit = limit
        self.full_since: float | None = None  # monotonic time the disk was found full
        self._next_retry = 0.0

    def disk_full(self, db_dir: Path, e: Exception, extra: int, event: str) -> None:
        """Said once until space returns; ``extra`` records are about to be held too."""
        if self.full_since is None:
            self.full_since = time.monotonic()
            log.error(event, path=str(db_dir), error=why(e),
                      held=len(self.rows) + extra, hold_limit=self.limit)
        self._next_retry = time.monotonic() + RETRY_S

    def retry_due(self) -> bool:
        return time.monotonic() >= self._next_retry

    def excess(self) -> int:
        return len(self.rows) - self.limit

    def space_returned(self) -> float | None:
        """Seconds the disk was full, once, when writing succeeds again; else None."""
        if self.full_since is None:
            return None
        after, self.full_since = time.monotonic() - self.full_since, None
        return after
