"""What verify checks of a daemon file besides its records: its runs, seen_processes and
removed_files rows against the batches whose hashes cover them (chain format 5; docs/design.md,
"Tamper evidence").

A batch in format 5 says in its header what else its transaction wrote (chain.EVIDENCE_COLUMNS):
the columns of its run's row it set with their values, what it added to the run's counters,
and each seen_processes or removed_files row it inserted, by id and digest. So:

- a file's copy of a run's row must be the fold of that run's batches in the file: each column
  as a batch last set it, each counter as set plus what the batches added. A value that differs
  is named with the batch that recorded the right one (an edited stop time is shown beside the
  one recorded at the stop); a value no batch set was put in afterwards (a stop time given to a
  run that died), and a run's row no batch recorded is a run put in afterwards;
- every seen_processes and removed_files row must be one a batch lists, with the digest it
  lists: a row edited, deleted or put in is named by table, id, process and run.

Files, and runs, written before format 5 are named in a note as not covered: no hash vouches
for those rows. In a file the chain's format 5 began (its first batch), every row is covered.

Standard library only (the analysis side).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from .. import batch_evidence, chain
from ..dbfiles import has_table
from ..timeparse import format_time

# a run's row columns that hold times: shown as times in what verify says
_TIMES = {"started_ns", "attached_ns", "stopped_ns"}


@dataclass
class Found:
    """What one file's evidence says, for the checks across files."""

    removals: list = field(default_factory=list)  # removed_files rows (dicts) the file holds
    carries: dict = field(default_factory=dict)  # batch id -> what it recorded besides records
    covered: bool = False  # the file has batches in format 5
    runs: set = field(default_factory=set)  # ids of the runs whose rows its batches recorded


def _shown(column: str, value) -> str:
    if value is None:
        return "NULL"
    if column in _TIMES and isinstance(value, int):
        return format_time(value)
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    return repr(value)


def _fmt(stored) -> int | None:
    return chain.hash_format(stored) if stored is not None else None


def check(conn: sqlite3.Connection, name: str, problems: list, notes: list) -> Found:
    """Check one daemon file's runs, seen_processes and removed_files rows against its batches
    (read in the snapshot its chain is checked in); problems and notes are appended."""
    found = Found()
    batch_cols = {r[1] for r in conn.execute("PRAGMA table_info(batches)")}
    runs = {r["id"]: r for r in _rows(conn, "runs")}
    seen = _rows(conn, "seen_processes")
    if not set(chain.EVIDENCE_COLUMNS) <= batch_cols:
        if runs or seen:
            notes.append(f"{name}: written before chain format 5 (schema revision 0007): no hash "
                         f"covers its {_count(len(runs), 'run row')} or "
                         f"{_count(len(seen), 'seen process', 'es')}")
        return found
    keys = ("id", "run_id", "hash") + tuple(dict.fromkeys(chain.EVIDENCE_COLUMNS + tuple(batch_evidence.RUN_ADDS.values())))
    batches = [dict(zip(keys, b)) for b in conn.execute(
        f"SELECT {', '.join(keys)} FROM batches ORDER BY id")]
    fives = [b for b in batches if (_fmt(b["hash"]) or 0) >= chain.EVIDENCE_FORMAT]
    found.covered = bool(fives)
    begun_in_5 = bool(fives) and fives[0] is batches[0]
    state, origin = _fold(fives, name, problems, found)
    found.runs = set(state)
    _compare_runs(runs, state, origin, fives, begun_in_5, name, problems, notes)
    removals = _rows(conn, "removed_files") if has_table(conn, "removed_files") else []
    found.removals = [dict(r, file=name) for r in removals]
    old_seen = _side(conn, "seen_processes", seen, fives, runs, state, begun_in_5, name, problems, found)
    _side(conn, "removed_files", removals, fives, runs, state, True, name, problems, found)
    old_runs = [r for r in runs if r not in state]
    if old_runs or old_seen:
        parts = ([_count(len(old_runs), "run row")] if old_runs else []) + (
            [_count(old_seen, "seen process", "es")] if old_seen else [])
        notes.append(f"{name}: {' and '.join(parts)} written before chain format 5 (runs "
                     f"{', '.join(map(str, sorted(old_runs))) or 'none'}): no hash covers them")
    return found


def _count(n: int, noun: str, plural: str = "s") -> str:
    return f"{n} {noun}{plural if n != 1 else ''}"


def _rows(conn: sqlite3.Connection, table: str) -> list[dict]:
    cur = conn.execute(f"SELECT * FROM {table} ORDER BY id")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur]


def _fold(fives: list[dict], name: str, problems: list, found: Found) -> tuple[dict, dict]:
    """Each run's row as its batches in the file wrote it: {run id: {column: value}}, and
    {run id: {column: the batch that set it}} (counters: their start batch)."""
    state: dict[int, dict] = {}
    origin: dict[int, dict] = {}
    for b in fives:
        rid = b["run_id"]
        what = found.carries.setdefault(b["id"], [])
        if b["run_values"] is not None:
            try:
                pairs = batch_evidence.unpack_values(b["run_values"])
            except ValueError as exc:
                problems.append(chain.Problem(name, b["id"], f"its run values cannot be read ({exc})"))
                pairs = []
            cols = [c for c, _ in pairs]
            if "started_ns" in cols:
                state[rid] = {}
                what.append(f"the start of run {rid} (its runs row)")
            else:
                what.append(f"run {rid}'s {', '.join(cols)}")
            row = state.setdefault(rid, {})
            for c, v in pairs:
                row[c] = v
                origin.setdefault(rid, {})[c] = b["id"]
        row = state.get(rid)
        if row is None:
            continue
        for counter, column in batch_evidence.RUN_ADDS.items():
            add = b[column]
            if add is not None and row.get(counter) is not None:
                row[counter] += add
    return state, origin


def _compare_runs(runs: dict, state: dict, origin: dict, fives: list, begun_in_5: bool, name: str,
                  problems: list, notes: list) -> None:
    first5 = min(state, default=None)
    for rid, row in runs.items():
        want = state.get(rid)
        if want is None:
            if begun_in_5 or (first5 is not None and rid > first5):
                problems.append(chain.Problem(name, None, (
                    f"runs row of run {rid}: no batch recorded it (chain format 5 records each run's "
                    "row at its start in a file): put in afterwards")))
            continue
        last = max((b["id"] for b in fives if b["run_id"] == rid), default=None)
        for col, value in row.items():
            if col == "id":
                continue
            expected = want.get(col)
            if value == expected:
                continue
            by = origin.get(rid, {}).get(col)
            start = origin.get(rid, {}).get("started_ns")
            if expected is None and by == start:
                by = None  # NULL as inserted, and no batch set it since
            if col in batch_evidence.RUN_ADDS:
                reason = (f"runs row of run {rid}: {col} is {_shown(col, value)}, its batches here "
                          f"add up to {_shown(col, expected)}: edited")
                at = last
            elif by is None:
                reason = (f"runs row of run {rid}: {col} is {_shown(col, value)}, which no batch "
                          "recorded" + (" (the run has no recorded stop)" if col == "stopped_ns" else "")
                          + ": put in afterwards")
                at = last
            else:
                when = ("at the run's start in this file" if by == start else "at the run's stop"
                        if col == "stopped_ns" else "when capture began")
                reason = (f"runs row of run {rid}: {col} is {_shown(col, value)}, recorded as "
                          f"{_shown(col, expected)} {when}: edited")
                at = by
            problems.append(chain.Problem(name, at, reason))
    for rid in state:
        if rid not in runs:
            problems.append(chain.Problem(name, origin.get(rid, {}).get("started_ns"), (
                f"runs row of run {rid}, which this batch recorded, is missing: deleted")))


def _side(conn, table: str, rows: list[dict], fives: list, runs: dict, state: dict, all_covered: bool,
          name: str, problems: list, found: Found) -> int:
    """Check one side table's rows against the batches listing them; the number of its rows no
    format 5 batch could have listed (of runs written before it)."""
    column = batch_evidence.SIDE_COLUMN[table]
    cols = batch_evidence.SIDE_TABLES[table]
    by_id = {r["id"]: r for r in rows}
    listed: set[int] = set()
    noun = "seen process" if table == "seen_processes" else "retention record"
    for b in fives:
        if b[column] is None:
            continue
        try:
            entries = batch_evidence.parse_side_rows(b[column])
        except ValueError as exc:
            problems.append(chain.Problem(name, b["id"], f"its {table} list cannot be read ({exc})"))
            continue
        found.carries.setdefault(b["id"], []).append(
            _count(len(entries), noun, "es" if table == "seen_processes" else "s")
            + (f" of run {b['run_id']}" if table == "seen_processes" else ""))
        for row_id, digest in entries:
            listed.add(row_id)
            row = by_id.get(row_id)
            if row is None:
                problems.append(chain.Problem(name, b["id"], (
                    f"{table} row {row_id}{_of(table, None, b)}, which this batch recorded, is "
                    "missing: deleted")))
            elif batch_evidence.side_digest(table, tuple(row.get(c) for c in cols)) != digest:
                problems.append(chain.Problem(name, b["id"], (
                    f"{table} row {row_id}{_of(table, row, b)} differs from what this batch "
                    "recorded: edited")))
    old = 0
    for row_id, row in by_id.items():
        if row_id in listed:
            continue
        if all_covered or row.get("run_id") in state or row.get("batch_id") is not None:
            problems.append(chain.Problem(name, row.get("batch_id"), (
                f"{table} row {row_id}{_of(table, row, None)} is in no batch's record: put in "
                "afterwards")))
        else:
            old += 1
    return old


def _of(table: str, row: dict | None, batch: dict | None) -> str:
    """How a row is named: a seen process by its pid and run, a retention record by its file."""
    if table == "removed_files":
        return f" ({row['name']})" if row is not None else ""
    run = row.get("run_id") if row is not None else batch["run_id"]
    pid = f"pid {row['pid']}, " if row is not None else ""
    return f" ({pid}run {run})"


class Removed:
    """The removals retention recorded (removed_files rows of every file), each once, by the
    batches they name: what lets verify tell a retention cut from a file removed by someone
    else, and gaps show the span (docs/design.md, "Retention")."""

    def __init__(self, rows):
        once: dict[tuple, dict] = {}
        for r in rows:
            key = (r.get("name"), r.get("first_batch_id"), r.get("last_batch_id"), r.get("last_hash"))
            if key not in once or (r.get("removed_ns") or 0) < (once[key].get("removed_ns") or 0):
                once[key] = r
        self.rows = sorted(once.values(), key=lambda r: (r.get("first_batch_id") or 0, r.get("removed_ns") or 0))
        self.ranged = [r for r in self.rows if r.get("first_batch_id") is not None
                       and r.get("last_batch_id") is not None]
        self.unread = [r for r in self.rows if r not in self.ranged]

    def back_from(self, lo: int, prev_hash, stop: int = 1) -> list[dict]:
        """The recorded removals that end just before batch ``lo`` (whose previous hash is
        ``prev_hash``; None: not known), each linked to the next by its hashes, walked back as far
        as they go but not below batch ``stop``: oldest first."""
        out: list[dict] = []
        want_last, want_hash = lo - 1, prev_hash
        while want_last >= stop:
            r = next((r for r in self.ranged if r["last_batch_id"] == want_last
                      and (want_hash is None or r.get("last_hash") == want_hash)), None)
            if r is None or r in out:
                break
            out.append(r)
            want_last, want_hash = r["first_batch_id"] - 1, r.get("first_prev_hash")
        return out[::-1]


def removals_said(found: list[dict], limit: int = 3) -> str:
    """The removals a note names: each file, its records' span, when and why."""
    said = []
    for r in found[:limit]:
        span = (f", records {format_time(r['first_ns'])} .. {format_time(r['last_ns'])}"
                if r.get("first_ns") is not None else "")
        said.append(f"{r['name']} ({r.get('records') or 0} records{span}) at "
                    f"{format_time(r['removed_ns'])}, {r['reason']}")
    more = len(found) - limit
    return "; ".join(said) + (f"; and {more} more" if more > 0 else "")
