"""The capture side's commands: run (the daemon) and doctor (can this host capture)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..config import CAPTURE_MODES
from .common import nonneg_int, pos_int


def add_run_command(sub) -> None:
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
    from ..capture import compiler, loader

    child = None
    if os.geteuid() == 0 and compiler.bcc_found():
        # the programs compile from now on, while the daemon's modules load and its database
        # opens (run says what is missing when this is skipped)
        child = compiler.Child(loader.ProgramSettings.for_run(settings))
    from ..daemon import main as daemon

    # SIGHUP reads the file again; flags given at start still win over it
    return daemon.run(settings, reread=lambda: config.settings(args.config, overrides), child=child)
