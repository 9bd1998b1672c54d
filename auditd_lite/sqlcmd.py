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

import csv
import json
import os
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

from .dbfiles import needs_immutable, open_ro, ro_uri
from .errors import BadInput
from .output import _Out, quote

# columns of a table filtered by --since/--until
TIME_COLUMNS = {"events": "time_ns", "batches": "written_ns", "seen_processes": "time_ns"}
# runs: one row per run, merging the copies in each file
RUN_MERGE = {"attached_ns": "min", "stopped_ns": "max", "lost_kernel": "sum", "lost_user": "sum",
             "events_written": "sum"}
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


class Workspace:
    """An in-memory connection with every file attached and the union views made."""

    def __init__(self, paths: list[Path], since_ns: int | None = None, until_ns: int | None = None,
                 sql: str | None = None, note=None):
        self.paths = list(paths)
        self.since_ns, self.until_ns = since_ns, until_ns
        self.note = note or (lambda text: None)
        self.tmpdir: str | None = None
        self.conn = sqlite3.connect(":memory:", uri=True)
        self.conn.text_factory = lambda raw: raw.decode("utf-8", "backslashreplace")
        try:
            self._build(sql)
        except BaseException:
            self.close()
            raise

    # -- building --------------------------------------------------------

    def _attach(self, path: Path, alias: str) -> None:
        open_ro(path).close()  # the same checks and messages as every other command
        try:
            self.conn.execute("ATTACH DATABASE ? AS " + alias, (ro_uri(path, needs_immutable(path)),))
        except sqlite3.Error as exc:
            raise BadInput(f"cannot open {path}: {exc}") from None

    def _tables(self, alias: str) -> dict[str, list[str]]:
        out = {}
        for (name,) in self.conn.execute(f"SELECT name FROM {alias}.sqlite_master WHERE type = 'table'"):
            if name.startswith(SKIP_TABLES):
                continue
            out[name] = [r[1] for r in self.conn.execute(f"PRAGMA {alias}.table_info({_ident(name)})")]
        return out

    def _build(self, sql: str | None) -> None:
        limit = self.conn.getlimit(sqlite3.SQLITE_LIMIT_ATTACHED)
        # with more files than that: the newest attached directly, leaving two slots for the
        # temporary database and the file being copied into it
        direct = self.paths if len(self.paths) <= limit else self.paths[:limit - 2]
        older = self.paths[len(direct):]
        sources: list[tuple[str, str]] = []  # (alias, label)
        for i, path in enumerate(direct):
            self._attach(path, f"f{i}")
            sources.append((f"f{i}", str(path)))
        if older:
            sources.append(("merged", self._merge(older, sql)))
        schemas = {alias: self._tables(alias) for alias, _ in sources}
        tables: dict[str, list[str]] = {}
        for alias, _ in sources:
            for name, cols in schemas[alias].items():
                have = tables.setdefault(name, [])
                have.extend(c for c in cols if c not in have)
        self.sources = sources
        # a UNION ALL view hands every column of every row to the statement: give it only the
        # columns the statement reads (SQLite 3.40 does not prune them by itself)
        reads = self._read_columns(sql, sources[0][0]) if sources else None
        for name, cols in list(tables.items()):
            if reads is None or name == "runs":
                continue
            used = [c for c in cols if c in reads.get(name, ())]
            tables[name] = used or [CHEAP_COLUMN.get(name) if CHEAP_COLUMN.get(name) in cols else cols[0]]
        for name, cols in tables.items():
            parts = []
            for alias, _ in sources:
                if name not in schemas[alias]:
                    continue
                mine = schemas[alias][name]
                select = ", ".join(_ident(c) if c in mine else f"NULL AS {_ident(c)}" for c in cols)
                part = f"SELECT {select} FROM {alias}.{_ident(name)}"
                where = self._window(name, mine)
                parts.append(part + where)
            body = "\nUNION ALL\n".join(parts)
            if name == "runs" and {"id", "started_ns"} <= set(cols):
                agg = ", ".join(f"{RUN_MERGE.get(c, 'min')}({_ident(c)}) AS {_ident(c)}"
                                if c not in ("id", "started_ns") else _ident(c) for c in cols)
                body = f"SELECT {agg} FROM ({body}) GROUP BY id, started_ns ORDER BY id, started_ns"
            self.conn.execute(f"CREATE TEMP VIEW {_ident(name)} AS {body}")
        self.conn.execute("CREATE TEMP TABLE files (alias TEXT, name TEXT, path TEXT)")
        for alias, label in sources:
            self.conn.execute("INSERT INTO files VALUES (?, ?, ?)", (alias, Path(label).name, label))
        self.conn.commit()
        self.conn.execute("PRAGMA query_only = 1")
        self.conn.set_authorizer(_authorizer)

    def _window(self, table: str, cols: list[str]) -> str:
        column = TIME_COLUMNS.get(table)
        if column is None or column not in cols:
            return ""
        terms = []
        if self.since_ns is not None:
            terms.append(f"{column} >= {int(self.since_ns)}")
        if self.until_ns is not None:
            terms.append(f"{column} < {int(self.until_ns)}")
        return (" WHERE " + " AND ".join(terms)) if terms else ""

    def _read_columns(self, sql: str | None, alias: str) -> dict[str, set[str]] | None:
        """The columns of each table ``sql`` reads, found by compiling it against empty copies of
        the tables; None when that cannot be told (then views carry every column)."""
        if not sql:
            return None
        probe = sqlite3.connect(":memory:")
        try:
            for (create,) in self.conn.execute(
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

    def _merge(self, older: list[Path], sql: str | None) -> str:
        """Copy the tables ``sql`` reads from the ``older`` files into one temporary database."""
        self._attach(older[0], "probe")
        columns = self._read_columns(sql, "probe")
        wanted = set(columns) if columns is not None else None
        self.conn.execute("DETACH DATABASE probe")
        size = sum(p.stat().st_size for p in older)
        self.tmpdir = tempfile.mkdtemp(prefix="auditd-lite-sql-")
        free = shutil.disk_usage(self.tmpdir).free
        if size > free:
            raise BadInput(
                f"{len(self.paths)} files are more than SQLite attaches at once, and copying the "
                f"{len(older)} oldest ({size >> 20} MiB) does not fit in {self.tmpdir} ({free >> 20} MiB "
                "free): narrow with --since/--until, or set TMPDIR")
        self.note(f"{len(self.paths)} files are more than SQLite attaches at once (10): copying "
                  f"{', '.join(sorted(wanted)) if wanted is not None else 'every table'} of the "
                  f"{len(older)} oldest files into a temporary database")
        merged = os.path.join(self.tmpdir, "merged.db")
        self.conn.execute("ATTACH DATABASE ? AS merged", (merged,))
        self.conn.execute("PRAGMA merged.journal_mode = OFF")
        self.conn.execute("PRAGMA merged.synchronous = OFF")
        made: dict[str, list[str]] = {}
        for path in older:
            self._attach(path, "src")
            for name, cols in self._tables("src").items():
                if wanted is not None and name not in wanted:
                    continue
                if name not in made:  # no keys: a run's row repeats, one copy per file
                    self.conn.execute(f"CREATE TABLE merged.{_ident(name)} AS "
                                      f"SELECT * FROM src.{_ident(name)} WHERE 0")
                    made[name] = cols
                common = [c for c in cols if c in made[name]]
                col_list = ", ".join(_ident(c) for c in common)
                self.conn.execute(f"INSERT INTO merged.{_ident(name)} ({col_list}) "
                                  f"SELECT {col_list} FROM src.{_ident(name)}{self._window(name, cols)}")
            self.conn.commit()
            self.conn.execute("DETACH DATABASE src")
        return f"{len(older)} older files (merged)"

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            if self.tmpdir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- running ---------------------------------------------------------

    def execute(self, sql: str) -> sqlite3.Cursor:
        if not sql.strip():
            raise BadInput("empty SQL statement")
        whole = _WHOLE_COUNT.fullmatch(sql)
        if (whole and self.since_ns is None and self.until_ns is None
                and whole[3].lower() in ("events", "batches", "seen_processes")):
            arms = [f"SELECT count(*) AS n FROM {alias}.{whole[3].lower()}" for alias, _ in self.sources
                    if self.conn.execute(f"SELECT 1 FROM {alias}.sqlite_master WHERE type = 'table' "
                                         "AND name = ?", (whole[3].lower(),)).fetchone()]
            if arms:
                sql = f"SELECT sum(n) AS {_ident(whole[1])} FROM ({' UNION ALL '.join(arms)})"
        try:
            cur = self.conn.execute(sql)
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


def _json_value(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return value


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


def write_rows(cur: sqlite3.Cursor, fmt: str, stream) -> int:
    """Write the result as table, json (one object a line) or csv; return the row count."""
    if cur.description is None:
        return 0
    names = _unique([d[0] for d in cur.description])
    out = _Out(stream)
    count = 0
    rows = _rows(cur)
    if fmt == "json":
        for row in rows:
            obj = {k: _json_value(v) for k, v in zip(names, row)}
            try:
                stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
            except UnicodeEncodeError:
                stream.write(json.dumps(obj) + "\n")
            count += 1
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow(["" if v is None else _text(v) for v in row])
            count += 1
    elif fmt == "table":
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
            count += 1
        for row in rows:
            out.write(line([_text(v) for v in row]) + "\n")
            count += 1
    else:
        raise BadInput(f"bad format {fmt!r}: use table, json or csv")
    return count


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
