"""The parent of an exec: which process it was, and what it was running when the exec happened
(docs/design.md, "Hunt: the parent").

The rule: the parent is the process with the exec's ppid, in the same boot, that was running
when the child started; its image and arguments are those of its latest exec before the
child's, else what a daemon found it running at its start (``seen_processes``). Which process
that is:

- where the record has ``parent_start_ns`` (the parent's ``task->start_time``, read in the
  kernel at the exec), the parent's identity (boot, ppid, parent_start_ns) exactly;
- otherwise the latest process with pid ppid started no later than the child, unless its exit
  says it was gone before the child started (then the parent left no record).

Only records committed before the child's are read (in the child's file, rows with a smaller
id; older files whole): the answer is what was known when the exec was recorded, the same
whether the hunt runs over the history or follows the live file. A parent that forked without
exec'ing since capture began (a server's worker) has no record of its own: its image is then
unknown, and the finding says so.

Two ways to the one answer. ``lookup`` asks the files (indexed queries, file by file back from
the child's). The hunt reads every record in commit order anyway, so ``note`` keeps, per (boot,
pid), the latest process seen with that pid while it lives (its exit forgets it) and its latest
exec: a parent found there is the one ``lookup`` would find, and one not found there (it
exec'd before the records read, or its entry was forgotten) is looked up and kept.
tests/test_hunt_parents.py holds the two to each other on every exec of a workload.
"""

from __future__ import annotations

import sqlite3

from .fields import (C_ARGV, C_EVENT, C_FILENAME, C_ID, C_PARENT_START, C_PID, C_PPID, C_START,
                     C_TIME, EXEC, EXIT, command_line)

SEEN_TICK_SLACK_NS = 1  # the least slack, for a file whose seen rows give no tick
MEMORY = 500_000  # processes kept by note(); beyond, the older half is forgotten (looked up again)
# what note() knows of a process whose exec it has not seen (it may lie before the records read)
NO_EXEC_SEEN = "no exec among the records read"


class Parent:
    """A parent as found: its pid, its identity's start (None: no process found), its image and
    arguments and where they came from (``source`` "exec", or "seen": running at a daemon's
    start; None: unknown, ``why``), and the record they came from (file index, id). A plain
    class: one is made for every exec the hunt reads."""

    __slots__ = ("pid", "start_ns", "image", "argv", "source", "file", "record_id", "why", "_cmd")

    def __init__(self, pid: int, start_ns: int | None = None, image: str | None = None,
                 argv: bytes | None = None, source: str | None = None, file: int | None = None,
                 record_id: int | None = None, why: str | None = None):
        self.pid, self.start_ns, self.image, self.argv = pid, start_ns, image, argv
        self.source, self.file, self.record_id, self.why = source, file, record_id, why
        self._cmd = False

    @property
    def command_line(self) -> str | None:
        if self._cmd is False:
            self._cmd = command_line(self.argv) if self.source is not None else None
        return self._cmd


class Parents:
    """Parent lookups over ``files`` (an object with ``conn(i)``, ``boot(i, run_id)`` and
    ``boots(i)``: run id -> boot id; index 0 the oldest file). ``lookups`` and ``unknown`` count
    what was asked and not found, ``queried`` what went to the files."""

    def __init__(self, files, memory: bool = True):
        self.files = files
        self.memory = memory
        self.lookups = 0
        self.unknown = 0
        self.queried = 0
        self._seen: dict[int, dict] = {}  # per file: (boot, pid) -> [seen rows]
        # (boot, pid) -> the latest process with the pid as a Parent (source None: no image)
        self._live: dict[tuple, Parent] = {}

    # -- the records, in commit order ---------------------------------------

    def note(self, i: int, row: tuple, boot: str | None) -> None:
        """One record of file ``i`` (fields.COLUMNS) of ``boot``, read in commit order: what it
        says about the latest process with its pid."""
        if not self.memory:
            return
        key = (boot, row[C_PID])
        start = row[C_START]
        have = self._live.get(key)
        if have is not None and have.start_ns is not None and have.start_ns > start:
            return  # a late record of an older process
        event = row[C_EVENT]
        if event == EXIT:
            if have is not None:
                del self._live[key]  # ended: a later lookup asks the files, which say so
        elif event == EXEC:
            self._live[key] = Parent(row[C_PID], start, row[C_FILENAME], row[C_ARGV], "exec", i,
                                     row[C_ID])
            if have is None and len(self._live) > MEMORY:
                self._shrink()
        elif have is None or have.start_ns != start:  # a failed exec of a process not known
            self._keep(key, Parent(row[C_PID], start, why=NO_EXEC_SEEN))

    def _keep(self, key: tuple, parent: Parent) -> None:
        self._live[key] = parent
        if len(self._live) > MEMORY:
            self._shrink()

    def _shrink(self) -> None:
        """Forget the older half of the processes kept (looked up in the files again)."""
        for old in list(self._live)[:MEMORY // 2]:
            del self._live[old]

    # -- the lookup ---------------------------------------------------------

    def of(self, i: int, row: tuple, boot: str | None) -> Parent:
        """The parent of the exec record ``row`` (fields.COLUMNS) of file ``i``, of ``boot``."""
        self.lookups += 1
        ppid, child_start, parent_start = row[C_PPID], row[C_START], row[C_PARENT_START]
        found = None
        if self.memory and boot is not None and ppid:
            have = self._live.get((boot, ppid))
            # kept: what a lookup found (a process, or that the pid left no record: start None,
            # true until a record of the pid is read), or a process note() saw exec
            if (have is not None and have.why != NO_EXEC_SEEN
                    and (have.start_ns is None or have.start_ns <= child_start)
                    and (parent_start is None or have.start_ns == parent_start)):
                found = have
        if found is None:
            found = self.lookup(i, row, boot)
            if found.source == "seen" and parent_start is not None:
                # known to the tick from /proc, exactly from the record: kept under the exact
                found = Parent(ppid, parent_start, found.image, found.argv, "seen", found.file,
                               found.record_id)
            # kept for the next child, unless it is unknown while a daemon's start listed the
            # pid: a later child may come after that listing, and be told what it says
            if (self.memory and boot is not None and ppid
                    and (found.source is not None or not self._ever_seen(i, boot, ppid))):
                have = self._live.get((boot, ppid))
                if (have is None or have.start_ns is None or
                        (found.start_ns is not None and have.start_ns <= found.start_ns)):
                    self._keep((boot, ppid), found)
        if found.source is None:
            self.unknown += 1
        return found

    def lookup(self, i: int, row: tuple, boot: str | None) -> Parent:
        """The rule, asked of the files: the parent of ``row`` from the records before it."""
        self.queried += 1
        ppid, child_start, child_time = row[C_PPID], row[C_START], row[C_TIME]
        child_id, parent_start = row[C_ID], row[C_PARENT_START]
        if boot is None or not ppid:
            return Parent(ppid, why="no parent recorded")
        if parent_start is None:
            start, ended = self._latest_start(i, child_id, boot, ppid, child_start)
            seen = self._seen_latest(i, boot, ppid, child_start, child_time)
            if seen is not None and (start is None or seen[0] > start):
                return self._from_seen(ppid, seen)
            if start is None:
                return Parent(ppid, why=f"pid {ppid} left no record before the exec")
            if ended:
                return Parent(ppid, start, why=f"the last process recorded with pid {ppid} had "
                                               "ended: the parent left no record")
        else:
            start = parent_start
        got = self._latest_exec(i, child_id, boot, ppid, start)
        if got is not None:
            j, rid, filename, argv = got
            return Parent(ppid, start, filename, argv, "exec", j, rid)
        seen = self._seen_of(i, boot, ppid, start, child_time)
        if seen is not None:
            return self._from_seen(ppid, seen)
        return Parent(ppid, start, why=f"process {ppid} has no exec recorded before this one "
                                       "and was not running at a daemon's start (it forked "
                                       "without exec)")

    @staticmethod
    def _from_seen(ppid: int, seen: tuple) -> Parent:
        start, _, _, filename, argv, j, rid = seen
        return Parent(ppid, start, filename, argv, "seen", j, rid)

    def _latest_start(self, i, child_id, boot, pid, child_start) -> tuple[int | None, bool]:
        """(start of the latest process with ``pid`` in ``boot`` that started no later than the
        child, True if its exit says it ended before the child started), from the records
        before the child; (None, False) when there is none. Such a process's records all come
        after those of any earlier process with the pid (which had to end first), so the newest
        file that has one has the latest."""
        for j in range(i, -1, -1):
            boots = self.files.boots(j)
            sql = ("SELECT start_ns, run_id, event, duration_ns FROM events WHERE pid = ? AND "
                   "start_ns <= ?" + (" AND id < ?" if j == i else "") + " ORDER BY start_ns DESC")
            params = (pid, child_start, child_id) if j == i else (pid, child_start)
            best = None
            ended = False
            conn = self.files.conn(j)
            if conn is None:
                continue
            for start, run, event, duration in conn.execute(sql, params):
                if boots.get(run) != boot:
                    continue
                if best is not None and start != best:
                    break
                best = start
                if event == "exit" and duration is not None and start + duration < child_start:
                    ended = True
            if best is not None:
                return best, ended
        return None, False

    def _latest_exec(self, i, child_id, boot, pid, start) -> tuple | None:
        """(file, id, filename, argv) of the process's latest exec before the child."""
        for j in range(i, -1, -1):
            boots = self.files.boots(j)
            sql = ("SELECT id, run_id, filename, argv FROM events WHERE pid = ? AND start_ns = ? "
                   "AND event = 'exec'" + (" AND id < ?" if j == i else "") + " ORDER BY id DESC")
            params = (pid, start, child_id) if j == i else (pid, start)
            conn = self.files.conn(j)
            if conn is None:
                continue
            for rid, run, filename, argv in conn.execute(sql, params):
                if boots.get(run) == boot:
                    return j, rid, filename, argv
        return None

    # -- processes running at a daemon's start --------------------------------

    def _seen_rows(self, j: int) -> dict:
        if j not in self._seen:
            rows: dict = {}
            boots = self.files.boots(j)
            conn = self.files.conn(j)
            try:
                if conn is None:
                    raise sqlite3.OperationalError("gone")
                cur = conn.execute(
                    "SELECT start_ns, start_tick_ns, time_ns, filename, argv, id, run_id, pid "
                    "FROM seen_processes")
                for start, tick, time_ns, filename, argv, rid, run, pid in cur:
                    b = boots.get(run)
                    if b is not None:
                        rows.setdefault((b, pid), []).append(
                            (start, tick or SEEN_TICK_SLACK_NS, time_ns, filename, argv, j, rid))
            except sqlite3.OperationalError:  # a file (an export) without the table
                pass
            self._seen[j] = rows
        return self._seen[j]

    def forget_all(self) -> None:
        """Forget every process kept (the files answer until records are read again)."""
        self._live.clear()

    def forget_unknown(self) -> None:
        """Forget the parents kept as unknown: a daemon's start has just listed the processes
        running then (--follow reads a new run), which may name them."""
        for key in [k for k, p in self._live.items() if p.source is None and p.why != NO_EXEC_SEEN]:
            del self._live[key]

    def forget_seen(self, j: int | None = None) -> None:
        """File ``j``'s processes seen at start (every file's when None) are read again when
        next asked (the live file: a run that began since; the files, renamed by rotation)."""
        if j is None:
            self._seen.clear()
        else:
            self._seen.pop(j, None)

    def _seen_candidates(self, i, boot, pid, child_time):
        for j in range(i, -1, -1):
            for row in self._seen_rows(j).get((boot, pid), ()):
                if row[2] <= child_time:
                    yield row

    def _ever_seen(self, i, boot, pid) -> bool:
        """Did a daemon's start list a process with ``pid`` in ``boot``, in file ``i`` or older?"""
        return any((boot, pid) in self._seen_rows(j) for j in range(i, -1, -1))

    def _seen_latest(self, i, boot, pid, child_start, child_time) -> tuple | None:
        """The latest-started process with ``pid`` a daemon found running at its start (its
        start is exact to a clock tick), started no later than the child."""
        best = None
        for row in self._seen_candidates(i, boot, pid, child_time):
            if row[0] <= child_start and (best is None or row[0] > best[0]):
                best = row
        return best

    def _seen_of(self, i, boot, pid, start, child_time) -> tuple | None:
        """What a daemon found the process (pid, start) running at its start, the latest."""
        best = None
        for row in self._seen_candidates(i, boot, pid, child_time):
            if abs(row[0] - start) <= row[1] and (best is None or row[2] > best[2]):
                best = row
        return best
