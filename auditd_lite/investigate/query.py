"""Search exec/exit records across database files (read-only, stdlib sqlite3 only).

Files are read one after another, newest first, each with one SQL query
ordered by the ``time_ns`` index, so ``--limit N`` stops after N rows and
never touches the older files.

An exit matches a filter on its exec's columns (--filename, --arg and the context) through its
exec, wherever that lies: in its own file by SQL, else in an older file, looked up by the
process's identity (docs/design.md, "Reading every file"), so the answer does not depend on
where a rotation fell.
"""

from __future__ import annotations

import errno as errno_module
import sqlite3
import string
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..dbfiles import may_hold, open_ro, rotated_range
from ..errors import BadInput
from ..formats.source import Source, sources_of
from ..rows import ABI_NAMES, BORROWED_FIELDS, CONTEXT_FIELDS, LATER_FIELDS, ROW_FIELDS
from ..timeparse import format_time

EVENTS = ("exec", "exit", "exec_failed")

# The exec of an exiting process lies between its fork (exit time minus its
# lifetime) and its exit. time_ns is wall clock while duration_ns is
# monotonic, so allow for clock steps between the two records.
EXEC_WINDOW_SLACK_NS = 60 * 10**9


@dataclass
class Filters:
    comm: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    pid: int | None = None
    ppid: int | None = None
    uid: int | None = None
    filename: str | None = None  # SQLite GLOB
    arg: str | None = None  # substring of the raw argv bytes
    since_ns: int | None = None  # inclusive
    until_ns: int | None = None  # exclusive
    min_duration_ns: int | None = None
    event: str | None = None
    # the context (rows.CONTEXT_FIELDS): a file from before schema revision 0003 has none, and
    # unknown matches none of these
    cwd: str | None = None  # the working directory, a SQLite GLOB
    sha256: str | None = None  # a prefix of the executable's hex SHA-256, any case
    unit: str | None = None  # the systemd unit, exactly
    container: str | None = None  # a prefix of the container id (or an nspawn machine name)
    # the gate (rows.GATE_FIELDS, revision 0006): rows.ABI_NAMES; an exit matches through its exec
    abi: str | None = None

    def context_wanted(self) -> set[str]:
        """The context (and gate) columns the filters read."""
        return {column for name, column in _CONTEXT_FILTERS.items() if getattr(self, name) is not None}


# each context filter and the column it reads
_CONTEXT_FILTERS = {"cwd": "cwd", "sha256": "sha256", "unit": "unit", "container": "container_id",
                    "abi": "abi"}
ALL_CONTEXT = frozenset(LATER_FIELDS)


def context_columns(conn: sqlite3.Connection, table: str = "events", schema: str = "main") -> frozenset:
    """The columns of rows.LATER_FIELDS (the context, revision 0003, and the gate, 0006) that
    ``table`` of this file has: none before 0003. Asked per column, so that a file of a revision
    that has some keeps them."""
    have = {r[1] for r in conn.execute(f"PRAGMA {schema}.table_info({table})")}
    return ALL_CONTEXT & have


def context_select(have: frozenset, fields: tuple[str, ...] = CONTEXT_FIELDS) -> str:
    """``, c`` for each of ``fields`` in order, ``, NULL`` for those not in ``have`` (unknown):
    what a SELECT appends to read a file's context whatever its revision."""
    return "".join(f", {c}" if c in have else ", NULL" for c in fields)


# x: the exec an exit record's process last ran; y: the exit of an exec
# record's process. Both are matched on the process identity (boot id, pid,
# start_ns) and walk the (pid, start_ns) index from the record, so each
# lookup stops at the nearest match. CASE keeps the lookups off the rows that
# do not need them. {s} is the schema prefix ("" or e.g. "src.").
_JOIN_R = "LEFT JOIN {s}runs r ON r.id = e.run_id\n"
_JOIN_X = """LEFT JOIN {s}events x ON x.id = CASE WHEN e.event = 'exit' THEN (
    SELECT p.id FROM {s}events p
    WHERE p.event = 'exec' AND p.pid = e.pid AND p.start_ns = e.start_ns
      AND p.time_ns <= e.time_ns
      AND p.time_ns >= e.time_ns - COALESCE(e.duration_ns, e.time_ns) - ?
      AND p.run_id IN (SELECT id FROM {s}runs WHERE boot_id = r.boot_id)
    ORDER BY p.time_ns DESC, p.id DESC LIMIT 1) END
"""
_JOIN_Y = """LEFT JOIN {s}events y ON y.id = CASE WHEN e.event = 'exec' THEN (
    SELECT q.id FROM {s}events q
    WHERE q.event = 'exit' AND q.pid = e.pid AND q.start_ns = e.start_ns
      AND q.time_ns >= e.time_ns
      AND q.run_id IN (SELECT id FROM {s}runs WHERE boot_id = r.boot_id)
    ORDER BY q.time_ns, q.id LIMIT 1) END
"""
_COLUMNS = """SELECT e.*, r.boot_id AS boot_id,
       x.id AS x_id, x.filename AS x_filename, x.argv AS x_argv,
       y.id AS y_id, y.exit_code AS y_exit_code, y.signal AS y_signal,
       y.core_dumped AS y_core_dumped, y.duration_ns AS y_duration_ns, y.status AS y_status{context}
"""


def _context_result(have: frozenset) -> str:
    """The exec's context and ABI as x_<column> (rows.BORROWED_FIELDS), and a column the file
    lacks as NULL (unknown) under both names, so that the records of every file have one shape."""
    return "".join(f", x.{c} AS x_{c}" if c in have else f", NULL AS {c}, NULL AS x_{c}"
                   for c in BORROWED_FIELDS) + (
        "" if "parent_start_ns" in have else ", NULL AS parent_start_ns")


_ORDER = " ORDER BY e.time_ns DESC, e.id DESC"


def _hex_prefix(value: str) -> str:
    if not 1 <= len(value) <= 64 or not all(c in string.hexdigits for c in value):
        raise BadInput(f"bad --sha256 {value!r}: give 1 to 64 hex digits (a prefix of the hash)")
    return value.lower()  # hashlib's hexdigest, as the writer stores it


# the filters an exit matches through its exec: the column each reads and its SQL test of a
# value (written once: the SQL of a file's join and the test of an exec found in another file)
THROUGH_EXEC = {"filename": ("filename", "{} GLOB ?"), "arg": ("argv", "instr({}, ?) > 0"),
                "cwd": ("cwd", "{} GLOB ?"), "sha256": ("sha256", "instr({}, ?) = 1"),
                "unit": ("unit", "{} = ?"), "container": ("container_id", "instr({}, ?) = 1"),
                "abi": ("abi", "{} = ?")}
# an exit whose process's exec the file does not hold (_JOIN_X found none)
UNJOINED_EXIT = "e.event = 'exit' AND x.id IS NULL"


def conditions(filters: Filters, use_indexes: bool = True, context: frozenset = ALL_CONTEXT,
               unjoined: bool = False, or_unjoined: bool = False) -> tuple[list[str], list, bool]:
    """WHERE terms over ``e`` (and ``x``) and their parameters; True if a term needs ``x``.

    Without ``use_indexes`` each column is written ``+e.col``, which keeps SQLite off the
    column indexes: for a caller that walks an id range, where they would cost a scan each.
    ``context``: the context columns the file has (context_columns); a filter on one it lacks
    (a file from before revision 0003) is a term that is never true: unknown matches nothing.
    ``unjoined``: instead of the terms an exit matches through its exec (THROUGH_EXEC), the
    exits whose exec is not in the file, for exec_matches to test against one found elsewhere;
    ``or_unjoined``: those terms, or such an exit (a caller tests these rows: exits without
    ``x``).
    """
    terms: list[str] = []
    params: list = []
    for name in ("exit_code", "signal", "pid", "ppid", "uid", "min_duration_ns", "since_ns", "until_ns"):
        value = getattr(filters, name)
        if value is not None and not -(2**63) <= value < 2**63:
            flag = "--" + name.replace("_ns", "").replace("_", "-")
            raise BadInput(f"bad {flag} {value}: out of range")

    def add(term: str, value) -> None:
        if not use_indexes:
            term = term.replace("e.", "+e.", 1)
        terms.append(term)
        params.append(value)

    for column in ("comm", "pid", "ppid", "uid"):
        value = getattr(filters, column)
        if value is not None:
            add(f"e.{column} = ?", value)
    if filters.event is not None:
        if filters.event not in EVENTS:
            raise BadInput(f"bad event {filters.event!r}: use exec, exit or exec_failed")
        add("e.event = ?", filters.event)
    if filters.exit_code is not None:
        add("e.exit_code = ?", filters.exit_code)
    if filters.signal is not None:
        add("e.signal = ?", filters.signal)
    if filters.min_duration_ns is not None:
        add("e.duration_ns >= ?", filters.min_duration_ns)
    if any(v is not None for v in (filters.exit_code, filters.signal, filters.min_duration_ns)):
        add("e.event = ?", "exit")
    if filters.since_ns is not None:
        add("e.time_ns >= ?", filters.since_ns)
    if filters.until_ns is not None:
        add("e.time_ns < ?", filters.until_ns)
    # checked whether or not the file has the columns: bad input is bad for every file
    through = exec_terms(filters)
    if not filters.context_wanted() <= context:
        terms.append("0")
        return terms, params, False
    if unjoined:
        if through:
            terms.append(UNJOINED_EXIT)
        return terms, params, bool(through)
    # an exit record has no filename, argv, context or ABI of its own (rows.BORROWED_FIELDS): it
    # matches through the program its process was running; instr() = 1 is a prefix test that no
    # character of the value escapes
    joined = []
    for column, test, value in through:
        joined.append(test.format(f"COALESCE({'' if use_indexes else '+'}e.{column}, x.{column})"))
        params.append(value)
    if joined:
        terms.append(f"(({' AND '.join(joined)}) OR ({UNJOINED_EXIT}))" if or_unjoined
                     else " AND ".join(joined))
    return terms, params, bool(through)


def exec_terms(filters: Filters) -> list[tuple[str, str, object]]:
    """(column, SQL test, value) of each filter given that an exit matches through its exec."""
    if filters.container == "":
        raise BadInput("bad --container '': give an id or its first characters")
    if filters.abi is not None and filters.abi not in ABI_NAMES:
        raise BadInput(f"bad --abi {filters.abi!r}: use {', '.join(ABI_NAMES)}")
    values = {"filename": filters.filename, "cwd": filters.cwd, "unit": filters.unit,
              "container": filters.container, "abi": filters.abi,
              "arg": filters.arg.encode("utf-8") if filters.arg is not None else None,
              "sha256": _hex_prefix(filters.sha256) if filters.sha256 is not None else None}
    return [(column, test, values[name]) for name, (column, test) in THROUGH_EXEC.items()
            if values[name] is not None]


def exec_matches(conn: sqlite3.Connection, filters: Filters, found: dict) -> bool:
    """Does an exec found in another file (its THROUGH_EXEC columns) pass those filters? Tested
    by SQLite, as the SQL of a file's join tests them."""
    terms = exec_terms(filters)
    if not terms:
        return True
    sql = "SELECT " + " AND ".join(test.format("?") for _, test, _ in terms)
    params = [x for column, _, value in terms for x in (found.get(column), value)]
    return bool(conn.execute(sql, params).fetchone()[0])


def build_sql(filters: Filters, schema: str = "", context: frozenset = ALL_CONTEXT,
              or_unjoined: bool = False) -> tuple[str, list] | None:
    """The SQL and its bound parameters for these filters (BadInput on a bad event name), for a
    file with the ``context`` columns (context_columns): None when no record of it can match
    (a filter on a column it lacks). ``or_unjoined``: also the exits that can match only through
    an exec in another file (conditions), for the caller to test."""
    terms, params, _ = conditions(filters, context=context, or_unjoined=or_unjoined)
    if not filters.context_wanted() <= context:
        return None
    where = (" WHERE " + " AND ".join(terms)) if terms else ""
    joins = (_JOIN_R + _JOIN_X + _JOIN_Y).format(s=schema)
    columns = _COLUMNS.format(context=_context_result(context))
    return (columns + f"FROM {schema}events e\n" + joins + where + _ORDER,
            [EXEC_WINDOW_SLACK_NS] + params)


def selection_sql(filters: Filters, schema: str = "", extra: str = "",
                  context: frozenset = ALL_CONTEXT, unjoined: bool = False) -> tuple[str, list]:
    """``FROM ... WHERE ...`` selecting the matching rows as ``e`` (for export), joining only what
    the filters need; ``extra`` is one more condition on ``e`` without parameters, an id range
    that the filters leave to be walked by rowid. ``context`` and ``unjoined``: as for
    conditions()."""
    terms, params, needs_x = conditions(filters, use_indexes=False, context=context, unjoined=unjoined)
    if extra:
        terms.insert(0, extra)
    where = (" WHERE " + " AND ".join(terms)) if terms else ""
    if needs_x:
        return (f"FROM {schema}events e\n" + (_JOIN_R + _JOIN_X).format(s=schema) + where,
                [EXEC_WINDOW_SLACK_NS] + params)
    return f"FROM {schema}events e" + where, params


def split_argv(blob) -> list[str]:
    """NUL-separated raw argv bytes to strings; bytes that are not UTF-8 become ``\\xNN``."""
    if not blob:
        return []
    if isinstance(blob, str):  # stored as TEXT by some other tool
        blob = blob.encode("utf-8")
    return [arg.decode("utf-8", "backslashreplace") for arg in bytes(blob).split(b"\0")]


def _bool(value):
    return None if value is None else bool(value)


def _record(row: sqlite3.Row) -> dict:
    event = row["event"]
    rec = {
        "event": event,
        "time": format_time(row["time_ns"]),
        "time_ns": row["time_ns"],
        "pid": row["pid"],
        "tid": row["tid"],
        "ppid": row["ppid"],
        "uid": row["uid"],
        "gid": row["gid"],
        "comm": row["comm"],
        "filename": row["filename"],
        "argv": split_argv(row["argv"]),
        "boot_id": row["boot_id"],
        "start_ns": row["start_ns"],
        # with ppid and the boot, the parent's identity (unknown in a file before revision 0006)
        "parent_start_ns": row["parent_start_ns"],
    }
    if event == "exit":
        found = row["x_id"] is not None
        rec.update(
            exit_code=row["exit_code"],
            signal=row["signal"],
            core_dumped=_bool(row["core_dumped"]),
            duration_ns=row["duration_ns"],
            status=row["status"],
            exec_filename=row["x_filename"],
            exec_argv=split_argv(row["x_argv"]) if found else None,
        )
        # what the process was running, as exec_filename: an exit has no context of its own
        rec.update((c, row["x_" + c]) for c in BORROWED_FIELDS)
        return rec
    rec.update(
        euid=row["euid"],
        auid=row["auid"],
        sessionid=row["sessionid"],
        cgroup_id=row["cgroup_id"],
        argc=row["argc"],
        args_truncated=_bool(row["args_truncated"]),
        old_pid=row["old_pid"],
    )
    if event == "exec_failed":
        err = row["errno"]
        rec["errno"] = err
        rec["errno_name"] = None if err is None else errno_module.errorcode.get(abs(err))
    else:  # how the process ended; all None while it runs (or ended in a later file)
        rec.update(
            exit_code=row["y_exit_code"],
            signal=row["y_signal"],
            core_dumped=_bool(row["y_core_dumped"]),
            duration_ns=row["y_duration_ns"],
            status=row["y_status"],
        )
    rec.update((c, row[c]) for c in BORROWED_FIELDS)
    return rec


# the row's own ids, which search() adds on request (for the Parquet lake: not in query's output)
RAW_IDS = ("id", "run_id", "batch_id")


def search(paths: Iterable, filters: Filters, limit: int | None = None, sources: bool = False,
           ids: bool = False, per_file: dict | None = None) -> Iterator:
    """Records matching ``filters`` across ``paths`` (given newest first), newest first; with
    ``ids``, each also carries its row's RAW_IDS. ``per_file`` (path -> count) counts the
    records each file gave, for naming the set-aside files among them (dbfiles.set_aside_note).

    With ``sources``, each as ``(record, formats.Source)``: the facts of the run and file it was
    read from, which the OCSF and ECS renderings need (formats/). Bad filters raise here, before
    any file is opened; file errors raise BadInput while iterating.
    """
    if limit is not None and limit < 0:
        raise BadInput(f"bad limit {limit}: use a number 0 or more")
    build_sql(filters)  # bad filters raise now
    return _search(list(paths), filters, limit, sources, ids, per_file)


class Joiner:
    """The exec or exit of a record's process when it lies in another file (the process lived
    across a rotation, or its exec is in a file set aside): looked up by (boot id, pid,
    start_ns) in the files around it, ``paths`` newest first as every reader lists them."""

    def __init__(self, paths: list):
        self.paths = paths
        self.conns: dict[int, tuple | None] = {}

    def _conn(self, i: int):
        if i not in self.conns:
            try:
                conn = open_ro(self.paths[i])
                boots = dict(conn.execute("SELECT id, boot_id FROM runs"))
                self.conns[i] = (conn, boots, context_columns(conn))
            except (BadInput, sqlite3.DatabaseError):
                self.conns[i] = None  # the search itself reports it when it gets there
        return self.conns[i]

    def _find(self, indexes, sql_for, rec: dict):
        """The first row found for the record's process by the SQL ``sql_for`` gives for a file's
        context columns (context_columns)."""
        for i in indexes:
            got = self._conn(i)
            if got is None:
                continue
            conn, boots, context = got
            try:
                for row in conn.execute(sql_for(context), (rec["pid"], rec["start_ns"], rec["time_ns"])):
                    if boots.get(row[0]) == rec["boot_id"]:
                        return row
            except sqlite3.DatabaseError:
                continue
        return None

    def exec_of(self, i: int, rec: dict) -> dict | None:
        """Fill exec_filename/exec_argv, the context and the ABI of an exit record (of file ``i``)
        from an older file; the exec found (its filename, raw argv and rows.BORROWED_FIELDS), or
        None."""
        fork = rec["time_ns"] - (rec.get("duration_ns") or 0) - EXEC_WINDOW_SLACK_NS
        older = [j for j in range(i + 1, len(self.paths))
                 if (r := rotated_range(self.paths[j])) is None or r[1] >= fork]
        row = self._find(older, lambda context: (
            f"SELECT run_id, filename, argv{context_select(context, BORROWED_FIELDS)} FROM events "
            "WHERE pid = ? AND start_ns = ? AND event = 'exec' AND time_ns <= ? "
            "ORDER BY time_ns DESC, id DESC"), rec)
        if row is None:
            return None
        rec["exec_filename"], rec["exec_argv"] = row[1], split_argv(row[2])
        rec.update(zip(BORROWED_FIELDS, row[3:]))
        return {"filename": row[1], "argv": row[2], **dict(zip(BORROWED_FIELDS, row[3:]))}

    def exit_of(self, i: int, rec: dict) -> None:
        """Fill how an exec record's process ended from a newer file."""
        row = self._find(range(i - 1, -1, -1), lambda _context: (
            "SELECT run_id, exit_code, signal, core_dumped, duration_ns, status FROM events "
            "WHERE pid = ? AND start_ns = ? AND event = 'exit' AND time_ns >= ? "
            "ORDER BY time_ns, id"), rec)
        if row is not None:
            rec.update(exit_code=row[1], signal=row[2], core_dumped=_bool(row[3]), duration_ns=row[4],
                       status=row[5])

    def close(self) -> None:
        for got in self.conns.values():
            if got is not None:
                got[0].close()


def _search(paths, filters: Filters, limit, with_sources: bool = False, ids: bool = False,
            per_file: dict | None = None) -> Iterator:
    remaining = limit
    joiner = Joiner(paths)
    several = len(paths) > 1
    through = bool(exec_terms(filters)) and several  # exits to test against an older file's exec
    statements: dict[frozenset, tuple | None] = {}  # by the context columns a file has
    try:
        for i, path in enumerate(paths):
            if remaining == 0:
                return
            if not may_hold(path, filters.since_ns, filters.until_ns):
                continue  # its name says it holds none of the window (the joiner may read it)
            conn = open_ro(path)
            conn.row_factory = sqlite3.Row
            try:
                context = context_columns(conn)
                if context not in statements:
                    statements[context] = build_sql(filters, context=context, or_unjoined=through)
                if statements[context] is None:
                    continue  # without a column a filter reads: no record of it can match
                sql, params = statements[context]
                runs = sources_of(conn) if with_sources else None
                for row in conn.execute(sql, params):
                    rec = _record(row)
                    if ids:
                        rec.update((c, row[c]) for c in RAW_IDS)
                    if several and rec["boot_id"] is not None:
                        if rec["event"] == "exit" and row["x_id"] is None:
                            found = joiner.exec_of(i, rec)
                            if through and (found is None or not exec_matches(conn, filters, found)):
                                continue  # it matched as an exit whose exec is elsewhere: it is not
                        elif rec["event"] == "exec" and row["y_id"] is None:
                            joiner.exit_of(i, rec)
                    elif through and rec["event"] == "exit" and row["x_id"] is None:
                        continue
                    if per_file is not None:
                        per_file[path] = per_file.get(path, 0) + 1
                    if runs is None:
                        yield rec
                    else:  # a record whose run row is missing still has its own boot id
                        yield rec, runs.get(row["run_id"]) or Source(boot_id=rec["boot_id"])
                    if remaining is not None:
                        remaining -= 1
                        if remaining == 0:
                            return
            except sqlite3.DatabaseError as exc:
                raise BadInput(f"cannot read {path}: {exc}") from None
            finally:
                conn.close()
    finally:
        joiner.close()


def seen_record(row, boot_id: str | None) -> dict:
    """A row of seen_processes (a process already running when a run started, read from
    /proc: not an event, and search never yields one) shaped like a search result, with
    ``event`` ``seen``, for the renderings that show it (formats/). Its ``start_ns`` is exact to
    one clock tick only (``start_tick_ns``), so it names no process identity; a file older than
    revision 0003 gives no context (None)."""
    keys = row.keys()
    rec = {
        "event": "seen", "time": format_time(row["time_ns"]), "time_ns": row["time_ns"],
        "pid": row["pid"], "ppid": row["ppid"], "uid": row["uid"], "comm": row["comm"],
        "filename": row["filename"], "argv": split_argv(row["argv"]), "boot_id": boot_id,
        "start_ns": row["start_ns"], "start_tick_ns": row["start_tick_ns"],
    }
    rec.update((c, row[c] if c in keys else None) for c in CONTEXT_FIELDS)
    rec.update(abi=None, parent_start_ns=None)  # /proc names neither
    return rec


def seen(paths: Iterable, since_ns: int | None = None, until_ns: int | None = None,
         per_file: dict | None = None) -> Iterator:
    """(seen_record, formats.Source) of every process seen at start in ``paths`` (given newest
    first) listed in [since, until), newest first, as search orders records; ``per_file`` as for
    search."""
    for path in paths:
        conn = open_ro(path)
        conn.row_factory = sqlite3.Row
        try:
            runs = sources_of(conn)
            context = context_select(context_columns(conn, "seen_processes"))
            # a context column the file lacks is read as NULL, and seen_record finds no such key
            sql = (f"SELECT id, run_id, time_ns, pid, ppid, uid, comm, filename, argv, start_ns, "
                   f"start_tick_ns{context} FROM seen_processes "
                   "WHERE time_ns >= ? AND time_ns < ? ORDER BY time_ns DESC, id DESC")
            lo = -(2**63) if since_ns is None else since_ns
            hi = 2**63 - 1 if until_ns is None else until_ns
            for row in conn.execute(sql, (lo, hi)):
                if per_file is not None:
                    per_file[path] = per_file.get(path, 0) + 1
                source = runs.get(row["run_id"]) or Source()
                yield seen_record(row, source.boot_id), source
        except sqlite3.DatabaseError as exc:
            raise BadInput(f"cannot read {path}: {exc}") from None
        finally:
            conn.close()


# a record straight from the daemon has no joins yet: these read as unknown
_UNJOINED = dict.fromkeys(("boot_id", "x_id", "x_filename", "x_argv", "y_exit_code", "y_signal",
                           "y_core_dumped", "y_duration_ns", "y_status")
                          + tuple("x_" + c for c in BORROWED_FIELDS))


def row_to_record(row: tuple, exec_row: tuple | None = None, boot_id: str | None = None) -> dict:
    """A row decoded by the daemon (rows.ROW_FIELDS order), shaped like a search result.

    What search joins in from the database, the daemon's caller may know: ``exec_row``, for an
    exit, the exec of its process (a row too), which gives exec_filename, exec_argv and the
    context as _JOIN_X does; ``boot_id``, that of the run."""
    known = {**_UNJOINED, "boot_id": boot_id}
    if exec_row is not None:
        x = dict(zip(ROW_FIELDS, exec_row))
        known.update({"x_" + c: x[c] for c in ("filename", "argv") + BORROWED_FIELDS})
        known["x_id"] = 0  # found: it has no row id here, and the record shows none
    return _record({**known, **dict(zip(ROW_FIELDS, row))})
