"""The BPF programs: what they are built from (the running kernel's facts and the run's
settings), and, once the compiler child has loaded them, their attachment and their buffer.

No bcc here: the daemon imports this module, and bcc is the compiler child's
alone (capture/compiler.py; docs/design.md, "The daemon never maps the compiler")."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Callable

import structlog

from . import btf, compiler, libbpf, records, ringbuf
from .. import config
from ..errors import CannotCapture
from ..resources import resource_dir

log = structlog.get_logger("auditd_lite.capture.loader")

BPF_DIR = resource_dir("bpf")
PROGRAM = "auditd_lite.bpf.c"
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# The raw tracepoints the program attaches to, by BPF_RAW_TRACEPOINT_OPEN (no
# perf_event_open: docs/design.md, "Attaching without perf_event_open"), in
# the order they are attached. sched_process_free only where the kernel's
# sched_process_exit has no group_dead argument (exit claims, see the program).
RAW_TRACEPOINTS = ("sys_enter", "sys_exit", "sched_process_exec", "sched_process_exit")
CLAIM_TRACEPOINT = "sched_process_free"
# the argument sched_process_exit gained in 6.16: (task, bool group_dead)
EXIT_ARGS_GROUP_DEAD = [8, 1]

# native syscall numbers of execve and execveat, by machine
SYSCALLS = {"x86_64": (59, 322)}

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
    ("OFF_SIGNAL_FLAGS", "signal_struct", "flags", 4),
    ("OFF_SIGNAL_GROUP_EXIT_CODE", "signal_struct", "group_exit_code", 4),
    ("OFF_TASK_PID", "task_struct", "pid", 4),
    ("OFF_TASK_TI_STATUS", "task_struct", "thread_info.status", 4),
    ("OFF_BPRM_FILENAME", "linux_binprm", "filename", 8),
    ("OFF_REGS_DI", "pt_regs", "di", 8),
    ("OFF_REGS_SI", "pt_regs", "si", 8),
    ("OFF_REGS_DX", "pt_regs", "dx", 8),
    ("OFF_REGS_ORIG_AX", "pt_regs", "orig_ax", 8),
)
# the working directory's walk (struct mount is internal: BTF only); all or none, and without
# them every record's working directory is unknown (FLAG_NO_CWD). mount.mnt is a struct
# vfsmount, whose size varies by kernel: None, not checked.
CWD_FIELDS = (
    ("OFF_TASK_FS", "task_struct", "fs", 8),
    ("OFF_FS_PWD_MNT", "fs_struct", "pwd.mnt", 8),
    ("OFF_FS_PWD_DENTRY", "fs_struct", "pwd.dentry", 8),
    ("OFF_FS_ROOT_MNT", "fs_struct", "root.mnt", 8),
    ("OFF_FS_ROOT_DENTRY", "fs_struct", "root.dentry", 8),
    ("OFF_VFSMOUNT_MNT_ROOT", "vfsmount", "mnt_root", 8),
    ("OFF_MOUNT_MNT", "mount", "mnt", None),
    ("OFF_MOUNT_PARENT", "mount", "mnt_parent", 8),
    ("OFF_MOUNT_MOUNTPOINT", "mount", "mnt_mountpoint", 8),
    ("OFF_DENTRY_PARENT", "dentry", "d_parent", 8),
    ("OFF_DENTRY_NAME", "dentry", "d_name.name", 8),
    ("OFF_DENTRY_NAME_LEN", "dentry", "d_name.len", 4),
    ("OFF_DENTRY_HASH_PPREV", "dentry", "d_hash.pprev", 8),
    ("OFF_TASK_NSPROXY", "task_struct", "nsproxy", 8),
    ("OFF_NSPROXY_MNT_NS", "nsproxy", "mnt_ns", 8),
    ("OFF_MNT_NS_INUM", "mnt_namespace", "ns.inum", 4),
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
    # the working directory's walk: names and bytes (PATH_MAX is 4096; a deeper or longer
    # directory is recorded truncated, its innermost names kept)
    cwd_components: int = 64
    cwd_bytes: int = 1024
    stash_entries: int = 512
    # claims wait for the leader's RCU-delayed free (lazy RCU: up to ~10 s),
    # so this many exits may be outstanding; an older claim evicted is harmless
    claim_entries: int = 32768
    # claim exits in a map even where sched_process_exit says group_dead, so
    # the older kernels' path can be tested on a newer one
    force_exit_claims: bool = False
    # another program source than BPF_DIR / PROGRAM: tests give doctor one the verifier refuses
    program_file: str | None = None

    def source(self) -> str:
        return self.program_file or str(BPF_DIR / PROGRAM)

    @classmethod
    def for_run(cls, settings: config.RunSettings) -> "ProgramSettings":
        """The programs' settings for a run's settings: what `run` and `doctor` load."""
        return cls(transport=settings.transport, buffer_kb=settings.buffer_kb,
                   min_duration_ns=settings.min_duration_ms * 1_000_000,
                   max_args=settings.max_args, arg_bytes=settings.max_arg_bytes)


# the tracefs category of each raw tracepoint the program may attach
TRACEFS_CATEGORY = {"sys_enter": "raw_syscalls", "sys_exit": "raw_syscalls",
                    "sched_process_exec": "sched", "sched_process_exit": "sched",
                    CLAIM_TRACEPOINT: "sched"}


def tracefs_dir(candidates: tuple[str, ...] = TRACEFS) -> str | None:
    for d in candidates:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    return None


def tracepoint_dir(tracefs: str, tracepoint: str) -> str:
    """Where tracefs describes one of the program's tracepoints (its ``format``)."""
    return os.path.join(tracefs, "events", TRACEFS_CATEGORY.get(tracepoint, "sched"), tracepoint)


def has_group_dead(types: btf.BTF | None, tracefs: str | None = None) -> bool | None:
    """Whether sched_process_exit tells which thread ended the group: from the
    raw tracepoint's prototype in BTF, else from the trace record's fields in
    tracefs (they follow the arguments); None when neither can say."""
    if types is not None:
        return types.tracepoint_args("sched_process_exit") == EXIT_ARGS_GROUP_DEAD
    if tracefs is None:
        return None
    try:
        with open(os.path.join(tracepoint_dir(tracefs, "sched_process_exit"), "format")) as f:
            return any(" group_dead;" in line for line in f)
    except OSError:
        return False


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


@dataclass(frozen=True)
class KernelFacts:
    """What the program is compiled for, read from the running kernel."""

    offsets: dict[str, str]  # -D value of every OFF_* macro
    source: str  # where the offsets came from: btf | headers
    group_dead: bool  # sched_process_exit tells which thread ended the group


def kernel_facts(btf_path: str = btf.VMLINUX_BTF) -> KernelFacts:
    try:
        types = btf.BTF.from_file(btf_path)
    except (OSError, btf.BTFError) as e:
        log.warning("btf_unavailable", path=btf_path, error=str(e),
                    fallback="header layouts: field reads may be wrong on this kernel")
        defs = {m: f"offsetof(struct {s}, {p})" for m, s, p, _ in FIELDS + AUDIT_FIELDS}
        return KernelFacts(defs, "headers", bool(has_group_dead(None, tracefs_dir())))
    return KernelFacts(btf_offsets(types), "btf", bool(has_group_dead(types)))


def btf_offsets(types: btf.BTF) -> dict[str, str]:
    """-D values for every field offset the program reads, from the kernel's BTF."""
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
    cwd, why = cwd_offsets(types)
    if why:
        log.warning("cwd_unavailable", why=why, effect="working directories are not recorded")
    defs.update(cwd)
    return defs


def cwd_offsets(types: btf.BTF) -> tuple[dict[str, str], str | None]:
    """(-D values of CWD_FIELDS, None), or ({}, why not) when one does not resolve: the walk
    needs all of them."""
    cwd = {}
    for macro, struct_name, path, size in CWD_FIELDS:
        try:
            field = types.field(struct_name, path)
        except btf.BTFError as e:
            return {}, f"{struct_name}.{path}: {e}"
        if size is not None and field.size != size:
            return {}, f"{struct_name}.{path} is {field.size} bytes, expected {size}"
        cwd[macro] = str(field.offset)
    return cwd, None


def syscall_numbers(machine: str | None = None) -> tuple[int, int]:
    machine = machine or platform.machine()
    try:
        return SYSCALLS[machine]
    except KeyError:
        raise CannotCapture(f"this machine is {machine}: the program reads x86_64 system call "
                            "registers and numbers, other machines are not supported") from None


def claims_exits(settings: ProgramSettings, facts: KernelFacts) -> bool:
    return settings.force_exit_claims or not facts.group_dead


def cflags(settings: ProgramSettings, facts: KernelFacts) -> list[str]:
    for value, (lo, hi) in ((settings.max_args, config.MAX_ARGS_RANGE),
                            (settings.arg_bytes, config.MAX_ARG_BYTES_RANGE)):
        if not lo <= value <= hi:
            raise ValueError(f"{value} is outside {lo}..{hi}: the program is not sized for it")
    nr_execve, nr_execveat = syscall_numbers()
    pages = ringbuf_pages(settings)
    ncpu = os.cpu_count() or 1
    # wake the reader well before the buffer could fill between two polls
    wakeup_every = max(1, min(1024, pages * 4096 // (8 * ncpu * 1024)))
    defs = {
        "MIN_DURATION_NS": f"{settings.min_duration_ns}ULL",
        "MAX_ARGS": settings.max_args,
        "ARG_BYTES": settings.arg_bytes,
        "ARGS_BUF": _pow2_at_least(settings.arg_bytes),
        "FILENAME_BUF": settings.filename_bytes,
        "CWD_COMPONENTS": settings.cwd_components,
        "CWD_BYTES": settings.cwd_bytes,
        "CWD_BUF": _pow2_at_least(settings.cwd_bytes),
        "RINGBUF_PAGES": pages,
        "WAKEUP_EVERY": wakeup_every,
        "STASH_ENTRIES": settings.stash_entries,
        "CLAIM_ENTRIES": settings.claim_entries,
        "HAVE_GROUP_DEAD": int(not claims_exits(settings, facts)),
        "NR_EXECVE": nr_execve,
        "NR_EXECVEAT": nr_execveat,
        **facts.offsets,
    }
    flags = [f"-D{k}={v}" for k, v in defs.items()]
    if settings.transport == "perfbuf":
        flags.append("-DUSE_PERFBUF")
    if facts.source == "headers":
        flags.append("-DUSE_HEADER_LAYOUT")
    flags.append(f"-I{BPF_DIR}")
    return flags


def tracepoints(settings: ProgramSettings, facts: KernelFacts) -> list[str]:
    """The raw tracepoints the programs attach to, in attach order."""
    return list(RAW_TRACEPOINTS) + ([CLAIM_TRACEPOINT] if claims_exits(settings, facts) else [])


def ringbuf_pages(settings: ProgramSettings) -> int:
    """Pages of the ring buffer, or of each CPU's perf buffer: a power of two."""
    return _pow2_at_least(max(1, settings.buffer_kb // 4))


class Programs:
    """The loaded programs and their buffer, as one unit.

    Compiled and loaded by a child process (capture/compiler.py), attached
    here. ``poll`` and ``drain`` append every record to ``sink`` as bytes,
    already copied out of the buffer.
    """

    def __init__(self, settings: ProgramSettings, sink: list,
                 child: compiler.Child | None = None):
        """``child``: a compiler child already started with these settings (the daemon starts
        it early, to compile while it opens the database)."""
        self.settings = settings
        self._links: list[tuple[str, int]] = []
        self.buffer = None
        compiled = (child or compiler.Child(settings)).result()
        self._compiled = compiled
        self.offsets_source = compiled.offsets_source
        self.exit_claims = compiled.exit_claims
        # the claims map where the program claims exits (None elsewhere)
        self.claims_fd = compiled.maps.get(compiler.CLAIMS_MAP)
        try:
            self._counters = libbpf.PerCpuCounters(compiled.maps["counters"], records.CNT_MAX)
            events = compiled.maps["events"]
            if settings.transport == "perfbuf":
                perf = self.buffer = libbpf.PerfBuffers(events, ringbuf_pages(settings), sink.append)
                self._wait, self._consume = perf.poll, perf.consume
            else:
                ring = self.buffer = ringbuf.RingReader(events)
                self._wait, self._consume = ring.wait, lambda: ring.read(sink)
            # attached last, once there is somewhere for records to go
            for tp, fd in compiled.programs.items():
                self._links.append((tp, libbpf.raw_tracepoint_open(tp, fd)))
        except BaseException:
            self.close()
            raise
        log.info("programs_attached", raw_tracepoints=[tp for tp, _ in self._links],
                 offsets=self.offsets_source, exit_claims=self.exit_claims,
                 transport=settings.transport, buffer_kb=settings.buffer_kb,
                 min_duration_ns=settings.min_duration_ns)

    def poll(self, timeout_ms: int) -> None:
        """Until the kernel wakes us or the timeout, then take what is there."""
        self._wait(timeout_ms)
        # records submitted without a wakeup are only found by consuming
        self._consume()

    def counters(self) -> list[int]:
        """Kernel-side counters (records.CNT_*), summed over CPUs."""
        return self._counters.read()

    def detach(self) -> None:
        """Stop capture; the buffer stays readable so it can be drained."""
        # exits first: a process whose exit is recorded then has its exec
        # recorded too; exit claims are released last
        order = [link for link in reversed(self._links) if link[0] != CLAIM_TRACEPOINT]
        order += [link for link in self._links if link[0] == CLAIM_TRACEPOINT]
        for _tp, fd in order:
            os.close(fd)
        self._links = []

    def drain(self) -> None:
        self._consume()

    def close(self) -> None:
        self.detach()
        buffer = self.buffer
        if buffer is not None:
            buffer.close()
            self.buffer = None
        self._compiled.close()
