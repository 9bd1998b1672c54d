"""What a hunt prints: each finding as a block of table lines, a JSON object or an OCSF
Detection Finding (formats/finding.py), the rules as --list shows them, and the summary that
says what the rules could not see (docs/design.md, "Hunt").

Everything that came from a record (paths, arguments, names) is shell-quoted for the table, as
query's table is: printing a finding never drives the terminal.
"""

from __future__ import annotations

from pathlib import Path

from ..formats import finding as ocsf_finding
from ..investigate.output import TextOut, json_line, quote, where_ran, write_json_line
from ..investigate.query import split_argv
from ..timeparse import format_time
from .rules import BUNDLED, LEVELS

FORMATS = ("table", "json", "ocsf")
PROCESS_KEYS = ("pid", "tid", "ppid", "uid", "gid", "euid", "auid", "sessionid", "comm", "filename",
                "argv", "argc", "args_truncated", "cwd", "cwd_status", "sha256", "hash_status",
                "cgroup", "unit", "container_id", "boot_id", "start_ns")


def rule_file(rule) -> str:
    """A rule's file as a user can find it: a bundled one by its path among SigmaHQ's folders
    (as upstream names it), a user's as given."""
    try:
        return "sigma/" + str(Path(rule.path).relative_to(BUNDLED))
    except ValueError:
        return str(rule.path)


_RULES: dict = {}  # id(rule) -> (rule, its JSON): made once per rule and run


def _rule_entry(rule) -> tuple:
    got = _RULES.get(id(rule))
    if got is None or got[0] is not rule:
        doc = {"id": rule.id, "title": rule.title, "level": rule.level, "status": rule.status,
               "author": rule.author, "description": rule.description, "tags": list(rule.tags),
               "file": rule_file(rule), "bundled": rule.bundled}
        got = _RULES[id(rule)] = (rule, doc)
    return got


def rule_json(rule) -> dict:
    """A rule as JSON (one object per rule, shared by its findings: read it, never change it)."""
    return _rule_entry(rule)[1]


def finding_json(f) -> dict:
    """A finding (hunter.Finding) as one JSON object: the rule, the exec's process (the keys of
    query's JSON, the user's name and the command line), its parent, where the record is, and
    the values the rule read, with those unknown or cut short."""
    r = f.record
    process = {k: r.get(k) for k in PROCESS_KEYS}
    process["user"] = f.user
    process["command_line"] = " ".join(r.get("argv") or ()) or None
    p = f.parent
    return {
        "rule": rule_json(f.rule),
        "time": r["time"], "time_ns": r["time_ns"],
        "process": process,
        "parent": {"pid": p.pid, "start_ns": p.start_ns, "image": p.image,
                   "argv": split_argv(p.argv) if p.source is not None else None,
                   "command_line": p.command_line, "from": p.source, "why": p.why},
        "record": {"file": str(f.path), "id": f.record_id},
        "fields": f.values, "unknown": f.unknown, "incomplete": f.incomplete,
    }


def finding_line(f) -> str:
    """A finding as its JSON line: json_line(finding_json(f))."""
    return json_line(finding_json(f))


def finding_ocsf(f) -> dict:
    return ocsf_finding.event(finding_json(f), f.record, f.source)


def _command(filename, argv) -> str:
    return " ".join([quote(filename) if filename is not None else "?"] + [quote(a) for a in argv or ()])


def finding_lines(doc: dict) -> str:
    """A finding (finding_json) as a block of lines for the table: when and how bad, the rule
    and its author (the Detection Rule License asks for it beside every match), the process,
    its parent, and where the record is."""
    rule, p, parent = doc["rule"], doc["process"], doc["parent"]
    level = (rule["level"] or "-").upper()
    who = f" by {quote(rule['author'])}" if rule.get("author") else ""
    lines = [f"{doc['time']}  {level:<8} {quote(rule['title'])}",
             f"    rule     {rule['id'] or '-'} ({rule['file']}){who}"]
    user = f" ({quote(p['user'])})" if p.get("user") else ""
    lines.append(f"    process  {p['pid']} uid {p['uid']}{user}  {_command(p['filename'], p['argv'])}"
                 + where_ran(p))
    context = ([f"cwd {quote(p['cwd'])}"] if p.get("cwd") else []) + \
        ([f"sha256 {p['sha256'][:16]}"] if p.get("sha256") else [])
    if context:
        lines.append("             " + "  ".join(context))
    if parent["from"] is not None:
        lines.append(f"    parent   {parent['pid']}  {_command(parent['image'], parent['argv'])}"
                     + (" [running when a daemon started]" if parent["from"] == "seen" else ""))
    else:
        lines.append(f"    parent   {parent['pid']}  unknown: {parent['why']}")
    notes = []
    if doc["unknown"]:
        notes.append("unknown: " + ", ".join(doc["unknown"]))
    if doc["incomplete"]:
        notes.append("cut short: " + ", ".join(doc["incomplete"]))
    lines.append(f"    record   {doc['record']['id']} in {quote(doc['record']['file'])}"
                 + (f"  ({'; '.join(notes)})" if notes else ""))
    return "\n".join(lines) + "\n"


def write_finding(f, fmt: str, out, first: bool) -> None:
    """A finding to ``out`` in ``fmt`` (FORMATS); a table's blocks are parted by a blank line,
    so ``first`` says whether one came before."""
    if fmt == "json":
        try:
            out.write(finding_line(f))
        except UnicodeEncodeError:  # an ASCII-only stream: JSON's own escapes
            write_json_line(finding_json(f), out)
    elif fmt == "ocsf":
        write_json_line(finding_ocsf(f), out)
    else:
        TextOut(out).write(("" if first else "\n") + finding_lines(finding_json(f)))


# --- the rules (--list) ----------------------------------------------------------

def rule_rows(ruleset) -> list[dict]:
    """Every rule loaded, and every file that gave none, as --list shows them."""
    rows = []
    for r in ruleset.rules:
        state = ("replaced by a --rules file of the same id" if r.replaced
                 else r.why_not and f"not evaluated: {r.why_not}" or "evaluated")
        rows.append({**rule_json(r), "evaluated": r.evaluable, "why_not": r.why_not,
                     "replaced": r.replaced, "fields": sorted(r.fields), "state": state})
    for kind, problems in (("did not parse", ruleset.problems), ("skipped", ruleset.skipped)):
        for pr in problems:
            rows.append({"file": str(pr.path), "state": f"{kind}: {pr.reason}", "evaluated": False})
    return rows


def list_table(rows: list[dict]) -> str:
    out = []
    for row in rows:
        if "title" not in row:
            out.append(f"{'-':<36}  {'-':<13}  {quote(row['file'])}: {row['state']}")
            continue
        out.append(f"{row['id'] or '-':<36}  {row['level'] or '-':<13}  {quote(row['title'])} "
                   f"({row['file']}): {row['state']}")
    return "\n".join(out) + ("\n" if out else "")


def level_at_least(level: str | None, least: str | None) -> bool:
    """Is a rule of ``level`` at or above ``least`` (a rule without a level is below all)?"""
    if least is None:
        return True
    return level in LEVELS and LEVELS.index(level) >= LEVELS.index(least)


# --- the summary -------------------------------------------------------------------

def blind_spot(gap) -> str:
    """A coverage gap (investigate/gaps.py) as what it means for a hunt."""
    start = format_time(gap.start_ns) if gap.start_ns is not None else "the beginning"
    end = format_time(gap.end_ns) if gap.end_ns is not None else "now"
    return f"the rules could not see {start} .. {end}: {gap.detail}"


def summary_lines(s: dict) -> str:
    """The summary (history.summary's dict) as the lines the table ends with."""
    window = f"from {s['window']['first'] or '-'} to {s['window']['last'] or '-'}"
    lines = [f"{s['findings']} finding{'s' if s['findings'] != 1 else ''} of "
             f"{s['rules_matched']} rule{'s' if s['rules_matched'] != 1 else ''} in {s['execs']} "
             f"exec records {window} ({s['files']} file{'s' if s['files'] != 1 else ''})"]
    r = s["rules"]
    lines.append(f"{r['evaluated']} rule{'s' if r['evaluated'] != 1 else ''} evaluated"
                 + (f", {len(r['not_evaluated'])} could not be (auditd-lite hunt --list says why)"
                    if r["not_evaluated"] else ""))
    for problem in s["problems"]:
        lines.append(f"rule file {quote(problem['file'])} did not parse: {problem['reason']}")
    if s["truncated_args"]:
        lines.append(f"{s['truncated_args']} exec records had their arguments cut at the capture's "
                     "limits (--max-args, --max-arg-bytes): the rules saw them cut")
    par = s["parents"]
    if par["unknown"]:
        lines.append(f"{par['unknown']} of {par['looked_up']} parents looked up were not recorded: "
                     "ParentImage and ParentCommandLine were unknown for them")
    lines.append("User is the name of the uid on this host, looked up now")
    lines += s["blind"] if s["blind"] else ["no coverage gap in the window"]
    return "\n".join(lines) + "\n"
