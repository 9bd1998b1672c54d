"""The commands that search the records: query, tree, gaps and sql."""

from __future__ import annotations

import argparse
import sys

from ..investigate.output import FORMATS, RECORD_FORMATS, SCHEMA_FORMATS
from ..rows import ABI_NAMES
from .common import (EVENTS, PROG, TIME_HELP, add_db_source, add_window, any_int, default_db_dir, nonneg_int,
                     pos_int)


def add_query_command(sub) -> None:
    q = sub.add_parser(
        "query", help="search the recorded events",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search every database file, newest first. Exit 1 when nothing matches. "
                    "--cwd, --sha256, --unit and --container match nothing in files written before "
                    "schema revision 0003, --abi nothing before 0006, which did not record them.",
        epilog="examples:\n  auditd-lite query --comm sh --exit-code 1\n"
               "  auditd-lite query --since 2h --event exec_failed --format json\n"
               "  auditd-lite query --db case-118.db --arg /etc/shadow\n"
               "  auditd-lite query --unit ssh.service --event exec\n"
               "  auditd-lite query --sha256 5e5e5e5e --container 3f4e5d6c7b8a\n"
               "  auditd-lite query --abi ia32 --format json")
    add_db_source(q)
    q.add_argument("--comm", metavar="NAME", help="process name (as the kernel's comm)")
    q.add_argument("--exit-code", type=any_int, metavar="N")
    q.add_argument("--signal", type=nonneg_int, metavar="N", help="terminating signal")
    q.add_argument("--pid", type=nonneg_int, metavar="N")
    q.add_argument("--ppid", type=nonneg_int, metavar="N")
    q.add_argument("--uid", type=nonneg_int, metavar="N")
    q.add_argument("--filename", metavar="GLOB", help="executable path, a glob")
    q.add_argument("--arg", metavar="SUBSTRING", help="a substring of the arguments")
    add_window(q)
    q.add_argument("--min-duration-ms", type=nonneg_int, metavar="N")
    q.add_argument("--event", choices=EVENTS)
    q.add_argument("--cwd", metavar="GLOB",
                   help="the working directory, a glob (an exit: its exec's)")
    q.add_argument("--sha256", metavar="HEX",
                   help="the executable's SHA-256, or its first hex digits (an exit: its exec's)")
    q.add_argument("--unit", metavar="NAME", help="the systemd unit, e.g. ssh.service or session-3.scope")
    q.add_argument("--container", metavar="ID",
                   help="the container id, or its first characters (an nspawn machine: its name)")
    q.add_argument("--abi", choices=ABI_NAMES,
                   help="the system call gate of the exec: x64, ia32 (int $0x80 and the other "
                        "32-bit gates, also from a 64-bit program) or x32 (an exit: its exec's)")
    q.add_argument("--format", choices=RECORD_FORMATS, default="table",
                   help="table (default), json or csv; ocsf: each record as an OCSF 1.8.0 Process "
                        "Activity event a line; ecs: as an ECS document a line (Auditbeat's fields)")
    q.add_argument("--limit", type=pos_int, metavar="N")


def add_tree_gaps_and_sql_commands(sub) -> None:
    t = sub.add_parser(
        "tree", help="a process's ancestry and descendants",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The process PID: its parents up to the first process recorded, and every "
                    "descendant, each with what it ran and how it ended. A pid is reused over time: "
                    "--at picks the process that had it then (default: the latest). Exit 1 if the "
                    "pid was never recorded (or not at that time).",
        epilog="examples:\n  auditd-lite tree 4242\n  auditd-lite tree 4242 --at 2026-11-20T10:15\n"
               "  auditd-lite tree 4242 --db case-118.db --format json")
    t.add_argument("pid", type=nonneg_int, metavar="PID")
    add_db_source(t)
    t.add_argument("--at", metavar="T", help=TIME_HELP)
    t.add_argument("--depth", type=nonneg_int, metavar="N", help="descendant levels to show (default all)")
    t.add_argument("--format", choices=("table", "json"), default="table")

    g = sub.add_parser(
        "gaps", help="where the record is incomplete: coverage gaps, loss, removed files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Every stretch of time in which processes may have run without a record: no "
                    "daemon running, an unclean stop, records lost, files retention removed (as it "
                    "recorded them) or someone else did. The warnings query, tree and export print "
                    "for their window, for the whole history or --since/--until. Exit 0.",
        epilog="examples:\n  auditd-lite gaps\n  auditd-lite gaps --since 7d --format json")
    add_db_source(g)
    add_window(g)
    g.add_argument("--format", choices=("table", "json"), default="table")

    s = sub.add_parser(
        "sql", help="read-only SQL over every database file at once",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one SELECT over the union of every file: the tables events, runs "
                    "(one row per run), batches and seen_processes, as in one file; files lists "
                    "the sources. Anything that would write is refused (exit 2); exit 1 when no "
                    "row comes back.",
        epilog="examples:\n  auditd-lite sql \"SELECT comm, count(*) FROM events GROUP BY comm "
               "ORDER BY 2 DESC LIMIT 10\"\n"
               "  auditd-lite sql --since 1d --format csv \"SELECT * FROM events WHERE exit_code = 1\"")
    s.add_argument("statement", metavar="SQL")
    add_db_source(s)
    s.add_argument("--since", metavar="T", help="only records from T on (and files that hold them)")
    s.add_argument("--until", metavar="T", help="only records before T")
    s.add_argument("--format", choices=FORMATS, default="table")


def filters_from_args(args):
    """The query filters of the contract, shared by query and export."""
    from ..investigate import query
    from .. import timeparse

    return query.Filters(
        comm=args.comm, exit_code=args.exit_code, signal=args.signal, pid=args.pid,
        ppid=args.ppid, uid=args.uid, filename=args.filename, arg=args.arg,
        since_ns=timeparse.parse_time(args.since) if args.since else None,
        until_ns=timeparse.parse_time(args.until) if args.until else None,
        min_duration_ns=args.min_duration_ms * 1_000_000 if args.min_duration_ms is not None else None,
        event=args.event)


def cmd_query(args) -> int:
    import dataclasses

    from .. import dbfiles
    from ..investigate import output, query
    from ..errors import NotFound

    # query's own: export (the other user of filters_from_args) has no context flags
    filters = dataclasses.replace(filters_from_args(args), cwd=args.cwd, sha256=args.sha256,
                                  unit=args.unit, container=args.container, abi=args.abi)
    paths = dbfiles.database_files(db_dir=default_db_dir(args), db_file=args.db)
    oldest: list[int] = []

    sourced = args.format in SCHEMA_FORMATS  # rendered with the facts of each record's run

    def tracked(items):
        for item in items:
            record = item[0] if sourced else item
            if not oldest or record["time_ns"] < oldest[0]:
                oldest[:] = [record["time_ns"]]
            yield item

    per_file: dict = {}
    n = output.write_records(tracked(query.search(paths, filters, args.limit, sources=sourced,
                                                  per_file=per_file)), args.format, sys.stdout)
    note_set_aside(per_file)
    warn_gaps(args, filters.since_ns, filters.until_ns, n, args.limit, oldest)
    if n == 0:
        raise NotFound("no matching records")
    return 0


def note_set_aside(per_file: dict) -> None:
    """Name on stderr each set-aside file the records shown came from (dbfiles.set_aside_note)."""
    from ..dbfiles import is_set_aside, set_aside_note

    for path, n in per_file.items():
        if n and is_set_aside(path):
            print(f"{PROG}: note: {n} record{'s' if n != 1 else ''} from {set_aside_note(path)}",
                  file=sys.stderr)


def warn_gaps(args, since_ns, until_ns, found, limit, oldest) -> None:
    """Coverage gaps touching the window a query answered for, on stderr."""
    from ..investigate import gaps

    if limit is not None and found >= limit and oldest:
        since_ns = max(since_ns if since_ns is not None else oldest[0], oldest[0])
    db_dir = default_db_dir(args)
    gaps.warn(gaps.window_gaps(db_dir=db_dir, db_file=args.db, since_ns=since_ns, until_ns=until_ns),
              sys.stderr)


def cmd_tree(args) -> int:
    from .. import dbfiles, timeparse
    from ..investigate import tree

    at_ns = timeparse.parse_time(args.at) if args.at else None
    db_dir = default_db_dir(args)
    conns = dbfiles.open_all(db_dir=db_dir, db_file=args.db)
    try:
        return tree.run(conns, args.pid, at_ns, args.depth, args.format, db_dir)
    finally:
        for _, conn in conns:
            conn.close()


def cmd_gaps(args) -> int:
    import json

    from .. import timeparse
    from ..investigate import gaps

    since = timeparse.parse_time(args.since) if args.since else None
    until = timeparse.parse_time(args.until) if args.until else None
    found = gaps.window_gaps(db_dir=default_db_dir(args), db_file=args.db, since_ns=since, until_ns=until)
    for g in found:
        print(json.dumps(g.as_dict()) if args.format == "json" else g.message())
    if not found and args.format == "table":
        print("no coverage gaps")
    return 0


def cmd_sql(args) -> int:
    from .. import dbfiles, timeparse
    from ..investigate import sqlcmd
    from ..errors import NotFound

    since = timeparse.parse_time(args.since) if args.since else None
    until = timeparse.parse_time(args.until) if args.until else None
    paths = dbfiles.database_files(db_dir=default_db_dir(args), db_file=args.db)
    if since is not None or until is not None:
        paths = [p for p in paths if dbfiles.may_hold(p, since, until)]
    if not paths:
        raise NotFound("no database files hold records in that window" if since or until
                       else "no database files")
    n = sqlcmd.run(paths, args.statement, args.format, sys.stdout, since, until,
                   note=lambda text: print(f"{PROG}: note: {text}", file=sys.stderr))
    if n == 0:
        raise NotFound("no rows")
    return 0
