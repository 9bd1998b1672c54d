"""`auditd-lite run`: wires loader, collector and writer together and handles signals."""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time

import structlog

from . import seed
from .collector import STOP as STOP_WRITER, Collector
from .config import RunSettings
from .errors import CannotCapture
from .records import Decoder
from .writer import Attached, BatchWriter, Seeds, Writer

log = structlog.get_logger("auditd_lite.daemon")

# batches of records in flight between the threads; when full the reader
# blocks and the kernel buffer absorbs the burst (and counts what it drops)
QUEUE_DEPTH = 256


def require_privileges() -> None:
    if os.geteuid() != 0:
        raise CannotCapture("auditd-lite run needs root (or CAP_BPF, CAP_PERFMON and "
                            "CAP_SYS_RESOURCE): run it with sudo or as the systemd service")


def make_printer(stream):
    from .output import TABLE_HEADER, format_event_line
    from .query import row_to_record

    def printer(rows: list) -> None:
        stream.write("".join(format_event_line(row_to_record(row)) + "\n" for row in rows))
        stream.flush()

    return TABLE_HEADER, printer


def run(settings: RunSettings) -> int:
    require_privileges()
    # database files 0640, directories 0750: the evidence is not world-readable
    os.umask(0o027)
    from . import loader  # imports bcc: only now that it is needed

    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    header, printer = make_printer(sys.stdout) if settings.print else (None, None)
    inbox: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
    decoder = Decoder(settings.max_args)
    batch_writer = BatchWriter(settings.db_dir, settings.as_dict(), batch_size=settings.batch_size,
                               synchronous=settings.synchronous, rotation=settings.rotation_policy())
    writer = Writer(batch_writer, inbox, decoder, batch_ms=settings.batch_ms, printer=printer)
    writer.start()
    writer.ready.wait()
    if writer.error is not None:
        raise writer.error
    log.info("daemon_started", pid=os.getpid(), db_dir=str(settings.db_dir), run_id=writer.run_id)

    collector = Collector(inbox)
    program_settings = loader.ProgramSettings(
        transport=settings.transport, buffer_kb=settings.buffer_kb,
        min_duration_ns=settings.min_duration_ms * 1_000_000,
        max_args=settings.max_args, arg_bytes=settings.max_arg_bytes)
    try:
        programs = loader.Programs(program_settings, collector.on_record, collector.on_lost)
    except BaseException:
        inbox.put(STOP_WRITER)
        writer.join()
        raise
    collector.programs = programs
    collector.start()
    inbox.put(Attached(time.time_ns()))
    if header is not None:
        # scripts wait for this line: it means every program is attached
        sys.stdout.write(header + "\n")
        sys.stdout.flush()
    inbox.put(Seeds(list(seed.running_processes())))

    status = 0
    while not stop.wait(0.5):
        if not writer.is_alive() or not collector.is_alive():
            log.error("worker_died", writer=writer.is_alive(), collector=collector.is_alive())
            status = 1
            break
    log.info("daemon_stopping")
    collector.stop()
    if writer.is_alive():
        collector.join()
        writer.join()
    else:
        # a dead writer cannot take the collector's last hand-over: do not wait on it
        collector.join(timeout=2)
    programs.close()
    sys.stdout.flush()
    if writer.error is not None:
        log.error("daemon_stopped", status=1, error=str(writer.error))
        return 1
    log.info("daemon_stopped", status=status, events_written=batch_writer.events_written,
             lost_kernel=batch_writer.lost_kernel, lost_user=batch_writer.lost_user)
    return status
