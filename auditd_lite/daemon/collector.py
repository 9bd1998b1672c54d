"""The reader thread: polls the kernel buffer and hands raw records to the writer."""

from __future__ import annotations

import queue
import threading
import time

import structlog

from .messages import STOP, Handover
from ..capture.records import CNT_LOST

log = structlog.get_logger("auditd_lite.daemon.collector")


class Collector(threading.Thread):
    """Reads until stopped, then stops capture, drains the buffer and says STOP.

    The queue to the writer blocks when full, so user space never drops a
    record: back-pressure ends in the kernel buffer, whose drops are counted.
    """

    def __init__(self, out: queue.Queue, poll_ms: int = 100):
        super().__init__(name="collector", daemon=True)
        self.out = out
        self.poll_ms = poll_ms
        self.programs = None
        self.heartbeat = time.monotonic()
        # the programs append every record here as they poll (capture.loader.Programs)
        self.records: list = []
        self._last = 0
        self._stop_requested = threading.Event()

    def stop(self) -> None:
        self._stop_requested.set()

    def run(self) -> None:
        programs = self.programs
        try:
            while not self._stop_requested.is_set():
                programs.poll(self.poll_ms)
                self._hand_over()
                self.heartbeat = time.monotonic()
            # the boundary of coverage: what ended before stopping_ns is recorded
            # whole, what started after time_ns not at all
            stopping_ns = time.time_ns()
            programs.detach()
            log.info("capture_stopped", stopping_ns=stopping_ns, time_ns=time.time_ns())
            programs.drain()
            self._hand_over()
        finally:
            self.out.put(STOP)

    def _hand_over(self) -> None:
        lost = self.programs.counters()[CNT_LOST]
        if self.records or lost != self._last:
            buf = self.records[:]
            self.records.clear()
            self._last = lost
            self.out.put(Handover(buf, lost))
