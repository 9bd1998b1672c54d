"""`auditd-lite hunt`: Sigma rules over the recorded execs, and live with --follow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import BadInput
from .common import add_db_source, add_window, default_db_dir, nonneg_int, pos_int

LEVELS = ("informational", "low", "medium", "high", "critical")  # hunt/rules.py's, without pySigma


def add_hunt_command(sub) -> None:
    h = sub.add_parser(
        "hunt", help="run Sigma rules over the recorded execs, or live as they are recorded",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run Sigma rules for Linux process creation (SigmaHQ's, bundled, and your "
                    "own with --rules) over every exec recorded in the window, and print one "
                    "finding per rule and exec: the rule and its author, the process, its "
                    "parent's image and command line, and the record's id and file for query, "
                    "tree and export. The summary says what the rules could not see: the "
                    "window's coverage gaps (no daemon running, records lost) and the rules "
                    "that cannot be evaluated (--list says why). Exit 0 with findings, 1 "
                    "without, 2 on bad input (a rule file that does not parse is named, with "
                    "why, and the other rules still run). --follow evaluates the same rules on "
                    "each exec as soon as the daemon commits it, in this process: findings as "
                    "JSON lines on standard output (the journal, under "
                    "auditd-lite-hunt.service) and with --findings as OCSF Detection Finding "
                    "lines in a file rotated as the live stream's.",
        epilog="examples:\n  auditd-lite hunt --since 1d\n"
               "  auditd-lite hunt --level high --format json\n"
               "  auditd-lite hunt --rules /etc/auditd-lite/sigma --rule proc_creation_lnx_base64_decode\n"
               "  auditd-lite hunt --list\n"
               "  auditd-lite hunt --follow --findings /var/lib/auditd-lite/findings.jsonl")
    add_db_source(h)
    h.add_argument("--rules", type=Path, metavar="PATH", action="extend", nargs="+", default=[],
                   help="also the Sigma rules in PATH, a .yml file or a directory (searched for "
                        ".yml and .yaml); a rule with a bundled rule's id replaces it")
    h.add_argument("--no-bundled", action="store_true",
                   help="leave out the bundled SigmaHQ rules (only those of --rules)")
    h.add_argument("--rule", metavar="ID", action="extend", nargs="+", default=[],
                   help="only this rule: its id or its file's name without .yml (again for more)")
    h.add_argument("--level", choices=LEVELS,
                   help="only rules of this level or above")
    add_window(h)
    h.add_argument("--format", choices=("table", "json", "ocsf"),
                   help="table (the default, but json with --follow); json: a finding a line, "
                        "then a line with the summary; ocsf: each finding as an OCSF 1.8.0 "
                        "Detection Finding a line (the summary on standard error)")
    h.add_argument("--list", action="store_true",
                   help="list every rule loaded, whether it is evaluated and if not why, and "
                        "every rule file that did not parse; hunt nothing")
    h.add_argument("--follow", action="store_true",
                   help="keep running: evaluate each exec as the daemon commits it (with --since, "
                        "the history from T first), findings as JSON lines on standard output "
                        "(OCSF Detection Finding lines with --format ocsf, the table's blocks "
                        "with --format table)")
    h.add_argument("--findings", metavar="PATH",
                   help="with --follow: also write each finding as an OCSF Detection Finding line "
                        "to PATH (a file rotated by size, or a FIFO; - for standard output "
                        "instead of the JSON lines)")
    h.add_argument("--findings-max-size-mb", type=pos_int, metavar="N", default=10,
                   help="rotate the findings file when the next line would pass N MiB (10): it "
                        "is renamed PATH-<UTC time>.EXT, as the live stream's")
    h.add_argument("--findings-max-files", type=nonneg_int, metavar="N", default=5,
                   help="rotated findings files to keep, newest first (5; 0: keep all)")
    h.add_argument("--poll-ms", type=pos_int, metavar="N", default=250,
                   help="with --follow: look for newly committed records every N ms (250)")


def cmd_hunt(args) -> int:
    from .. import timeparse
    from ..hunt import history, report, rules

    if not args.follow:
        for flag, given in (("--findings", args.findings is not None),):
            if given:
                raise BadInput(f"{flag} goes with --follow")
    since = timeparse.parse_time(args.since) if args.since else None
    until = timeparse.parse_time(args.until) if args.until else None
    if args.follow and until is not None:
        raise BadInput("--until has no end to wait for with --follow")
    if args.no_bundled and not args.rules:
        raise BadInput("--no-bundled leaves no rule: give --rules")
    ruleset = rules.load(args.rules, bundled=not args.no_bundled)
    if args.list:
        rows = [row for row in report.rule_rows(ruleset)
                if row.get("level") is None or report.level_at_least(row["level"], args.level)]
        if args.format in (None, "table"):
            sys.stdout.write(report.list_table(rows))
            evaluated = sum(1 for r in ruleset.rules if r.evaluable)
            sys.stdout.write(f"{len(ruleset.rules)} rules loaded, {evaluated} evaluated, "
                             f"{len(ruleset.rules) - evaluated} not; {len(ruleset.problems)} files "
                             "did not parse\n")
        else:
            from ..investigate.output import write_json_line

            for row in rows:
                write_json_line(row, sys.stdout)
        for p in ruleset.problems:
            print(f"auditd-lite: rule file {p.path} did not parse: {p.reason}", file=sys.stderr)
        return 2 if ruleset.problems else 0
    chosen = history.select(ruleset, args.level, args.rule)
    if not chosen:
        raise BadInput("no rule to evaluate: none loaded is evaluable at that level")
    if args.follow:
        from ..hunt import follow

        return follow.run(ruleset, chosen, db_dir=default_db_dir(args), db_file=args.db,
                          since_ns=since, findings=args.findings,
                          max_size_mb=args.findings_max_size_mb, max_files=args.findings_max_files,
                          poll_s=args.poll_ms / 1000, fmt=args.format)
    return history.run(ruleset, chosen, db_dir=default_db_dir(args), db_file=args.db,
                       since_ns=since, until_ns=until, fmt=args.format or "table", out=sys.stdout,
                       err=sys.stderr)
