"""`auditd-lite hunt --follow`: the rules on each exec as soon as the daemon commits it, in a
process of its own that only reads the files (docs/design.md, "Hunt: live").

It follows the batches, not the files: a batch's id goes on across rotated files (the hash
chain's numbering), so "every batch after the last one read" is one question, asked of the live
file every poll and, when the answer does not begin right after the last one read (the live
file was rotated, or set aside, meanwhile), of the files that took the batches in between.
Each batch is read once, whole (a batch is committed with its records), in commit order, and
its records go through the same Hunter as a hunt over the history: the same record gives the
same findings. The live file is opened for each poll and closed after it: an open connection
would keep the daemon from rotating it (storage/livefile.py switches the journal mode).

Findings go to standard output as JSON lines (report.finding_json; the journal under the
unit, each line with the syslog priority of its rule's level), and with --findings as OCSF
Detection Finding lines written through the live stream's file target (daemon/stream.py:
rotated by size, a FIFO never waited for, a line dropped is counted). What the rules could not
see is logged as it happens: records the kernel or the writer lost, batches removed before
they were read, the daemon not running.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path

import structlog

from ..daemon import logsetup
from ..daemon.notify import Notifier
from ..daemon.signals import Signals
from ..daemon.stream import STDOUT, Dropped, LineTarget, check_path
from ..dbfiles import (LIVE_NAME, daemon_running, database_files, is_rotated, is_set_aside, may_hold,
                       open_ro)
from ..errors import BadInput
from ..investigate.output import json_line
from . import report
from .fields import C_RUN
from .hunter import Files, Hunter

log = structlog.get_logger("auditd_lite.hunt.follow")

# a finding's syslog priority in the journal: Sigma's critical is crit, high err, ...
PRIORITIES = {"critical": 2, "high": 3, "medium": 4, "low": 5, "informational": 6}
DEFAULT_PRIORITY = 5
SUMMARY_EVERY_S = 60.0
START_ATTEMPTS = 20


def journal_stream(fd: int = 1) -> bool:
    """Is ``fd`` the journal's stream (systemd's JOURNAL_STREAM names its device and inode)?
    Then a line may begin with its ``<N>`` priority, which journald takes off."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class Follower:
    """The follow loop's state: the files, the Hunter, the last batch read."""

    def __init__(self, db_dir: Path, rules: list, out, target: LineTarget | None, ocsf_out: bool,
                 table: bool = False):
        self.db_dir = Path(db_dir)
        self.files = Files([], missing_ok=True)
        self.hunter = Hunter(rules, self.files)
        self.out = out
        self.target = target
        self.ocsf_out = ocsf_out  # --findings -: OCSF lines on stdout instead of the JSON lines
        self.table = table  # --format table: the history's blocks, for a person at a terminal
        try:
            self.prefix = journal_stream(out.fileno())
        except (AttributeError, OSError, ValueError):  # a stream with no file behind it
            self.prefix = False
        self.cursor: int | None = None  # the last batch read
        self.live_ino = None
        self.findings = 0
        self.lines_written = 0
        self.lines_dropped = 0
        self.lost = 0
        self.missed = 0
        self.running: bool | None = None
        self._last: dict = {}  # rotated or set aside file -> its last batch id

    # -- the files ----------------------------------------------------------

    @property
    def live(self) -> Path:
        return self.db_dir / LIVE_NAME

    def _refresh(self) -> None:
        """The files in the order of their batches (the chain's), the live one last: rotated
        files, and those set aside (a live file the writer moved out of its way, whose batches
        the chain goes on from) that every reading command reads: one SQLite does not find
        intact is left out with a warning (dbfiles.database_files), not read again each poll."""
        others = [p for p in database_files(db_dir=self.db_dir) if is_rotated(p) or is_set_aside(p)]
        if self.files.paths and set(others) == set(self.files.paths[:-1]):
            return
        paths = sorted(others, key=self._last_batch) + [self.live]
        self.files.reset(paths)
        self.hunter.files_changed()

    def _last_batch(self, path: Path) -> int:
        """A file's last batch id (a file that is no longer written: kept)."""
        if path not in self._last:
            conn = open_ro(path)
            try:
                self._last[path] = conn.execute("SELECT max(id) FROM batches").fetchone()[0] or 0
            finally:
                conn.close()
        return self._last[path]

    def _batches(self, i: int, after: int, before: int | None = None) -> list[tuple]:
        conn = self.files.conn(i)
        if conn is None:
            return []
        sql = ("SELECT id, first_event_id, last_event_id, lost_kernel, lost_user, written_ns "
               "FROM batches WHERE id > ?" + (" AND id < ?" if before is not None else "") + " ORDER BY id")
        return conn.execute(sql, (after, before) if before is not None else (after,)).fetchall()

    # -- starting -----------------------------------------------------------

    def start(self, since_ns: int | None) -> None:
        """Where to begin: after the last batch committed now; with ``since_ns``, every record
        from then on is read first (the history's findings, then the live ones)."""
        self._refresh()
        last = 0
        found: list = []
        for i in range(self.files.count):
            conn = self.files.conn(i)
            if conn is None:
                continue
            top = conn.execute("SELECT max(id) FROM batches").fetchone()[0]
            if top is not None:
                last = max(last, top)
            if since_ns is not None and top is not None and may_hold(self.files.paths[i], since_ns, None):
                self._read(i, conn.execute(
                    "SELECT min(first_event_id), max(last_event_id) FROM batches WHERE id <= ?",
                    (top,)).fetchone(), since_ns, found)
        self.cursor = last
        self._close_live()
        for f in found:
            self.emit(f)

    # -- following ----------------------------------------------------------

    def poll(self) -> None:
        """Read every batch committed since the last poll, in order, all or nothing: a read the
        live file refuses midway (it is being rotated: SQLite refuses a reader then) leaves the
        cursor where it was, and nothing of the poll is written; the next poll reads it all."""
        try:
            ino = os.stat(self.live).st_ino
        except FileNotFoundError:
            ino = None  # between a rotation's steps, or no daemon yet
        rotated = ino != self.live_ino
        state = self._state()
        found: list = []
        try:
            if rotated:
                self._refresh()
            live = self.files.count - 1
            new = self._batches(live, self.cursor) if ino is not None else []
            if rotated or (new and new[0][0] != self.cursor + 1):
                self._catch_up(new[0][0] if new else None, found)
            if new:
                self._read_batches(live, new, found)
        except (sqlite3.DatabaseError, BadInput) as e:
            self._restore(state)
            log.warning("hunt_read_failed", error=str(e), note="read again at the next poll")
            return
        finally:
            self._close_live()
        self.live_ino = ino
        for f in found:
            self.emit(f)
        for bid, lost_k, lost_u, written in self._lost:
            self.lost += (lost_k or 0) + (lost_u or 0)
            log.warning("hunt_records_lost", batch=bid, lost_kernel=lost_k, lost_user=lost_u,
                        before=written, note="the rules could not see these records")
        if self._missed:
            first, last = self._missed
            self.missed += last - first + 1
            log.warning("hunt_batches_missed", first=first, last=last, batches=last - first + 1,
                        note="removed before they were read (retention?): the rules did not see them")

    def _state(self) -> tuple:
        """What a poll changes, to be put back if it fails."""
        self._lost: list = []
        self._missed = None
        h = self.hunter
        return (self.cursor, h.examined, h.truncated, h.parents.lookups, h.parents.unknown,
                h.parents.queried)

    def _restore(self, state: tuple) -> None:
        h = self.hunter
        (self.cursor, h.examined, h.truncated, h.parents.lookups, h.parents.unknown,
         h.parents.queried) = state
        # what the failed poll's records taught the parent lookup is forgotten: the next poll
        # reads them again, and the files answer until it has
        h.parents.forget_all()

    def _catch_up(self, upto: int | None, found: list) -> None:
        """The batches between the cursor and ``upto`` (the live file's first new one; None: all
        of them), from the other files, oldest first; those no file has any more are counted."""
        for i in range(self.files.count - 1):
            new = self._batches(i, self.cursor, upto)
            if new:
                self._read_batches(i, new, found)
        if upto is not None and upto > self.cursor + 1:
            self._missed = (self.cursor + 1, upto - 1)
            self.cursor = upto - 1

    def _read_batches(self, i: int, batches: list[tuple], found: list) -> None:
        events = [(b[1], b[2]) for b in batches if b[1] is not None]
        if events:
            self._read(i, (min(e[0] for e in events), max(e[1] for e in events)), None, found)
        self._lost += [(bid, lost_k, lost_u, written) for bid, _, _, lost_k, lost_u, written in batches
                       if lost_k or lost_u]
        self.cursor = batches[-1][0]

    def _read(self, i: int, id_range: tuple, since_ns: int | None, found: list) -> None:
        lo, hi = id_range
        if lo is None:
            return
        where = "id >= ? AND id <= ?" + (" AND +time_ns >= ?" if since_ns is not None else "")
        params = (lo, hi, since_ns) if since_ns is not None else (lo, hi)
        conn = self.files.conn(i)
        boot = self.files.boot
        for row in conn.execute(self.hunter.rows_sql(i, where), params).fetchall():
            found += self.hunter.read(i, row, boot(i, row[C_RUN]))

    def _close_live(self) -> None:
        """Close the live file (its runs and processes seen at start read again next time: a
        daemon may start a run in it meanwhile)."""
        if self.files.count:
            live = self.files.count - 1
            self.files.close(live)
            self.files.forget(live)
            self.hunter.parents.forget_seen(live)

    # -- findings -----------------------------------------------------------

    def emit(self, f) -> None:
        self.findings += 1
        line = None
        if self.target is not None or self.ocsf_out:
            line = json_line(report.finding_ocsf(f))
        if self.ocsf_out:
            self.out.write(line)
        elif self.table:
            report.write_finding(f, "table", self.out, first=self.findings == 1)
        else:
            prefix = f"<{PRIORITIES.get(f.rule.level, DEFAULT_PRIORITY)}>" if self.prefix else ""
            self.out.write(prefix + report.finding_line(f))
        self.out.flush()
        if self.target is not None:
            try:
                self.lines_written += self.target.deliver([line.encode("utf-8", "backslashreplace")])
            except Dropped as d:
                self.lines_dropped += 1
                log.warning("findings_line_dropped", reason=d.reason, lines_dropped=self.lines_dropped,
                            path=str(self.target.path))

    def check_daemon(self) -> None:
        running = daemon_running(self.db_dir)
        if running != self.running and running is not None:
            if running:
                log.info("hunt_daemon_running", db_dir=str(self.db_dir))
            else:
                log.warning("hunt_daemon_not_running", db_dir=str(self.db_dir),
                            note="nothing is recorded, so nothing is hunted, until it runs again")
        self.running = running

    def counts(self) -> dict:
        return {"execs": self.hunter.examined, "findings": self.findings, "last_batch": self.cursor,
                "records_lost": self.lost, "batches_missed": self.missed,
                "findings_lines_written": self.lines_written,
                "findings_lines_dropped": self.lines_dropped}


def run(ruleset, rules: list, db_dir=None, db_file=None, since_ns: int | None = None,
        findings: str | None = None, max_size_mb: int = 10, max_files: int = 5,
        poll_s: float = 0.25, out=None, fmt: str | None = None) -> int:
    """Follow until SIGTERM or SIGINT; exit 0 then. ``fmt``: json (a JSON line a finding, the
    default), table (history's blocks) or ocsf (as ``findings`` "-")."""
    if db_file is not None:
        raise BadInput("--follow follows the directory a daemon writes: give --db-dir, not --db")
    db_dir = Path(db_dir)
    if not db_dir.is_dir():
        raise BadInput(f"no such database directory: {db_dir}")
    out = out or sys.stdout
    target = None
    if findings == STDOUT and fmt not in (None, "ocsf"):
        raise BadInput(f"--findings - writes OCSF lines to standard output: not with --format {fmt}")
    if fmt == "ocsf" and findings is None:
        findings = STDOUT
    ocsf_out = findings == STDOUT
    table = fmt == "table"  # never with --findings -: refused above
    if findings is not None and not ocsf_out:
        check_path(findings, "--findings")
        target = LineTarget(findings, max_size_mb * 1024 * 1024, max_files, name="findings")
    logsetup.configure(os.environ.get("AUDITD_LITE_LOG", "info"))
    signals = Signals()
    follower = Follower(db_dir, rules, out, target, ocsf_out, table)
    for attempt in range(START_ATTEMPTS):  # a live file being rotated refuses readers a moment
        try:
            follower.start(since_ns)
            break
        except (sqlite3.DatabaseError, BadInput) as e:
            if attempt == START_ATTEMPTS - 1:
                raise BadInput(f"cannot read {db_dir}: {e}") from None
            follower = Follower(db_dir, rules, out, target, ocsf_out, table)
            time.sleep(0.5)
    follower.check_daemon()
    # a rule file that does not parse is said, and the other rules follow: live detection does
    # not stop for one user's file (the history's hunt exits 2 for it)
    for p in ruleset.problems:
        log.warning("hunt_rule_file_not_parsed", file=str(p.path), reason=p.reason)
    log.info("hunt_following", db_dir=str(db_dir), rules=len(rules), after_batch=follower.cursor,
             findings_file=findings, not_evaluated=sum(1 for r in ruleset.rules if r.why_not))
    notifier = Notifier()
    notifier.ready(status=f"following {db_dir} with {len(rules)} rules")
    last_summary = time.monotonic()
    while not signals.wait(poll_s):
        follower.poll()
        follower.check_daemon()
        if time.monotonic() - last_summary >= SUMMARY_EVERY_S:
            last_summary = time.monotonic()
            log.info("hunt_summary", **follower.counts())
            notifier.notify(f"STATUS={follower.counts()['findings']} findings in "
                            f"{follower.counts()['execs']} execs")
    notifier.stopping(status="reading what was committed before the stop")
    follower.poll()  # what was committed before the stop
    if target is not None:
        target.close()
    log.info("hunt_stopped", **follower.counts())
    return 0
