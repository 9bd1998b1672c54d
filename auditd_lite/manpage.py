"""auditd-lite(1) generated from the argparse parsers, so the man page and `--help` never disagree.

    python3 -m auditd_lite.manpage > auditd-lite.1
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

from . import __version__
from .cli import PROG, build_parser

FILES = (
    ("/etc/auditd-lite/auditd-lite.toml", "Settings for run; keys are the flag names with "
     "underscores. Flags override the file. Re-read on SIGHUP (systemctl reload auditd-lite)."),
    ("/var/lib/auditd-lite/", "The databases: audit.db (live) and rotated, read-only "
     "audit-FIRST-LAST.db files. Kept when the package is purged."),
    ("/lib/systemd/system/auditd-lite.service", "The hardened systemd unit (Type=notify, watchdog)."),
    ("/lib/systemd/system/auditd-lite-hunt.service", "hunt --follow as a service, installed disabled "
     "(systemctl enable --now auditd-lite-hunt): findings in the journal and in "
     "/var/log/auditd-lite/findings.jsonl."),
)
EXIT_STATUS = (
    ("0", "success"),
    ("1", "nothing found (query, hunt), verification failed, or doctor found a problem"),
    ("2", "bad usage or bad input, with a one-line error naming the problem; "
          "for run also: this host or user cannot capture"),
)


def esc(text: str) -> str:
    """Roff-escape text; a line starting with '.' or a quote would be read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str | None, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order they were added."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            out += [(name, helps.get(name), p) for name, p in action.choices.items()]
    return out


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            metavar = action.metavar or (action.dest.upper() if action.nargs != 0 else None)
            if action.choices and not action.metavar:
                metavar = "|".join(map(str, action.choices))
            names = ", ".join(f"\\fB{esc(o)}\\fR" for o in action.option_strings)
            head = names + (f" \\fI{esc(metavar)}\\fR" if metavar and action.nargs != 0 else "")
        else:
            head = f"\\fI{esc(action.metavar or action.dest)}\\fR"
        lines += [".TP", head, esc(action.help or "")]
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


def _command(name: str, help_: str | None, parser: argparse.ArgumentParser, level: str) -> list[str]:
    lines = [f".{level} {esc(name)}", f"\\fB{esc(_usage(parser))}\\fR", ".PP",
             esc(parser.description or help_ or "")]
    lines += _options(parser)
    if parser.epilog:
        lines += [".PP", ".nf", esc(parser.epilog), ".fi"]
    for sub_name, sub_help, sub in subcommands(parser):
        lines += _command(f"{name} {sub_name}", sub_help, sub, "SS")
    return lines


def render(parser: argparse.ArgumentParser | None = None, date: str | None = None) -> str:
    parser = parser or build_parser()
    # SOURCE_DATE_EPOCH: a reproducible page when the package is built twice
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    date = date or (datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc) if epoch
                    else datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d")
    lines = [
        f'.TH AUDITD\\-LITE 1 "{date}" "{PROG} {__version__}" "User Commands"',
        ".SH NAME", f"{PROG} \\- {esc(parser.description or '')}",
        ".SH SYNOPSIS", f"\\fB{PROG}\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        esc("A daemon (auditd-lite run, normally the systemd service auditd-lite) loads eBPF "
            "programs on the execve and execveat syscall tracepoints, sched_process_exec and "
            "sched_process_exit, and records every exec attempt, exec and exit into SQLite. "
            "The other commands read those databases; they need neither root nor bcc."),
        ".SH COMMANDS",
    ]
    for name, help_, sub in subcommands(parser):
        lines += _command(name, help_, sub, "SS")
    lines.append(".SH FILES")
    for path, text in FILES:
        lines += [".TP", f"\\fI{esc(path)}\\fR", esc(text)]
    lines.append(".SH EXIT STATUS")
    for code, text in EXIT_STATUS:
        lines += [".TP", code, esc(text)]
    lines += [".SH SIGNALS", ".TP", "SIGTERM, SIGINT",
              esc("run stops capture, drains the kernel buffer, writes every record and exits 0."),
              ".TP", "SIGHUP",
              esc("run re-reads the config file and applies log_level and the rotation keys; "
                  "it logs which changed keys need a restart."),
              ".SH SEE ALSO", "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBsqlite3\\fR(1)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
