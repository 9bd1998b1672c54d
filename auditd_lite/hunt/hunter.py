"""The one matcher over exec records, for the history (hunt/history.py) and the live files
(hunt/follow.py) alike: a row of fields.COLUMNS in, the findings of the rules it matches out
(docs/design.md, "Hunt").
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..dbfiles import open_ro
from ..errors import BadInput
from ..formats.source import Source, sources_of
from ..investigate.query import row_to_record
from ..rows import ROW_FIELDS
from .fields import C_EVENT, C_ID, C_RUN, C_TRUNCATED, COLUMNS, EXEC, Event, Users
from .parents import Parent, Parents
from .prefilter import Prefilter


class Files:
    """The database files a hunt reads, index 0 the oldest, each opened when first read. What
    the scan and parents.Parents ask of them: a connection, each run's boot, the events
    table's columns. With ``missing_ok`` (--follow, where retention removes files while it
    runs), a file that is gone has no connection (None) instead of being bad input."""

    def __init__(self, paths, missing_ok: bool = False):
        self.missing_ok = missing_ok
        self.reset(paths)

    def reset(self, paths) -> None:
        """Read ``paths`` from now on (what was open is closed)."""
        if hasattr(self, "_conns"):
            self.close()
        self.paths: list[Path] = [Path(p) for p in paths]
        self._conns: dict[int, sqlite3.Connection | None] = {}
        self._boots: dict[int, dict] = {}
        self._sources: dict[int, dict] = {}
        self._columns: dict[int, frozenset] = {}
        self._selects: dict[tuple, str] = {}

    @property
    def count(self) -> int:
        return len(self.paths)

    def conn(self, i: int) -> sqlite3.Connection | None:
        if i not in self._conns:
            try:
                self._conns[i] = open_ro(self.paths[i])
            except BadInput:
                if not self.missing_ok or self.paths[i].exists():
                    raise
                return None  # not kept: a live file may be there at the next poll
        return self._conns[i]

    def boots(self, i: int) -> dict:
        """run id -> boot id of file ``i``."""
        if i not in self._boots:
            conn = self.conn(i)
            self._boots[i] = dict(conn.execute("SELECT id, boot_id FROM runs")) if conn else {}
        return self._boots[i]

    def boot(self, i: int, run_id: int) -> str | None:
        """The boot of a run of file ``i``; a run begun since the file was first read (the live
        file, followed) is read again."""
        boot = self.boots(i).get(run_id)
        if boot is None:
            self._boots.pop(i, None)
            self._sources.pop(i, None)
            boot = self.boots(i).get(run_id)
        return boot

    def source(self, i: int, run_id: int) -> Source:
        if i not in self._sources or run_id not in self._sources[i]:
            self._sources[i] = sources_of(self.conn(i))
        return self._sources[i].get(run_id) or Source(boot_id=self.boot(i, run_id))

    def columns(self, i: int) -> frozenset:
        if i not in self._columns:
            self._columns[i] = frozenset(r[1] for r in self.conn(i).execute("PRAGMA table_info(events)"))
        return self._columns[i]

    def forget(self, i: int) -> None:
        """What was read of file ``i`` is read again when next asked (a live file: a daemon's
        new run, or its file upgraded to a revision with more columns)."""
        self._boots.pop(i, None)
        self._sources.pop(i, None)
        self._columns.pop(i, None)
        self._selects = {k: v for k, v in self._selects.items() if k[0] != i}

    def select(self, i: int, columns) -> str:
        """The select list of ``columns`` (names, or (name, SQL over it) pairs) for file ``i``:
        NULL for a column it lacks (a file of an older revision), so that every file's rows
        have one shape."""
        key = (i, columns)
        if key not in self._selects:
            have = self.columns(i)
            pairs = [(c, c) if isinstance(c, str) else c for c in columns]
            self._selects[key] = ", ".join(sql if name in have else "NULL" for name, sql in pairs)
        return self._selects[key]

    def close(self, i: int | None = None) -> None:
        """Close file ``i`` (every file when None); it is opened again when next read."""
        for j in ([i] if i is not None else list(self._conns)):
            conn = self._conns.pop(j, None)
            if conn is not None:
                conn.close()
        if i is None:
            self._boots, self._sources, self._columns, self._selects = {}, {}, {}, {}


@dataclass
class Finding:
    rule: object  # rules.Rule
    record: dict  # the exec as query prints it (query.row_to_record)
    source: Source  # its run and file (formats/)
    parent: Parent
    path: Path  # the file that holds it, and its id there
    record_id: int
    user: str | None = None  # the uid's name here (fields.Users)
    values: dict = field(default_factory=dict)  # the fields the rule reads, as they were
    unknown: list = field(default_factory=list)  # of those, the ones without a value
    incomplete: list = field(default_factory=list)  # and those cut short (arguments)


class Hunter:
    """``rules`` (evaluable rules.Rule) over the exec rows of ``files`` (Files)."""

    def __init__(self, rules: list, files: Files):
        self.rules = list(rules)
        self.files = files
        self.prefilter = Prefilter(self.rules)
        self.users = Users()
        self.parents = Parents(files)
        self.examined = 0  # exec records evaluated
        self.truncated = 0  # of which with arguments cut at the capture's limits
        self._finders: dict[int, object] = {}
        self._runs: set = set()  # (file, run id) of the records read
        self._run_file = self._run_id = None  # the last record's file index and run id

    def rows_sql(self, i: int, where: str = "") -> str:
        """The SELECT of file ``i``'s records as fields.COLUMNS, in commit order (every record:
        the parent lookup learns from exits and failed execs too)."""
        return (f"SELECT {self.files.select(i, COLUMNS)} FROM events"
                + (f" WHERE {where}" if where else "") + " ORDER BY id")

    def _finder(self, i: int):
        if i not in self._finders:
            files, parents = self.files, self.parents

            def find(ev, i=i):
                return parents.of(i, ev.row, files.boot(i, ev.row[C_RUN]))
            self._finders[i] = find
        return self._finders[i]

    def read(self, i: int, row: tuple, boot: str | None):
        """One record of file ``i`` (fields.COLUMNS) of ``boot``, read in commit order: an
        exec's findings, in the rules' order (none for another record, which only the parent
        lookup learns of)."""
        if row[C_RUN] != self._run_id or i != self._run_file:
            self.begin(i, row)
        found = self.evaluate(i, row) if row[C_EVENT] == EXEC else ()
        self.parents.note(i, row, boot)
        return found

    def files_changed(self) -> None:
        """``files`` was reset (a rotation, followed): what was kept by file index is not."""
        self._run_file = self._run_id = None
        self._finders.clear()
        self.parents.forget_seen()

    def begin(self, i: int, row: tuple) -> None:
        """Before a record is evaluated: the first record of a run (a daemon's start, and its
        list of the processes running then) makes the parents kept as unknown be looked up
        again."""
        if (i, row[C_RUN]) != (self._run_file, self._run_id):
            self._run_file, self._run_id = i, row[C_RUN]
            key = (self.files.paths[i], row[C_RUN])
            if key not in self._runs:
                self._runs.add(key)
                self.parents.forget_unknown()

    def evaluate(self, i: int, row: tuple) -> list[Finding]:
        """The findings of one exec record of file ``i``."""
        self.examined += 1
        if row[C_TRUNCATED]:
            self.truncated += 1
        ev = Event(row, self.users, self._finder(i))
        matched = [rule for rule in self.prefilter.candidates(ev) if rule.match(ev)]
        return self._findings(i, ev, matched) if matched else []

    def matches(self, ev: Event) -> list:
        """The rules ``ev`` matches, by the prefilter and the rules' matcher (what evaluate does)."""
        return [rule for rule in self.prefilter.candidates(ev) if rule.match(ev)]

    def _findings(self, i: int, ev: Event, matched: list) -> list[Finding]:
        """The findings of the rules an exec matched: one record, its parent, its source."""
        row = ev.row
        parent = ev.find_parent()  # every finding shows its parent, read by the rule or not
        try:
            full = self.files.conn(i).execute(
                f"SELECT {self.files.select(i, ROW_FIELDS)} FROM events WHERE id = ?",
                (row[C_ID],)).fetchone()
        except sqlite3.DatabaseError as e:
            raise BadInput(f"cannot read {self.files.paths[i]}: {e}") from None
        record = row_to_record(full, None, self.files.boot(i, row[C_RUN]))
        source = self.files.source(i, row[C_RUN])
        user = ev.get("User")
        return [Finding(rule=rule, record=record, source=source, parent=parent,
                        path=self.files.paths[i], record_id=row[C_ID], user=user,
                        values={f: ev.get(f) for f in rule.field_list},
                        unknown=ev.unknown(rule.fields), incomplete=ev.incomplete(rule.fields))
                for rule in matched]
