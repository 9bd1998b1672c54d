"""Compiles and attaches the BPF program through bcc: the only module that imports bcc."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Callable

import structlog

from . import btf, records
from .errors import CannotCapture
from .resources import resource_dir

log = structlog.get_logger("auditd_lite.loader")

BPF_DIR = resource_dir("bpf")
PROGRAM = "auditd_lite.bpf.c"
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

TRACEPOINTS = (
    "syscalls:sys_enter_execve", "syscalls:sys_exit_execve",
    "syscalls:sys_enter_execveat", "syscalls:sys_exit_execveat",
    "sched:sched_process_exec", "sched:sched_process_exit",
)

# (macro, struct, field path, expected size): every kernel field the program reads
FIELDS = (
    ("OFF_TASK_REAL_PARENT", "task_struct", "real_parent", 8),
    ("OFF_TASK_GROUP_LEADER", "task_struct", "group_leader", 8),
    ("OFF_TASK_TGID", "task_struct", "tgid", 4),
    ("OFF_TASK_START_TIME", "task_struct", "start_time", 8),
    ("OFF_TASK_EXIT_CODE", "task_struct", "exit_code", 4),
    ("OFF_TASK_CRED", "task_struct", "cred", 8),
    ("OFF_TASK_MM", "task_struct", "mm", 8),
    ("OFF_TASK_SIGNAL", "task_struct", "signal", 8),
    ("OFF_CRED_EUID", "cred", "euid", 4),
    ("OFF_MM_ARG_START", "mm_struct", "arg_start", 8),
    ("OFF_MM_ARG_END", "mm_struct", "arg_end", 8),
    ("OFF_SIGNAL_LIVE", "signal_struct", "live", 4),
)
# only with CONFIG_AUDIT(SYSCALL); without them auid and session read as unset
AUDIT_FIELDS = (
    ("OFF_TASK_LOGINUID", "task_struct", "loginuid", 4),
    ("OFF_TASK_SESSIONID", "task_struct", "sessionid", 4),
)


@dataclass(frozen=True)
class ProgramSettings:
    """Everything fixed before load; changing any of it means reloading."""

    transport: str = "ringbuf"  # or perfbuf
    buffer_kb: int = 8192
    min_duration_ns: int = 0
    max_args: int = 128
    arg_bytes: int = 4096
    filename_bytes: int = 1024
    stash_entries: int = 512


def tracefs_dir() -> str | None:
    for d in TRACEFS:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    return None


def tracepoint_has_field(category: str, event: str, field: str) -> bool:
    d = tracefs_dir()
    if d is None:
        return False
    try:
        with open(os.path.join(d, "events", category, event, "format")) as f:
            return any(f" {field};" in line for line in f)
    except OSError:
        return False


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def kernel_offsets(btf_path: str = btf.VMLINUX_BTF) -> tuple[dict[str, str], str]:
    """-D values for every field offset, and where they came from (btf | headers)."""
    try:
        types = btf.BTF.from_file(btf_path)
    except (OSError, btf.BTFError) as e:
        log.warning("btf_unavailable", path=btf_path, error=str(e),
                    fallback="header layouts: field reads may be wrong on this kernel")
        defs = {m: f"offsetof(struct {s}, {p})" for m, s, p, _ in FIELDS + AUDIT_FIELDS}
        defs["OFF_SIGNAL_LIVE"] = "offsetof(struct signal_struct, live)"
        return defs, "headers"
    defs = {}
    for macro, struct_name, path, size in FIELDS:
        field = types.field(struct_name, path)
        if field.size != size:
            raise CannotCapture(f"kernel BTF: {struct_name}.{path} is {field.size} bytes, "
                                f"expected {size}; this kernel is not supported")
        defs[macro] = str(field.offset)
    for macro, struct_name, path, size in AUDIT_FIELDS:
        try:
            field = types.field(struct_name, path)
        except btf.BTFError:
            break
        if field.size == size:
            defs[macro] = str(field.offset)
    return defs, "btf"


def cflags(settings: ProgramSettings, offsets: dict[str, str]) -> list[str]:
    if not 1 <= settings.max_args <= 1024:
        raise ValueError("max_args must be 1..1024")
    if not 256 <= settings.arg_bytes <= 8192:
        raise ValueError("arg_bytes must be 256..8192")
    pages = _pow2_at_least(max(1, settings.buffer_kb // 4))
    ncpu = os.cpu_count() or 1
    # wake the reader well before the buffer could fill between two polls
    wakeup_every = max(1, min(1024, pages * 4096 // (8 * ncpu * 1024)))
    defs = {
        "MIN_DURATION_NS": f"{settings.min_duration_ns}ULL",
        "MAX_ARGS": settings.max_args,
        "ARG_BYTES": settings.arg_bytes,
        "ARGS_BUF": _pow2_at_least(settings.arg_bytes),
        "FILENAME_BUF": settings.filename_bytes,
        "RINGBUF_PAGES": pages,
        "WAKEUP_EVERY": wakeup_every,
        "STASH_ENTRIES": settings.stash_entries,
        "HAVE_GROUP_DEAD": int(tracepoint_has_field("sched", "sched_process_exit", "group_dead")),
        **offsets,
    }
    flags = [f"-D{k}={v}" for k, v in defs.items()]
    if settings.transport == "perfbuf":
        flags.append("-DUSE_PERFBUF")
    if offsets.get("OFF_TASK_REAL_PARENT", "").startswith("offsetof"):
        flags.append("-DUSE_HEADER_LAYOUT")
    flags.append(f"-I{BPF_DIR}")
    return flags


def import_bcc():
    try:
        import bcc  # noqa: PLC0415 - imported late: only the capture side needs it
    except ImportError as e:
        raise CannotCapture(
            "bcc's Python module is missing: install Debian's python3-bpfcc "
            "(apt-get install python3-bpfcc) and use a Python that sees it "
            f"(a venv made with /usr/bin/python3 --system-site-packages) [{e}]") from None
    return bcc


def _release_compiler_memory() -> None:
    """Hand back to the system the heap clang and LLVM used while compiling."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory stays, nothing breaks
        pass


class Programs:
    """The loaded programs and their buffer, as one unit.

    ``on_record(raw: bytes)`` is called for every record during ``poll``;
    the bytes are already copied out of the buffer.
    """

    def __init__(self, settings: ProgramSettings, on_record: Callable[[bytes], None],
                 on_lost: Callable[[int], None] | None = None):
        bcc = import_bcc()
        if tracefs_dir() is None:
            raise CannotCapture("tracefs is not mounted: mount -t tracefs tracefs /sys/kernel/tracing")
        offsets, self.offsets_source = kernel_offsets()
        self.settings = settings
        flags = cflags(settings, offsets)
        try:
            self.bpf = bcc.BPF(src_file=str(BPF_DIR / PROGRAM), cflags=flags)
        except Exception as e:  # bcc raises bare Exception for compile and load failures
            raise CannotCapture(f"could not compile or load the BPF program: {e}; "
                                "run 'auditd-lite doctor'") from None
        self._attached = list(TRACEPOINTS)
        _release_compiler_memory()
        events = self.bpf["events"]
        if settings.transport == "perfbuf":
            def perf_cb(_cpu, data, size):
                on_record(ctypes.string_at(data, size))

            def lost_cb(*a):
                if on_lost:
                    on_lost(a[-1])

            pages = _pow2_at_least(max(1, settings.buffer_kb // 4))
            events.open_perf_buffer(perf_cb, page_cnt=pages, lost_cb=lost_cb)
            self._poll = self.bpf.perf_buffer_poll
            self._consume = lambda: self.bpf.perf_buffer_poll(0)
        else:
            def ring_cb(_ctx, data, size):
                # the data pointer is into ring memory that is reused once we return
                on_record(ctypes.string_at(data, size))
                return 0

            events.open_ring_buffer(ring_cb)
            self._poll = self.bpf.ring_buffer_poll
            self._consume = self.bpf.ring_buffer_consume
        self._counters = self.bpf["counters"]
        log.info("programs_attached", tracepoints=len(self._attached),
                 offsets=self.offsets_source, transport=settings.transport,
                 buffer_kb=settings.buffer_kb, min_duration_ns=settings.min_duration_ns)

    def poll(self, timeout_ms: int) -> None:
        self._poll(timeout_ms)
        # records submitted without a wakeup are only found by consuming
        self._consume()

    def counters(self) -> list[int]:
        """Kernel-side counters (records.CNT_*), summed over CPUs."""
        out = []
        for i in range(records.CNT_MAX):
            out.append(sum(int(v) for v in self._counters[ctypes.c_int(i)]))
        return out

    def detach(self) -> None:
        """Stop capture; the buffer stays readable so it can be drained."""
        # exits first: a process whose exit is recorded then has its exec recorded too
        for tp in reversed(self._attached):
            try:
                self.bpf.detach_tracepoint(tp)
            except Exception:  # already gone: nothing left to stop
                pass
        self._attached = []

    def drain(self) -> None:
        self._consume()

    def close(self) -> None:
        self.bpf.cleanup()
