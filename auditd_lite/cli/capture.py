"""The capture side's commands: run (the daemon) and doctor (can this host capture)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import runflags
from ..config import CAPTURE_MODES


def add_run_command(sub) -> None:
    r = sub.add_parser(
        "run", help="capture in the foreground (the daemon)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load the BPF programs and record every exec attempt, exec and exit.",
        epilog="examples:\n  auditd-lite run --print --db-dir ./var\n"
               "  auditd-lite run --min-duration-ms 500 --transport perfbuf\n"
               "  auditd-lite run --stream /var/log/auditd-lite/stream.jsonl")
    runflags.add_run_arguments(r)

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
    from ..capture import doctor

    return doctor.main(args.config, {"db_dir": args.db_dir, "transport": args.transport,
                                     "capture_mode": args.capture_mode},
                       compile_test=not args.no_compile, out=sys.stdout)


def cmd_run(args) -> int:
    from .. import config
    from ..daemon import logsetup

    overrides = runflags.overrides(args)
    settings = config.settings(args.config, overrides)
    logsetup.configure(settings.log_level)
    from ..capture import compiler, loader

    child = None
    if os.geteuid() == 0 and compiler.bcc_found():
        # the programs compile from now on, while the daemon's modules load and its database
        # opens (run says what is missing when this is skipped)
        child = compiler.Child(loader.ProgramSettings.for_run(settings))
    from ..daemon import main as daemon

    # SIGHUP reads the file again; flags given at start still win over it
    return daemon.run(settings, reread=lambda: config.settings(args.config, overrides), child=child)
