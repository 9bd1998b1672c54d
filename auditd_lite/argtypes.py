"""The flags' number types and the parser that fails in one line: the command's (cli/), and
doctor's reading of the flags a unit's ExecStart gives `run` (runflags.py)."""

from __future__ import annotations

import argparse

from .errors import BadInput


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
