"""What an export copies besides the records it selects, and how: the tables' schema, the id
range of a source's records in the window, the batches holding exported records with the digests
of their other records, the runs (their copies merged) and seen processes, and the chain links
between the exported batches (export.py's docstring says what each table holds).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, fields
from pathlib import Path

from .. import chain
from ..dbfiles import merge_run, open_ro, run_rows
from ..errors import BadInput
from .export_seal import LINK_COLUMNS, _columns
from .query import Filters


CORE_TABLES = ("runs", "batches", "events", "seen_processes")


EXTRA_SCHEMA = """
CREATE TABLE manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE omitted_rows (event_id INTEGER PRIMARY KEY, batch_id INTEGER NOT NULL, digest BLOB NOT NULL);
CREATE TABLE chain_links (id INTEGER PRIMARY KEY, run_id INTEGER, written_ns INTEGER,
    first_event_id INTEGER, last_event_id INTEGER, count INTEGER, lost_kernel INTEGER,
    lost_user INTEGER, prev_hash TEXT, hash TEXT);
"""


def count_types(path, lo: int, hi: int, since_ns: int | None, until_ns: int | None) -> dict:
    """Records per type with ids lo..hi in the window, read through a connection of its own.

    Records are never changed once written, so a later snapshot of the same file (even the
    live one) holds exactly the records the export copied from its own snapshot.
    """
    conn = open_ro(path)
    try:
        return dict(conn.execute(
            "SELECT event, count(*) FROM events WHERE id BETWEEN ? AND ? AND +time_ns >= ? "
            "AND +time_ns < ? GROUP BY event",
            (lo, hi, -(2**63) if since_ns is None else since_ns, 2**63 - 1 if until_ns is None else until_ns)))
    finally:
        conn.close()


def _schema(conn: sqlite3.Connection, alias: str, kind: str) -> list[tuple[str, str]]:
    return conn.execute(
        f"SELECT name, sql FROM {alias}.sqlite_master WHERE type = ? AND sql IS NOT NULL "
        "AND tbl_name IN (?, ?, ?, ?, 'alembic_version') ORDER BY rowid", (kind, *CORE_TABLES)).fetchall()


def _has_chain_columns(path: Path) -> bool:
    probe = open_ro(path)
    try:
        return "hash" in {r[1] for r in probe.execute("PRAGMA table_info(batches)")}
    finally:
        probe.close()


def _insert_rows(conn: sqlite3.Connection, table: str, cols: list[str], rows) -> None:
    conn.executemany(f"INSERT INTO main.{table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [[rec.get(c) for c in cols] for rec in rows])


@dataclass
class _Collected:
    """What the copy gathers from every source besides the records it copies."""
    runs: dict = field(default_factory=dict)  # run_key -> merged run row
    seen_rows: list = field(default_factory=list)  # (run_key, seen_processes row)
    headers: dict = field(default_factory=dict)  # batch id -> export_seal.BATCH_COLUMNS of every source batch
    source_info: list = field(default_factory=list)  # the manifest's "sources"
    done: int = 0  # ids gone through, for the progress bar

    def add_runs(self, conn: sqlite3.Connection) -> None:
        for row in run_rows(conn, "src"):
            merge_run(self.runs, row)
        seen_cols = _columns(conn, "src", "seen_processes")
        by_id = {r[0]: r for r in conn.execute("SELECT id, started_ns FROM src.runs")}
        for row in conn.execute("SELECT * FROM src.seen_processes"):
            rec = dict(zip(seen_cols, row))
            run = by_id.get(rec.get("run_id"))
            self.seen_rows.append(((rec.get("run_id"), run[1] if run else None), rec))


def _id_range(conn: sqlite3.Connection, alias: str, f: Filters) -> tuple:
    """The ids of the file's records in the window: a superset is enough (the copy filters
    each record by time again), so a file wholly inside the window is taken whole."""
    first, last, lo, hi = conn.execute(
        f"SELECT (SELECT min(time_ns) FROM {alias}.events), (SELECT max(time_ns) FROM {alias}.events), "
        f"(SELECT min(id) FROM {alias}.events), (SELECT max(id) FROM {alias}.events)").fetchone()
    if first is None or ((f.since_ns is None or first >= f.since_ns)
                         and (f.until_ns is None or last < f.until_ns)):
        return lo, hi, True
    terms, params = [], []
    if f.since_ns is not None:
        terms.append("time_ns >= ?")
        params.append(f.since_ns)
    if f.until_ns is not None:
        terms.append("time_ns < ?")
        params.append(f.until_ns)
    where = (" WHERE " + " AND ".join(terms)) if terms else ""
    return (*conn.execute(f"SELECT min(id), max(id) FROM {alias}.events{where}", params).fetchone(), False)


def _only_time_selects(f: Filters) -> bool:
    """Do only --since/--until select records (no filter on their columns)?"""
    # every field of Filters: one added later selects too, not the whole file
    return all(getattr(f, x.name) is None for x in fields(f) if x.name not in ("since_ns", "until_ns"))


def _batches_and_omitted(conn: sqlite3.Connection, lo: int, hi: int, select: str, into: str) -> None:
    """Copy the batches holding exported records of ``src`` (``into`` the export's columns,
    ``select``ed from the source's), and the digests of their other records."""
    cur = conn.execute(
        f"INSERT OR IGNORE INTO main.batches ({into}) SELECT {select} "
        "FROM src.batches sb WHERE sb.last_event_id >= ? AND sb.first_event_id <= ? AND EXISTS "
        "(SELECT 1 FROM main.events m WHERE m.id BETWEEN sb.first_event_id AND sb.last_event_id)",
        (lo, hi))
    if not cur.rowcount:
        return
    partial = conn.execute(
        "SELECT b.id, b.first_event_id, b.last_event_id, b.hash FROM main.batches b "
        "WHERE b.last_event_id >= ? AND b.first_event_id <= ? AND b.count != "
        "(SELECT count(*) FROM main.events m WHERE m.id BETWEEN b.first_event_id AND b.last_event_id)",
        (lo, hi)).fetchall()
    # the columns the source has: a file from before revision 0003 has no context, and the
    # digest of its records (format 2 or 1) covers none
    cols = ", ".join(chain.file_event_columns(conn, "src"))
    for batch_id, first, last, stored in partial:
        fmt = chain.hash_format(stored or "")
        rows = conn.execute(
            f"SELECT {cols} FROM src.events s WHERE s.id BETWEEN ? AND ? "
            "AND NOT EXISTS (SELECT 1 FROM main.events m WHERE m.id = s.id)", (first, last)).fetchall()
        conn.executemany("INSERT OR REPLACE INTO main.omitted_rows VALUES (?, ?, ?)",
                         [(r[0], batch_id, chain.row_digest(tuple(r), fmt)) for r in rows])


def _batch_ends(conn: sqlite3.Connection) -> tuple:
    return conn.execute("SELECT (SELECT min(id) FROM main.batches), (SELECT max(id) FROM main.batches)"
                        ).fetchone()


def _chosen_runs(conn: sqlite3.Connection, got: _Collected, f: Filters, db_dir: Path) -> dict:
    """The runs the export carries: those of its batches and those that cover the window."""
    # a record's run is its batch's run (the hash covers both): the small table says it
    exported_runs = {r[0] for r in conn.execute("SELECT DISTINCT run_id FROM main.batches")}
    last_batch_of = {}
    for h in got.headers.values():
        last_batch_of[h[1]] = max(last_batch_of.get(h[1], 0), h[2])
    chosen = {}
    for key, rec in got.runs.items():
        start = rec.get("attached_ns") or rec.get("started_ns")
        end = rec.get("stopped_ns") or last_batch_of.get(rec.get("id")) or start
        overlaps = ((f.until_ns is None or start < f.until_ns) and (f.since_ns is None or end >= f.since_ns))
        if key[0] in exported_runs or overlaps:
            if key[0] in {k[0] for k in chosen}:
                raise BadInput(f"run id {key[0]} names two different runs in {db_dir}: "
                               "files from another directory? (verify says more)")
            chosen[key] = rec
    return chosen


def _store_runs_and_links(conn: sqlite3.Connection, got: _Collected, chosen: dict) -> None:
    """The chosen runs, their seen processes, and the headers of the batches between the first
    and last exported one that hold no exported record."""
    conn.execute("BEGIN")
    _insert_rows(conn, "runs", _columns(conn, "main", "runs"), chosen.values())
    _insert_rows(conn, "seen_processes", [c for c in _columns(conn, "main", "seen_processes") if c != "id"],
                 [rec for key, rec in got.seen_rows if key in chosen])
    lo_b, hi_b = _batch_ends(conn)
    exported_batches = {r[0] for r in conn.execute("SELECT id FROM main.batches")}
    links = [h[:len(LINK_COLUMNS)] for bid, h in sorted(got.headers.items())
             if lo_b is not None and lo_b <= bid <= hi_b and bid not in exported_batches]
    conn.executemany(f"INSERT INTO main.chain_links VALUES ({', '.join('?' * len(LINK_COLUMNS))})", links)
    conn.execute("COMMIT")


def _type_counts(conn: sqlite3.Connection, parts: list) -> dict:
    """Records per type over the parts: a future of a source's counts, or an id range to count here."""
    counts = {"exec": 0, "exec_failed": 0, "exit": 0}
    for part in parts:
        if isinstance(part, tuple):
            part = dict(conn.execute("SELECT event, count(*) FROM main.events WHERE id BETWEEN ? AND ? "
                                     "GROUP BY event", part))
        else:
            part = part.result()
        for name, n in part.items():
            counts[name] = counts.get(name, 0) + n
    counts["total"] = sum(v for k, v in counts.items() if k != "total")
    return counts
