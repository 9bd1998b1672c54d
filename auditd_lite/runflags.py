"""`auditd-lite run`'s flags, each named after the config.RunSettings field it sets: one owner
for the command (cli/capture.py) and for doctor, which reads the flags a unit's ExecStart gives
`run` (capture/doctor/unit.py) without importing the command."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from .argtypes import Parser, nonneg_int, pos_int
from .config import CAPTURE_MODES, RunSettings

PROG = "auditd-lite run"


def add_run_arguments(r) -> None:
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


def overrides(args) -> dict:
    """What the parsed flags override, as config.settings takes it: each RunSettings field that
    has a flag, None where the flag was not given."""
    return {f.name: getattr(args, f.name, None) for f in fields(RunSettings)}


def parse(flags: list[str]) -> tuple[Path | None, dict]:
    """`run FLAGS` as the command parses them: (--config, the overrides); BadInput, naming the
    flag, for one it refuses."""
    p = Parser(prog=PROG, add_help=False)
    add_run_arguments(p)
    args = p.parse_args(flags)
    return args.config, overrides(args)
