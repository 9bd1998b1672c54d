"""`auditd-lite tree PID`: a process's ancestry and descendants, across every file.

A process is (boot id, pid, start_ns) (docs/design.md, "Process identity"): ``start_ns`` is
the kernel's ``task->start_time``, CLOCK_MONOTONIC at fork, the same in
every record of the process. A pid names several processes over time;
``--at T`` picks the one alive at T, otherwise the latest is shown.

Parents are found through ``ppid``: the parent is the latest process with
that pid in the same boot that started before the child and had not exited
when the child started. Children are the processes that have a record
naming the process as their parent while it lived (records are written with
the parent of the moment, so a child reparented before its first record is
not found under its original parent). Processes already running when a
daemon started come from ``seen_processes``, so ancestry reaches them.

Read-only, standard library only (the analysis side).
"""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..dbfiles import file_is_export, is_set_aside, merge_run, run_key, run_rows, set_aside_note
from ..errors import BadInput, NotFound
from ..rows import CONTEXT_FIELDS
from .query import context_columns, context_select, split_argv
from ..timeparse import format_time

MAX_NODES = 20_000  # descendants shown before the tree is cut (with a warning)
MAX_ANCESTORS = 1_000
WALL_SLACK_NS = 2 * 10**9  # records of a child lie within its parent's life, give or take clock steps

_EVENT_COLS = ("id, run_id, event, time_ns, pid, ppid, uid, comm, start_ns, filename, argv, errno, "
               "exit_code, signal, core_dumped, duration_ns, status")
_SEEN_COLS = "run_id, time_ns, ppid, uid, comm, filename, argv, start_ns, start_tick_ns"
# where a row's context begins, read after either
_EVENT_N, _SEEN_N = _EVENT_COLS.count(",") + 1, _SEEN_COLS.count(",") + 1


@dataclass
class Proc:
    boot_id: str
    pid: int
    start_ns: int  # monotonic, task->start_time
    ppid: int | None = None
    comm: str | None = None
    uid: int | None = None
    execs: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    exit: dict | None = None
    seen: dict | None = None
    offset_ns: int | None = None  # wall clock minus monotonic clock for this process's run
    first_ns: int | None = None  # wall time of its first record
    children: list = field(default_factory=list)
    target: bool = False
    files: set = field(default_factory=set)  # the files (their index) its records came from

    @property
    def key(self) -> tuple:
        return (self.boot_id, self.pid, self.start_ns)

    @property
    def fork_ns(self) -> int | None:
        """Wall time of its fork: exact from the exit record, estimated from the run's clock offset."""
        if self.exit is not None and self.exit["duration_ns"] is not None:
            return self.exit["time_ns"] - self.exit["duration_ns"]
        if self.offset_ns is not None:
            return self.start_ns + self.offset_ns
        return self.first_ns

    @property
    def end_ns(self) -> int | None:
        return self.exit["time_ns"] if self.exit is not None else None

    @property
    def end_mono(self) -> int | None:
        if self.exit is not None and self.exit["duration_ns"] is not None:
            return self.start_ns + self.exit["duration_ns"]
        return None


class _Runs:
    """The runs the files hold: which boot each file's run ids belong to, when each boot's runs
    started, and which files hold a copy of each run's row."""

    def __init__(self, conns: list[tuple[Path, sqlite3.Connection]]):
        self.conns = conns
        self.boots: list[dict[int, str]] = []  # per file: run id -> boot id
        self.starts: dict[str, list[int]] = {}  # boot id -> started_ns of its runs
        self.merged: dict[tuple, dict] = {}  # run_key -> the run's row, copies merged
        self.copies: dict[tuple, list[tuple[int, int]]] = {}  # run_key -> [(file, run id)]
        for i, (_, conn) in enumerate(conns):
            rows = run_rows(conn)
            self.boots.append({r["id"]: r["boot_id"] for r in rows})
            for r in rows:
                merge_run(self.merged, r)
                self.copies.setdefault(run_key(r), []).append((i, r["id"]))
                self.starts.setdefault(r["boot_id"], []).append(r["started_ns"])

    def boot_end(self, boot: str, after_ns: int) -> int | None:
        """When a later boot's first run started (this boot cannot have lasted beyond it)."""
        later = [s for b, starts in self.starts.items() if b != boot for s in starts if s > after_ns]
        return min(later) if later else None

    def seeds(self, key: tuple) -> list[tuple]:
        """(pid, start_ns, start_tick_ns) of the processes a run found running at its start."""
        found = []
        for i, rid in self.copies[key]:
            found += self.conns[i][1].execute(
                "SELECT pid, start_ns, start_tick_ns FROM seen_processes WHERE run_id = ?", (rid,)).fetchall()
        return found

    def gone_by(self, p: Proc) -> int | None:
        """For a process without a recorded exit: the latest moment it can have been alive.

        A daemon seeds every running process at its start: a later run of the same boot that
        seeded processes but not this one started after it was gone. Failing that, the next boot.
        """
        after = p.fork_ns or p.first_ns or 0
        later = sorted((started, key) for key, row in self.merged.items()
                       if row["boot_id"] == p.boot_id and (started := key[1]) > after)
        for started, key in later:
            seeds = self.seeds(key)
            if not seeds:
                continue  # this run seeded nothing: it cannot tell
            if not any(pid == p.pid and abs(s - p.start_ns) <= max(tick or 0, 1) + _tick_slack(p)
                       for pid, s, tick in seeds):
                return started
        return self.boot_end(p.boot_id, after)


class _Clocks:
    """Wall clock minus monotonic clock of each run in each file, from its first exit record."""

    def __init__(self, conns: list[tuple[Path, sqlite3.Connection]]):
        self.conns = conns
        self._offsets: dict[tuple[int, int], int | None] = {}

    def saw(self, i: int, run_id: int, offset_ns: int) -> None:
        self._offsets.setdefault((i, run_id), offset_ns)

    def offset(self, i: int, run_id: int) -> int | None:
        key = (i, run_id)
        if key not in self._offsets:
            conn = self.conns[i][1]
            # start from the run's first batch: a scan from the file's start could be long
            first = conn.execute("SELECT first_event_id FROM batches WHERE run_id = ? AND count > 0 "
                                 "ORDER BY id LIMIT 1", (run_id,)).fetchone()
            row = conn.execute(
                "SELECT time_ns - start_ns - duration_ns FROM events WHERE id >= ? AND run_id = ? "
                "AND event = 'exit' AND duration_ns IS NOT NULL ORDER BY id LIMIT 1",
                (first[0] if first else 0, run_id)).fetchone()
            self._offsets[key] = row[0] if row else None
        return self._offsets[key]


def _apply_event(p: Proc, event: str, time_ns: int, ppid, uid, comm, filename, argv, err,
                 code, sig, core, duration, status, context: dict) -> None:
    """What one events row says about its process (``context``: its CONTEXT_FIELDS)."""
    if p.first_ns is None or time_ns < p.first_ns:
        p.first_ns = time_ns
        if event != "exit" or p.ppid is None:
            p.ppid = ppid
    if event == "exec":
        p.execs.append({"time_ns": time_ns, "filename": filename, "argv": split_argv(argv),
                        "context": context})
        p.comm, p.uid = comm, uid
    elif event == "exec_failed":
        p.failed.append({"time_ns": time_ns, "filename": filename, "argv": split_argv(argv),
                         "errno": err, "context": context})
        if p.comm is None:
            p.comm, p.uid = comm, uid
    else:
        p.exit = {"time_ns": time_ns, "exit_code": code, "signal": sig,
                  "core_dumped": None if core is None else bool(core), "duration_ns": duration,
                  "status": status}
        if not p.execs:
            p.comm = comm
        if p.uid is None:
            p.uid = uid
        if p.ppid is None:
            p.ppid = ppid


def _apply_seen(p: Proc, time_ns: int, ppid, uid, comm, filename, argv, context: dict) -> None:
    """What a seen_processes row (a process running when a daemon started) says about it."""
    if p.seen is None or time_ns < p.seen["time_ns"]:
        p.seen = {"time_ns": time_ns, "filename": filename, "argv": split_argv(argv), "comm": comm,
                  "context": context}
    p.ppid = ppid if p.ppid is None or not p.execs else p.ppid
    p.comm = p.comm or comm
    p.uid = p.uid if p.uid is not None else uid
    if p.first_ns is None or time_ns < p.first_ns:
        p.first_ns = time_ns


class Reader:
    """Lookups over every file's connection (newest first) by process identity."""

    def __init__(self, conns: list[tuple[Path, sqlite3.Connection]]):
        self.conns = conns
        # per file and table, what to read after the other columns: the context, NULL (unknown)
        # for a column it lacks (a file from before revision 0003)
        self.context = [{t: context_select(context_columns(conn, t)) for t in ("events", "seen_processes")}
                        for _, conn in conns]
        self.runs = _Runs(conns)
        self.boots = self.runs.boots
        self.clocks = _Clocks(conns)
        self.ranges: list[tuple] = [  # per file: (min time_ns, max time_ns)
            conn.execute("SELECT (SELECT min(time_ns) FROM events), (SELECT max(time_ns) FROM events)").fetchone()
            for _, conn in conns]

    def _add(self, procs: dict, i: int, row) -> Proc | None:
        (_, run_id, event, time_ns, pid, ppid, uid, comm, start_ns, filename, argv, err,
         code, sig, core, duration, status) = row[:_EVENT_N]
        context = dict(zip(CONTEXT_FIELDS, row[_EVENT_N:]))
        boot = self.boots[i].get(run_id)
        if boot is None:
            return None
        key = (boot, pid, start_ns)
        p = procs.get(key)
        if p is None:
            p = procs[key] = Proc(boot, pid, start_ns)
        _apply_event(p, event, time_ns, ppid, uid, comm, filename, argv, err, code, sig, core, duration,
                     status, context)
        p.files.add(i)
        if event == "exit" and duration is not None:
            self.clocks.saw(i, run_id, time_ns - start_ns - duration)
        if p.offset_ns is None:
            p.offset_ns = self.clocks.offset(i, run_id)
        return p

    def _seen(self, procs: dict, pid: int, start_ns: int | None = None, boot: str | None = None) -> None:
        """Merge seen_processes rows of ``pid`` into ``procs`` (matching a known process within a tick)."""
        for i, (_, conn) in enumerate(self.conns):
            for row in conn.execute(
                    f"SELECT {_SEEN_COLS}{self.context[i]['seen_processes']} FROM seen_processes "
                    "WHERE pid = ?", (pid,)):
                run_id, time_ns, ppid, uid, comm, filename, argv, s_ns, tick = row[:_SEEN_N]
                b = self.boots[i].get(run_id)
                if b is None or (boot is not None and b != boot):
                    continue
                if start_ns is not None and abs(s_ns - start_ns) > max(tick or 0, 1):
                    continue
                match = next((p for (pb, pp, ps), p in procs.items()
                              if pb == b and pp == pid and abs(ps - s_ns) <= max(tick or 0, 1)), None)
                if match is None:
                    match = procs[(b, pid, s_ns)] = Proc(b, pid, s_ns)
                _apply_seen(match, time_ns, ppid, uid, comm, filename, argv,
                            dict(zip(CONTEXT_FIELDS, row[_SEEN_N:])))
                match.files.add(i)
                if match.offset_ns is None:
                    match.offset_ns = self.clocks.offset(i, run_id)

    def _events(self, procs: dict, where: str, params: tuple) -> None:
        for i, (_, conn) in enumerate(self.conns):
            for row in conn.execute(f"SELECT {_EVENT_COLS}{self.context[i]['events']} FROM events "
                                    f"WHERE {where} ORDER BY time_ns, id", params):
                self._add(procs, i, row)

    def incarnations(self, pid: int) -> list[Proc]:
        """Every process that had this pid, oldest first."""
        procs: dict = {}
        self._events(procs, "pid = ?", (pid,))
        self._seen(procs, pid)
        return sorted(procs.values(), key=lambda p: (p.fork_ns or 0, p.start_ns))

    def load(self, boot: str, pid: int, start_ns: int) -> Proc | None:
        procs: dict = {}
        self._events(procs, "pid = ? AND start_ns = ?", (pid, start_ns))
        self._seen(procs, pid, start_ns, boot)
        return procs.get((boot, pid, start_ns)) or next(
            (p for p in procs.values() if p.boot_id == boot), None)

    def gone_by(self, p: Proc) -> int | None:
        return self.runs.gone_by(p)

    def parent(self, child: Proc) -> Proc | None:
        if not child.ppid:
            return None
        best = None
        for cand in self.incarnations(child.ppid):
            if cand.boot_id != child.boot_id or cand.start_ns > child.start_ns + _tick_slack(cand):
                continue
            if best is None or cand.start_ns > best.start_ns:
                best = cand
        if best is None or (best.end_mono is not None and best.end_mono < child.start_ns):
            return None  # the real parent was never recorded (an earlier user of the pid had exited)
        return best

    def children(self, proc: Proc, until_ns: int | None) -> list[Proc]:
        lo = (proc.fork_ns or proc.first_ns or 0) - WALL_SLACK_NS
        hi = proc.end_ns + WALL_SLACK_NS if proc.end_ns is not None else until_ns
        found: dict = {}
        for i, (_, conn) in enumerate(self.conns):
            first, last = self.ranges[i]
            if first is None or last < lo or (hi is not None and first > hi):
                continue
            sql = "SELECT DISTINCT pid, start_ns, run_id FROM events WHERE ppid = ? AND time_ns >= ?"
            params: list = [proc.pid, lo]
            if hi is not None:
                sql += " AND time_ns <= ?"
                params.append(hi)
            for pid, start_ns, run_id in conn.execute(sql, params):
                if self.boots[i].get(run_id) != proc.boot_id or start_ns < proc.start_ns:
                    continue
                if proc.end_mono is not None and start_ns > proc.end_mono:
                    continue
                found[(pid, start_ns)] = True
        kids = []
        for pid, start_ns in found:
            if (pid, start_ns) == (proc.pid, proc.start_ns):
                continue
            kid = self.load(proc.boot_id, pid, start_ns)
            if kid is not None:
                kids.append(kid)
        return sorted(kids, key=lambda k: (k.fork_ns or 0, k.pid))


def _tick_slack(p: Proc) -> int:
    return 10**8 if p.seen is not None and not p.execs and p.exit is None else 0  # /proc's tick precision


def _alive_until(reader: Reader, procs: list[Proc], i: int) -> int | None:
    """The latest moment procs[i] can have been alive: its exit, else the next process with the pid,
    else the end of its boot; None if it may still be running."""
    p = procs[i]
    if p.end_ns is not None:
        return p.end_ns
    later = [q.fork_ns for q in procs[i + 1:] if q.fork_ns is not None]
    bounds = [b for b in (min(later) if later else None, reader.gone_by(p)) if b is not None]
    return min(bounds) if bounds else None


@dataclass
class Tree:
    root: Proc
    target: Proc
    nodes: int
    truncated: bool
    incarnations: int
    complete_ancestry: bool


def build(conns, pid: int, at_ns: int | None = None, depth: int | None = None,
          max_nodes: int = MAX_NODES) -> Tree:
    if not 0 <= pid < 2**32:
        raise BadInput(f"bad pid {pid}: out of range")
    reader = Reader(conns)
    procs = reader.incarnations(pid)
    if not procs:
        raise NotFound(f"pid {pid} was never recorded")
    if at_ns is None:
        target = procs[-1]
    else:
        alive = [p for i, p in enumerate(procs)
                 if (p.fork_ns or p.first_ns or 0) <= at_ns
                 and ((u := _alive_until(reader, procs, i)) is None or at_ns <= u)]
        if not alive:
            first, last = procs[0], procs[-1]
            raise NotFound(
                f"pid {pid} was not running at {format_time(at_ns)}: recorded for {len(procs)} "
                f"process(es), started between {_when(first.fork_ns)} and {_when(last.fork_ns)}")
        target = alive[-1]
    target.target = True

    # ancestry, up to the first process the logger knows
    chain = [target]
    seen_keys = {target.key}
    complete = False
    while len(chain) < MAX_ANCESTORS:
        top = chain[-1]
        if top.ppid in (0, None):
            complete = True
            break
        parent = reader.parent(top)
        if parent is None or parent.key in seen_keys:
            break
        seen_keys.add(parent.key)
        chain.append(parent)
    for upper, lower in zip(chain[1:], chain):
        upper.children = [lower]

    # descendants, breadth first so a cut keeps the nearest levels
    idx = procs.index(target)
    level = [target]
    nodes = len(chain)
    truncated = False
    d = 0
    while level and (depth is None or d < depth) and not truncated:
        nxt = []
        for p in level:
            alive_to = p.end_ns if p is not target else _alive_until(reader, procs, idx)
            if p.end_ns is None and p is not target:
                alive_to = reader.gone_by(p)
            kids = [k for k in reader.children(p, alive_to) if k.key not in seen_keys]
            if nodes + len(kids) > max_nodes:
                kids = kids[:max(max_nodes - nodes, 0)]
                truncated = True
            for k in kids:
                seen_keys.add(k.key)
            p.children = kids
            nodes += len(kids)
            nxt.extend(kids)
            if truncated:
                break
        level = nxt
        d += 1
    return Tree(chain[-1], target, nodes, truncated, len(procs), complete)


from .tree_output import _when, context_of, describe, render_json, render_table  # noqa: E402,F401 - run() and callers


def window(tree: Tree) -> tuple[int | None, int | None]:
    """The time the target and its descendants span: what gap warnings are about (a gap there
    can hide a descendant, an exec or an exit)."""
    lo = hi = None
    open_ended = False
    stack = [tree.target]
    while stack:
        p = stack.pop()
        stack.extend(p.children)
        start = p.fork_ns if p.fork_ns is not None else p.first_ns
        if start is not None:
            lo = start if lo is None else min(lo, start)
        if p.end_ns is None:
            open_ended = True
        else:
            hi = p.end_ns if hi is None else max(hi, p.end_ns)
    return lo, None if open_ended else hi


def run(conns, pid: int, at_ns: int | None, depth: int | None, fmt: str, db_dir,
        out=None, err=None) -> int:
    from . import gaps

    out = out or sys.stdout
    err = err or sys.stderr
    tree = build(conns, pid, at_ns, depth)
    if tree.incarnations > 1 and at_ns is None:
        err.write(f"auditd-lite: note: pid {pid} was used by {tree.incarnations} processes; showing the "
                  f"latest (started {_when(tree.target.fork_ns)}); use --at to pick another\n")
    if fmt == "json":
        render_json(tree, out)
    else:
        render_table(tree, out)
    shown, stack = set(), [tree.root]
    while stack:
        p = stack.pop()
        stack.extend(p.children)
        shown |= p.files
    for i in sorted(shown):
        if is_set_aside(conns[i][0]):
            err.write(f"auditd-lite: note: records shown from {set_aside_note(conns[i][0])}\n")
    lo, hi = window(tree)
    wanted = set(gaps.select_paths([p for p, _ in conns], lo, hi))
    gaps.warn(gaps.for_window([(p, c) for p, c in conns if p in wanted], db_dir, lo, hi), err)
    if not tree.complete_ancestry and any(file_is_export(c) for _, c in conns):
        err.write("auditd-lite: note: an export holds only the records selected when it was made; "
                  "ancestors outside them are not shown\n")
    return 0
