"""`auditd-lite export`: a sealed, self-contained copy of selected records.

The export is one SQLite file, with the same tables as the daemon's files
(so ``query --db``, ``tree --db`` and ``sql --db`` work on it anywhere) and:

- ``events``: the selected records, every column as written (ids included);
- ``batches``: every batch holding at least one exported record, with its
  place in the hash chain;
- ``omitted_rows``: the digest of every record of those batches that was not
  exported (``chain.row_digest``), so each batch hash can be recomputed;
- ``chain_links``: the headers and hashes of the batches between the first
  and last exported batch that hold no exported record, so the chain can be
  followed without a hole from the first exported batch to the last;
- ``runs`` (one row per run: the copies in each source file merged) and
  ``seen_processes`` of the runs that cover the window;
- ``manifest`` (key, JSON value): format, tool version, exporting host and
  kernel, time of export, command line, the source files with their size
  and SHA-256 (a set-aside file named as such), filters, time range, counts
  per record type, chain ends, coverage gaps, ``table_sha256``: a digest of
  each table the batch hashes do not cover by themselves (batches, chain
  links, omitted digests, runs, seen_processes), and ``content_sha256`` over
  those (export format 2; format 1 had the one digest, without
  seen_processes, and still verifies).

An exit selected through its exec's columns (``--filename``, ``--arg``) is exported also when
that exec lies in an older file than the exit, as query finds it (docs/design.md, "Reading every
file").

A sidecar ``OUT.sha256`` (``sha256sum`` format) holds the file's digest; with ``--sign``,
``OUT.sig`` a signed statement of it and of the manifest (``sign``, signing.py); the digests,
the manifest's reading and the seal are export_seal.py's, the copying of the tables besides
the records export_copy.py's.

Consistency while the daemon writes: each source file is read inside one
read transaction (a WAL snapshot) of the export's own connection, to which
it is attached read-only; rotated files never change. If the directory's
file list changes during the export (a rotation), the export starts over.
The file is written under a temporary name in the target directory and
renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from .. import __version__, signing
from ..dbfiles import LIVE_NAME, database_files, file_is_export, has_table, is_chain_file, is_set_aside, may_hold, needs_immutable, open_ro, ro_uri, set_aside_note
from ..errors import BadInput, NotFound
from .export_copy import (EXTRA_SCHEMA, _Collected, _batch_ends, _batches_and_omitted, _chosen_runs,
                          _has_chain_columns, _id_range, _only_time_selects, _schema, _store_runs_and_links,
                          _type_counts, count_types)
from .export_seal import (BATCH_COLUMNS, FORMAT, FORMATS, _columns, content_sha256, file_sha256, read_manifest,
                          seal_file, sign, table_sha256)
from .query import Filters, Joiner, context_columns, exec_matches, exec_terms, selection_sql
from ..timeparse import format_time

CHUNK_IDS = 100_000
ATTEMPTS = 3


class _Rotated(Exception):
    """The live file was renamed by a rotation while it was being opened."""


class Progress:
    """A one-line progress bar on stderr, only when it is a terminal."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.on = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = 0
        self.done = 0
        self.label = ""
        self._last = 0.0

    def update(self, done: int | None = None, label: str | None = None, force: bool = False) -> None:
        if done is not None:
            self.done = done
        if label is not None:
            self.label = label
        if not self.on:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = min(self.done / self.total, 1.0) if self.total else 0.0
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r  {frac:4.0%} [{bar:<30}] {self.done:,} records  {self.label[:40]:<40}")
        self.stream.flush()

    def finish(self) -> None:
        if self.on:
            self.update(force=True)
            self.stream.write("\n")
            self.stream.flush()


def window_sources(db_dir: Path, filters: Filters, note=None) -> list[Path]:
    """The chain files of ``db_dir`` whose records can fall in the filters' window, oldest
    first (every export format reads these); ``note`` is told of each other file skipped."""
    chosen = []
    for p in reversed(database_files(db_dir=db_dir)):  # oldest first
        if not is_chain_file(p):
            if note is not None:
                note(f"skipping {p.name}: not a file the daemon writes (audit.db or audit-*.db)")
            continue
        if may_hold(p, filters.since_ns, filters.until_ns):
            chosen.append(p)
    return chosen


def check_request(out: Path, db_dir: Path, force: bool, filters: Filters) -> None:
    """BadInput for an export that cannot be made: its target (_check_target) or its window."""
    _check_target(out, db_dir, force, database_files(db_dir=db_dir))
    if filters.since_ns is not None and filters.until_ns is not None and filters.until_ns <= filters.since_ns:
        raise BadInput("--until must be later than --since")


def _check_target(out: Path, db_dir: Path, force: bool, sources: list[Path]) -> None:
    sidecar = Path(str(out) + ".sha256")
    if out.is_dir():
        raise BadInput(f"{out} is a directory: give the export's file name with -o")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise BadInput(f"no such directory for the export: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write in {parent}")
    resolved = out.resolve()
    if resolved in {p.resolve() for p in sources} or resolved.parent == db_dir.resolve():
        raise BadInput(f"refusing to write the export into the database directory {db_dir}: "
                       "it would be read as evidence itself")
    for path in (out, sidecar, signing.signature_path(out)):
        if (path.exists() or path.is_symlink()) and not force:
            raise BadInput(f"{path} exists: use --force to replace it")


def _user() -> str | None:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None


class _Export:
    def __init__(self, db_dir: Path, out: Path, filters: Filters, argv: list[str] | None,
                 progress: Progress, note):
        self.db_dir = db_dir
        self.out = out
        self.filters = filters
        self.argv = argv or []
        self.progress = progress
        self.note = note

    def sources(self, quiet: bool = False) -> list[Path]:
        """Chain files whose records can fall in the window, oldest first."""
        return window_sources(self.db_dir, self.filters, None if quiet else self.note)

    def run(self) -> dict:
        for _ in range(ATTEMPTS):
            before = database_files(db_dir=self.db_dir)
            sources = self.sources()
            fd, tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp",
                                       dir=str(self.out.parent) or ".")
            os.close(fd)
            try:
                try:
                    summary = self._write(Path(tmp), sources)
                except (BadInput, sqlite3.OperationalError) as exc:
                    if database_files(db_dir=self.db_dir) == before:
                        if isinstance(exc, BadInput):
                            raise
                        raise BadInput(f"cannot read {self.db_dir}: {exc}") from None
                    summary = None  # a rotation pulled a file away while it was read
                if summary is None:
                    self.note("the database files changed during the export (rotation): starting over")
                    continue
                summary["sha256"] = seal_file(Path(tmp), self.out)
                tmp = None
                return summary
            finally:
                if tmp is not None:
                    for suffix in ("", "-journal"):
                        try:
                            os.unlink(tmp + suffix)
                        except FileNotFoundError:
                            pass
        raise BadInput(f"the files in {self.db_dir} kept changing during the export; try again")

    # -- the copy ------------------------------------------------------------

    def _write(self, tmp: Path, sources: list[Path]) -> dict:
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        conn.text_factory = lambda raw: raw.decode("utf-8", "backslashreplace")
        try:
            return self._copy(conn, sources)
        finally:
            conn.close()

    def _create_tables(self, conn: sqlite3.Connection, sources: list[Path]) -> None:
        # schema of the newest source that has the chain columns: the tables as the daemon
        # writes them (a live file just created by a rotation may still be migrating)
        schema_source = next((c for c in reversed(sources) if _has_chain_columns(c)), sources[-1])
        self._attach(conn, schema_source)
        for _, sql in _schema(conn, "src", "table"):
            conn.execute(sql)
        indexes = [sql for _, sql in _schema(conn, "src", "index")]
        if conn.execute("SELECT 1 FROM src.sqlite_master WHERE name = 'alembic_version'").fetchone():
            conn.execute("INSERT INTO main.alembic_version SELECT * FROM src.alembic_version")
        conn.execute("DETACH DATABASE src")
        conn.executescript(EXTRA_SCHEMA)
        # indexes first: kept up while inserting in id order is about twice as fast as
        # building them afterwards (measured on 1.4 million records)
        for sql in indexes:
            conn.execute(sql)

    def _copy(self, conn: sqlite3.Connection, sources: list[Path]) -> dict:
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -131072",
                       "temp_store = MEMORY"):
            conn.execute(f"PRAGMA {pragma}")
        if not sources:
            raise NotFound("no database file covers that time window: nothing to export")
        self._create_tables(conn, sources)
        # rotated files never change: hash them on another thread while SQLite copies
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=2)
        self.type_counts: list = []  # futures of, or dicts of, records per type
        # (a set-aside file does not change either: only the live one is hashed by no one)
        self.digests = {p: self.pool.submit(file_sha256, p) for p in sources if p.name != LIVE_NAME}
        try:
            got = self._copy_sources(conn, sources)
            if conn.execute("SELECT count(*) FROM main.events").fetchone()[0] == 0:
                raise NotFound("no records match: nothing to export")
            return self._finish(conn, got)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _estimate(self, sources: list[Path]) -> int:
        """Ids in the window over every source: cheap, for the progress bar only."""
        total = 0
        for path in sources if self.progress.on else ():
            c = open_ro(path)
            try:
                lo, hi, _ = _id_range(c, "main", self.filters)
                total += (hi - lo + 1) if lo is not None else 0
            finally:
                c.close()
        return total

    def _copy_sources(self, conn: sqlite3.Connection, sources: list[Path]) -> _Collected:
        self.progress.total = 0
        self.progress.total = self._estimate(sources)
        self.progress.update(0, "", force=True)
        got = _Collected()
        out_cols = _columns(conn, "main", "events")
        processed: set[Path] = set()
        queue = list(sources)
        while queue:
            path = queue.pop(0)
            live = path.name == LIVE_NAME
            inode = None
            if live:
                if self._renamed_first(path, queue, processed):
                    continue
                try:
                    inode = os.stat(path).st_ino
                except FileNotFoundError:
                    continue
            info = self._copy_in_snapshot(conn, path, inode, out_cols, got)
            if info is None:
                queue.insert(0, path)
                continue
            processed.add(path)
            info.update(size=path.stat().st_size, sha256=None if live else self.digests[path].result())
            got.source_info.append(info)
            self.progress.update(got.done, path.name, force=True)
        self.progress.finish()
        return got

    def _renamed_first(self, live: Path, queue: list[Path], processed: set[Path]) -> bool:
        """A rotation since the listing renamed the live file: put the renamed files, to be read
        first, and the live file again after them at the head of ``queue``. True if there were any."""
        fresh = [p for p in self.sources(quiet=True) if p.name != LIVE_NAME
                 and p not in processed and p not in queue]
        for p in fresh:
            self.digests[p] = self.pool.submit(file_sha256, p)
        if fresh:
            queue[:0] = fresh
            queue.append(live)
        return bool(fresh)

    def _copy_in_snapshot(self, conn: sqlite3.Connection, path: Path, inode: int | None,
                          out_cols: list[str], got: _Collected) -> dict | None:
        """Copy ``path`` inside one read transaction; None if the live file (``inode`` given) was
        rotated between the check and the snapshot, so it must be read again."""
        self._attach(conn, path)
        conn.execute("BEGIN")
        try:
            if inode is not None:
                conn.execute("SELECT count(*) FROM src.batches").fetchone()  # the snapshot starts
                if os.stat(path).st_ino != inode:
                    raise _Rotated
            info = self._copy_file(conn, path, out_cols, got)
            conn.execute("COMMIT")
            return info
        except _Rotated:
            conn.execute("ROLLBACK")
            return None
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute("DETACH DATABASE src")

    def _copy_file(self, conn: sqlite3.Connection, path: Path, out_cols: list[str], got: _Collected) -> dict:
        """Copy the attached ``src``'s selected records, their batches and its runs, inside the
        snapshot; the file's entry for the manifest (size and digest are added after)."""
        lo, hi, whole = _id_range(conn, "src", self.filters)
        exported = self._copy_events(conn, path, lo, hi, whole, out_cols, got)
        have = _columns(conn, "src", "batches")
        into = [c for c in BATCH_COLUMNS if c in _columns(conn, "main", "batches")]
        select = ", ".join(c if c in have else "NULL" for c in into)
        for row in conn.execute(f"SELECT {select} FROM src.batches"):
            got.headers[row[0]] = row
        if exported:
            _batches_and_omitted(conn, lo, hi, select, ", ".join(into))
        got.add_runs(conn)
        last = conn.execute("SELECT id, hash FROM src.batches ORDER BY id DESC LIMIT 1").fetchone()
        first_t, last_t = conn.execute("SELECT (SELECT min(time_ns) FROM src.events), "
                                       "(SELECT max(time_ns) FROM src.events)").fetchone()
        if is_set_aside(path) and exported:
            self.note(f"{exported} record{'s' if exported != 1 else ''} from {set_aside_note(path)}")
        return {
            "name": path.name, "path": str(path.resolve()), "live": path.name == LIVE_NAME,
            "set_aside": is_set_aside(path), "size": None, "sha256": None,
            "first_record": format_time(first_t) if first_t is not None else None,
            "last_record": format_time(last_t) if last_t is not None else None,
            "last_batch": {"id": last[0], "hash": last[1]} if last else None,
            "events_exported": exported,
        }

    def _copy_events(self, conn, path: Path, lo, hi, whole: bool, out_cols: list[str], got: _Collected) -> int:
        """Copy the selected records of ``src`` with ids lo..hi; how many."""
        if lo is None:
            return 0
        # the columns both have: what a source from an older revision lacks stays NULL (unknown)
        cols = [c for c in out_cols if c in _columns(conn, "src", "events")]
        exported = 0
        if whole and cols == out_cols and _only_time_selects(self.filters):
            # every record of the file: SQLite's transfer optimization copies the
            # table and index records without decoding them
            exported = conn.execute("INSERT INTO main.events SELECT * FROM src.events").rowcount
            got.done += hi - lo + 1
            self._count(path, lo, hi)
            self.progress.update(got.done, path.name)
            return exported
        col_list = ", ".join(cols)
        context = context_columns(conn, "events", "src")
        for a in range(lo, hi + 1, CHUNK_IDS):
            b = min(a + CHUNK_IDS - 1, hi)
            frm, params = selection_sql(self.filters, "src.", f"e.id BETWEEN {a} AND {b}", context)
            cur = conn.execute(f"INSERT INTO main.events ({col_list}) "
                               f"SELECT {', '.join('e.' + c for c in cols)} {frm}", params)
            exported += cur.rowcount
            self.progress.update(got.done + (b - lo + 1), path.name)
        exported += self._copy_matched_elsewhere(conn, path, lo, hi, cols, context)
        got.done += hi - lo + 1
        self._count(path, lo, hi)
        return exported

    def _copy_matched_elsewhere(self, conn, path: Path, lo: int, hi: int, cols: list[str], context) -> int:
        """Copy the exits of ``src`` (ids lo..hi) that match through an exec in an older file,
        which the SQL above, joining in the file, cannot see; how many."""
        listing = database_files(db_dir=self.db_dir)
        if (not exec_terms(self.filters) or path not in listing or len(listing) < 2
                or not self.filters.context_wanted() <= context):
            return 0  # (a file without a column a filter reads has no record that can match)
        frm, params = selection_sql(self.filters, "src.", f"e.id BETWEEN {lo} AND {hi}", context, unjoined=True)
        joiner = Joiner(listing)
        try:
            i, ids = listing.index(path), []
            for row in conn.execute(f"SELECT e.id, e.pid, e.start_ns, e.time_ns, e.duration_ns, "
                                    f"r.boot_id {frm}", params).fetchall():
                rec = dict(zip(("pid", "start_ns", "time_ns", "duration_ns", "boot_id"), row[1:]))
                found = joiner.exec_of(i, rec) if rec["boot_id"] is not None else None
                if found is not None and exec_matches(conn, self.filters, found):
                    ids.append(row[0])
        finally:
            joiner.close()
        col_list = ", ".join(cols)
        for k in range(0, len(ids), 500):
            part = ids[k:k + 500]
            conn.execute(f"INSERT INTO main.events ({col_list}) SELECT {col_list} FROM src.events "
                         f"WHERE id IN ({', '.join('?' * len(part))})", part)
        return len(ids)

    def _attach(self, conn: sqlite3.Connection, path: Path) -> None:
        deadline = time.monotonic() + 2.0
        while True:
            open_ro(path).close()  # the usual checks and one-line messages
            try:
                conn.execute("ATTACH DATABASE ? AS src", (ro_uri(path, needs_immutable(path)),))
            except sqlite3.Error as exc:
                raise BadInput(f"cannot open {path}: {exc}") from None
            if has_table(conn, "events", "src"):
                break
            # a new live file a rotation made after the check, still getting its tables
            conn.execute("DETACH DATABASE src")
            if time.monotonic() > deadline:
                raise BadInput(f"not an auditd-lite database: {path}")
            time.sleep(0.02)
        if file_is_export(conn, "src"):
            conn.execute("DETACH DATABASE src")
            raise BadInput(f"{path} is an export, not a file the daemon wrote")

    def _count(self, path: Path, lo: int, hi: int) -> None:
        """Count the copied records per type: on another thread from the source when only the
        time selects them, else from the export afterwards."""
        f = self.filters
        if _only_time_selects(self.filters):
            self.type_counts.append(self.pool.submit(count_types, path, lo, hi, f.since_ns, f.until_ns))
        else:
            self.type_counts.append((lo, hi))

    def _manifest(self, conn: sqlite3.Connection, got: _Collected, chosen: dict, found: list) -> dict:
        from .. import hostinfo

        f = self.filters
        first_t, last_t = conn.execute("SELECT (SELECT min(time_ns) FROM main.events), "
                                       "(SELECT max(time_ns) FROM main.events)").fetchone()
        ends = conn.execute("SELECT (SELECT prev_hash FROM batches ORDER BY id LIMIT 1), "
                            "(SELECT hash FROM batches ORDER BY id DESC LIMIT 1)").fetchone()
        lo_b, hi_b = _batch_ends(conn)
        n = lambda table: conn.execute(f"SELECT count(*) FROM main.{table}").fetchone()[0]  # noqa: E731
        return {
            "format": FORMAT,
            "tool_version": __version__,
            "exported_at": format_time(time.time_ns()),
            "exported_by": {"uid": os.getuid(), "user": _user()},
            "host": hostinfo.host(),
            "kernel": hostinfo.kernel(),
            "recorded_hosts": sorted({(r.get("host"), r.get("kernel")) for r in chosen.values()}),
            "recorded_boots": sorted({r.get("boot_id") for r in chosen.values()}),
            "command": self.argv,
            "source_dir": str(self.db_dir.resolve()),
            "sources": got.source_info,
            "filters": {k: v for k, v in asdict(f).items() if v is not None
                        and k not in ("since_ns", "until_ns")},
            "time_range": {
                "since_ns": f.since_ns, "until_ns": f.until_ns,
                "since": format_time(f.since_ns) if f.since_ns is not None else None,
                "until": format_time(f.until_ns) if f.until_ns is not None else None,
                "first_record": format_time(first_t), "last_record": format_time(last_t),
                "first_record_ns": first_t, "last_record_ns": last_t,
            },
            "counts": _type_counts(conn, self.type_counts),
            "tables": {t: n(t) for t in ("events", "batches", "omitted_rows", "chain_links", "runs",
                                         "seen_processes")},
            "chain": {"first_batch": lo_b, "last_batch": hi_b, "first_prev_hash": ends[0],
                      "last_hash": ends[1]},
            "gaps": [g.as_dict() for g in found],
            "table_sha256": table_sha256(conn),
            "content_sha256": content_sha256(conn),
        }

    def _finish(self, conn: sqlite3.Connection, got: _Collected) -> dict:
        from . import gaps

        chosen = _chosen_runs(conn, got, self.filters, self.db_dir)
        _store_runs_and_links(conn, got, chosen)
        found = gaps.window_gaps(db_dir=self.db_dir, since_ns=self.filters.since_ns,
                                 until_ns=self.filters.until_ns)
        manifest = self._manifest(conn, got, chosen, found)
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO manifest VALUES (?, ?)",
                         [(k, json.dumps(v, sort_keys=True)) for k, v in manifest.items()])
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = DELETE")
        manifest["_gaps"] = found
        return manifest


def export(db_dir, out, filters: Filters, force: bool = False, argv: list[str] | None = None,
           progress_stream=None, note=None) -> dict:
    """Write the export; returns its manifest (plus ``sha256``). BadInput/NotFound on failure."""
    db_dir = Path(db_dir)
    out = Path(out)
    note = note or (lambda text: None)
    check_request(out, db_dir, force, filters)
    job = _Export(db_dir, out, filters, argv, Progress(progress_stream), note)
    return job.run()


__all__ = ["export", "file_sha256", "content_sha256", "table_sha256", "read_manifest", "sign", "FORMAT",
           "FORMATS"]
