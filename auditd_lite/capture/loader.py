"""The BPF programs: what they are built from (the running kernel's facts and the run's
settings), and, once the compiler child has loaded them, their attachment and their buffer.

No bcc here: the daemon imports this module, and bcc is the compiler child's
alone (capture/compiler.py; docs/design.md, "The daemon never maps the compiler")."""

from __future__ import annotations

import errno
import os
import platform
from dataclasses import dataclass, replace
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

# Every program is attached by BPF_RAW_TRACEPOINT_OPEN (no perf_event_open: docs/design.md,
# "Attaching without perf_event_open"). The execve calls are seen in one of two capture modes
# (docs/design.md, "Hooking execve, not every system call"):
# what --capture-mode accepts: a mode, or auto (fentry where this kernel can, else the fallback)
AUTO, FENTRY, RAW_SYSCALLS = config.CAPTURE_MODES
# what the fallback costs, in the words doctor and the log use (measured: docs/design.md)
RAW_SYSCALLS_COST = "every system call of every process pays ~95 ns (the syscall tracepoints)"
# the raw tracepoints of the fallback, which sees execve among all system calls
SYSCALL_TRACEPOINTS = ("sys_enter", "sys_exit")
# the raw tracepoints of both modes, attached after the execve hooks
SCHED_TRACEPOINTS = ("sched_process_exec", "sched_process_exit")
RAW_TRACEPOINTS = SYSCALL_TRACEPOINTS + SCHED_TRACEPOINTS
# sched_process_free only where the kernel's sched_process_exit has no group_dead argument
# (exit claims, see the program)
CLAIM_TRACEPOINT = "sched_process_free"
# The execve functions fentry/fexit attach to, by ABI: the syscall wrappers each gate calls
# (x86's syscall_wrapper.h). (macro, execve, execveat) per candidate, the first whose names the
# kernel's BTF has wins; x64 is required, the others are hooked where the kernel has them. x32's
# wrappers were __x32_compat_sys_* until 5.10 and are __x64_compat_sys_* since 5.11.
EXEC_FUNCTIONS = (
    ("X64", ("__x64_sys_execve", "__x64_sys_execveat")),
    ("IA32", ("__ia32_compat_sys_execve", "__ia32_compat_sys_execveat")),
    ("X32", ("__x32_compat_sys_execve", "__x32_compat_sys_execveat"),
     ("__x64_compat_sys_execve", "__x64_compat_sys_execveat")),
)
# a hook of a tracing program is "<attach type>/<function>" (libbpf's section names)
ENTRY, EXIT = "fentry", "fexit"
# bcc names a tracing program's function kfunc__<function> or kretfunc__<function>, and finds
# the function's BTF id from that name when it loads the program (KFUNC_PROBE, KRETFUNC_PROBE)
BCC_PREFIX = {ENTRY: "kfunc__", EXIT: "kretfunc__"}
# kernels without it (before 5.12, unless backported) free an fexit trampoline that a task
# sleeping inside the function will return to: detaching can crash them (upstream e21aa341785c)
TRAMPOLINE_FIX_SYMBOL = "__bpf_tramp_enter"
KALLSYMS = "/proc/kallsyms"
FTRACE_ENABLED = "/proc/sys/kernel/ftrace_enabled"
# x86_64's THREAD_SIZE without KASAN (Debian's kernels), where task_pt_regs() finds the caller's
# registers for a function whose argument the verifier cannot read (the program checks them)
TASK_STACK_SIZE = 16384
# x32's getpid: answered unless the kernel runs no x32 (Debian builds it, off unless syscall.x32=y)
X32_GETPID = 0x40000000 | 39
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
    ("OFF_TASK_STACK", "task_struct", "stack", 8),
    ("OFF_BPRM_FILENAME", "linux_binprm", "filename", 8),
    ("OFF_REGS_DI", "pt_regs", "di", 8),
    ("OFF_REGS_SI", "pt_regs", "si", 8),
    ("OFF_REGS_DX", "pt_regs", "dx", 8),
    ("OFF_REGS_BX", "pt_regs", "bx", 8),
    ("OFF_REGS_CX", "pt_regs", "cx", 8),
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
# the executed file's identity at sched_process_exec (bprm->file->f_inode): device, inode, size,
# and the modification and change times, whose fields changed names across 5.10..6.18 (TIMES).
# All or none: without them the executable is hashed without the kernel's word for which file it
# was (capture/exehash.py).
EXE_FIELDS = (
    ("OFF_BPRM_FILE", "linux_binprm", "file", 8),
    ("OFF_FILE_INODE", "file", "f_inode", 8),
    ("OFF_INODE_SB", "inode", "i_sb", 8),
    ("OFF_SB_DEV", "super_block", "s_dev", 4),
    ("OFF_INODE_INO", "inode", "i_ino", 8),
    ("OFF_INODE_SIZE", "inode", "i_size", 8),
)
# (macro prefix, candidates): seconds and nanoseconds of a time, as 6.11 on splits them
# (i_mtime_sec, i_mtime_nsec: u32) or as a timespec64 before (i_mtime: 5.10, 6.1; __i_ctime: 6.6;
# __i_mtime and __i_ctime: 6.7..6.10)
TIMES = (
    ("MTIME", (("i_mtime_sec", "i_mtime_nsec"), ("i_mtime.tv_sec", "i_mtime.tv_nsec"),
               ("__i_mtime.tv_sec", "__i_mtime.tv_nsec"))),
    ("CTIME", (("i_ctime_sec", "i_ctime_nsec"), ("i_ctime.tv_sec", "i_ctime.tv_nsec"),
               ("__i_ctime.tv_sec", "__i_ctime.tv_nsec"))),
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
    # CAPTURE_MODES: auto takes fentry where the kernel can, else the fallback, said in the log
    capture_mode: str = AUTO

    def source(self) -> str:
        return self.program_file or str(BPF_DIR / PROGRAM)

    @classmethod
    def for_run(cls, settings: config.RunSettings) -> "ProgramSettings":
        """The programs' settings for a run's settings: what `run` and `doctor` load."""
        return cls(transport=settings.transport, buffer_kb=settings.buffer_kb,
                   min_duration_ns=settings.min_duration_ms * 1_000_000,
                   max_args=settings.max_args, arg_bytes=settings.max_arg_bytes,
                   capture_mode=settings.capture_mode)


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
    # the execve functions in BTF, by EXEC_FUNCTIONS macro: ("FN_X64_EXECVE", "__x64_sys_execve"), ...
    exec_functions: tuple[tuple[str, str], ...] = ()
    # why fentry/fexit cannot be used on this kernel before even trying, or None
    fentry_blocked: str | None = "no BTF"
    # each function's BTF id (a tracing program's attach_btf_id)
    function_ids: tuple[tuple[str, int], ...] = ()
    # functions whose first argument the verifier cannot read: their programs take the caller's
    # registers from the task (task_regs in the program; build.py's probe finds them)
    task_regs: frozenset = frozenset()
    pt_regs_size: int = 0

    def hooks(self, mode: str) -> list[str]:
        """The execve hooks of ``mode``, in attach order: every entry, then every exit (an exit
        attached first could see a call whose entry it never saw)."""
        if mode == RAW_SYSCALLS:
            return list(SYSCALL_TRACEPOINTS)
        functions = [fn for _, fn in self.exec_functions]
        return [f"{ENTRY}/{fn}" for fn in functions] + [f"{EXIT}/{fn}" for fn in functions]


def kernel_facts(btf_path: str = btf.VMLINUX_BTF) -> KernelFacts:
    try:
        types = btf.BTF.from_file(btf_path)
    except (OSError, btf.BTFError) as e:
        log.warning("btf_unavailable", path=btf_path, error=str(e),
                    fallback="header layouts: field reads may be wrong on this kernel")
        defs = {m: f"offsetof(struct {s}, {p})" for m, s, p, _ in FIELDS + AUDIT_FIELDS}
        return KernelFacts(defs, "headers", bool(has_group_dead(None, tracefs_dir())),
                           fentry_blocked=f"no BTF at {btf_path}: tracing programs need it")
    functions = exec_functions(types)
    return KernelFacts(btf_offsets(types), "btf", bool(has_group_dead(types)), functions,
                       fentry_blocker(functions), tuple((fn, types.function_id(fn)) for _, fn in functions),
                       pt_regs_size=types.struct_size("pt_regs"))


def exec_functions(types: btf.BTF) -> tuple[tuple[str, str], ...]:
    """(FN_* macro, function) of every execve function in EXEC_FUNCTIONS that the BTF has,
    a whole pair per ABI or none of it."""
    out = []
    for abi, *candidates in EXEC_FUNCTIONS:
        for pair in candidates:
            if all(types.has_function(fn) for fn in pair):
                out += [(f"FN_{abi}_EXECVE", pair[0]), (f"FN_{abi}_EXECVEAT", pair[1])]
                break
    return tuple(out)


def kallsyms_has(symbol: str, path: str = KALLSYMS) -> bool | None:
    """Whether the kernel has ``symbol`` (names are listed to anyone; addresses need
    CAP_SYSLOG); None when the list cannot be read."""
    want = f" {symbol}\n".encode()
    try:
        with open(path, "rb") as f:
            return want in f.read()
    except OSError:
        return None


def fentry_blocker(functions, kallsyms: str = KALLSYMS, ftrace: str = FTRACE_ENABLED) -> str | None:
    """Why this kernel cannot take fentry/fexit on execve, from what it says before anything is
    loaded; None when it can (loading may still be refused: the compiler child says why)."""
    names = dict(functions)
    if "FN_X64_EXECVE" not in names:
        return "the kernel's BTF has no __x64_sys_execve/__x64_sys_execveat to attach to"
    try:
        with open(ftrace) as f:
            if f.read().strip() == "0":
                return "kernel.ftrace_enabled is 0: trampolines cannot be attached"
    except OSError:
        pass  # a kernel without the knob (no ftrace sysctl) is judged by the load
    if kallsyms_has(TRAMPOLINE_FIX_SYMBOL, kallsyms) is False:
        return (f"this kernel lacks the fexit trampoline fix ({TRAMPOLINE_FIX_SYMBOL}, upstream "
                "e21aa341785c, 5.12): detaching fexit while a task sleeps in execve can crash it")
    return None


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
    exe, why = exe_offsets(types)
    if why:
        log.warning("exe_identity_unavailable", why=why,
                    effect="executables are hashed without the kernel's word for which file ran")
    defs.update(exe)
    return defs


def exe_offsets(types: btf.BTF) -> tuple[dict[str, str], str | None]:
    """(-D values of EXE_FIELDS and TIMES, None), or ({}, why not) when one does not resolve.
    A time is OFF_INODE_<T>_SEC, OFF_INODE_<T>_NSEC and <T>_NSEC_BYTES (4 or 8)."""
    defs = {}
    for macro, struct_name, path, size in EXE_FIELDS:
        try:
            field = types.field(struct_name, path)
        except btf.BTFError as e:
            return {}, f"{struct_name}.{path}: {e}"
        if field.size != size:
            return {}, f"{struct_name}.{path} is {field.size} bytes, expected {size}"
        defs[macro] = str(field.offset)
    for name, candidates in TIMES:
        for sec, nsec in candidates:
            try:
                s, n = types.field("inode", sec), types.field("inode", nsec)
            except btf.BTFError:
                continue
            if s.size == 8 and n.size in (4, 8):
                defs.update({f"OFF_INODE_{name}_SEC": str(s.offset), f"OFF_INODE_{name}_NSEC": str(n.offset),
                             f"{name}_NSEC_BYTES": str(n.size)})
                break
        else:
            return {}, f"inode has none of {', '.join(c[0] for c in candidates)}"
    return defs, None


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


def first_mode(settings: ProgramSettings, facts: KernelFacts) -> tuple[str, str | None]:
    """The capture mode to load first, and why it is the fallback when auto could not take
    fentry (None when it is what was asked for or could be had); CannotCapture when fentry was
    asked for and this kernel cannot have it."""
    if settings.capture_mode == RAW_SYSCALLS:
        return RAW_SYSCALLS, None
    if facts.fentry_blocked:
        if settings.capture_mode == FENTRY:
            raise CannotCapture(f"capture mode fentry: {facts.fentry_blocked}")
        return RAW_SYSCALLS, facts.fentry_blocked
    return FENTRY, None


def x32_enabled() -> bool:
    """Whether this kernel runs x32 system calls (it answers x32's getpid)."""
    import ctypes  # noqa: PLC0415 - the compiler child's probe only

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(ctypes.c_long(X32_GETPID)) == os.getpid()


def probe_fentry(facts: KernelFacts, probe: Callable[[int], int]) -> tuple[KernelFacts, str | None]:
    """What fentry can hook here, found by loading the smallest fentry program on each execve
    function (``probe(btf_id)``: 0 or the errno, libbpf.fentry_probe): facts with the
    functions that can be hooked (x32's only where the kernel runs x32) and those whose argument
    the verifier cannot read (task_regs), and None; or why fentry cannot be had at all."""
    ids = dict(facts.function_ids)
    keep, task = [], set()
    x32 = None
    for macro, fn in facts.exec_functions:
        if macro.startswith("FN_X32_"):
            x32 = x32_enabled() if x32 is None else x32
            if not x32:
                continue  # never called: nothing to see, and each hook costs a compile's minute
        err = probe(ids[fn])
        if err in (errno.EACCES, errno.EINVAL) and macro.startswith("FN_X64_"):
            task.add(fn)  # the program reads the registers from the task (x64's only)
        elif err:
            return facts, f"the kernel refused to load an fentry program on {fn} ({os.strerror(err)})"
        keep.append((macro, fn))
    return replace(facts, exec_functions=tuple(keep), task_regs=frozenset(task)), None


def claims_exits(settings: ProgramSettings, facts: KernelFacts) -> bool:
    return settings.force_exit_claims or not facts.group_dead


def cflags(settings: ProgramSettings, facts: KernelFacts, fentry: bool = False) -> list[str]:
    """The compiler's flags; ``fentry``: compile the fentry/fexit programs of facts'
    exec_functions, else the raw_syscalls ones (one mode a compile: clang's time grows with each
    copy of the argument loop, and under TCG that is minutes)."""
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
    if fentry:
        flags.append("-DUSE_FENTRY")
        flags += [f"-D{macro}={fn}" for macro, fn in facts.exec_functions]
        flags += [f"-D{macro}_TASK_REGS" for macro, fn in facts.exec_functions if fn in facts.task_regs]
        flags += [f"-DTASK_STACK_SIZE={TASK_STACK_SIZE}", f"-DSIZEOF_PT_REGS={facts.pt_regs_size}"]
    if facts.source == "headers":
        flags.append("-DUSE_HEADER_LAYOUT")
    flags.append(f"-I{BPF_DIR}")
    return flags


def hooks(settings: ProgramSettings, facts: KernelFacts, mode: str) -> list[str]:
    """Where the programs of ``mode`` attach, in attach order: the execve hooks, then the sched
    tracepoints (and the claims' release)."""
    return facts.hooks(mode) + list(SCHED_TRACEPOINTS) + (
        [CLAIM_TRACEPOINT] if claims_exits(settings, facts) else [])


def is_tracing(hook: str) -> bool:
    """A fentry/fexit hook ("fentry/<function>"), not a raw tracepoint."""
    return "/" in hook


def function_name(hook: str) -> str:
    """The program's function in bpf/auditd_lite.bpf.c: bcc's tracing names, else PROBE()'s."""
    if is_tracing(hook):
        kind, fn = hook.split("/", 1)
        return BCC_PREFIX[kind] + fn
    return compiler.PROBE_PREFIX + hook


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
        self._compiled = compiled = (child or compiler.Child(settings)).result()
        try:
            self._attach(sink)
        except CannotCapture as e:
            # fentry loaded but could not be attached (ftrace's direct calls refused, a
            # function that cannot be traced): in auto, the fallback, loaded afresh
            if compiled.mode != FENTRY or settings.capture_mode != AUTO:
                raise
            # _attach closed what it had (its descriptors are not closed twice: the writer's
            # thread may have their numbers by now)
            self._compiled = compiler.Child(replace(settings, capture_mode=RAW_SYSCALLS)).result()
            self._compiled = replace(self._compiled, fallback=str(e))
            self._attach(sink)
        compiled = self._compiled
        self.mode, self.fallback = compiled.mode, compiled.fallback
        self.offsets_source = compiled.offsets_source
        self.exit_claims = compiled.exit_claims
        # the claims map where the program claims exits (None elsewhere)
        self.claims_fd = compiled.maps.get(compiler.CLAIMS_MAP)
        if self.fallback:
            # once per start: the service's mode is also in the run's settings and in doctor
            log.warning("capture_fallback", mode=self.mode, reason=self.fallback, cost=RAW_SYSCALLS_COST)
        timings = compiled.timings or {}
        log.info("programs_attached", capture_mode=self.mode, hooks=self.hooks,
                 compile_s=timings.get("compile_s"), load_s=timings.get("load_s"),
                 offsets=self.offsets_source, exit_claims=self.exit_claims,
                 transport=settings.transport, buffer_kb=settings.buffer_kb,
                 min_duration_ns=settings.min_duration_ns)

    def _attach(self, sink: list) -> None:
        """The buffer opened, then every program attached in order (once there is somewhere for
        records to go); on failure everything is closed again."""
        compiled, settings = self._compiled, self.settings
        try:
            self._counters = libbpf.PerCpuCounters(compiled.maps["counters"], records.CNT_MAX)
            events = compiled.maps["events"]
            if settings.transport == "perfbuf":
                perf = self.buffer = libbpf.PerfBuffers(events, ringbuf_pages(settings), sink.append)
                self._wait, self._consume = perf.poll, perf.consume
            else:
                ring = self.buffer = ringbuf.RingReader(events)
                self._wait, self._consume = ring.wait, lambda: ring.read(sink)
            for hook, fd in compiled.programs.items():
                # a tracing program names its function at load: attached with no name
                self._links.append((hook, libbpf.raw_tracepoint_open(
                    None if is_tracing(hook) else hook, fd)))
        except BaseException:
            self.close()
            raise

    @property
    def hooks(self) -> list[str]:
        """Where the programs are attached, in attach order."""
        return [hook for hook, _ in self._links]

    @property
    def capture(self) -> dict:
        """The capture mode as a run records it in its settings."""
        return {"mode": self.mode, "fallback": self.fallback}

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
