"""`auditd-lite hunt`: the rules over the recorded execs of a window, every file oldest first,
each exec in commit order (as --follow sees them), and what the rules could not see: the
window's coverage gaps, as query warns of them (docs/design.md, "Hunt").
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

from ..dbfiles import database_files, is_set_aside, may_hold, set_aside_note
from ..errors import BadInput
from ..investigate import gaps as gaps_module
from ..investigate.output import TextOut, write_json_line
from ..timeparse import format_time
from . import report
from .fields import C_EVENT, C_RUN, C_TIME, EXEC
from .hunter import Files, Hunter


def select(ruleset, level: str | None = None, wanted=()) -> list:
    """The evaluable rules of ``ruleset`` at ``level`` or above; with ``wanted`` (ids or file
    names), only those. BadInput for a wanted rule not loaded or not evaluable."""
    rules = [r for r in ruleset.rules if not r.replaced]
    if wanted:
        chosen = []
        for w in wanted:
            hits = [r for r in rules if w in (r.id, r.name)]
            if not hits:
                raise BadInput(f"bad --rule {w!r}: no rule has that id or file name "
                               "(auditd-lite hunt --list shows them)")
            for r in hits:
                if not r.evaluable:
                    raise BadInput(f"bad --rule {w!r}: it cannot be evaluated: {r.why_not}")
                if r not in chosen:
                    chosen.append(r)
        rules = chosen
    return [r for r in rules if r.evaluable and report.level_at_least(r.level, level)]


def summary(hunter: Hunter, ruleset, rules: list, found: int, matched: int, files: int,
            window: dict, gaps: list) -> dict:
    """What a hunt says about itself: counts, the window, the rules that could not be
    evaluated, the files that did not parse, and the blind spots (the window's gaps)."""
    not_evaluated = [{"id": r.id, "title": r.title, "file": report.rule_file(r), "why": r.why_not}
                     for r in ruleset.rules if r.why_not is not None and not r.replaced]
    return {
        "findings": found, "rules_matched": matched,
        "execs": hunter.examined, "files": files, "window": window,
        "rules": {"evaluated": len(rules), "not_evaluated": not_evaluated},
        "problems": [{"file": str(p.path), "reason": p.reason} for p in ruleset.problems],
        "truncated_args": hunter.truncated,
        "parents": {"looked_up": hunter.parents.lookups, "unknown": hunter.parents.unknown},
        "users": f"names of uids on {socket.gethostname()}, looked up when hunting",
        "gaps": [g.as_dict() for g in gaps],
        "blind": [report.blind_spot(g) for g in gaps],
    }


def run(ruleset, rules: list, db_dir=None, db_file=None, since_ns: int | None = None,
        until_ns: int | None = None, fmt: str = "table", out=None, err=None) -> int:
    """Hunt, print each finding as it is found and the summary; the exit status: 2 when a rule
    file did not parse (the others ran), else 0 with findings, 1 without."""
    if fmt not in report.FORMATS:
        raise BadInput(f"bad format {fmt!r}: use table, json or ocsf")
    paths = list(reversed(database_files(db_dir=db_dir, db_file=db_file)))
    files = Files(paths)
    hunter = Hunter(rules, files)
    where, params = [], []
    if since_ns is not None:
        where.append("+time_ns >= ?")
        params.append(since_ns)
    if until_ns is not None:
        where.append("+time_ns < ?")
        params.append(until_ns)
    found = 0
    per_file: dict[Path, int] = {}  # findings of each file, for naming the set-aside ones
    matched: set = set()  # the rules that matched (findings are written, not kept)
    first = last = None
    read = 0
    try:
        for i, path in enumerate(paths):
            if not may_hold(path, since_ns, until_ns):
                continue
            read += 1
            try:
                boots = files.boots(i)
                for row in files.conn(i).execute(hunter.rows_sql(i, " AND ".join(where)), params):
                    if row[C_EVENT] == EXEC:
                        t = row[C_TIME]
                        first = t if first is None or t < first else first
                        last = t if last is None or t > last else last
                    for f in hunter.read(i, row, boots.get(row[C_RUN])):
                        found += 1
                        per_file[path] = per_file.get(path, 0) + 1
                        matched.add(id(f.rule))
                        report.write_finding(f, fmt, out, first=found == 1)
            except sqlite3.DatabaseError as e:
                raise BadInput(f"cannot read {path}: {e}") from None
    finally:
        files.close()
    window = {"since": format_time(since_ns) if since_ns is not None else None,
              "until": format_time(until_ns) if until_ns is not None else None,
              "first": format_time(first) if first is not None else None,
              "last": format_time(last) if last is not None else None}
    gaps = gaps_module.window_gaps(db_dir=Path(db_dir) if db_dir is not None else None,
                                   db_file=db_file, since_ns=since_ns, until_ns=until_ns)
    s = summary(hunter, ruleset, rules, found, len(matched), read, window, gaps)
    if fmt == "json":
        write_json_line({"summary": s}, out)
    elif fmt == "table":
        TextOut(out).write(("\n" if found else "") + report.summary_lines(s))
    else:  # ocsf: the findings are the output; the summary goes where query's warnings go
        for line in report.summary_lines(s).splitlines():
            err.write(f"auditd-lite: {line}\n")
    for path, n in per_file.items():
        if is_set_aside(path):
            err.write(f"auditd-lite: note: {n} finding{'s' if n != 1 else ''} from {set_aside_note(path)}\n")
    for p in ruleset.problems:
        err.write(f"auditd-lite: rule file {p.path} did not parse: {p.reason}\n")
    if ruleset.problems:
        return 2
    return 0 if found else 1
