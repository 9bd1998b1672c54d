"""Daemon settings: defaults, the TOML config file, command-line flags on top."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from .dbfiles import DEFAULT_DB_DIR, DEFAULT_SEAL_DIR
from .errors import BadInput
from .storage.rotation import RotationPolicy
from .timeparse import parse_duration

DEFAULT_CONFIG = Path("/etc/auditd-lite/auditd-lite.toml")
# The largest values load on every kernel of the VM matrix (tests/vm): the
# program's argument loop and buffers are sized by them. Measured: 6.12 and
# 6.18 load 1024 arguments, 5.10 and 6.1 refuse 384 (the verifier's
# complexity limit, E2BIG) and load 256.
MAX_ARGS_RANGE = (1, 256)
# how the execve calls are seen (capture/loader.py; docs/design.md, "Hooking execve, not every
# system call"): auto takes fentry where the kernel can, else raw_syscalls, and says why
CAPTURE_MODES = ("auto", "fentry", "raw_syscalls")
MAX_ARG_BYTES_RANGE = (256, 8192)


@dataclass
class RunSettings:
    db_dir: Path = DEFAULT_DB_DIR
    min_duration_ms: int = 0
    print: bool = False
    transport: str = "ringbuf"
    capture_mode: str = "auto"
    buffer_kb: int = 8192
    max_args: int = 128
    max_arg_bytes: int = 4096
    batch_size: int = 4000  # rows per transaction: fewer commits rewrite fewer index pages
    batch_ms: int = 200
    synchronous: str = "NORMAL"
    log_level: str = "info"
    rotate_size_mb: int = 0  # 0: no size limit
    rotate_interval: str = ""  # e.g. "1h", "1d"; empty: no time limit
    # retention (storage/retention.py; docs/design.md, "Retention"): on, the oldest rotated files
    # are removed (each recorded in the chain) while there are more than keep, while the
    # directory would pass max_size_mb, or while the file system has less than min_free_mb free;
    # 0 for max_size_mb and min_free_mb: journald's defaults, 10% and 15% of the file system,
    # each at most 4096 MiB. Off: nothing is ever removed (a full disk holds, then loses, records)
    retention: bool = True
    keep: int = 0  # rotated files kept at most; 0: no limit by count
    max_size_mb: int = 0
    min_free_mb: int = 0
    hash: bool = True  # SHA-256 of each exec's executable (capture/exehash.py)
    hash_limit_mb: int = 256  # larger executables are not read: hash_status too_large
    # the live stream (daemon/stream.py): a path, "-" for standard output, empty for none; its
    # rotation by size with a bounded number of rotated files, Tetragon's export file defaults
    # (--export-file-max-size-mb 10, --export-file-max-backups 5)
    stream: str = ""
    stream_max_size_mb: int = 10
    stream_max_files: int = 5  # rotated files kept besides PATH; 0 keeps all
    # forward-secure sealing (auditd_lite/seal.py): on when `auditd-lite seal setup` has made its
    # state here; the epoch's length is the state's
    seal_state: Path = DEFAULT_SEAL_DIR

    def validate(self, where: str = "settings") -> "RunSettings":
        def bad(key, why):
            raise BadInput(f"{where}: {key} {why}")

        if self.min_duration_ms < 0:
            bad("min_duration_ms", "must be 0 or more")
        if self.transport not in ("ringbuf", "perfbuf"):
            bad("transport", "must be ringbuf or perfbuf")
        if self.capture_mode not in CAPTURE_MODES:
            bad("capture_mode", f"must be {', '.join(CAPTURE_MODES[:-1])} or {CAPTURE_MODES[-1]}")
        if not 4 <= self.buffer_kb <= 1024 * 1024:
            bad("buffer_kb", "must be between 4 and 1048576")
        for key, (lo, hi) in (("max_args", MAX_ARGS_RANGE), ("max_arg_bytes", MAX_ARG_BYTES_RANGE)):
            if not lo <= getattr(self, key) <= hi:
                bad(key, f"must be between {lo} and {hi}")
        if not 1 <= self.batch_size <= 100_000:
            bad("batch_size", "must be between 1 and 100000")
        if not 1 <= self.batch_ms <= 60_000:
            bad("batch_ms", "must be between 1 and 60000")
        if self.synchronous.upper() not in ("NORMAL", "FULL"):
            bad("synchronous", "must be NORMAL or FULL")
        self.synchronous = self.synchronous.upper()
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            bad("log_level", "must be debug, info, warning or error")
        if not 1 <= self.hash_limit_mb <= 1024 * 1024:
            bad("hash_limit_mb", "must be between 1 and 1048576")
        if not 1 <= self.stream_max_size_mb <= 1024 * 1024:
            bad("stream_max_size_mb", "must be between 1 and 1048576")
        if self.print and self.stream == "-":
            bad("stream", "'-' is standard output, where print writes too: use one of them")
        for key in ("rotate_size_mb", "keep", "max_size_mb", "min_free_mb", "stream_max_files"):
            if getattr(self, key) < 0:
                bad(key, "must be 0 or more")
        if not self.retention:
            given = [k for k in ("keep", "max_size_mb", "min_free_mb") if getattr(self, k)]
            if given:
                bad(given[0], "removes files, and retention is off (retention = false keeps "
                    "everything): turn retention on, or leave it out")
        if self.rotate_interval:
            try:
                parse_duration(self.rotate_interval)
            except BadInput as e:
                bad("rotate_interval", f"is invalid: {e}")
        return self

    def rotation_policy(self) -> RotationPolicy:
        return RotationPolicy(
            size_mb=self.rotate_size_mb or None,
            interval_s=parse_duration(self.rotate_interval) if self.rotate_interval else None,
            retention=self.retention, keep=self.keep, max_size_mb=self.max_size_mb,
            min_free_mb=self.min_free_mb)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["db_dir"] = str(self.db_dir)
        d["seal_state"] = str(self.seal_state)
        return d


def load_file(path: Path, required: bool) -> dict:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise BadInput(f"config file not found: {path}") from None
        return {}
    except PermissionError:
        raise BadInput(f"config file not readable: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"config file {path}: {e}") from None
    types = {f.name: f.type for f in fields(RunSettings)}
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in types:
            raise BadInput(f"config file {path}: unknown key '{key}'")
        want = {"int": int, "bool": bool, "str": str, "Path": str}[types[name]]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise BadInput(f"config file {path}: key '{key}' must be {want.__name__}")
        out[name] = Path(value) if types[name] == "Path" else value
    return out


def settings(config: Path | None, overrides: dict) -> RunSettings:
    """Defaults, then the config file, then flags that were given (not None)."""
    path = config or DEFAULT_CONFIG
    values = load_file(path, required=config is not None)
    s = RunSettings(**values)
    s.validate(f"config file {path}")
    for key, value in overrides.items():
        if value is not None:
            setattr(s, key, value)
    return s.validate("command line")
