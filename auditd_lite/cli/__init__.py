"""The `auditd-lite` command: parses options and calls the library, nothing more.

One module per group of commands (capture, search, hunt, evidence, storage), each adding its parsers
and holding its handlers; this one puts them together in the order `--help` lists them. Heavy
modules are imported inside the commands that need them, so that `query` starts fast and never
loads bcc or SQLAlchemy.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..errors import AuditdLiteError
from . import capture, evidence, hunt, search, storage
from .common import PROG, Parser, one_line

__all__ = ["PROG", "build_parser", "main", "entry"]


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Process audit logger: every exec attempt, exec and exit, "
               "captured with eBPF into SQLite, and the tools to investigate them.",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    capture.add_run_command(sub)
    search.add_query_command(sub)
    search.add_tree_gaps_and_sql_commands(sub)
    hunt.add_hunt_command(sub)
    evidence.add_evidence_commands(sub)
    storage.add_storage_commands(sub)
    capture.add_doctor_command(sub)
    return p


COMMANDS = {"run": capture.cmd_run, "query": search.cmd_query, "stats": storage.cmd_stats,
            "db": storage.cmd_db, "doctor": capture.cmd_doctor, "tree": search.cmd_tree,
            "gaps": search.cmd_gaps, "sql": search.cmd_sql, "export": evidence.cmd_export, "verify": evidence.cmd_verify,
            "seal": storage.cmd_seal, "keygen": evidence.cmd_keygen, "hunt": hunt.cmd_hunt}


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

