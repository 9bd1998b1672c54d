"""`auditd-lite sql`: read-only SQL over every database file at once.

Each file is attached read-only to an in-memory database, and each table
(``events``, ``runs``, ``batches``, ``seen_processes``, and any other table
such as an export's ``manifest``) becomes a TEMP VIEW of the same name: the
UNION ALL of that table in every file. ``runs`` is the exception: a run has
a copy of its row in every file it wrote to, so the view has one row per
run, with the counters summed and the stop time taken from the copy that
has it. ``files`` lists the sources (alias, name, path); in the usual case
each file is also reachable as ``f0.events``, ``f1.events``, ... (f0 newest).

SQLite attaches at most 10 databases. With more files, the newest 8 are
attached and the tables the statement reads are copied from the older ones
into one temporary database (a note on stderr says so); ``--since/--until``
keep only records in a time window, and skip the files outside it.

Reading only is enforced three times over, none of it by looking at the
text: every file is opened with ``mode=ro``, ``PRAGMA query_only`` is on,
and an authorizer allows only SELECT, reads, functions, recursive CTEs and
a few schema-describing pragmas. Anything else fails with exit status 2.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

from ..dbfiles import RUN_KEY, has_table, needs_immutable, open_ro, ro_uri, run_merge_sql
from ..errors import BadInput
from ..rows import CONTEXT_FIELDS
from .output import quote, write_formatted

# tables that have rows.CONTEXT_FIELDS from schema revision 0003 on: their views always do, NULL
# (unknown) from files before it, so a statement that reads them runs over any set of files
CONTEXT_TABLES = ("events", "seen_processes")
# columns of a table filtered by --since/--until
TIME_COLUMNS = {"events": "time_ns", "batches": "written_ns", "seen_processes": "time_ns"}
SKIP_TABLES = ("sqlite_",)

_A = sqlite3
ALLOWED_ACTIONS = {_A.SQLITE_SELECT, _A.SQLITE_READ, _A.SQLITE_FUNCTION, _A.SQLITE_RECURSIVE}
ALLOWED_PRAGMAS = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
                   "database_list", "collation_list", "function_list", "foreign_key_list",
                   "table_list", "compile_options", "pragma_list", "module_list"}
DENIED_FUNCTIONS = {"fts3_tokenizer", "load_extension"}  # a raw pointer; native code
TABLE_WIDTH_ROWS = 1000  # rows read to size the table columns
# a view built for a statement that reads none of its columns (count(*)) still needs one:
# the cheapest to read (covered by an index)
CHEAP_COLUMN = {"events": "time_ns"}
# SELECT count(*) FROM <table>: the sum of each file's count, which SQLite computes from the
# b-tree without reading rows (SQLite 3.40 does not push count(*) into a UNION ALL view)
_WHOLE_COUNT = re.compile(r"\s*select\s+(count\s*\(\s*\*\s*\))\s+from\s+(\"?)(\w+)\2\s*;?\s*",
                          re.IGNORECASE)


def _authorizer(action, arg1, arg2, db_name, trigger):
    if action in ALLOWED_ACTIONS:
        if action == _A.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
            return _A.SQLITE_DENY
        return _A.SQLITE_OK
    if action == _A.SQLITE_PRAGMA and (arg1 or "").lower() in ALLOWED_PRAGMAS:
        return _A.SQLITE_OK
    return _A.SQLITE_DENY


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _attach(conn: sqlite3.Connection, path: Path, alias: str) -> None:
    open_ro(path).close()  # the same checks and messages as every other command
    try:
        conn.execute("ATTACH DATABASE ? AS " + alias, (ro_uri(path, needs_immutable(path)),))
    except sqlite3.Error as exc:
        raise BadInput(f"cannot open {path}: {exc}") from None


def _tables(conn: sqlite3.Connection, alias: str) -> dict[str, list[str]]:
    out = {}
    for (name,) in conn.execute(f"SELECT name FROM {alias}.sqlite_master WHERE type = 'table'"):
        if name.startswith(SKIP_TABLES):
            continue
        out[name] = [r[1] for r in conn.execute(f"PRAGMA {alias}.table_info({_ident(name)})")]
    return out


class _Window:
    """--since/--until as the WHERE of each table that has a time column."""

    def __init__(self, since_ns: int | None, until_ns: int | None):
        self.since_ns, self.until_ns = since_ns, until_ns

    @property
    def open(self) -> bool:
        return self.since_ns is None and self.until_ns is None

    def where(self, table: str, cols: list[str]) -> str:
        column = TIME_COLUMNS.get(table)
        if column is None or column not in cols:
            return ""
        terms = []
        if self.since_ns is not None:
            terms.append(f"{column} >= {int(self.since_ns)}")
        if self.until_ns is not None:
            terms.append(f"{column} < {int(self.until_ns)}")
        return (" WHERE " + " AND ".join(terms)) if terms else ""


def read_columns(conn: sqlite3.Connection, sql: str | None, alias: str) -> dict[str, set[str]] | None:
    """The columns of each table ``sql`` reads, found by compiling it against empty copies of
    the tables of ``alias``; None when that cannot be told (then views carry every column)."""
    if not sql:
        return None
    probe = sqlite3.connect(":memory:")
    try:
        for (create,) in conn.execute(
                f"SELECT sql FROM {alias}.sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
                "AND name NOT LIKE 'sqlite_%'"):
            probe.execute(create)
        probe.execute("CREATE TABLE IF NOT EXISTS files (alias TEXT, name TEXT, path TEXT)")
        read: dict[str, set[str]] = {}
        other = []

        def watch(action, arg1, arg2, db, trigger):
            if action == _A.SQLITE_READ and arg1:
                read.setdefault(arg1, set()).add(arg2)
            elif action not in (_A.SQLITE_SELECT, _A.SQLITE_FUNCTION, _A.SQLITE_RECURSIVE):
                other.append(action)  # a pragma describes whole tables: keep every column
            return _authorizer(action, arg1, arg2, db, trigger)

        probe.set_authorizer(watch)
        try:
            probe.execute("EXPLAIN " + sql)
        except (sqlite3.Error, sqlite3.Warning, ValueError):
            return None  # the real run reports the error
        return None if other else read
    finally:
        probe.close()


def _copy_older(conn: sqlite3.Connection, older: list[Path], sql: str | None, window: _Window,
                tmpdir: str, total: int, note) -> str:
    """Copy the tables ``sql`` reads from the ``older`` files into one database in ``tmpdir``,
    attached as ``merged``; its label for the files table."""
    _attach(conn, older[0], "probe")
    columns = read_columns(conn, sql, "probe")
    wanted = set(columns) if columns is not None else None
    conn.execute("DETACH DATABASE probe")
    size = sum(p.stat().st_size for p in older)
    free = shutil.disk_usage(tmpdir).free
    if size > free:
        raise BadInput(
            f"{total} files are more than SQLite attaches at once, and copying the "
            f"{len(older)} oldest ({size >> 20} MiB) does not fit in {tmpdir} ({free >> 20} MiB "
            "free): narrow with --since/--until, or set TMPDIR")
    note(f"{total} files are more than SQLite attaches at once (10): copying "
         f"{', '.join(sorted(wanted)) if wanted is not None else 'every table'} of the "
         f"{len(older)} oldest files into a temporary database")
    conn.execute("ATTACH DATABASE ? AS merged", (os.path.join(tmpdir, "merged.db"),))
    conn.execute("PRAGMA merged.journal_mode = OFF")
    conn.execute("PRAGMA merged.synchronous = OFF")
    made: dict[str, list[str]] = {}
    for path in older:
        _attach(conn, path, "src")
        for name, cols in _tables(conn, "src").items():
            if wanted is not None and name not in wanted:
                continue
            if name not in made:  # no keys: a run's row repeats, one copy per file
                conn.execute(f"CREATE TABLE merged.{_ident(name)} AS "
                             f"SELECT * FROM src.{_ident(name)} WHERE 0")
                made[name] = cols
            common = [c for c in cols if c in made[name]]
            col_list = ", ".join(_ident(c) for c in common)
            conn.execute(f"INSERT INTO merged.{_ident(name)} ({col_list}) "
                         f"SELECT {col_list} FROM src.{_ident(name)}{window.where(name, cols)}")
        conn.commit()
        conn.execute("DETACH DATABASE src")
    return f"{len(older)} older files (merged)"


def _union_columns(schemas: dict[str, dict[str, list[str]]], reads: dict[str, set[str]] | None
                   ) -> dict[str, list[str]]:
    """Each table's columns over every source; with ``reads``, only those the statement reads."""
    tables: dict[str, list[str]] = {}
    for tables_of in schemas.values():
        for name, cols in tables_of.items():
            have = tables.setdefault(name, [])
            have.extend(c for c in cols if c not in have)
    for name in CONTEXT_TABLES:
        if name in tables:
            tables[name].extend(c for c in CONTEXT_FIELDS if c not in tables[name])
    # a UNION ALL view hands every column of every row to the statement: give it only the
    # columns the statement reads (SQLite 3.40 does not prune them by itself)
    for name, cols in list(tables.items()):
        if reads is None or name == "runs":
            continue
        used = [c for c in cols if c in reads.get(name, ())]
        tables[name] = used or [CHEAP_COLUMN.get(name) if CHEAP_COLUMN.get(name) in cols else cols[0]]
    return tables


def _view_sql(name: str, cols: list[str], schemas: dict[str, dict[str, list[str]]], window: _Window) -> str:
    parts = []
    for alias, tables_of in schemas.items():
        if name not in tables_of:
            continue
        mine = tables_of[name]
        select = ", ".join(_ident(c) if c in mine else f"NULL AS {_ident(c)}" for c in cols)
        parts.append(f"SELECT {select} FROM {alias}.{_ident(name)}" + window.where(name, mine))
    body = "\nUNION ALL\n".join(parts)
    if name == "runs" and set(RUN_KEY) <= set(cols):
        body = (f"SELECT {run_merge_sql(cols, _ident)} FROM ({body}) "
                f"GROUP BY {', '.join(RUN_KEY)} ORDER BY {', '.join(RUN_KEY)}")
    return body


class Workspace:
    """An in-memory connection with every file attached and the union views made."""

    def __init__(self, paths: list[Path], since_ns: int | None = None, until_ns: int | None = None,
                 sql: str | None = None, note=None):
        self.paths = list(paths)
        self.window = _Window(since_ns, until_ns)
        self.note = note or (lambda text: None)
        self.tmpdir: str | None = None
        self.conn = sqlite3.connect(":memory:")
        self.conn.text_factory = lambda raw: raw.decode("utf-8", "backslashreplace")
        try:
            self._build(sql)
        except BaseException:
            self.close()
            raise

    def _build(self, sql: str | None) -> None:
        limit = self.conn.getlimit(sqlite3.SQLITE_LIMIT_ATTACHED)
        # with more files than that: the newest attached directly, leaving two slots for the
        # temporary database and the file being copied into it
        direct = self.paths if len(self.paths) <= limit else self.paths[:limit - 2]
        older = self.paths[len(direct):]
        sources: list[tuple[str, str]] = []  # (alias, label)
        for i, path in enumerate(direct):
            _attach(self.conn, path, f"f{i}")
            sources.append((f"f{i}", str(path)))
        if older:
            self.tmpdir = tempfile.mkdtemp(prefix="auditd-lite-sql-")
            sources.append(("merged", _copy_older(self.conn, older, sql, self.window, self.tmpdir,
                                                  len(self.paths), self.note)))
        self.sources = sources
        schemas = {alias: _tables(self.conn, alias) for alias, _ in sources}
        reads = read_columns(self.conn, sql, sources[0][0]) if sources else None
        for name, cols in _union_columns(schemas, reads).items():
            self.conn.execute(f"CREATE TEMP VIEW {_ident(name)} AS {_view_sql(name, cols, schemas, self.window)}")
        self.conn.execute("CREATE TEMP TABLE files (alias TEXT, name TEXT, path TEXT)")
        for alias, label in sources:
            self.conn.execute("INSERT INTO files VALUES (?, ?, ?)", (alias, Path(label).name, label))
        self.conn.commit()
        self.conn.execute("PRAGMA query_only = 1")
        self.conn.set_authorizer(_authorizer)

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            if self.tmpdir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _whole_count(self, sql: str) -> str:
        """``SELECT count(*) FROM <table>`` over the whole files as the sum of each file's count."""
        whole = _WHOLE_COUNT.fullmatch(sql)
        if not whole or not self.window.open or whole[3].lower() not in ("events", "batches", "seen_processes"):
            return sql
        table = whole[3].lower()
        arms = [f"SELECT count(*) AS n FROM {alias}.{table}" for alias, _ in self.sources
                if has_table(self.conn, table, alias)]
        return f"SELECT sum(n) AS {_ident(whole[1])} FROM ({' UNION ALL '.join(arms)})" if arms else sql

    def execute(self, sql: str) -> sqlite3.Cursor:
        if not sql.strip():
            raise BadInput("empty SQL statement")
        try:
            cur = self.conn.execute(self._whole_count(sql))
        except sqlite3.DatabaseError as exc:
            raise _refusal(exc) from None
        except (sqlite3.Warning, sqlite3.ProgrammingError, ValueError, OverflowError) as exc:
            raise BadInput(f"bad SQL: {exc}") from None
        return cur


def _refusal(exc: Exception) -> BadInput:
    text = str(exc)
    if "not authorized" in text or "authorization denied" in text or "readonly" in text or "cannot modify" in text \
            or "read-only" in text or "query_only" in text:
        return BadInput(f"refused: sql only reads (SELECT); this statement would change something "
                        f"or is not allowed ({text})")
    return BadInput(f"bad SQL: {text}")


# --- output ----------------------------------------------------------------

def _text(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", "backslashreplace")
        return quote(value) if not value.isprintable() else value
    if isinstance(value, str):
        return value if value.isprintable() else quote(value)
    return str(value)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}_{seen[n]}")
        else:
            seen[n] = 0
            out.append(n)
    return out


def _table(names: list[str]):
    """Rows as aligned columns, sized by the first TABLE_WIDTH_ROWS rows; numbers to the right."""
    def write(rows, out) -> int:
        head: list[list[str]] = []
        for row in rows:
            head.append([_text(v) for v in row])
            if len(head) >= TABLE_WIDTH_ROWS:
                break
        widths = [max([len(n)] + [len(r[i]) for r in head]) for i, n in enumerate(names)]
        numeric = [all(_is_number(r[i]) for r in head) and bool(head) for i in range(len(names))]

        def line(cells):
            return "  ".join(c.rjust(w) if num else c.ljust(w)
                             for c, w, num in zip(cells, widths, numeric)).rstrip()

        if head:
            out.write(line(names) + "\n")
        for cells in head:
            out.write(line(cells) + "\n")
        count = len(head)
        for row in rows:
            out.write(line([_text(v) for v in row]) + "\n")
            count += 1
        return count
    return write


def write_rows(cur: sqlite3.Cursor, fmt: str, stream) -> int:
    """Write the result as table, json (one object a line) or csv; return the row count."""
    if cur.description is None:
        return 0
    names = _unique([d[0] for d in cur.description])
    return write_formatted(_rows(cur), fmt, stream, as_json=lambda row: dict(zip(names, row)),
                           csv_header=names, as_csv=lambda row: ["" if v is None else _text(v) for v in row],
                           table=_table(names))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text == "NULL"


def _rows(cur):
    try:
        for row in cur:
            yield row
    except sqlite3.DatabaseError as exc:
        raise _refusal(exc) from None
    except (OverflowError, ValueError) as exc:
        raise BadInput(f"bad SQL: {exc}") from None


def run(paths: list[Path], sql: str, fmt: str, stream, since_ns=None, until_ns=None, note=None) -> int:
    """Run ``sql`` over ``paths``; the number of rows written."""
    ws = Workspace(paths, since_ns, until_ns, sql, note)
    try:
        return write_rows(ws.execute(sql), fmt, stream)
    finally:
        ws.close()
