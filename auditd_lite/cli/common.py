"""What every command's parser and handler share: the program name, the parser that fails in
one line, the number types of the flags, the database source flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BadInput

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
