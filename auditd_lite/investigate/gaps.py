"""Where the record is incomplete: coverage gaps, so that no absence of evidence looks like evidence of absence.

A gap is a stretch of time in which processes may have run without being
recorded (docs/design.md, "Loss never silent"):

- ``not_running``: no daemon was running (between two runs, after the last
  clean stop, or between a start and the moment its programs were attached);
- ``unclean_stop``: a run ended without a recorded stop (killed, crashed,
  power lost): from its last batch to the next run, or to now;
- ``lost``: batches that carry records the kernel or the writer dropped
  (``lost_kernel``/``lost_user``), from the batch before them to them;
- ``removed_by_retention``: the records of a file retention removed, as it recorded them
  (removed_files: the file, its batches, its records' span, when and why; docs/design.md,
  "Retention");
- ``missing_records``: batch ids jump between two files and no removal recorded accounts for
  them (a file removed by someone else);
- ``exits_only``: a run with ``min_duration_ms`` recorded no successful execs and only
  exits of processes that lived at least that long;
- ``before_first``/``outside_export``: the window asked for starts before
  anything was recorded, or reaches beyond what an export holds.

Standard library only (the analysis side). An export carries the gaps that
were known when it was made in its manifest, and they are read from there.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from ..dbfiles import LIVE_NAME, daemon_running, file_is_export, file_order, has_table, is_chain_file, merge_run, rotated_range, run_key, run_rows
from ..timeparse import format_time
from .evidence import Removed

LOSS_MERGE_NS = 60 * 10**9  # loss batches closer than this are one gap
MAX_LINES = 10  # warnings printed before "... and N more"


@dataclass
class Gap:
    kind: str
    start_ns: int | None  # None: since the beginning of time
    end_ns: int | None  # None: until now (still open)
    lost_kernel: int = 0
    lost_user: int = 0
    runs: list = field(default_factory=list)
    detail: str = ""

    def overlaps(self, since_ns: int | None, until_ns: int | None) -> bool:
        starts_before_end = until_ns is None or self.start_ns is None or self.start_ns < until_ns
        ends_after_start = since_ns is None or self.end_ns is None or self.end_ns > since_ns
        return starts_before_end and ends_after_start

    def message(self) -> str:
        start = format_time(self.start_ns) if self.start_ns is not None else "the beginning"
        end = format_time(self.end_ns) if self.end_ns is not None else "now"
        return f"coverage gap {start} .. {end}: {self.detail}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["start"] = format_time(self.start_ns) if self.start_ns is not None else None
        d["end"] = format_time(self.end_ns) if self.end_ns is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Gap":
        return cls(kind=str(d.get("kind")), start_ns=d.get("start_ns"), end_ns=d.get("end_ns"),
                   lost_kernel=int(d.get("lost_kernel") or 0), lost_user=int(d.get("lost_user") or 0),
                   runs=list(d.get("runs") or []), detail=str(d.get("detail") or ""))


@dataclass
class _Run:
    id: int
    boot_id: str
    started_ns: int
    attached_ns: int | None = None
    stopped_ns: int | None = None
    settings: dict = field(default_factory=dict)
    first_batch_ns: int | None = None
    last_batch_ns: int | None = None

    @property
    def cover_start(self) -> int:
        return self.attached_ns if self.attached_ns is not None else self.started_ns

    def min_duration_ms(self) -> int:
        try:
            return int(self.settings.get("min_duration_ms") or 0)
        except (TypeError, ValueError):
            return 0


def _settings(text) -> dict:
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def select_paths(paths: list[Path], since_ns: int | None, until_ns: int | None) -> list[Path]:
    """The files that can hold gaps touching the window: those whose names overlap it, one more
    on each side (a gap between runs lies between files), the live file and any other file."""
    if since_ns is None and until_ns is None:
        return list(paths)
    rotated = sorted((p for p in paths if rotated_range(p)), key=file_order)
    keep = {p for p in paths if not rotated_range(p)}
    hits = [i for i, p in enumerate(rotated)
            if (until_ns is None or rotated_range(p)[0] <= until_ns)
            and (since_ns is None or rotated_range(p)[1] >= since_ns)]
    if hits:
        lo, hi = max(hits[0] - 1, 0), min(hits[-1] + 1, len(rotated) - 1)
    else:  # the window falls between two files, or beyond all of them: its neighbours
        before = [i for i, p in enumerate(rotated) if since_ns is not None and rotated_range(p)[1] < since_ns]
        after = [i for i, p in enumerate(rotated) if until_ns is not None and rotated_range(p)[0] >= until_ns]
        lo = before[-1] if before else (after[0] if after else 0)
        hi = after[0] if after else lo
    keep.update(rotated[lo:hi + 1])
    return [p for p in paths if p in keep]


def _manifest_gaps(conn: sqlite3.Connection) -> tuple[list[Gap], int | None, int | None]:
    rows = dict(conn.execute("SELECT key, value FROM manifest"))
    try:
        gaps = [Gap.from_dict(g) for g in json.loads(rows.get("gaps", "[]"))]
        window = json.loads(rows.get("time_range", "{}"))
    except (TypeError, ValueError, AttributeError):
        return [Gap("outside_export", None, None, detail="the export's manifest is unreadable: "
                    "its coverage is unknown")], None, None
    if not isinstance(window, dict):
        window = {}
    return gaps, window.get("since_ns"), window.get("until_ns")


class _History:
    """What the files say about coverage, gathered file by file: the runs (their copies merged),
    their batches' times, the batches that carry losses and each chain file's batch ids."""

    def __init__(self):
        self.rows: dict[tuple, dict] = {}  # run_key -> merged run row
        self.batch_ns: dict[tuple, tuple[int, int]] = {}  # run_key -> (first, last) batch written_ns
        self.losses: list[tuple] = []  # (batch id, prev written_ns, written_ns, lost_k, lost_u, run key)
        self.spans: list[tuple] = []  # per chain file: (min batch id, max batch id, first ns, last ns, name)
        self.removals: list[dict] = []  # removed_files rows: what retention removed

    def add(self, path: Path, conn: sqlite3.Connection) -> None:
        by_local = {row["id"]: run_key(merge_run(self.rows, row)) for row in run_rows(conn)}
        for rid, first_ns, last_ns in conn.execute(
                "SELECT run_id, min(written_ns), max(written_ns) FROM batches GROUP BY run_id"):
            key = by_local.get(rid)
            if key is None:
                continue
            have = self.batch_ns.get(key)
            self.batch_ns[key] = (first_ns, last_ns) if have is None else (min(have[0], first_ns),
                                                                            max(have[1], last_ns))
        for bid, rid, written, lost_k, lost_u in conn.execute(
                "SELECT id, run_id, written_ns, lost_kernel, lost_user FROM batches "
                "WHERE lost_kernel > 0 OR lost_user > 0 ORDER BY id").fetchall():
            prev = conn.execute("SELECT written_ns FROM batches WHERE id < ? AND run_id = ? "
                                "ORDER BY id DESC LIMIT 1", (bid, rid)).fetchone()
            self.losses.append((bid, prev[0] if prev else None, written, lost_k, lost_u, by_local.get(rid)))
        if is_chain_file(path):
            # batches are written in id order: the first and last by id are the oldest and newest
            lo, hi, first_ns, last_ns = conn.execute(
                "SELECT (SELECT min(id) FROM batches), (SELECT max(id) FROM batches), "
                "(SELECT written_ns FROM batches ORDER BY id LIMIT 1), "
                "(SELECT written_ns FROM batches ORDER BY id DESC LIMIT 1)").fetchone()
            if lo is not None:
                self.spans.append((lo, hi, first_ns, last_ns, Path(path).name))
            if has_table(conn, "removed_files"):
                cur = conn.execute("SELECT * FROM removed_files")
                cols = [d[0] for d in cur.description]
                self.removals += [dict(zip(cols, r)) for r in cur]

    def runs(self) -> dict[tuple, _Run]:
        out = {}
        for key, row in self.rows.items():
            first, last = self.batch_ns.get(key, (None, None))
            out[key] = _Run(row["id"], row.get("boot_id"), row["started_ns"], row.get("attached_ns"),
                            row.get("stopped_ns"), _settings(row.get("settings")), first, last)
        return out


def _run_gaps(ordered: list[_Run], running: bool | None, now_ns: int) -> list[Gap]:
    """exits_only, not_running and unclean_stop gaps of the runs, given oldest first."""
    gaps: list[Gap] = []
    ends: dict[int, tuple[int, bool]] = {}  # index -> (coverage end, clean)
    for i, run in enumerate(ordered):
        if run.stopped_ns is not None:
            ends[i] = (run.stopped_ns, True)
        elif i == len(ordered) - 1 and running:
            ends[i] = (now_ns, True)  # the daemon running now
        else:
            ends[i] = (max(filter(None, (run.last_batch_ns, run.cover_start))), False)
    for i, run in enumerate(ordered):
        end, clean = ends[i]
        if run.min_duration_ms():
            gaps.append(Gap("exits_only", run.cover_start, end, runs=[run.id], detail=(
                f"run {run.id} recorded no successful execs and only exits of processes that lived at least "
                f"{run.min_duration_ms()} ms (min_duration_ms)")))
        last = i == len(ordered) - 1
        nxt = None if last else ordered[i + 1]
        if nxt is not None and nxt.cover_start <= end:
            continue
        gap_end = nxt.cover_start if nxt is not None else None
        if last and running:
            continue
        until = f"run {nxt.id} started capturing" if nxt else "now"
        involved = [run.id] + ([nxt.id] if nxt else [])
        if clean:
            gaps.append(Gap("not_running", end, gap_end, runs=involved,
                            detail=f"no daemon running: run {run.id} stopped, nothing recorded until {until}"))
        else:
            maybe = " (or it is still running: the lock cannot be checked)" if last and running is None else ""
            gaps.append(Gap("unclean_stop", end, gap_end, runs=involved,
                            detail=f"run {run.id} stopped uncleanly after its last batch (no stop "
                                   f"recorded){maybe}: nothing recorded until {until}"))
    return gaps


def _loss_gaps(losses: list[tuple], runs: dict[tuple, _Run]) -> list[Gap]:
    """One "lost" gap per stretch of loss batches of a run closer than LOSS_MERGE_NS."""
    merged: list[Gap] = []
    for bid, prev_ns, written, lost_k, lost_u, key in sorted(losses):
        run = runs.get(key)
        start = prev_ns if prev_ns is not None else (run.cover_start if run else written)
        if (merged and merged[-1].runs == [key[0] if key else None]
                and start - merged[-1].end_ns <= LOSS_MERGE_NS):
            g = merged[-1]
            g.end_ns = max(g.end_ns, written)
            g.lost_kernel += lost_k
            g.lost_user += lost_u
        else:
            merged.append(Gap("lost", start, written, lost_k, lost_u, runs=[key[0] if key else None]))
    for g in merged:
        g.detail = (f"{g.lost_kernel + g.lost_user} records lost (kernel {g.lost_kernel}, "
                    f"user {g.lost_user}) in run {g.runs[0]}")
    return merged


def _missing_gaps(spans: list[tuple], removed: Removed) -> list[Gap]:
    """Batch ids that jump from one chain file to the next, where no removal retention recorded
    accounts for them."""
    gaps = []
    spans = sorted(spans)
    for (lo_a, hi_a, _, last_a, name_a), (lo_b, hi_b, first_b, _, name_b) in zip(spans, spans[1:]):
        if lo_b > hi_a + 1:
            cut = removed.back_from(lo_b, None, stop=hi_a + 1)
            if cut and cut[0]["first_batch_id"] == hi_a + 1:
                continue  # _removed_gaps says it
            gaps.append(Gap("missing_records", last_a, first_b, detail=(
                f"batches {hi_a + 1}..{lo_b - 1} are missing between {name_a} and {name_b}, and no "
                "record says retention removed them (a database file was removed?)")))
    return gaps


def _removed_gaps(removed: Removed) -> list[Gap]:
    """The span of each file retention removed, as it recorded it."""
    gaps = []
    for r in removed.rows:
        batches = (f", batches {r['first_batch_id']}..{r['last_batch_id']}"
                   if r.get("first_batch_id") is not None else "")
        gaps.append(Gap("removed_by_retention", r.get("first_ns"), r.get("last_ns") or r["removed_ns"], detail=(
            f"removed by retention at {format_time(r['removed_ns'])} ({r['reason']}: {r.get('detail') or ''}): "
            f"{r['name']}{batches}, {r.get('records') or 0} records")))
    return gaps


def collect(conns: Iterable[tuple[Path, sqlite3.Connection]], db_dir: Path | None = None,
            now_ns: int | None = None, removals: list[dict] = ()) -> list[Gap]:
    """Every gap in the history these files hold, oldest first; ``removals``: what retention
    recorded removing, read from files besides these (recorded_removals)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    history = _History()
    history.removals += list(removals)
    gaps: list[Gap] = []
    live_dir = db_dir
    for path, conn in conns:
        if file_is_export(conn):
            gaps.extend(_manifest_gaps(conn)[0])
            continue
        if live_dir is None and Path(path).name == LIVE_NAME:
            live_dir = Path(path).parent
        history.add(path, conn)
    runs = history.runs()
    ordered = sorted(runs.values(), key=lambda r: (r.started_ns, r.id))
    running = daemon_running(live_dir) if live_dir is not None else None
    gaps += _run_gaps(ordered, running, now_ns)
    gaps += _loss_gaps(history.losses, runs)
    removed = Removed(history.removals)
    gaps += _missing_gaps(history.spans, removed)
    gaps += _removed_gaps(removed)
    gaps.sort(key=lambda g: (g.start_ns if g.start_ns is not None else -1, g.kind))
    return gaps


def in_window(gaps: list[Gap], since_ns: int | None, until_ns: int | None,
              first_covered_ns: int | None = None) -> list[Gap]:
    """The gaps touching [since, until); plus "before_first" when the window starts before
    ``first_covered_ns``, the start of the earliest coverage."""
    out = [g for g in gaps if g.overlaps(since_ns, until_ns)]
    if since_ns is not None and first_covered_ns is not None and since_ns < first_covered_ns:
        out.insert(0, Gap("before_first", since_ns, first_covered_ns, detail=(
            "nothing recorded before this (no daemon running, or older files removed)")))
    return out


def first_covered(conns: Iterable[tuple[Path, sqlite3.Connection]]) -> int | None:
    """The earliest moment any run was capturing (attached), or an export's window start."""
    first = None
    for _, conn in conns:
        if file_is_export(conn):
            _, since, _ = _manifest_gaps(conn)
            value = since
            if value is None:
                value = conn.execute("SELECT min(time_ns) FROM events").fetchone()[0]
        else:
            value = conn.execute("SELECT min(coalesce(attached_ns, started_ns)) FROM runs").fetchone()[0]
        if value is not None and (first is None or value < first):
            first = value
    return first


def recorded_removals(paths) -> list[dict]:
    """The removed_files rows of every file of ``paths``: a removal is recorded in the file live
    when it happened, which a window's files need not include."""
    from ..dbfiles import open_ro
    from ..errors import AuditdLiteError

    out: list[dict] = []
    for p in paths:
        try:
            conn = open_ro(p)
        except AuditdLiteError:
            continue
        try:
            if has_table(conn, "removed_files"):
                cur = conn.execute("SELECT * FROM removed_files")
                cols = [d[0] for d in cur.description]
                out += [dict(zip(cols, r)) for r in cur]
        except sqlite3.DatabaseError:
            pass
        finally:
            conn.close()
    return out


def for_window(conns: list[tuple[Path, sqlite3.Connection]], db_dir: Path | None,
               since_ns: int | None, until_ns: int | None, removals: list[dict] = ()) -> list[Gap]:
    """What to warn about for a question asked about [since, until)."""
    gaps = collect(conns, db_dir, removals=removals)
    first = first_covered(conns) if since_ns is not None else None
    removed = [g.start_ns for g in gaps if g.kind == "removed_by_retention" and g.start_ns is not None]
    if first is not None and removed:
        first = min(first, min(removed))  # before that, "removed by retention" says what happened
    out = in_window(gaps, since_ns, until_ns, first)
    for path, conn in conns:  # an export knows only its own window
        if file_is_export(conn):
            _, e_since, e_until = _manifest_gaps(conn)
            if until_ns is not None and e_until is not None and until_ns > e_until:
                out.append(Gap("outside_export", e_until, until_ns,
                               detail=f"{Path(path).name} holds no records after this (its export window)"))
    return out


def window_gaps(db_dir=None, db_file=None, since_ns: int | None = None,
                until_ns: int | None = None) -> list[Gap]:
    """Open the files that matter for [since, until) and return the gaps touching it."""
    from ..dbfiles import database_files, open_ro
    from ..errors import AuditdLiteError

    listed = database_files(db_dir=db_dir, db_file=db_file)
    paths = select_paths(listed, since_ns, until_ns)
    conns = []
    try:
        for p in paths:
            try:
                conns.append((p, open_ro(p)))
            except AuditdLiteError:
                continue  # the command itself reports files it cannot read
        return for_window(conns, Path(db_dir) if db_dir is not None else None, since_ns, until_ns,
                          recorded_removals(p for p in listed if p not in paths))
    except sqlite3.DatabaseError:
        return []  # gaps stay best effort: never turn an answer into an error
    finally:
        for _, c in conns:
            c.close()


def warn(gaps: list[Gap], stream, prog: str = "auditd-lite") -> None:
    """One stderr line per gap (at most MAX_LINES, then a count of the rest)."""
    for g in gaps[:MAX_LINES]:
        stream.write(f"{prog}: warning: {g.message()}\n")
    rest = gaps[MAX_LINES:]
    if rest:
        lost = sum(g.lost_kernel + g.lost_user for g in rest)
        stream.write(f"{prog}: warning: ... and {len(rest)} more coverage gaps"
                     + (f" ({lost} more records lost)" if lost else "") + "\n")
