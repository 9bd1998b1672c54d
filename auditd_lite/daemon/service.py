"""What the daemon's main loop tells systemd and the log while capture runs.

The watchdog is pinged only while every worker thread shows a fresh
heartbeat (a monotonic time it updates each time round its loop). A hung
writer, or a reader stuck behind it, stops the pings, and systemd restarts
the service once WatchdogSec= passes without one.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Protocol

import structlog

from .notify import Notifier

log = structlog.get_logger("auditd_lite.daemon.service")

SUMMARY_EVERY_S = 60.0  # the journal gets one summary line a minute, not one per event
STATUS_EVERY_S = 5.0


class Worker(Protocol):
    name: str
    heartbeat: float


def counts_text(written: int, lost_kernel: int, lost_user: int) -> str:
    return f"{written} records written, {lost_kernel + lost_user} lost"


class Supervisor:
    """Called from the main loop: ``ready()`` once, then ``tick()`` every fraction of a second.

    ``counters()`` returns (records written, lost in the kernel, lost in user
    space), all cumulative since start.
    """

    def __init__(self, notifier: Notifier, workers: Iterable[Worker],
                 counters: Callable[[], tuple[int, int, int]],
                 clock: Callable[[], float] = time.monotonic,
                 summary_every: float = SUMMARY_EVERY_S, status_every: float = STATUS_EVERY_S):
        self.notifier = notifier
        self.workers = list(workers)
        self.counters = counters
        self.clock = clock
        period = notifier.watchdog_period()
        # ping at half the period (as sd_watchdog_enabled(3) advises); a
        # heartbeat older than half the period means the thread is stuck
        self.ping_every = period / 2 if period else None
        self.stale_after = period / 2 if period else None
        self.summary_every = summary_every
        self.status_every = status_every
        now = clock()
        self._last_ping = now
        self._last_status = now
        self._last_status_counts: tuple | None = None
        self._last_summary = now
        self._summary_written = 0
        self._withheld = False

    def stale_workers(self, now: float | None = None) -> dict[str, float]:
        """Workers whose heartbeat is older than the limit: name -> age in seconds."""
        if self.stale_after is None:
            return {}
        now = self.clock() if now is None else now
        return {w.name: round(now - w.heartbeat, 1) for w in self.workers
                if now - w.heartbeat > self.stale_after}

    def ready(self) -> None:
        self.notifier.ready(status="capturing: " + counts_text(*self.counters()))
        self._last_summary = self.clock()
        self._summary_written = self.counters()[0]

    def tick(self) -> None:
        now = self.clock()
        self._watchdog(now)
        if now - self._last_status >= self.status_every:
            self._status(now)
        if now - self._last_summary >= self.summary_every:
            self._summary(now)

    def _watchdog(self, now: float) -> None:
        if self.ping_every is None or now - self._last_ping < self.ping_every:
            return
        stale = self.stale_workers(now)
        if stale:
            if not self._withheld:
                log.error("watchdog_withheld", stale=stale, stale_after_s=self.stale_after)
                self._withheld = True
            return
        if self._withheld:
            log.info("watchdog_resumed")
            self._withheld = False
        self.notifier.watchdog_ping()
        self._last_ping = now

    def _status(self, now: float) -> None:
        counts = self.counters()
        if counts != self._last_status_counts:
            self.notifier.status("capturing: " + counts_text(*counts))
            self._last_status_counts = counts
        self._last_status = now

    def _summary(self, now: float) -> None:
        written, lost_kernel, lost_user = self.counters()
        elapsed = now - self._last_summary
        log.info("summary", events_written=written, lost_kernel=lost_kernel, lost_user=lost_user,
                 rate_per_s=round((written - self._summary_written) / elapsed, 1) if elapsed > 0 else 0.0,
                 interval_s=round(elapsed, 1))
        self._last_summary = now
        self._summary_written = written

    def stopping(self) -> None:
        self.notifier.stopping(status="stopping: draining the kernel buffer, writing every record")

    def stopped(self, status: int) -> None:
        # the last STATUS= stays in `systemctl status` after the process exits
        self.notifier.status(f"stopped (status {status}): " + counts_text(*self.counters()))
