"""``python -m auditd_lite.cli``: the command, as the console script runs it."""

from . import entry

entry()
