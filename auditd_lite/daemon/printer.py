"""``run --print``: each record as a line on standard output, off the record path.

The writer hands rows over and goes on: a reader that stops reading (a
paused pager, a terminal on hold, a full pipe) stalls this thread only, never
the database. Rows that do not fit the bounded queue are dropped from the
printout and counted; the database still has every one of them. When the
reader goes away (``run --print | head``) the daemon stops cleanly, as
command-line tools do on a closed pipe.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable, TextIO

import structlog

from ..investigate.output import TABLE_HEADER, format_event_line
from ..investigate.query import row_to_record

log = structlog.get_logger("auditd_lite.daemon.printer")

QUEUE_ROWS = 100_000  # what may wait for a slow reader, in records
_STOP = object()

__all__ = ["Printer"]


class Printer(threading.Thread):
    def __init__(self, stream: TextIO, on_closed: Callable[[], None], limit: int = QUEUE_ROWS):
        super().__init__(name="printer", daemon=True)
        self.stream = stream
        self.on_closed = on_closed
        self.limit = limit
        self.dropped = 0
        self._queue: queue.Queue = queue.Queue()
        self._queued = 0  # rows waiting; the queue counts hand-overs, the bound is on rows
        self._lock = threading.Lock()
        self._closed = False

    def header(self) -> None:
        """The column header: scripts wait for it, as the sign that every program is attached."""
        try:
            self.stream.write(TABLE_HEADER + "\n")
            self.stream.flush()
        except (OSError, ValueError) as e:
            self.reader_gone(e)

    def __call__(self, rows: list) -> None:
        """Called by the writer thread: never blocks."""
        with self._lock:
            if self._closed:
                return
            if self._queued + len(rows) > self.limit:
                first = not self.dropped
                self.dropped += len(rows)
                if first:
                    log.warning("print_falling_behind", dropped=len(rows), queued=self._queued,
                                note="the database has every record; only the printout skips them")
                return
            self._queued += len(rows)
        self._queue.put(rows)

    def run(self) -> None:
        while True:
            rows = self._queue.get()
            if rows is _STOP:
                return
            with self._lock:
                self._queued -= len(rows)
            try:
                self.stream.write("".join(format_event_line(row_to_record(r)) + "\n" for r in rows))
                self.stream.flush()
            except (OSError, ValueError) as e:
                self.reader_gone(e)
                return

    def reader_gone(self, e: Exception) -> None:
        with self._lock:
            self._closed = True
        try:
            # nothing more can reach the reader; the interpreter's own flush
            # at exit must not fail on the closed pipe either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        log.info("print_reader_gone", error=str(e), note="stopping, as on SIGTERM")
        self.on_closed()

    def close(self, timeout: float = 5.0) -> None:
        """Print what is queued (for at most ``timeout`` s: a reader may never read again)."""
        self._queue.put(_STOP)
        self.join(timeout)
        if self.dropped:
            log.warning("print_dropped", count=self.dropped)
