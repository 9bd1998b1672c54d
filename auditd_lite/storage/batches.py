"""One batch in the live file: where it stands in the hash chain (docs/design.md, "Tamper
evidence") and its one transaction."""

from __future__ import annotations

import operator
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import structlog
from sqlalchemy.exc import DBAPIError

from .. import batch_evidence, chain, dbfiles
from ..rows import CONTEXT_FIELDS, GATE_FIELDS
from .schema import batches, events, runs

# the writer's: these steps were its own, and the log keeps naming it
log = structlog.get_logger("auditd_lite.writer")

# Core on the hot path, at driver level: one statement per record type and batch, stepped once
# a row (compiled: insert_rows; the module's executemany: insert_rows_python); the ORM's unit
# of work has no place here. Binding a parameter costs more than SQLite's own insert, so each
# record type binds only the columns it can fill: an exit leaves the exec columns NULL and the
# reverse, exactly what binding None stored (the hash chain reads the same row back). A multi-
# row VALUES statement measured only ~2-6% faster whole-process: not worth its statement-cache
# memory. What a type can fill is the decoder's shape of it, which tests/test_chain.py holds
# to chain's signatures.
_NULL = type(None)
# an exit has no context (CONTEXT_FIELDS) and no ABI: those are exec columns too
EXEC_ONLY = tuple(c for c, t in zip(chain.EVENT_COLUMNS, chain.EXIT_SIGNATURE) if t is _NULL
                  ) + CONTEXT_FIELDS + tuple(c for c, t in zip(GATE_FIELDS, chain.EXIT_GATE_SIGNATURE)
                                            if t is _NULL)
EXIT_ONLY = tuple(c for c, a, b in zip(chain.EVENT_COLUMNS, chain.EXEC_SIGNATURE,
                                        chain.EXEC_FAILED_SIGNATURE) if a is _NULL and b is _NULL)


def _insert_for(omit: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """The INSERT binding every column but ``omit``, and the positions in a row of those values."""
    keep = tuple(i for i, c in enumerate(chain.EVENT_COLUMNS) if c not in omit)
    names = ", ".join(chain.EVENT_COLUMNS[i] for i in keep)
    return f"INSERT INTO {events.name} ({names}) VALUES ({', '.join('?' * len(keep))})", keep


INSERT_EXEC, _EXEC_COLUMNS = _insert_for(EXIT_ONLY)
INSERT_EXIT, _EXIT_COLUMNS = _insert_for(EXEC_ONLY)
_EXEC_VALUES, _EXIT_VALUES = operator.itemgetter(*_EXEC_COLUMNS), operator.itemgetter(*_EXIT_COLUMNS)
_EVENT = chain.EVENT_COLUMNS.index("event")

# The compiled inserts (storage/_insert.c; docs/design.md, "The compiled hot path") read the
# handle out of the sqlite3 module's Connection, whose layout was checked on these versions
# (bookworm's 3.11 and trixie's 3.13 among them); on any other the module's path runs.
_HANDLE_LAYOUT = (3, 11) <= sys.version_info[:2] <= (3, 13)
try:  # built with the package where a compiler was (setup.py)
    from ._insert import filename as _handle_filename, insert as _compiled
    INSERTS = "compiled" if _HANDLE_LAYOUT else f"python (Python {sys.version_info[0]}.{sys.version_info[1]})"
except ImportError as e:
    _compiled, INSERTS = None, f"python ({e})"
# The compiled inserts prepare their statements each batch (a statement kept beyond the call
# would have to be finalized before its connection closes, on every path that closes one), 20
# to 25 µs a statement, where the module reuses its cached ones: below this many rows a batch
# goes through the module (measured: even at about 16 to 32 rows a batch).
COMPILED_FROM = 32

# SQLite's primary result codes 1 to 28 by name, for the error the sqlite3 module would raise
_PRIMARY_CODES = ("ERROR", "INTERNAL", "PERM", "ABORT", "BUSY", "LOCKED", "NOMEM", "READONLY",
                  "INTERRUPT", "IOERR", "CORRUPT", "NOTFOUND", "FULL", "CANTOPEN", "PROTOCOL",
                  "EMPTY", "SCHEMA", "TOOBIG", "CONSTRAINT", "MISMATCH", "MISUSE", "NOLFS", "AUTH",
                  "FORMAT", "RANGE", "NOTADB", "NOTICE", "WARNING")
# the sqlite3 module's classes of them (CPython's Modules/_sqlite/util.c); others DatabaseError
_ERROR_CLASSES = {**dict.fromkeys(("INTERNAL", "NOTFOUND"), sqlite3.InternalError),
                  **dict.fromkeys(("ERROR", "PERM", "ABORT", "BUSY", "LOCKED", "READONLY", "INTERRUPT",
                                   "IOERR", "FULL", "CANTOPEN", "PROTOCOL", "EMPTY", "SCHEMA"),
                                  sqlite3.OperationalError),
                  "TOOBIG": sqlite3.DataError,
                  **dict.fromkeys(("CONSTRAINT", "MISMATCH"), sqlite3.IntegrityError),
                  **dict.fromkeys(("MISUSE", "RANGE"), sqlite3.InterfaceError)}


def sqlite_error(code: int, message: str, statement: str) -> Exception:
    """What SQLAlchemy raises for the sqlite3 module's error of this extended result ``code``
    (MemoryError for SQLITE_NOMEM, as the module): the compiled inserts' failure as the
    module's executemany would have failed."""
    primary = _PRIMARY_CODES[(code & 0xFF) - 1] if 0 < code & 0xFF <= len(_PRIMARY_CODES) else "ERROR"
    if primary == "NOMEM":
        return MemoryError(message)
    orig = _ERROR_CLASSES.get(primary, sqlite3.DatabaseError)(message)
    orig.sqlite_errorcode = code
    orig.sqlite_errorname = next((n for n in dir(sqlite3) if n.startswith(f"SQLITE_{primary}_")
                                  and getattr(sqlite3, n) == code), f"SQLITE_{primary}")
    return DBAPIError.instance(statement, None, orig, sqlite3.Error)


def _compiled_handle(conn) -> sqlite3.Connection | None:
    """The sqlite3 connection under ``conn`` when the compiled inserts may run on it: once per
    connection, the file name read through the handle must be the one SQLite gives."""
    if _compiled is None or not _HANDLE_LAYOUT:
        return None
    pooled = conn.connection
    ok = pooled.info.get("compiled_inserts")
    dbapi = pooled.dbapi_connection
    if ok is None:
        main = [row[2] for row in dbapi.execute("PRAGMA database_list") if row[1] == "main"]
        ok = pooled.info["compiled_inserts"] = isinstance(dbapi, sqlite3.Connection) and \
            main == [_handle_filename(dbapi)]
    return dbapi if ok else None


def insert_rows(conn, rows: list[tuple]) -> None:
    """``rows`` (chain.EVENT_COLUMNS order) into events in the transaction open on ``conn``: the
    exits, then the execs, each binding only the columns its type fills. The compiled inserts'
    (INSERTS says which run; a batch of fewer than COMPILED_FROM rows is the module's) or
    insert_rows_python's: the same rows stored."""
    if not rows:
        return
    dbapi = _compiled_handle(conn) if len(rows) >= COMPILED_FROM else None
    if dbapi is None:
        insert_rows_python(conn, rows)
        return
    if dbapi.isolation_level is not None and not dbapi.in_transaction:
        dbapi.execute(f"BEGIN {dbapi.isolation_level}")  # as the module does before an INSERT
    failed = _compiled(dbapi, rows, _EVENT, INSERT_EXIT, _EXIT_COLUMNS, INSERT_EXEC, _EXEC_COLUMNS)
    if failed is not None:
        raise sqlite_error(*failed, f"{INSERT_EXIT}; {INSERT_EXEC}")


def insert_rows_python(conn, rows: list[tuple]) -> None:
    """insert_rows through the sqlite3 module's executemany: the reference."""
    exits = [_EXIT_VALUES(r) for r in rows if r[_EVENT] == "exit"]
    if exits:
        conn.exec_driver_sql(INSERT_EXIT, exits)
    if len(exits) < len(rows):
        conn.exec_driver_sql(INSERT_EXEC, [_EXEC_VALUES(r) for r in rows if r[_EVENT] != "exit"])


INSERT_BATCH = (f"INSERT INTO {batches.name} ({', '.join(chain.BATCH_HEADER5)}, prev_hash, hash) "
                f"VALUES ({', '.join('?' * (len(chain.BATCH_HEADER5) + 2))})")
COUNT_RUN = (f"UPDATE {runs.name} SET events_written = events_written + ?, "
             "lost_kernel = lost_kernel + ?, lost_user = lost_user + ?, "
             "stream_lines_written = stream_lines_written + ?, "
             "stream_lines_dropped = stream_lines_dropped + ? WHERE id = ?")
_NO_EVIDENCE = (None, None, None)  # run_values, seen_rows, removal_rows of a batch of records


@dataclass
class Evidence:
    """What a batch's transaction writes besides records: chain format 5 covers it in the batch's
    header (chain.EVIDENCE_COLUMNS; docs/design.md, "Tamper evidence")."""

    run_insert: dict | None = None  # the run's row (without its id), inserted: its start in a file
    run_update: dict | None = None  # columns of the run's row it sets (attached_ns, stopped_ns)
    seen: list = field(default_factory=list)  # seen_processes rows (dicts of their columns)
    removals: list = field(default_factory=list)  # removed_files rows (dicts of their columns)


_RUN_SETTABLE = batch_evidence.RUN_COLUMNS[1:]


def _side_rows(conn, table: str, rows: list[dict], fixed: dict) -> bytes | None:
    """Insert ``rows`` into a side table (batch_evidence.SIDE_TABLES) with the next ids and ``fixed``
    values; the batch's list of them, digested as read back (so as verify reads them: a value
    SQLite's column affinity converts is digested converted)."""
    if not rows:
        return None
    cols = batch_evidence.SIDE_TABLES[table]
    first = conn.exec_driver_sql(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").scalar()
    values = [tuple(first + k if c == "id" else fixed[c] if c in fixed else r.get(c) for c in cols)
              for k, r in enumerate(rows)]
    conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         values)
    back = conn.exec_driver_sql(f"SELECT {', '.join(cols)} FROM {table} WHERE id BETWEEN ? AND ? "
                                "ORDER BY id", (first, first + len(rows) - 1)).fetchall()
    return batch_evidence.side_rows((r[0], batch_evidence.side_digest(table, tuple(r))) for r in back)


def _write_evidence(conn, ev: Evidence, run_id: int, batch_id: int) -> tuple:
    """Write ``ev`` inside the batch's transaction; its run_values, seen_rows and removal_rows."""
    pairs: list = []
    if ev.run_insert is not None:
        row = {**ev.run_insert, "id": run_id}
        cols = [c for c in batch_evidence.RUN_COLUMNS if c in row]
        conn.exec_driver_sql(f"INSERT INTO {runs.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                             tuple(row[c] for c in cols))
        pairs = list(_RUN_SETTABLE)  # the row as inserted: every column, NULL where none was given
    if ev.run_update:
        cols = [c for c in _RUN_SETTABLE if c in ev.run_update]
        conn.exec_driver_sql(f"UPDATE {runs.name} SET {', '.join(c + ' = ?' for c in cols)} WHERE id = ?",
                             tuple(ev.run_update[c] for c in cols) + (run_id,))
        pairs += [c for c in cols if c not in pairs]
    values = None
    if pairs:  # as read back, for the reason _side_rows gives
        got = conn.exec_driver_sql(f"SELECT {', '.join(pairs)} FROM {runs.name} WHERE id = ?",
                                   (run_id,)).fetchone()
        values = batch_evidence.pack_values(zip(pairs, got))
    return (values, _side_rows(conn, "seen_processes", ev.seen, {"run_id": run_id, "batch_id": batch_id}),
            _side_rows(conn, "removed_files", ev.removals, {"batch_id": batch_id}))


def _tail(query: Callable[[str], list]) -> tuple[int | None, str | None, int]:
    """(highest batch id or None, hash of the last hashed batch or None, highest event id or 0)
    of one file; ``query`` runs a statement on it. Ids count whether or not a batch has a hash:
    the first release wrote none, and the next batch must still follow its batches."""
    columns = {r[1] for r in query("PRAGMA table_info(batches)")}
    top_batch, top_event = query(
        "SELECT (SELECT max(id) FROM batches), max((SELECT coalesce(max(id), 0) FROM events), "
        "(SELECT coalesce(max(last_event_id), 0) FROM batches))")[0]
    last_hash = None
    if "hash" in columns:
        row = query("SELECT hash FROM batches WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1")
        last_hash = row[0][0] if row else None
    return top_batch, last_hash, top_event


def _tail_with_batches(query) -> tuple | None:
    tail = _tail(query)
    return tail if tail[0] is not None else None


def unreadable(path: Path, error: Exception) -> None:
    """An older file the writer looked into and SQLite could not read: said, and passed over."""
    log.warning("database_unreadable", path=str(path), error=str(error))


class ChainPosition:
    """The last hash written and the ids the next batch takes: read once from the files, then
    moved only by a committed batch, so a batch written again (in a new file after a set-aside,
    or after the disk had no room) is the same batch."""

    def __init__(self):
        self.known = False
        self.last_hash: str | None = None
        self.next_event_id = self.next_batch_id = None
        self.top_run = 0  # the highest run id in the files: a new run takes the next

    def read(self, conn, db_dir: Path) -> None:
        """From the live file on the writer's own connection, migrated (a file of the first
        release has no hash column until then, and its batches still hold ids the next ones
        follow), else from the newest rotated file with batches."""
        top_batch, last_hash, top_event = _tail(lambda sql: conn.exec_driver_sql(sql).fetchall())
        unclean = conn.exec_driver_sql(
            "SELECT id, started_ns FROM runs WHERE stopped_ns IS NULL").fetchall()
        conn.rollback()  # end the read so the run's insert can begin its own transaction
        # a rotated file holds copies of run rows that went on in a newer file:
        # only the live file knows how its runs ended
        for run_id, started in unclean:
            log.warning("previous_run_unclean", run_id=run_id, started_ns=started,
                        path=str(db_dir / dbfiles.LIVE_NAME))
        if top_batch is None:  # no batches yet: the chain is in an older file
            older = dbfiles.from_newest_older(db_dir, _tail_with_batches, unreadable)
            if older is not None:
                top_batch, last_hash, older_top = older
                top_event = max(top_event, older_top)
        if not top_event:  # batches without records (a run's start and stop): the ids go on
            top_event = dbfiles.from_newest_older(db_dir, lambda q: _tail(q)[2] or None, unreadable) or 0
        # run ids go on too: a new live file (after a set-aside) must not give a new run the id of
        # one in the file before it, which every reader reads beside it
        self.top_run = max(conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM runs").scalar(),
                           dbfiles.from_newest_older(db_dir, lambda q: q("SELECT max(id) FROM runs")[0][0],
                                                     unreadable) or 0)
        conn.rollback()
        # batches without a hash were written before the chain: it begins after them
        self.last_hash = last_hash or chain.GENESIS
        self.next_event_id, self.next_batch_id = top_event + 1, (top_batch or 0) + 1
        self.known = True

    def insert(self, conn, rows: list[tuple], run_id: int, written_ns: int,
               lost_kernel: int, lost_user: int, stream: tuple[int, int] | None = None,
               evidence: Evidence | None = None) -> None:
        """``rows`` as the next batch, in one transaction; the position moves once it is committed.
        ``stream``: the stream's lines written and dropped since the last count, for the run row
        (None: the run has no stream); ``evidence``: what else the transaction writes, which
        the batch's hash covers with the rest (chain format 5)."""
        batch_id = self.next_batch_id
        first = self.next_event_id
        last = first + len(rows) - 1
        full = [(first + i, run_id, batch_id) + row for i, row in enumerate(rows)]
        header = (batch_id, run_id, written_ns, first if rows else None,
                  last if rows else None, len(rows), lost_kernel, lost_user) + (stream or (None, None))
        digests = chain.row_digests(full)
        with conn.begin():
            side = _write_evidence(conn, evidence, run_id, batch_id) if evidence is not None else _NO_EVIDENCE
            header += side
            digest = chain.batch_hash(self.last_hash, header, digests)
            conn.exec_driver_sql(INSERT_BATCH, header + (self.last_hash, digest))
            insert_rows(conn, full)
            conn.exec_driver_sql(COUNT_RUN, (len(rows), lost_kernel, lost_user, *(stream or (0, 0)), run_id))
        self.last_hash = digest
        self.next_batch_id += 1
        self.next_event_id = last + 1
