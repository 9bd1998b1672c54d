"""The commands about the files themselves: stats, db (schema revisions) and seal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import PROG, Parser, add_db_source, default_db_dir, one_line


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


def cmd_stats(args) -> int:
    import json

    from .. import dbfiles
    from ..investigate import stats

    db_dir = default_db_dir(args)
    result = stats.collect(dbfiles.database_files(db_dir=db_dir, db_file=args.db), db_dir)
    if args.format == "json":
        print(json.dumps(result))
    else:
        print(stats.render_table(result))
    return 0


def cmd_db(args) -> int:
    from .. import dbfiles

    if args.db_command == "current":
        for path in dbfiles.database_files(db_dir=default_db_dir(args), db_file=args.db):
            conn = dbfiles.open_ro(path)
            try:
                print(f"{path}: {dbfiles.revision_of(conn) or 'unknown'}")
            finally:
                conn.close()
        return 0
    from ..config import DEFAULT_DB_DIR
    from ..storage.store import upgrade_live

    print(upgrade_live(args.db_dir or DEFAULT_DB_DIR))
    return 0


def cmd_seal(args) -> int:
    from .. import seal, timeparse
    from ..dbfiles import DEFAULT_SEAL_DIR

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
