"""The writer thread: the pipeline stage between the collector and the batch writer.

It takes hand-overs from the collector's queue, decodes them, adds their
context (capture/context.py: started at once, so that the hashes are being
computed while the batch fills), batches them by size and time, and hands
each batch to storage's BatchWriter, which owns the one read-write
connection (docs/design.md, "One writer connection").
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from typing import Callable

import structlog

from .. import hostinfo
from ..capture.context import Context, Pending, PendingSeeds
from ..capture.records import Decoder
from ..storage.batchwriter import BatchWriter
from .messages import STOP, Attached, Handover, Seeds

log = structlog.get_logger("auditd_lite.writer")


def settle_gc() -> None:
    """Garbage-collector settings for the record path, once everything is loaded.

    Every record makes a few tuples, each of which counts towards a young
    collection (every 700 by default), and the loaded libraries leave
    hundreds of thousands of long-lived objects for the older ones to walk:
    that was about 4% of the writer's instructions. Freezing what start-up
    loaded and collecting less often costs little memory, since records
    form no cycles.
    """
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)



class Writer(threading.Thread):
    """The pipeline stage: takes hand-overs from the collector, decodes, batches, writes."""

    def __init__(self, batch_writer: BatchWriter, inbox: queue.Queue, decoder: Decoder,
                 context: Context, batch_ms: int = 200, printer: Callable[[list], None] | None = None,
                 stream=None):
        super().__init__(name="writer", daemon=True)
        self.bw = batch_writer
        self.inbox = inbox
        self.decoder = decoder
        self.context = context
        self.batch_s = batch_ms / 1000
        self.printer = printer
        self.stream = stream  # daemon/stream.py: the batch writer hands it each committed batch
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.heartbeat = time.monotonic()
        self._pending: list[Pending] = []
        self._count = 0  # records in _pending
        self._seeds: PendingSeeds | None = None
        self._first_at = 0.0
        self._lost_seen = 0

    @property
    def run_id(self):
        return self.bw.run_id

    def run(self) -> None:
        try:
            self.bw.open()
        except BaseException as e:  # reported to the main thread, which exits with it
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        try:
            self._loop()
            if self.stream is not None:
                # every batch is committed and handed over: its totals go into the run's stop
                self.stream.close()
            self.bw.close(clean=True)
        except BaseException as e:
            self.error = e
            log.error("writer_failed", error=str(e))

    def _loop(self) -> None:
        batch_size = self.bw.batch_size
        while True:
            self.heartbeat = time.monotonic()
            timeout = 0.5
            if self._pending:
                timeout = max(0.0, self._first_at + self.batch_s - time.monotonic())
            try:
                item = self.inbox.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is STOP:
                self._flush()
                self._write_seeds(wait=True)
                return
            if isinstance(item, Handover):
                if item.raw:
                    if not self._pending:
                        self._first_at = time.monotonic()
                    self.decoder.realtime_offset_ns = hostinfo.realtime_offset_ns()
                    named: list = []
                    rows = self.decoder.decode_all(item.raw, named)
                    self._pending.append(self.context.begin(rows, named))
                    self._count += len(rows)
                if item.lost_kernel != self._lost_seen:
                    new = item.lost_kernel - self._lost_seen
                    log.warning("events_lost", where="kernel", count=new, lost_total=item.lost_kernel)
                    self.bw.note_lost_kernel(new)
                    self._lost_seen = item.lost_kernel
            elif isinstance(item, Attached):
                self.bw.set_attached(item.time_ns, item.capture)
            elif isinstance(item, Seeds):
                self._seeds = self.context.begin_seeds(item.processes)
            if self._seeds is not None:
                self._write_seeds(wait=False)
            if self._count >= batch_size or (
                    self._pending and time.monotonic() - self._first_at >= self.batch_s):
                self._flush()
            elif item is None:
                self._flush()  # idle: lost counts, held records and time-based rotation

    def _write_seeds(self, wait: bool) -> None:
        """The seen-at-start rows, once their hashes are in (or at their deadline, or when
        stopping: wait); until then the writer goes on with records."""
        seeds = self._seeds
        if seeds is None or not (wait or seeds.ticket.ready() or time.monotonic() >= seeds.deadline):
            return
        self._seeds = None
        self.bw.write_seeds(self.context.finish_seeds(seeds))

    def _flush(self) -> None:
        pending, self._pending, self._count = self._pending, [], 0
        rows = self.context.finish(pending, self._first_at)
        if self.printer is not None and rows:
            self.printer(rows)
        self.bw.write(rows)
        if not rows:
            self.bw.maybe_rotate()
            self.bw.note_stream()
