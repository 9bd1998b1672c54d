"""``run --stream PATH``: each committed record as one JSON line, for log shippers.

The batch writer hands each batch over once its transaction is committed (storage/batchwriter.py,
``on_commit``), in commit order; this thread renders each record (``render``: the OCSF event of
formats/ocsf.py) and writes the lines. The writer never waits for it: the hand-over is a bounded
queue, and what does not fit is dropped and counted, as is every line a reader did not take (a
FIFO without a reader, a full pipe). The counts go into the run row (``stream_lines_written``,
``stream_lines_dropped``). A regular file is rotated by size as Tetragon's export file is:
renamed to ``NAME-<UTC time>.EXT`` in the same directory, a bounded number kept
(docs/design.md, "The live stream").
"""

from __future__ import annotations

import errno
import os
import queue
import select
import stat
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import structlog

from ..errors import BadInput
from ..formats.source import Source
from ..investigate.output import json_bytes
from ..investigate.query import row_to_record
from ..rows import F_EVENT, F_PID, F_START

log = structlog.get_logger("auditd_lite.daemon.stream")

STDOUT = "-"
QUEUE_ROWS = 20_000  # records that may wait for the stream: five full batches
EXEC_MEMO = 16_384  # execs kept for the exits of their processes (row_to_record's exec_row)
LOG_EVERY_S = 10.0  # stream_lines_dropped at most this often
STOP_TIMEOUT_S = 5.0  # what the stop waits for a reader that does not read
LINE_WAIT_S = 1.0  # what a line cut by a full pipe may wait to be finished, then and at the stop
CHUNK = 1 << 16  # bytes a write takes at most
# bytes a write to a pipe takes at most: POSIX makes a write of up to PIPE_BUF to a pipe all or
# nothing (EAGAIN), so a full pipe never cuts a line that is no longer than this; a longer write
# is cut at any page the pipe runs out of room at
PIPE_CHUNK = select.PIPE_BUF
# lumberjack's backupTimeFormat "2006-01-02T15-04-05.000", in UTC (Tetragon does not set LocalTime)
BACKUP_TIME = "%Y-%m-%dT%H-%M-%S"

__all__ = ["Dropped", "LineTarget", "Stream", "backup_name", "backups", "check_path"]


def _split(path: Path) -> tuple[str, str]:
    """(prefix, extension) of the file name, as lumberjack splits it (filepath.Ext)."""
    stem, ext = os.path.splitext(path.name)
    return stem, ext


def backup_name(path: Path, now_ns: int) -> Path:
    """Where ``path`` goes when it is rotated at ``now_ns``: ``NAME-2026-12-02T14-05-09.123.EXT``
    beside it. A name already taken (two rotations in one millisecond) moves on by a millisecond:
    a rotated file is never replaced, and the names still sort in the order they were made."""
    prefix, ext = _split(path)
    ms = now_ns // 1_000_000
    while True:
        stamp = time.strftime(BACKUP_TIME, time.gmtime(ms // 1000)) + ".%03d" % (ms % 1000)
        target = path.with_name(f"{prefix}-{stamp}{ext}")
        if not os.path.lexists(target):
            return target
        ms += 1


def _is_stamp(text: str) -> bool:
    try:
        time.strptime(text[:-4], BACKUP_TIME)
    except ValueError:
        return False
    return len(text) == 23 and text[-4] == "." and text[-3:].isdigit()


def backups(path: Path) -> list[Path]:
    """The rotated files of ``path``, oldest first (their names sort by time)."""
    prefix, ext = _split(path)
    found = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    for name in names:
        if name.startswith(prefix + "-") and name.endswith(ext):
            stamp = name[len(prefix) + 1:len(name) - len(ext)]
            if _is_stamp(stamp):
                found.append(path.with_name(name))
    return sorted(found)


def check_path(path: str, flag: str = "--stream") -> None:
    """Refuse, before capture starts, a stream PATH that can never be written (BadInput, exit 2):
    a directory, a file or directory that cannot be opened. A FIFO without a reader is fine."""
    if path == STDOUT:
        return
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"bad {flag} {path}: is a directory")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"bad {flag} {path}: cannot make its directory: {e.strerror}") from None
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise BadInput(f"bad {flag} {path}: {e.strerror}") from None
    if mode is not None and stat.S_ISFIFO(mode):
        return
    try:
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666))
    except OSError as e:
        raise BadInput(f"bad {flag} {path}: cannot open it for writing: {e.strerror}") from None


class Dropped(Exception):
    """The lines from ``at`` on were not delivered, for ``reason``."""

    def __init__(self, at: int, reason: str):
        self.at = at
        self.reason = reason


class LineTarget:
    """Where the lines go. ``deliver(lines)`` writes them in order, whole lines only, and
    returns how many it delivered, or raises Dropped naming where and why it stopped. Also
    hunt --follow's findings file (hunt/follow.py): its log lines begin with ``name``."""

    def __init__(self, path: str, max_bytes: int, max_files: int, name: str = "stream"):
        self.name = name
        self.stdout = path == STDOUT
        self.path = Path("/proc/self/fd/1") if self.stdout else Path(path)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.fd: int | None = None
        self.rotating = False  # a regular file (not stdout): rotated by size
        self.nonblocking = False  # a FIFO: a reader that does not read never holds us up
        self.pending = b""  # the rest of a line a full pipe cut: written before any other byte
        self.size = 0
        self.rotations = 0

    # -- opening -------------------------------------------------------------

    def ready(self) -> str | None:
        """Open if not open; None when lines can be written, else why not (they are dropped)."""
        if self.fd is not None and self.rotating:
            self._follow()
        if self.fd is not None:
            return None
        try:
            self._open()
        except OSError as e:
            if e.errno == errno.ENXIO:
                return "no_reader"  # a FIFO nobody has open: tried again with the next batch
            return "open_failed_" + (errno.errorcode.get(e.errno, str(e.errno)).lower())
        return None

    def _open(self) -> None:
        if self.stdout:
            mode = os.fstat(1).st_mode
            if not stat.S_ISFIFO(mode):
                # a file, a terminal, the journal's socket: written as it is, blocking (only this
                # thread waits), never rotated: what is behind it is not ours to rename
                self.fd = os.dup(1)
                return
        else:
            try:
                mode = os.stat(self.path).st_mode
            except FileNotFoundError:
                mode = None
        if mode is not None and stat.S_ISFIFO(mode):
            # O_NONBLOCK: an open for writing would wait for a reader (ENXIO instead), a write for
            # room in the pipe (EAGAIN instead). Through /proc for stdout: a description of our
            # own, so the flag does not reach whoever shares the pipe.
            self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self.nonblocking = True
            return
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        st = os.fstat(self.fd)
        self.rotating = stat.S_ISREG(st.st_mode)
        self.size = st.st_size
        self._ino = (st.st_dev, st.st_ino)

    def _follow(self) -> None:
        """PATH renamed or removed by someone else: reopen, so the newest lines are in PATH."""
        try:
            st = os.stat(self.path)
            same = (st.st_dev, st.st_ino) == self._ino
        except OSError:
            same = False
        if not same:
            log.warning(f"{self.name}_file_replaced", path=str(self.path), note="reopened")
            self.close()

    def close(self) -> None:
        self.pending = b""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    # -- writing -------------------------------------------------------------

    def deliver(self, lines: list[bytes]) -> int:
        if self.pending and not self.finish_pending(0):
            raise Dropped(0, "reader_behind")  # not one byte of another line before its end
        i = 0
        while i < len(lines):
            if self.fd is None:
                why = self.ready()
                if why is not None:
                    raise Dropped(i, why)
            if self.rotating and self.size > 0 and self.size + len(lines[i]) > self.max_bytes:
                why = self._rotate()
                if why is not None:
                    raise Dropped(i, why)
                continue
            # a chunk of whole lines that fits the file's room (a line longer than the limit
            # goes alone into a file of its own: a line is never split)
            end, n = i, 0
            cap = PIPE_CHUNK if self.nonblocking else CHUNK
            room = self.max_bytes - self.size if self.rotating else cap
            while end < len(lines) and n < cap and (end == i or n + len(lines[end]) <= room):
                n += len(lines[end])
                end += 1
            i = self._write(lines, i, end)
        return i

    def _write(self, lines: list[bytes], i: int, end: int) -> int:
        """Write lines[i:end]; the index after the last line delivered."""
        data = b"".join(lines[i:end])
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except OSError as e:
            return self._cut(lines, i, end, done, e)
        self.size += done
        return end

    def _cut(self, lines: list[bytes], i: int, end: int, done: int, e: OSError) -> int:
        """A write stopped ``done`` bytes into lines[i:end]: keep the whole lines, finish or take
        back the one cut, and say why the rest is dropped (or, a cut line finished, where the
        delivery goes on)."""
        whole, k = 0, i
        while k < end and whole + len(lines[k]) <= done:
            whole += len(lines[k])
            k += 1
        self.size += whole
        reason = {errno.EAGAIN: "reader_behind", errno.EPIPE: "reader_gone"}.get(
            e.errno, "write_failed_" + errno.errorcode.get(e.errno, str(e.errno)).lower())
        if done > whole:
            rest = lines[k][done - whole:]
            if self.nonblocking and e.errno == errno.EAGAIN:
                # only a line longer than PIPE_CHUNK is cut in a pipe: it is written (its reader
                # has its beginning) and is ended before any other byte, now or when the reader
                # makes room, so the reader never finds half a line followed by another
                self.pending = rest
                if self.finish_pending(LINE_WAIT_S):
                    return k + 1  # the reader made room: the lines after it go on
                k += 1
            elif self.rotating:
                # take the piece back: a file never holds half a line
                try:
                    os.ftruncate(self.fd, self.size)
                except OSError:
                    self.close()
            else:
                # half a line went where it cannot be taken back from (a pipe whose reader went
                # away, a terminal, a socket): end it there and begin again with a new open
                self.close()
        if e.errno == errno.EPIPE or (not self.nonblocking and not self.rotating):
            self.close()
        raise Dropped(k, reason)

    def finish_pending(self, wait_s: float) -> bool:
        """Write the rest of the line a full pipe cut, waiting ``wait_s`` at most for room; True
        once nothing is pending. A reader gone (EPIPE) takes the line with it: nothing is."""
        deadline = time.monotonic() + wait_s
        while self.pending:
            try:
                self.pending = self.pending[os.write(self.fd, self.pending):]
                continue
            except BlockingIOError:
                pass
            except OSError:
                self.close()
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([], [self.fd], [], left)
        return True

    def _rotate(self) -> str | None:
        """The oldest backups removed so that one more fits in max_files, PATH renamed to its
        backup name and a new PATH begun. A rename that fails keeps the lines coming in PATH.
        None, or why the new PATH cannot be written."""
        target = backup_name(self.path, time.time_ns())
        removed = []
        if self.max_files:
            # the oldest go before the rename, not after it: at no moment more than max_files
            # rotated files, which is the bound on the disk a reader of the directory sees
            olds = backups(self.path)
            for old in olds[:max(0, len(olds) - (self.max_files - 1))]:
                try:
                    old.unlink()
                    removed.append(str(old))
                except OSError:
                    pass
        try:
            os.rename(self.path, target)
        except OSError as e:
            log.error(f"{self.name}_rotation_failed", path=str(self.path), error=e.strerror,
                      removed=removed)
            self.max_bytes = self.size + self.max_bytes  # tried again one file's worth later
            return None
        self.close()
        self.rotations += 1
        log.info(f"{self.name}_rotated", path=str(self.path), rotated_to=str(target), removed=removed)
        return self.ready()


class Stream(threading.Thread):
    """The stream thread. ``offer`` (the batch writer's on_commit) never blocks; ``counts`` are
    the lines written and dropped so far; ``close`` ends it and fixes the totals."""

    def __init__(self, path: str, max_size_mb: int = 10, max_files: int = 5,
                 render: Callable[[dict, Source], dict] | None = None, limit: int = QUEUE_ROWS):
        super().__init__(name="stream", daemon=True)
        if render is None:
            from ..formats import ocsf

            render = ocsf.event
        self.path = path
        self.render = render
        self.limit = limit
        self.target = LineTarget(path, max_size_mb * 1024 * 1024, max_files)
        self.written = 0
        self.dropped = 0
        self._offered = 0
        self._queued = 0
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._execs: dict = {}  # (pid, start_ns) -> the exec row, for the exit of its process
        self._sources: dict = {}
        self._reasons: Counter = Counter()  # dropped since the last log line, by why
        self._logged_at = 0.0
        self._render_failed = 0

    # -- the writer's side ---------------------------------------------------

    def offer(self, rows: list[tuple], run: dict) -> None:
        """A committed batch (its rows, and the run row as the file holds it): queued, or dropped
        and counted when the queue is full. Never blocks, never raises."""
        with self._lock:
            if self._closed:
                return
            self._offered += len(rows)
            if self._queued + len(rows) > self.limit:
                self.dropped += len(rows)
                self._reasons["queue_full"] += len(rows)
                return
            self._queued += len(rows)
        self._queue.put((rows, run))

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.written, self.dropped

    # -- the thread ----------------------------------------------------------

    def run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._end_cut_line()
                return
            rows, run = item
            with self._lock:
                self._queued -= len(rows)
            try:
                self._deliver(rows, run)
            except Exception as e:  # noqa: BLE001 - the stream never takes the daemon down
                self._count(0, len(rows), "stream_failed")
                log.error("stream_failed", error=str(e), kind=type(e).__name__)
            self._maybe_log()

    def _end_cut_line(self) -> None:
        """At the stop, a line a full pipe cut gets LINE_WAIT_S more to be ended; if it is not,
        its reader will find it half written: it is counted dropped, not written."""
        if self.target.pending and not self.target.finish_pending(LINE_WAIT_S):
            log.warning("stream_line_cut", path=self.path, bytes_missing=len(self.target.pending),
                        note="the reader took no data at the stop: its last line is incomplete")
            self._count(-1, 1, "cut_at_stop")

    def _deliver(self, rows: list[tuple], run: dict) -> None:
        why = self.target.ready()
        pairs = self._with_execs(rows)  # the exec memo moves whether or not they are written
        if why is not None:
            self._count(0, len(rows), why)  # nobody to take them: not even rendered
            return
        source = self._source(run)
        boot_id = run.get("boot_id")
        lines = []
        for row, exec_row in pairs:
            record = row_to_record(row, exec_row, boot_id)
            try:
                lines.append(self._line(record, source))
            except Exception as e:  # noqa: BLE001 - one record that cannot be rendered
                self._render_failed += 1
                self._count(0, 1, "render_failed")
                if self._render_failed == 1:
                    log.error("stream_render_failed", error=str(e), kind=type(e).__name__,
                              record_event=record.get("event"), pid=record.get("pid"))
        try:
            done = self.target.deliver(lines)
        except Dropped as d:
            self._count(d.at, len(lines) - d.at, d.reason)
            return
        self._count(done, 0, "")

    def _line(self, record: dict, source: Source) -> bytes:
        return json_bytes(self.render(record, source))

    def _with_execs(self, rows: list[tuple]) -> list[tuple]:
        """Each row with, for an exit, its process's exec row when this run committed it (search
        finds it with query's _JOIN_X: the latest exec of the same (pid, start_ns), the process
        identity, in this boot; so does this), else None."""
        execs = self._execs
        out = []
        for row in rows:
            key = (row[F_PID], row[F_START])
            event = row[F_EVENT]
            exec_row = None
            if event == "exec":
                execs.pop(key, None)  # to the end: the oldest go first when the memo is full
                execs[key] = row
                if len(execs) > EXEC_MEMO:
                    del execs[next(iter(execs))]
            elif event == "exit":
                exec_row = execs.pop(key, None)
            out.append((row, exec_row))
        return out

    def _source(self, run: dict) -> Source:
        key = tuple(sorted(run.items()))
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) > 64:
                self._sources.clear()
            source = self._sources[key] = Source.from_run(run, run.get("revision"))
        return source

    def _count(self, written: int, dropped: int, reason: str) -> None:
        with self._lock:
            if self._closed:
                return  # the totals are fixed: a line finished after the stop counts as dropped
            self.written += written
            self.dropped += dropped
            if dropped:
                self._reasons[reason] += dropped

    def _maybe_log(self, force: bool = False) -> None:
        with self._lock:
            if not self._reasons:
                return
            now = time.monotonic()
            if not force and self._logged_at and now - self._logged_at < LOG_EVERY_S:
                return
            self._logged_at = now
            reasons, self._reasons = dict(self._reasons), Counter()
            written, dropped = self.written, self.dropped
        log.warning("stream_lines_dropped", count=sum(reasons.values()), reasons=reasons,
                    lines_dropped=dropped, lines_written=written, path=self.path,
                    note="the database has every record; only the stream skips them")

    def close(self, timeout: float = STOP_TIMEOUT_S) -> tuple[int, int]:
        """Deliver what is queued (for at most ``timeout`` s: a reader may never read again),
        then fix the totals: a line not delivered by then is dropped. (written, dropped)."""
        self._queue.put(None)
        if self.is_alive():
            self.join(timeout)
        with self._lock:
            self._closed = True
            late = self._offered - self.written - self.dropped
            if late:
                self.dropped += late
                self._reasons["stopped"] += late
        self._maybe_log(force=True)
        if not self.is_alive():  # else it is inside a write to that descriptor: the exit ends both
            self.target.close()
        log.info("stream_stopped", path=self.path, lines_written=self.written,
                 lines_dropped=self.dropped, rotations=self.target.rotations)
        return self.written, self.dropped
