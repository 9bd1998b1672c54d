"""Search exec/exit records across database files (read-only, stdlib sqlite3 only).

Files are read one after another, newest first, each with one SQL query
ordered by the ``time_ns`` index, so ``--limit N`` stops after N rows and
never touches the older files.
"""

from __future__ import annotations

import errno as errno_module
import sqlite3
from dataclasses import dataclass
from typing import Iterable, Iterator

from .dbfiles import open_ro
from .errors import BadInput
from .records import ROW_FIELDS
from .timeparse import format_time

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


# x: the exec an exit record's process last ran; y: the exit of an exec
# record's process. Both are matched on the process identity (boot id, pid,
# start_ns) and walk the time index from the record, so each lookup stops at
# the nearest match. CASE keeps the lookups off the rows that do not need them.
_SELECT = """
SELECT e.*, r.boot_id AS boot_id,
       x.id AS x_id, x.filename AS x_filename, x.argv AS x_argv,
       y.id AS y_id, y.exit_code AS y_exit_code, y.signal AS y_signal,
       y.core_dumped AS y_core_dumped, y.duration_ns AS y_duration_ns, y.status AS y_status
FROM events e
LEFT JOIN runs r ON r.id = e.run_id
LEFT JOIN events x ON x.id = CASE WHEN e.event = 'exit' THEN (
    SELECT p.id FROM events p
    WHERE p.event = 'exec' AND p.pid = e.pid AND p.start_ns = e.start_ns
      AND p.time_ns <= e.time_ns
      AND p.time_ns >= e.time_ns - COALESCE(e.duration_ns, e.time_ns) - ?
      AND p.run_id IN (SELECT id FROM runs WHERE boot_id = r.boot_id)
    ORDER BY p.time_ns DESC, p.id DESC LIMIT 1) END
LEFT JOIN events y ON y.id = CASE WHEN e.event = 'exec' THEN (
    SELECT q.id FROM events q
    WHERE q.event = 'exit' AND q.pid = e.pid AND q.start_ns = e.start_ns
      AND q.time_ns >= e.time_ns
      AND q.run_id IN (SELECT id FROM runs WHERE boot_id = r.boot_id)
    ORDER BY q.time_ns, q.id LIMIT 1) END
"""
_ORDER = " ORDER BY e.time_ns DESC, e.id DESC"


def build_sql(filters: Filters) -> tuple[str, list]:
    """The SQL and its bound parameters for these filters (BadInput on a bad event name)."""
    terms: list[str] = []
    params: list = [EXEC_WINDOW_SLACK_NS]

    def add(term: str, value) -> None:
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
    # an exit record has no filename or argv of its own: it matches through
    # the program its process was running
    if filters.filename is not None:
        add("COALESCE(e.filename, x.filename) GLOB ?", filters.filename)
    if filters.arg is not None:
        add("instr(COALESCE(e.argv, x.argv), ?) > 0", filters.arg.encode("utf-8"))

    where = (" WHERE " + " AND ".join(terms)) if terms else ""
    return _SELECT + where + _ORDER, params


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
    return rec


def search(paths: Iterable, filters: Filters, limit: int | None = None) -> Iterator[dict]:
    """Records matching ``filters`` across ``paths`` (given newest first), newest first.

    Bad filters raise here, before any file is opened; file errors raise
    BadInput while iterating.
    """
    if limit is not None and limit < 0:
        raise BadInput(f"bad limit {limit}: use a number 0 or more")
    sql, params = build_sql(filters)
    return _search(list(paths), sql, params, limit)


def _search(paths, sql, params, limit) -> Iterator[dict]:
    remaining = limit
    for path in paths:
        if remaining == 0:
            return
        conn = open_ro(path)
        conn.row_factory = sqlite3.Row
        try:
            for row in conn.execute(sql, params):
                yield _record(row)
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        return
        except sqlite3.DatabaseError as exc:
            raise BadInput(f"cannot read {path}: {exc}") from None
        finally:
            conn.close()


# a record straight from the daemon has no joins yet: these read as unknown
_UNJOINED = dict.fromkeys(("boot_id", "x_id", "x_filename", "x_argv", "y_exit_code", "y_signal",
                           "y_core_dumped", "y_duration_ns", "y_status"))


def row_to_record(row: tuple) -> dict:
    """A row decoded by the daemon (records.ROW_FIELDS order), shaped like a search result."""
    return _record({**_UNJOINED, **dict(zip(ROW_FIELDS, row))})
