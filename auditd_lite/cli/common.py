"""What every command's parser and handler share: the program name, the parser that fails in
one line and the number types of the flags (argtypes.py's), the database source flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import Parser, any_int, nonneg_int, pos_int

__all__ = ["PROG", "EVENTS", "TIME_HELP", "Parser", "any_int", "nonneg_int", "pos_int",
           "add_db_source", "add_window", "default_db_dir", "plural", "one_line"]

PROG = "auditd-lite"
EVENTS = ("exec", "exit", "exec_failed")
# what a time flag takes (timeparse.parse_time)
TIME_HELP = "ISO 8601 time or an age like 10m, 2h, 3d"


def add_db_source(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--db-dir", type=Path, metavar="DIR",
                   help="read every database file in DIR (default /var/lib/auditd-lite)")
    g.add_argument("--db", type=Path, metavar="FILE", help="read one database file, such as an export")



def add_window(p: argparse.ArgumentParser) -> None:
    """--since and --until, the window a reading command reads."""
    p.add_argument("--since", metavar="T", help=TIME_HELP)
    p.add_argument("--until", metavar="T", help=TIME_HELP)


def default_db_dir(args) -> Path | None:
    if args.db is not None:
        return None
    from ..config import DEFAULT_DB_DIR

    return args.db_dir or DEFAULT_DB_DIR


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def one_line(text: str) -> str:
    """Errors echo what the user typed: control characters are escaped so the message stays one
    line and cannot drive the terminal."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
