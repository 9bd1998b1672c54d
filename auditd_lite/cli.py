"""The `auditd-lite` command: parses options and calls the library, nothing more.

Heavy modules are imported inside the commands that need them, so that
`query` starts fast and never loads bcc or SQLAlchemy.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .errors import AuditdLiteError, BadInput
from .config import CAPTURE_MODES
from .rows import ABI_NAMES
from .investigate.output import FORMATS, RECORD_FORMATS, SCHEMA_FORMATS

PROG = "auditd-lite"
EVENTS = ("exec", "exit", "exec_failed")


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line naming the problem, no usage dump: exit 2 as the contract says
        raise BadInput(f"{message} (see '{self.prog} --help')")


def nonneg_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: '{text}'")
    return value


def pos_int(text: str) -> int:
    value = nonneg_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be 1 or more: '{text}'")
    return value


def any_int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: '{text}'") from None


def add_db_source(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--db-dir", type=Path, metavar="DIR",
                   help="read every database file in DIR (default /var/lib/auditd-lite)")
    g.add_argument("--db", type=Path, metavar="FILE", help="read one database file, such as an export")


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Process audit logger: every exec attempt, exec and exit, "
               "captured with eBPF into SQLite, and the tools to investigate them.",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    r = sub.add_parser(
        "run", help="capture in the foreground (the daemon)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load the BPF programs and record every exec attempt, exec and exit.",
        epilog="examples:\n  auditd-lite run --print --db-dir ./var\n"
               "  auditd-lite run --min-duration-ms 500 --transport perfbuf\n"
               "  auditd-lite run --stream /var/log/auditd-lite/stream.jsonl")
    r.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML settings file (default /etc/auditd-lite/auditd-lite.toml if present)")
    r.add_argument("--db-dir", type=Path, metavar="DIR", help="where the databases live")
    r.add_argument("--min-duration-ms", type=nonneg_int, metavar="N",
                   help="record exits only of processes that lived N ms or more, and no successful execs "
                        "(failed execs still are)")
    r.add_argument("--print", action="store_true", default=None,
                   help="also print each event (a reader that falls behind only skips lines; the "
                        "database keeps them all; a closed pipe stops the daemon cleanly)")
    r.add_argument("--transport", choices=("ringbuf", "perfbuf"),
                   help="kernel-to-user transport (perfbuf for kernels before 5.8)")
    r.add_argument("--capture-mode", choices=CAPTURE_MODES,
                   help="how execve calls are seen: fentry on the execve functions (nothing on "
                        "other system calls), raw_syscalls (every system call pays for the "
                        "tracepoint), or auto (default): fentry where the kernel can, else "
                        "raw_syscalls, with the reason in the log")
    r.add_argument("--buffer-kb", type=pos_int, metavar="N",
                   help="ring buffer size (or each per-CPU perf buffer), KiB")
    r.add_argument("--max-args", type=pos_int, metavar="N", help="arguments kept per exec (128)")
    r.add_argument("--max-arg-bytes", type=pos_int, metavar="N",
                   help="argument bytes kept per exec (4096)")
    r.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    r.add_argument("--rotate-size-mb", type=nonneg_int, metavar="N",
                   help="rotate the live file when it passes N MiB (0: never)")
    r.add_argument("--rotate-interval", metavar="DURATION",
                   help="rotate the live file after DURATION, e.g. 1h or 1d")
    r.add_argument("--keep", type=nonneg_int, metavar="N",
                   help="retention: at most N rotated files, newest first (0: no limit by count)")
    r.add_argument("--max-size-mb", type=nonneg_int, metavar="N",
                   help="retention: keep the directory's files under N MiB, removing the oldest "
                        "rotated files (0, the default: 10%% of its file system, at most 4096)")
    r.add_argument("--min-free-mb", type=nonneg_int, metavar="N",
                   help="retention: below N MiB free, remove the oldest rotated files (0, the "
                        "default: 15%% of the file system, at most 4096)")
    r.add_argument("--no-retention", dest="retention", action="store_false", default=None,
                   help="never remove a file (retention is on by default; each removal is "
                        "recorded in the chain): a disk that fills holds, then loses, records")
    r.add_argument("--synchronous", choices=("normal", "full"),
                   help="SQLite durability: normal (default, WAL) or full (fsync every batch)")
    r.add_argument("--no-hash", dest="hash", action="store_false", default=None,
                   help="do not hash the executables (hash_status off)")
    r.add_argument("--hash-limit-mb", type=pos_int, metavar="N",
                   help="executables larger than N MiB are not hashed (256)")
    r.add_argument("--stream", metavar="PATH",
                   help="also write each record, once its batch is committed, as one OCSF JSON line "
                        "to PATH (a file, rotated by size, or a FIFO; - for standard output), for "
                        "log shippers; a reader that falls behind only makes the stream drop lines "
                        "(counted in the run), never the database")
    r.add_argument("--stream-max-size-mb", type=pos_int, metavar="N",
                   help="rotate the stream file when the next line would pass N MiB (10): it is "
                        "renamed PATH-<UTC time>.EXT, as Tetragon's export file")
    r.add_argument("--stream-max-files", type=nonneg_int, metavar="N",
                   help="rotated stream files to keep, newest first (5; 0: keep all)")
    r.add_argument("--seal-state", type=Path, metavar="DIR",
                   help="the sealing state `auditd-lite seal setup` made (default "
                        "/var/lib/auditd-lite/seal): the chain is sealed when it is there")

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
    q.add_argument("--since", metavar="T", help="ISO 8601 time or an age like 10m, 2h, 3d")
    q.add_argument("--until", metavar="T", help="ISO 8601 time or an age like 10m, 2h, 3d")
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
    add_investigation_commands(sub)
    add_storage_commands(sub)
    add_doctor_command(sub)
    return p


def add_doctor_command(sub) -> None:
    doc = sub.add_parser(
        "doctor", help="check whether this host can capture, and say how to fix what cannot",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check privileges, kernel, BTF, tracefs, the raw tracepoints, bcc and kernel "
                    "headers, the settings the service will run with (config file and the unit's "
                    "ExecStart flags), what the service's capabilities allow with its transport, "
                    "and the database directory; then compile, load and attach the real program "
                    "with those settings in a process bounded to the unit's capabilities. One "
                    "line per check, with the fix when it fails. Exit 0 when capture can work, "
                    "1 if not.",
        epilog="examples (as root):\n  auditd-lite doctor\n"
               "  auditd-lite doctor --transport perfbuf\n"
               "  auditd-lite doctor --db-dir /srv/audit --no-compile")
    doc.add_argument("--db-dir", type=Path, metavar="DIR",
                     help="database directory to check (default: the service's, from its settings)")
    doc.add_argument("--config", type=Path, metavar="FILE",
                     help="TOML settings file the service will read (default: the unit's "
                          "ExecStart --config, else /etc/auditd-lite/auditd-lite.toml if present)")
    doc.add_argument("--transport", choices=("ringbuf", "perfbuf"),
                     help="check this transport instead of the one the settings give")
    doc.add_argument("--capture-mode", choices=CAPTURE_MODES,
                     help="check this capture mode instead of the one the settings give")
    doc.add_argument("--no-compile", action="store_true",
                     help="skip compiling and loading the program (faster, checks less)")


def cmd_doctor(args) -> int:
    from .capture import doctor

    return doctor.main(args.config, {"db_dir": args.db_dir, "transport": args.transport,
                                     "capture_mode": args.capture_mode},
                       compile_test=not args.no_compile, out=sys.stdout)


def add_storage_commands(sub) -> None:
    s = sub.add_parser(
        "stats", help="counts, loss, files and runs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="What is recorded, what was lost and when, the database files and the "
                    "daemon runs (unclean stops flagged: a gap in coverage).",
        epilog="examples:\n  auditd-lite stats\n  auditd-lite stats --db case-118.db --format json")
    add_db_source(s)
    s.add_argument("--format", choices=("table", "json"), default="table")

    d = sub.add_parser(
        "db", help="schema revision of the databases, and upgrading them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The daemon upgrades its live database at start; these do it by hand. "
                    "Rotated files are read-only and are read at whatever revision they have.",
        epilog="examples:\n  auditd-lite db current\n  auditd-lite db upgrade --db-dir /var/lib/auditd-lite")
    dsub = d.add_subparsers(dest="db_command", metavar="ACTION", parser_class=Parser)
    dsub.required = True
    cur = dsub.add_parser("current", help="print each file's schema revision",
                          description="Print the Alembic revision of every database file.")
    add_db_source(cur)
    up = dsub.add_parser("upgrade", help="bring the live database to the newest revision",
                         description="Upgrade DIR/audit.db to the head revision (the daemon "
                                     "must not be running).")
    up.add_argument("--db-dir", type=Path, metavar="DIR",
                    help="database directory (default /var/lib/auditd-lite)")

    se = sub.add_parser(
        "seal", help="forward-secure sealing of the chain: set up, and its state",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The daemon seals the chain at the end of every epoch, at rotation and at a "
                    "clean stop, with a key that then evolves one way: whoever takes the machine "
                    "cannot forge or silently remove what was sealed before. `verify "
                    "--verify-key` checks the seals.",
        epilog="examples:\n  auditd-lite seal setup > /root/seal-key.txt  # then move it off the machine\n"
               "  systemctl restart auditd-lite\n  auditd-lite seal status")
    ssub = se.add_subparsers(dest="seal_command", metavar="ACTION", parser_class=Parser)
    ssub.required = True
    ss = ssub.add_parser("setup", help="make the sealing key and print its verification key once",
                         description="Make a new sealing state (0600, in a 0700 directory) and "
                                     "print its verification key on standard output, once: keep "
                                     "it off this machine. Restart the daemon to begin sealing.")
    ss.add_argument("--interval", metavar="DURATION",
                    help="length of an epoch: a seal at the end of each (15m)")
    ss.add_argument("--force", action="store_true",
                    help="replace an existing state (its seals stay checkable with its old key)")
    st = ssub.add_parser("status", help="the sealing state: epoch, key id, last seals (never a key)",
                         description="Print the sealing state's epoch, key id, epoch length and "
                                     "its last seal; exit 1 if sealing is not set up.")
    for sp in (ss, st):
        sp.add_argument("--seal-state", type=Path, metavar="DIR",
                        help="the sealing state's directory (default /var/lib/auditd-lite/seal)")


def cmd_run(args) -> int:
    from . import config
    from .daemon import logsetup

    overrides = {
        "db_dir": args.db_dir, "min_duration_ms": args.min_duration_ms, "print": args.print,
        "transport": args.transport, "capture_mode": args.capture_mode,
        "buffer_kb": args.buffer_kb, "max_args": args.max_args,
        "max_arg_bytes": args.max_arg_bytes, "log_level": args.log_level,
        "rotate_size_mb": args.rotate_size_mb, "rotate_interval": args.rotate_interval,
        "keep": args.keep, "max_size_mb": args.max_size_mb, "min_free_mb": args.min_free_mb,
        "retention": args.retention, "synchronous": args.synchronous,
        "hash": args.hash, "hash_limit_mb": args.hash_limit_mb, "stream": args.stream,
        "stream_max_size_mb": args.stream_max_size_mb, "stream_max_files": args.stream_max_files,
        "seal_state": args.seal_state,
    }
    settings = config.settings(args.config, overrides)
    logsetup.configure(settings.log_level)
    from .capture import compiler, loader

    child = None
    if os.geteuid() == 0 and compiler.bcc_found():
        # the programs compile from now on, while the daemon's modules load and its database
        # opens (run says what is missing when this is skipped)
        child = compiler.Child(loader.ProgramSettings.for_run(settings))
    from .daemon import main as daemon

    # SIGHUP reads the file again; flags given at start still win over it
    return daemon.run(settings, reread=lambda: config.settings(args.config, overrides), child=child)


def default_db_dir(args) -> Path | None:
    if args.db is not None:
        return None
    from .config import DEFAULT_DB_DIR

    return args.db_dir or DEFAULT_DB_DIR


def filters_from_args(args):
    """The query filters of the contract, shared by query and export."""
    from .investigate import query
    from . import timeparse

    return query.Filters(
        comm=args.comm, exit_code=args.exit_code, signal=args.signal, pid=args.pid,
        ppid=args.ppid, uid=args.uid, filename=args.filename, arg=args.arg,
        since_ns=timeparse.parse_time(args.since) if args.since else None,
        until_ns=timeparse.parse_time(args.until) if args.until else None,
        min_duration_ns=args.min_duration_ms * 1_000_000 if args.min_duration_ms is not None else None,
        event=args.event)


def cmd_query(args) -> int:
    import dataclasses

    from . import dbfiles
    from .investigate import output, query
    from .errors import NotFound

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


def cmd_stats(args) -> int:
    import json

    from . import dbfiles
    from .investigate import stats

    db_dir = default_db_dir(args)
    result = stats.collect(dbfiles.database_files(db_dir=db_dir, db_file=args.db), db_dir)
    if args.format == "json":
        print(json.dumps(result))
    else:
        print(stats.render_table(result))
    return 0


def cmd_db(args) -> int:
    from . import dbfiles

    if args.db_command == "current":
        for path in dbfiles.database_files(db_dir=default_db_dir(args), db_file=args.db):
            conn = dbfiles.open_ro(path)
            try:
                print(f"{path}: {dbfiles.revision_of(conn) or 'unknown'}")
            finally:
                conn.close()
        return 0
    from .config import DEFAULT_DB_DIR
    from .storage.store import upgrade_live

    print(upgrade_live(args.db_dir or DEFAULT_DB_DIR))
    return 0


def add_investigation_commands(sub) -> None:
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
    t.add_argument("--at", metavar="T", help="ISO 8601 time or an age like 10m, 2h, 3d")
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
    g.add_argument("--since", metavar="T", help="ISO 8601 time or an age like 10m, 2h, 3d")
    g.add_argument("--until", metavar="T", help="ISO 8601 time or an age like 10m, 2h, 3d")
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

    e = sub.add_parser(
        "export", help="a sealed, self-contained copy of selected records",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the selected records, with the runs and batch hashes that cover them "
                    "and a manifest, to OUT (SQLite), and OUT.sha256. Reads a consistent snapshot "
                    "while the daemon writes. Never replaces OUT without --force. Exit 1 when "
                    "nothing matches. --format ocsf or ecs writes the same records instead as JSON "
                    "lines, one OCSF 1.8.0 Process Activity event or ECS document each, newest "
                    "first as query prints them (with only --since/--until, also the processes "
                    "seen running when each run started), and OUT.sha256 (no manifest, no chain: "
                    "verify the databases they came from).",
        epilog="examples:\n  auditd-lite export --since 2026-11-20 --until 2026-11-21 -o case-118.db\n"
               "  auditd-lite export --since 2h --comm sh -o sh.db && auditd-lite verify sh.db\n"
               "  auditd-lite export --since 1d --format ocsf -o day.ocsf.jsonl\n"
               "  auditd-lite export --since 7d --format parquet -o /srv/lake\n"
               "  auditd-lite export --since 1d -o case-118.db --sign /root/keys/signing.key")
    e.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    e.add_argument("--db-dir", type=Path, metavar="DIR",
                   help="the database directory (default /var/lib/auditd-lite)")
    e.add_argument("--since", metavar="T", help="ISO 8601 time or an age like 10m, 2h, 3d")
    e.add_argument("--until", metavar="T", help="ISO 8601 time or an age like 10m, 2h, 3d")
    e.add_argument("--comm", metavar="NAME")
    e.add_argument("--exit-code", type=any_int, metavar="N")
    e.add_argument("--signal", type=nonneg_int, metavar="N")
    e.add_argument("--pid", type=nonneg_int, metavar="N")
    e.add_argument("--ppid", type=nonneg_int, metavar="N")
    e.add_argument("--uid", type=nonneg_int, metavar="N")
    e.add_argument("--filename", metavar="GLOB")
    e.add_argument("--arg", metavar="SUBSTRING")
    e.add_argument("--min-duration-ms", type=nonneg_int, metavar="N")
    e.add_argument("--event", choices=EVENTS)
    e.add_argument("--format", choices=("sqlite",) + SCHEMA_FORMATS + ("parquet",), default="sqlite",
                   help="sqlite (default: the sealed database), or ocsf or ecs (JSON lines); "
                        "parquet: a Parquet lake in the directory OUT, "
                        "host=H/day=YYYY-MM-DD/part-*.parquet (needs pyarrow: "
                        "the package auditd-lite-lake)")
    e.add_argument("--force", action="store_true",
                   help="replace OUT (and OUT.sha256, OUT.sig) if they exist")
    e.add_argument("--sign", type=Path, metavar="KEYFILE",
                   help="also write OUT.sig, a signature with the Ed25519 private key KEYFILE "
                        "(auditd-lite keygen) over the file's name, SHA-256 and manifest "
                        "(sqlite, ocsf and ecs; not parquet)")

    v = sub.add_parser(
        "verify", help="check the hash chain and its seals, or an export and its signature",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Recompute every batch hash and follow the chain across files (oldest "
                    "first); with --verify-key, also check the seals and say per file up to when "
                    "its records are sealed; for an export, check its manifest, its .sha256 and "
                    "its batches (and with --pubkey its signature). Exit 0 when intact, 1 with "
                    "one line per problem.",
        epilog="examples:\n  auditd-lite verify\n  auditd-lite verify --db-dir /srv/audit\n"
               "  auditd-lite verify --verify-key \"$(cat seal-key.txt)\"\n"
               "  auditd-lite verify case-118.db\n"
               "  auditd-lite verify --pubkey signing.pub case-118.db day.ocsf.jsonl")
    v.add_argument("files", nargs="*", type=Path, metavar="FILE")
    v.add_argument("--db-dir", type=Path, metavar="DIR",
                   help="every file of DIR (default /var/lib/auditd-lite when no FILE is given)")
    v.add_argument("--verify-key", metavar="KEY", action="append", default=[],
                   help="also check the seals with the key `auditd-lite seal setup` printed (or a "
                        "file holding it), and say per file up to when its records are sealed; "
                        "again for each key a `seal setup --force` replaced")
    v.add_argument("--pubkey", type=Path, metavar="FILE",
                   help="also check each export's signature (EXPORT.sig, from export --sign) "
                        "with the Ed25519 public key FILE; an export without one fails. JSON-lines "
                        "exports (ocsf, ecs) are checked by their signature")

    from .signing import DEFAULT_PRIVATE

    k = sub.add_parser(
        "keygen", help="make a key pair for signing exports",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Make an Ed25519 key pair: the private key (PEM PKCS8, mode 0600) for "
                    "export --sign, and the public key beside it as NAME.pub (PEM, 0644) for "
                    "verify --pubkey. Prints the paths and the public key's fingerprint (SHA-256 "
                    "of its raw bytes), never the private key. Never replaces a key without "
                    "--force. Keep the private key off the audited machine if you can: whoever "
                    "reads it can sign anything.",
        epilog="examples (as root):\n  auditd-lite keygen\n"
               "  auditd-lite keygen -o /root/keys/case-118.key")
    k.add_argument("-o", "--output", type=Path, metavar="PRIVATE",
                   help=f"the private key's file (default {DEFAULT_PRIVATE}); the public key "
                        "goes beside it, its suffix .pub")
    k.add_argument("--force", action="store_true", help="replace an existing key pair")


def note_set_aside(per_file: dict) -> None:
    """Name on stderr each set-aside file the records shown came from (dbfiles.set_aside_note)."""
    from .dbfiles import is_set_aside, set_aside_note

    for path, n in per_file.items():
        if n and is_set_aside(path):
            print(f"{PROG}: note: {n} record{'s' if n != 1 else ''} from {set_aside_note(path)}",
                  file=sys.stderr)


def warn_gaps(args, since_ns, until_ns, found, limit, oldest) -> None:
    """Coverage gaps touching the window a query answered for, on stderr."""
    from .investigate import gaps

    if limit is not None and found >= limit and oldest:
        since_ns = max(since_ns if since_ns is not None else oldest[0], oldest[0])
    db_dir = default_db_dir(args)
    gaps.warn(gaps.window_gaps(db_dir=db_dir, db_file=args.db, since_ns=since_ns, until_ns=until_ns),
              sys.stderr)


def cmd_tree(args) -> int:
    from . import dbfiles, timeparse
    from .investigate import tree

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

    from . import timeparse
    from .investigate import gaps

    since = timeparse.parse_time(args.since) if args.since else None
    until = timeparse.parse_time(args.until) if args.until else None
    found = gaps.window_gaps(db_dir=default_db_dir(args), db_file=args.db, since_ns=since, until_ns=until)
    for g in found:
        print(json.dumps(g.as_dict()) if args.format == "json" else g.message())
    if not found and args.format == "table":
        print("no coverage gaps")
    return 0


def cmd_sql(args) -> int:
    from . import dbfiles, timeparse
    from .investigate import sqlcmd
    from .errors import NotFound

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


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def exported(c: dict) -> str:
    """The first words of every export's summary line: how many records of each type."""
    seen = f", {c['seen']} seen at start" if c.get("seen") else ""
    return (f"exported {c['total']} records ({c['exec']} exec, {c['exec_failed']} exec_failed, "
            f"{c['exit']} exit{seen})")


def cmd_export(args) -> int:
    from .investigate import export, gaps
    from .config import DEFAULT_DB_DIR

    filters = filters_from_args(args)
    key = None
    if args.sign is not None:
        if args.format == "parquet":
            raise BadInput("--sign signs a sqlite, ocsf or ecs export, not a Parquet lake")
        from . import signing

        key = signing.load_private(args.sign)  # before any work: a bad key leaves nothing behind
    if args.format in SCHEMA_FORMATS:
        from .investigate import export_lines

        m = export_lines.export(args.db_dir or DEFAULT_DB_DIR, args.output, filters, args.format,
                                force=args.force, note=lambda text: print(f"{PROG}: note: {text}",
                                                                          file=sys.stderr))
        gaps.warn(m["_gaps"], sys.stderr)
        print(f"{exported(m['counts'])} as {args.format} lines from {plural(m['files'], 'file')} "
              f"to {args.output}; sha256 {m['sha256']} (in {args.output}.sha256)")
        if key is not None:
            signed(*export.sign(args.output, args.format, key, args.force, {"counts": m["counts"]}))
        return 0
    options = [f"{k}={v}" for k, v in sorted(vars(args).items()) if v not in (None, False)]
    if args.format == "parquet":
        return export_parquet(args, filters, options)
    m = export.export(args.db_dir or DEFAULT_DB_DIR, args.output, filters, force=args.force,
                      argv=options, progress_stream=sys.stderr,
                      note=lambda text: print(f"{PROG}: note: {text}", file=sys.stderr))
    gaps.warn(m["_gaps"], sys.stderr)
    print(f"{exported(m['counts'])} in {m['tables']['batches']} batches from "
          f"{plural(len(m['sources']), 'file')} to {args.output}; sha256 {m['sha256']} "
          f"(in {args.output}.sha256)")
    if key is not None:
        signed(*export.sign(args.output, "sqlite", key, args.force))
    return 0


def signed(path: Path, fp: str) -> None:
    print(f"signed with key {fp} (in {path})")


def export_parquet(args, filters, options) -> int:
    from .investigate import gaps, lake
    from .config import DEFAULT_DB_DIR

    m = lake.export_lake(args.db_dir or DEFAULT_DB_DIR, args.output, filters, force=args.force,
                         argv=options, progress_stream=sys.stderr,
                         note=lambda text: print(f"{PROG}: note: {text}", file=sys.stderr))
    gaps.warn(m["_gaps"], sys.stderr)
    print(f"{exported(m['counts'])} to {args.output} as {plural(len(m['files']), 'Parquet file')} "
          f"in {plural(len(m['partitions']), 'host/day partition')}")
    return 0


def cmd_seal(args) -> int:
    from . import seal, timeparse
    from .dbfiles import DEFAULT_SEAL_DIR

    state_dir = args.seal_state or DEFAULT_SEAL_DIR
    if args.seal_command == "setup":
        # whole seconds: durations are typed in s, m, h, d or w
        interval = (int(timeparse.parse_duration(args.interval)) if args.interval is not None
                    else seal.DEFAULT_INTERVAL_S)
        key = seal.setup(state_dir, interval, force=args.force)
        print(key.text(), flush=True)
        print(f"{PROG}: sealing set up in {state_dir}: key id {key.id}, epochs of "
              f"{timeparse.format_duration(key.interval_s * 10**9)}.\n"
              f"{PROG}: the line above is the verification key, shown this once: keep it off this "
              "machine (it is what `verify --verify-key` checks the seals with; whoever holds it "
              "can also forge them).\n"
              f"{PROG}: restart the daemon to begin sealing: systemctl restart auditd-lite",
              file=sys.stderr)
        return 0
    try:
        state = seal.State.load(state_dir)
    except seal.SealError as e:
        print(f"{PROG}: {one_line(str(e))}", file=sys.stderr)
        return 1
    last = state.recent[-1] if state.recent else None
    print(f"state     {seal.State.path(state_dir)}\nkey id    {state.key_id}\n"
          f"epoch     {state.epoch} (the next seal's)\n"
          f"interval  {timeparse.format_duration(state.interval_s * 10**9)}\n"
          f"set up    {timeparse.format_time(state.created_ns)}")
    if last is not None:
        print(f"last seal epoch {last['epoch']} ({last['reason']}) at "
              f"{timeparse.format_time(last['sealed_ns'])}, over batch {last['batch_id']}")
    return 0


def cmd_verify(args) -> int:
    from .investigate import verify

    if args.files and args.db_dir is not None:
        raise BadInput("give database files or --db-dir, not both")
    keys = []
    if args.verify_key:
        from .seal import VerifyKey

        keys = [VerifyKey.parse(text) for text in args.verify_key]
    pubkey = None
    if args.pubkey is not None:
        if not args.files:
            raise BadInput("--pubkey checks exports: give the export files")
        from . import signing

        pubkey = signing.load_public(args.pubkey)
    if args.files:
        report = verify.verify(list(args.files), verify_keys=keys, pubkey=pubkey)
    else:
        from .config import DEFAULT_DB_DIR

        report = verify.verify(db_dir=args.db_dir or DEFAULT_DB_DIR, verify_keys=keys)
    return verify.render(report, sys.stdout, sys.stderr)


def cmd_keygen(args) -> int:
    from . import signing

    private, public, fp = signing.generate(args.output or signing.DEFAULT_PRIVATE, force=args.force)
    print(f"private key: {private} (mode 0600: keep it secret, off this machine if you can)")
    print(f"public key:  {public} (give it to verify --pubkey)")
    print(f"fingerprint: {fp} (SHA-256 of the raw public key)")
    return 0


COMMANDS = {"run": cmd_run, "query": cmd_query, "stats": cmd_stats, "db": cmd_db,
            "doctor": cmd_doctor, "tree": cmd_tree, "gaps": cmd_gaps, "sql": cmd_sql, "export": cmd_export,
            "verify": cmd_verify, "seal": cmd_seal, "keygen": cmd_keygen}


def one_line(text: str) -> str:
    """Errors echo what the user typed: control characters are escaped so the message stays one
    line and cannot drive the terminal."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except AuditdLiteError as e:
        print(f"{PROG}: {one_line(str(e))}", file=sys.stderr)
        return e.exit_status
    except BrokenPipeError:
        # `auditd-lite query | head`: the reader left, which is not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: still no traceback for the user unless asked for
        if os.environ.get("AUDITD_LITE_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {e} "
              "(set AUDITD_LITE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
