"""`auditd-lite run`: wires loader, collector and writer together and handles signals."""

from __future__ import annotations

import os
import queue
import sys
import time
from dataclasses import dataclass, fields, replace
from typing import Callable

import structlog

from . import logsetup
from .. import chain, dbfiles, hostinfo
from ..capture import compiler, loader, seed
from .collector import Collector
from ..config import RunSettings
from ..errors import CannotCapture
from .messages import STOP, Attached, Seeds
from .notify import Notifier
from ..capture.context import Context
from ..capture.records import DECODER, Decoder
from ..investigate.output import JSON_LINES
from .printer import Printer
from .service import Supervisor
from .signals import Signals
from .stream import Stream, check_path
from ..storage import batches
from ..storage.batchwriter import BatchWriter
from .writer import Writer, settle_gc

log = structlog.get_logger("auditd_lite.daemon.main")

# batches of records in flight between the threads; when full the reader
# blocks and the kernel buffer absorbs the burst (and counts what it drops)
QUEUE_DEPTH = 256

# what SIGHUP can change without reloading the programs or reopening the
# database; every other key is logged as needing a restart
ROTATION_KEYS = ("rotate_size_mb", "rotate_interval", "retention", "keep", "max_size_mb", "min_free_mb")
RELOADABLE = ("log_level",) + ROTATION_KEYS


def apply_reload(new_settings: RunSettings, *, current: RunSettings, batch_writer) -> RunSettings:
    """Apply what can change live; returns the settings now in force."""
    changed = [f.name for f in fields(RunSettings)
               if getattr(new_settings, f.name) != getattr(current, f.name)]
    live = [k for k in changed if k in RELOADABLE]
    restart = [k for k in changed if k not in RELOADABLE]
    if "log_level" in live:
        logsetup.configure(new_settings.log_level)
    if any(k in ROTATION_KEYS for k in live):
        # the writer reads its policy between batches: the next batch uses it
        batch_writer.rotation = new_settings.rotation_policy()
    log.info("config_reloaded", applied={k: str(getattr(new_settings, k)) for k in live},
             needs_restart=restart)
    if restart:
        log.warning("reload_needs_restart", keys=restart,
                    hint="systemctl restart auditd-lite to apply them")
    return replace(current, **{k: getattr(new_settings, k) for k in live})


def require_privileges() -> None:
    if os.geteuid() != 0:
        raise CannotCapture("auditd-lite run needs root (with at least CAP_BPF and CAP_PERFMON): "
                            "run it with sudo or as the systemd service")


def run(settings: RunSettings, reread: Callable[[], RunSettings] | None = None,
        child: compiler.Child | None = None) -> int:
    """``reread`` gives the settings again (file, then flags) when SIGHUP asks for a reload;
    ``child``, the compiler child for these settings if the caller started it already."""
    try:
        require_privileges()
        # before the database is touched: a host without bcc records no run at all
        compiler.require_bcc()
    except BaseException:
        if child is not None:
            child.kill()
        raise
    # database files 0640, directories 0750: the evidence is not world-readable
    os.umask(0o027)
    # SIGHUP too, and now, before the slow compile: its default action would kill us
    signals = Signals(reload=True)
    notifier = Notifier()
    pipeline = _start(settings, signals, notifier, child)
    status = _serve(pipeline, settings, reread, signals, notifier)
    return _stop(pipeline, signals, status)


def _log_received(signals: Signals) -> None:
    for name in signals.received():  # logged here, never in the handler: it could re-enter a write
        log.info("signal_received", signal=name)


@dataclass
class _Pipeline:
    batch_writer: BatchWriter
    writer: Writer
    collector: Collector
    programs: loader.Programs
    printer: Printer | None
    stream: Stream | None
    supervisor: Supervisor
    context: Context


def sealer_for(state_dir):
    """The writer's sealer when `seal setup` made a state in ``state_dir``; None (said) when it
    did not, or when the state cannot be read: capture goes on unsealed, and verify --verify-key
    finds the seals missing (docs/design.md, "Forward-secure sealing")."""
    if not (state_dir / dbfiles.SEAL_STATE_NAME).exists():
        log.info("sealing_off", state=str(state_dir), reason="not set up (auditd-lite seal setup)")
        return None
    from ..seal import SealError
    from ..storage.sealer import Sealer

    try:
        sealer = Sealer(state_dir)
    except SealError as e:
        log.error("sealing_off", state=str(state_dir), reason=str(e))
        return None
    log.info("sealing_on", state=str(state_dir), epoch=sealer.state.epoch,
             key_id=sealer.state.key_id, interval_s=sealer.interval_s)
    return sealer


def _start(settings: RunSettings, signals: Signals, notifier: Notifier,
           child: compiler.Child | None) -> _Pipeline:
    """Database open (or records held), programs attached, running processes seeded, READY."""
    program_settings = loader.ProgramSettings.for_run(settings)
    # the programs compile in a child while the database opens here
    child = child or compiler.Child(program_settings)
    try:
        return _start_with(settings, signals, notifier, program_settings, child)
    except BaseException:
        child.kill()
        raise


def _start_with(settings: RunSettings, signals: Signals, notifier: Notifier,
                program_settings: loader.ProgramSettings, child: compiler.Child) -> _Pipeline:
    printer = Printer(sys.stdout, on_closed=signals.request_stop) if settings.print else None
    stream = None
    if settings.stream:
        check_path(settings.stream)  # before the run is recorded: a PATH that can never be written
        stream = Stream(settings.stream, settings.stream_max_size_mb, settings.stream_max_files)
        stream.start()
    inbox: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
    decoder = Decoder(settings.max_args, host_mntns=hostinfo.host_mount_ns())
    batch_writer = BatchWriter(settings.db_dir, settings.as_dict(), batch_size=settings.batch_size,
                               synchronous=settings.synchronous, rotation=settings.rotation_policy(),
                               on_commit=stream.offer if stream else None,
                               stream_counts=stream.counts if stream else None,
                               sealer=sealer_for(settings.seal_state))
    context = Context.for_run(settings.hash, settings.hash_limit_mb * 1024 * 1024)
    writer = Writer(batch_writer, inbox, decoder, context, batch_ms=settings.batch_ms, printer=printer,
                    stream=stream)
    writer.start()
    writer.ready.wait()
    if writer.error is not None:
        raise writer.error
    log.info("daemon_started", pid=os.getpid(), db_dir=str(settings.db_dir), run_id=writer.run_id,
             decoder=DECODER, record_digests=chain.DIGESTS, inserts=batches.INSERTS,
             json_lines=JSON_LINES)

    collector = Collector(inbox)
    try:
        programs = loader.Programs(program_settings, collector.records, child)
    except BaseException:
        inbox.put(STOP)
        writer.join()
        context.close()
        raise
    collector.programs = programs
    collector.start()
    inbox.put(Attached(time.time_ns(), programs.capture))
    # listed before the header is printed, as before READY=1: whoever waits for either knows
    # that a process running by then is seeded (and one started after is captured)
    inbox.put(Seeds(list(seed.running_processes())))
    if printer is not None:
        printer.header()  # before its thread prints a record: the header comes first
        printer.start()
    supervisor = Supervisor(notifier, (collector, writer), lambda: (
        batch_writer.events_written, batch_writer.lost_kernel, batch_writer.lost_user))
    supervisor.ready()
    settle_gc()
    return _Pipeline(batch_writer, writer, collector, programs, printer, stream, supervisor, context)


def _serve(p: _Pipeline, settings: RunSettings, reread, signals: Signals, notifier: Notifier) -> int:
    """Until a stop is asked for (0) or a worker thread dies (1); reloads on the way."""
    while not signals.wait(0.5):
        _log_received(signals)
        if not p.writer.is_alive() or not p.collector.is_alive():
            log.error("worker_died", writer=p.writer.is_alive(), collector=p.collector.is_alive())
            return 1
        if signals.reloading:
            signals.reloading = False
            settings = _reload(settings, reread, p.batch_writer, notifier)
        p.supervisor.tick()
    return 0


def _stop(p: _Pipeline, signals: Signals, status: int) -> int:
    """Capture stopped, the buffer drained, every record written; the exit status."""
    _log_received(signals)
    p.supervisor.stopping()
    # a repeated SIGTERM while we flush and exit must not turn a clean stop into a kill:
    # past this point the first one is already being acted on
    signals.ignore()
    log.info("daemon_stopping")
    p.collector.stop()
    if p.writer.is_alive():
        p.collector.join()
        p.writer.join()
    else:
        # a dead writer cannot take the collector's last hand-over: do not wait on it
        p.collector.join(timeout=2)
    p.programs.close()
    p.context.close()
    if p.printer is not None:
        p.printer.close()
    if p.writer.error is not None:
        log.error("daemon_stopped", status=1, error=str(p.writer.error))
        p.supervisor.stopped(1)
        return 1
    p.supervisor.stopped(status)
    bw = p.batch_writer
    streamed = {}
    if p.stream is not None:
        streamed = dict(zip(dbfiles.STREAM_COUNTERS, p.stream.counts()))
    log.info("daemon_stopped", status=status, events_written=bw.events_written,
             lost_kernel=bw.lost_kernel, lost_user=bw.lost_user, **streamed)
    return status


def _reload(current: RunSettings, reread, batch_writer, notifier: Notifier) -> RunSettings:
    notifier.reloading()
    try:
        if reread is None:
            log.warning("reload_unsupported", reason="no settings source to read again")
            return current
        return apply_reload(reread(), current=current, batch_writer=batch_writer)
    except Exception as e:  # noqa: BLE001 - a reload, whatever went wrong, must not stop capture
        # keep what is in force; a bad file is an AuditdLiteError naming key and file
        log.error("reload_failed", error=str(e), kind=type(e).__name__)
        return current
    finally:
        notifier.ready()
