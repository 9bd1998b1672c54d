"""`auditd-lite doctor`: can this host capture, and if not, what to do about it.

Each check is a function returning one Result; a check that crashes is
reported as a failure of that check, never as a traceback. Checks that need
bcc or root say so instead of failing obscurely when they are missing.

What matters is what the service will be able to do, not what the root shell
running doctor can do: the unit's capability bounding set, the settings the
daemon will run with, and the real program compiled, loaded and attached
with both, in a child process that has only the unit's capabilities.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, TextIO

from . import btf, compiler, loader
from .. import config, seal, timeparse
from ..errors import AuditdLiteError, CannotCapture
from ..resources import resource_dir

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"

# include/uapi/linux/capability.h, by number; setpriv takes these names
CAP_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)
ALL_CAPS = (1 << len(CAP_NAMES)) - 1
CAP_DAC_READ_SEARCH = 2
CAP_IPC_LOCK, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_SYS_RESOURCE = 14, 19, 21, 24
CAP_PERFMON, CAP_BPF = 38, 39
RINGBUF_KERNEL = (5, 8)  # BPF_MAP_TYPE_RINGBUF, CAP_BPF and CAP_PERFMON
MIN_KERNEL = (5, 5)  # bpf_probe_read_kernel; before 5.8 only with --transport perfbuf
LOW_FREE_MB = 100
# compiling under an emulated VM takes well over a minute
LOAD_TIMEOUT_S = 120

UNIT = "auditd-lite.service"
# systemd's precedence: the first unit file found is the unit; drop-ins of the
# same name in an earlier directory hide later ones
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system",
             "/usr/lib/systemd/system")
DROPIN = "/etc/systemd/system/auditd-lite.service.d"

# the child's one line of result on stdout, among whatever bcc prints
RESULT_MARK = "auditd-lite-doctor-result "


@dataclass
class Result:
    status: str
    name: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<5} {self.name:<12} {self.message}"
        return text + (f" -> fix: {self.fix}" if self.fix and self.status in (FAIL, WARN) else "")


@dataclass
class Host:
    """Where the checks look; tests point these at fakes."""

    release: str = platform.release()
    euid: int = field(default_factory=os.geteuid)
    proc_status: str = "/proc/self/status"
    btf_path: str = btf.VMLINUX_BTF
    tracefs: tuple[str, ...] = loader.TRACEFS
    modules: str = "/lib/modules"
    kheaders: str = "/sys/kernel/kheaders.tar.xz"
    unit_files: tuple[str, ...] = tuple(f"{d}/{UNIT}" for d in UNIT_DIRS)
    dropin_dirs: tuple[str, ...] = tuple(f"{d}/{UNIT}.d" for d in UNIT_DIRS)
    # a checkout's own unit, for a host where it is not installed (yet)
    repo_unit: str | None = str(resource_dir("bpf").parent / UNIT)
    perf_event_paranoid: str = "/proc/sys/kernel/perf_event_paranoid"
    kallsyms: str = loader.KALLSYMS
    ftrace_enabled: str = loader.FTRACE_ENABLED
    default_config: str = str(config.DEFAULT_CONFIG)
    setpriv: str | None = field(default_factory=lambda: shutil.which("setpriv"))


def kernel_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise ValueError(f"cannot read a version from kernel release {release!r}")
    return int(m.group(1)), int(m.group(2))


def _caps_line(proc_status: str, key: str) -> int:
    with open(proc_status) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1], 16)
    return 0


def effective_caps(proc_status: str) -> int:
    return _caps_line(proc_status, "CapEff")


def cap_labels(caps: int) -> str:
    names = [f"CAP_{n.upper()}" for i, n in enumerate(CAP_NAMES) if caps >> i & 1]
    return " ".join(names) if names else "no capabilities"


def cap_number(name: str) -> int | None:
    """A capability as systemd accepts it: CAP_BPF, cap_bpf or its number."""
    if name.isdigit():
        return int(name) if int(name) < len(CAP_NAMES) else None
    low = name.lower()
    low = low[4:] if low.startswith("cap_") else low
    return CAP_NAMES.index(low) if low in CAP_NAMES else None


# --- the unit ---------------------------------------------------------------

@dataclass
class Unit:
    """The service as systemd will start it, from its unit file and drop-ins."""

    files: list[str]  # the unit file, then its drop-ins in the order systemd applies them
    installed: bool  # False: the repository's copy, which nothing starts
    caps: int | None  # the bounding set; None when the unit leaves it alone
    exec_start: list[str]
    memlock: tuple[int, int] | None  # LimitMEMLOCK as (soft, hard), -1 for infinity
    masked: bool = False

    def where(self) -> str:
        text = self.files[0] if self.installed else f"the repository's {self.files[0]}, not installed"
        extra = len(self.files) - 1
        return text + (f" + {extra} drop-in{'s' if extra > 1 else ''}" if extra else "")

    def run_flags(self) -> list[str] | None:
        """The flags ExecStart gives `run`, or None when it does not start `auditd-lite run`."""
        if "run" not in self.exec_start[1:]:
            return None
        return self.exec_start[self.exec_start.index("run", 1) + 1:]


def unit_entries(path: str):
    """(section, key, value) of a unit file, in order."""
    section, pending = "", ""
    for raw in Path(path).read_text(errors="replace").splitlines():
        line = raw.strip()
        if line[:1] in ("#", ";"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line:
            key, _, value = line.partition("=")
            yield section, key.strip(), value.strip()


def merge_bounding_set(current: int | None, value: str) -> int | None:
    """One CapabilityBoundingSet= line applied as systemd does (config_parse_capability_set):
    the first line or an empty one replaces, later ones OR in, or with ~ take away."""
    invert = value.startswith("~")
    listed = 0
    for name in (value[1:] if invert else value).split():
        cap = cap_number(name)
        if cap is not None:  # systemd ignores names it does not know
            listed |= 1 << cap
    if listed == 0 or current is None:
        return ALL_CAPS & ~listed if invert else listed
    return current & ~listed if invert else current | listed


def parse_limit(value: str) -> tuple[int, int] | None:
    """LimitMEMLOCK= as systemd reads it: N, N[KMGTPE] (powers of 1024), infinity, or soft:hard."""
    def one(text: str) -> int:
        text = text.strip()
        if text == "infinity":
            return resource.RLIM_INFINITY
        m = re.fullmatch(r"(\d+)\s*([KMGTPE]?)B?", text, re.IGNORECASE)
        if not m:
            raise ValueError(text)
        return int(m.group(1)) * 1024 ** " KMGTPE".index(m.group(2).upper() or " ")
    try:
        soft, _, hard = value.partition(":")
        return one(soft), one(hard or soft)
    except ValueError:
        return None


def _masked(path: str) -> bool:
    return os.path.realpath(path) == os.devnull


def read_unit(host: Host) -> Unit | None:
    """The unit systemd would use, or the repository's copy when none is installed."""
    main = next((p for p in host.unit_files if os.path.lexists(p)), None)
    installed = main is not None
    if main is None:
        if not host.repo_unit or not os.path.isfile(host.repo_unit):
            return None
        main = host.repo_unit
    if _masked(main):
        return Unit([main], installed, None, [], None, masked=True)
    dropins: dict[str, str] = {}
    for d in host.dropin_dirs:
        for path in glob.glob(os.path.join(d, "*.conf")):
            dropins.setdefault(os.path.basename(path), path)
    files = [main] + [dropins[name] for name in sorted(dropins) if not _masked(dropins[name])]
    caps: int | None = None
    exec_start: list[str] = []
    memlock = None
    for path in files:
        for section, key, value in unit_entries(path):
            if section != "Service":
                continue
            if key == "CapabilityBoundingSet":
                caps = merge_bounding_set(caps, value)
            elif key == "ExecStart":
                # an empty ExecStart= clears the list: how a drop-in replaces it
                words = shlex.split(value) if value else []
                if words:
                    words[0] = words[0].lstrip("-@:+!")
                exec_start = words
            elif key == "LimitMEMLOCK":
                memlock = parse_limit(value) or memlock
    return Unit(files, installed, caps, exec_start, memlock)


# --- the settings the daemon will run with ---------------------------------

@dataclass
class DaemonSettings:
    settings: config.RunSettings
    sources: list[str]
    transport_from: str


def _run_overrides(flags: list[str]) -> dict:
    """What `run FLAGS` overrides, as cmd_run hands it to config.settings: the flags'
    destinations are the RunSettings fields they set."""
    from ..cli import build_parser  # noqa: PLC0415 - cli imports doctor lazily, not at load

    args = build_parser().parse_args(["run", *flags])
    names = [f.name for f in fields(config.RunSettings)]
    return {"config": args.config, **{n: getattr(args, n, None) for n in names}}


def daemon_settings(host: Host, unit: Unit | None, config_file: Path | None = None,
                    overrides: dict | None = None) -> DaemonSettings:
    """The settings `auditd-lite run` will have when the unit starts it: the config file, the
    ExecStart flags on top, and doctor's own flags on top of those."""
    ours = {k: v for k, v in (overrides or {}).items() if v is not None}
    flags = unit.run_flags() if unit else None
    try:
        theirs = _run_overrides(flags or [])
    except AuditdLiteError as e:
        raise type(e)(f"ExecStart of {unit.files[0]}: {e}") from None
    unit_config = theirs.pop("config")
    path = config_file or unit_config
    if path is None and os.path.exists(host.default_config):
        path = Path(host.default_config)
    sources = [f"config file {path}" if path else f"defaults ({host.default_config} absent)"]
    if flags:
        sources.append("ExecStart flags " + " ".join(flags))
    elif unit is not None and flags is None:
        sources.append(f"no flags from {unit.files[0]}: its ExecStart does not run `auditd-lite run`")
    if ours:
        sources.append("doctor " + " ".join(f"--{k.replace('_', '-')}" for k in ours))
    # without a file: the defaults, as run has them when the default file is absent
    settings = config.settings(path or Path(os.devnull), {**theirs, **ours})
    if "transport" in ours:
        transport_from = "doctor --transport"
    elif theirs.get("transport") is not None:
        transport_from = f"ExecStart of {unit.files[0]}"
    elif path and "transport" in config.load_file(path, required=False):
        transport_from = f"transport in {path}"
    else:
        transport_from = "the default"
    return DaemonSettings(settings, sources, transport_from)


# --- checks ----------------------------------------------------------------

def check_privileges(host: Host) -> Result:
    caps = effective_caps(host.proc_status)
    have = lambda cap: bool(caps >> cap & 1)  # noqa: E731
    if host.euid != 0:
        return Result(FAIL, "privileges", f"running as uid {host.euid}",
                      "run as root: sudo auditd-lite doctor (the daemon runs as root, "
                      "as the systemd service does)")
    needed = {"CAP_BPF": CAP_BPF, "CAP_PERFMON": CAP_PERFMON}
    missing = [name for name, cap in needed.items() if not have(cap)]
    if missing and not have(CAP_SYS_ADMIN):
        return Result(FAIL, "privileges", f"root, but without {', '.join(missing)}",
                      "give the process CAP_BPF and CAP_PERFMON (the unit's "
                      "CapabilityBoundingSet), or CAP_SYS_ADMIN on kernels before 5.8")
    poorer = _without_optional(have)
    if poorer:
        lacking, what = poorer
        return Result(WARN, "privileges", f"root with CAP_BPF and CAP_PERFMON, without {lacking}: "
                      f"{what}", f"add {lacking}")
    return Result(OK, "privileges", "root with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and "
                  "CAP_DAC_READ_SEARCH")


# what capture does without each capability the unit holds beyond loading and attaching
OPTIONAL_CAPS = {
    CAP_SYS_PTRACE: "executables of processes running at start are not recorded, nor are "
                    "executables hashed from /proc/PID/exe",
    CAP_DAC_READ_SEARCH: "executables root's own permission bits cannot read hash as unreadable, "
                         "and cgroups are resolved by walking the hierarchy (a cgroup gone "
                         "before the walk is recorded unknown)",
}


def _without_optional(have) -> tuple[str, str] | None:
    """(the names of the optional capabilities missing, what capture loses), or None."""
    missing = [cap for cap in OPTIONAL_CAPS if not have(cap)]
    if not missing:
        return None
    return (" and ".join(f"CAP_{CAP_NAMES[c].upper()}" for c in missing),
            "; ".join(OPTIONAL_CAPS[c] for c in missing))


def check_kernel(host: Host) -> Result:
    version = kernel_version(host.release)
    if version < MIN_KERNEL:
        return Result(FAIL, "kernel", f"{host.release}: older than "
                      f"{'.'.join(map(str, MIN_KERNEL))} (no bpf_probe_read_kernel)",
                      "boot a kernel 5.8 or newer")
    if version < RINGBUF_KERNEL:
        return Result(WARN, "kernel", f"{host.release}: no BPF ring buffer before 5.8",
                      "run with --transport perfbuf (transport = \"perfbuf\" in the config file)")
    return Result(OK, "kernel", f"{host.release} ({platform.machine()})")


_btf_cache: dict[str, btf.BTF | Exception] = {}


def load_btf(host: Host) -> btf.BTF:
    """The host's BTF, parsed once for all the checks that read it."""
    if host.btf_path not in _btf_cache:
        try:
            _btf_cache[host.btf_path] = btf.BTF.from_file(host.btf_path)
        except (OSError, btf.BTFError) as e:
            _btf_cache[host.btf_path] = e
    found = _btf_cache[host.btf_path]
    if isinstance(found, Exception):
        raise found
    return found


def _has_btf(host: Host) -> bool:
    try:
        load_btf(host)
    except (OSError, btf.BTFError):
        return False
    return True


def check_btf(host: Host) -> Result:
    try:
        types = load_btf(host)
    except (OSError, btf.BTFError) as e:
        return Result(WARN, "btf", f"{host.btf_path} unusable ({e}): field offsets would come "
                      "from the kernel headers, right only if they are this kernel's",
                      "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    wanted = loader.FIELDS
    for _macro, struct_name, path, size in wanted:
        field = types.field(struct_name, path)  # raises BTFError: reported as a failed check
        if field.size != size:
            return Result(FAIL, "btf", f"{struct_name}.{path} is {field.size} bytes, expected {size}",
                          "this kernel's layout is not supported")
    cwd, why = loader.cwd_offsets(types)
    if why:
        return Result(WARN, "btf", f"{host.btf_path}: all {len(wanted)} kernel field offsets capture "
                      f"needs resolved, but not the working directory's walk ({why}): working "
                      "directories will be recorded as unknown", "a kernel whose BTF has them")
    return Result(OK, "btf", f"{host.btf_path}: all {len(wanted) + len(cwd)} kernel field offsets "
                  "resolved")


def _tracefs(host: Host) -> str | None:
    return loader.tracefs_dir(host.tracefs)


def tracefs_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    try:
        with open(mountinfo) as f:
            # fields: ... mount-point (5th) ... " - " fstype source options
            return [line.split()[4] for line in f if line.split(" - ")[-1].startswith("tracefs ")]
    except OSError:
        return []


def check_tracefs(host: Host) -> Result:
    d = _tracefs(host)
    if d is not None:
        return Result(OK, "tracefs", f"mounted at {d}")
    mounted = [m for m in tracefs_mounts() if m in host.tracefs]
    if _has_btf(host):
        return Result(OK, "tracefs", f"{'not readable' if mounted else 'not mounted'}: not "
                      "needed, BTF has the kernel's facts (tracefs is only needed on kernels "
                      "without BTF)")
    if mounted:
        # tracefs is 0700 root: mounted, but this user cannot look inside
        return Result(FAIL, "tracefs", f"mounted at {mounted[0]} but not readable as uid "
                      f"{host.euid}", "run as root")
    return Result(WARN, "tracefs", f"not mounted (looked in {', '.join(host.tracefs)}) and no "
                  "BTF: the tracepoints cannot be checked, and exits are claimed in a map as on "
                  "kernels before 6.16", f"mount -t tracefs tracefs {loader.TRACEFS[0]}")


def _group_dead(host: Host) -> bool | None:
    try:
        types = load_btf(host)
    except (OSError, btf.BTFError):
        types = None
    return loader.has_group_dead(types, _tracefs(host))


def service_facts(host: Host) -> loader.KernelFacts:
    """What the program would be built from here, as far as doctor needs it: no offsets, but
    the group_dead argument, the execve functions and whether fentry is blocked."""
    try:
        types = load_btf(host)
    except (OSError, btf.BTFError):
        return loader.KernelFacts({}, "headers", bool(_group_dead(host)),
                                  fentry_blocked=f"no BTF at {host.btf_path}: tracing programs need it")
    functions = loader.exec_functions(types)
    return loader.KernelFacts({}, "btf", bool(loader.has_group_dead(types)), functions,
                              loader.fentry_blocker(functions, host.kallsyms, host.ftrace_enabled))


def expected_mode(host: Host, settings: config.RunSettings | None) -> tuple[str, str | None]:
    """The capture mode the service will try first, and why it is the fallback (None when it
    is not), from what the kernel says before anything is loaded; loader.first_mode's answer,
    with its refusal of a forced fentry turned into the fallback's reason."""
    ps = loader.ProgramSettings.for_run(settings) if settings else loader.ProgramSettings()
    try:
        return loader.first_mode(ps, service_facts(host))
    except CannotCapture as e:
        return loader.RAW_SYSCALLS, str(e)


def attached_tracepoints(host: Host, settings: config.RunSettings | None) -> list[str]:
    """The raw tracepoints the program will attach here, in loader's order, in the mode it is
    expected to take."""
    ps = loader.ProgramSettings.for_run(settings) if settings else loader.ProgramSettings()
    mode, _ = expected_mode(host, settings)
    return [h for h in loader.hooks(ps, service_facts(host), mode) if not loader.is_tracing(h)]


def check_tracepoints(host: Host, settings: config.RunSettings | None = None) -> Result:
    wanted = attached_tracepoints(host, settings)
    try:
        types = load_btf(host)
    except (OSError, btf.BTFError):
        types = None
    if types is not None:
        where = "in BTF"
        missing = [tp for tp in wanted if types.tracepoint_args(tp) is None]
    else:
        d = _tracefs(host)
        if d is None:
            return Result(SKIP, "tracepoints", "neither BTF nor tracefs to look in")
        where = f"in {d}/events"
        missing = [tp for tp in wanted if not os.path.isdir(loader.tracepoint_dir(d, tp))]
    if missing:
        return Result(FAIL, "tracepoints", f"missing {where}: {', '.join(missing)}",
                      "a kernel built with CONFIG_BPF_EVENTS (raw tracepoint programs), on an "
                      "architecture with syscall tracepoints (sys_enter, sys_exit)")
    return Result(OK, "tracepoints", f"all {len(wanted)} raw tracepoints present {where}: "
                  + ", ".join(wanted))


def headers_release(build: Path) -> str | None:
    """The kernel release the headers in ``build`` were made for: what `uname -r` says on it.
    UTS_RELEASE first: Debian's headers put the upstream version (6.1.192) in kernel.release
    and the release (6.1.0-57-amd64) only there."""
    for name, pattern in (("include/generated/utsrelease.h", r'UTS_RELEASE\s+"([^"]+)"'),
                          ("include/config/kernel.release", r"(\S+)")):
        try:
            m = re.search(pattern, (build / name).read_text())
        except OSError:
            continue
        if m:
            return m.group(1)
    return None


def check_headers(host: Host) -> Result:
    build = Path(host.modules) / host.release / "build"
    if not (build / "include").is_dir():
        if os.path.exists(host.kheaders):
            return Result(OK, "headers", f"none in {build}; bcc uses the kernel's own {host.kheaders}")
        arch = platform.machine().replace("x86_64", "amd64").replace("aarch64", "arm64")
        return Result(FAIL, "headers", f"no kernel headers at {build}",
                      f"apt-get install linux-headers-{host.release} (or linux-headers-{arch} "
                      f"and: ln -s /usr/src/linux-headers-<version>-{arch} {build})")
    made_for = headers_release(build)
    where = f"{build} -> {build.resolve()}" if build.is_symlink() else str(build)
    if made_for == host.release:
        return Result(OK, "headers", f"{where}, made for the running kernel")
    if os.path.exists(host.btf_path):
        return Result(OK, "headers", f"{where}, made for {made_for or 'an unknown kernel'}, not "
                      f"the running {host.release}: fine, field offsets come from BTF")
    return Result(WARN, "headers", f"{where}, made for {made_for or 'an unknown kernel'}, not the "
                  f"running {host.release}, and no BTF: recorded fields may be wrong",
                  f"install linux-headers-{host.release}")


def _import_bcc():
    """bcc's module, or None: doctor reports a missing bcc rather than stopping at it."""
    try:
        return compiler.import_bcc()
    except CannotCapture:
        return None


def check_bcc(host: Host) -> Result:
    bcc = _import_bcc()
    if bcc is None:
        return Result(FAIL, "bcc", "Python module bcc not importable",
                      "apt-get install python3-bpfcc (Debian's; PyPI's bcc is another project)")
    return Result(OK, "bcc", f"bcc {getattr(bcc, '__version__', '?')} from "
                  f"{os.path.dirname(bcc.__file__)}")


def check_settings(ds: DaemonSettings) -> Result:
    s = ds.settings
    return Result(OK, "settings", f"transport {s.transport}, buffer_kb {s.buffer_kb}, max_args "
                  f"{s.max_args}, max_arg_bytes {s.max_arg_bytes}, min_duration_ms "
                  f"{s.min_duration_ms}, db_dir {s.db_dir}: from {', '.join(ds.sources)}")


def read_paranoid(host: Host) -> int | None:
    try:
        with open(host.perf_event_paranoid) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def service_caps(host: Host, unit: Unit | None) -> tuple[int, str]:
    """The capabilities the service will have, and where they come from."""
    if unit is not None and unit.caps is not None:
        return unit.caps, f"CapabilityBoundingSet of {unit.where()}"
    caps = effective_caps(host.proc_status)
    if unit is not None:
        return caps, f"root's: {unit.where()} sets no CapabilityBoundingSet"
    return caps, (f"this process's: no {UNIT} in {', '.join(os.path.dirname(p) for p in host.unit_files)}")


def check_service(host: Host, unit: Unit | None, ds: DaemonSettings) -> Result:
    """Whether the service, with its unit's capabilities, can capture with the settings'
    transport on this kernel; one line, and the fix when it cannot."""
    if unit is not None and unit.masked:
        return Result(WARN, "service", f"{unit.files[0]} is masked: the service cannot start",
                      "systemctl unmask auditd-lite, or run auditd-lite run by other means")
    caps, source = service_caps(host, unit)
    have = lambda cap: bool(caps >> cap & 1)  # noqa: E731
    held = f"capabilities {cap_labels(caps)} ({source})"
    transport = f"transport {ds.settings.transport} ({ds.transport_from})"
    dropin = f"a drop-in {DROPIN}/capabilities.conf with [Service] CapabilityBoundingSet="

    def cannot(why: str, fix: str) -> Result:
        return Result(FAIL, "service", f"cannot capture: {why}; {held}", fix)

    try:
        before_58 = kernel_version(host.release) < RINGBUF_KERNEL
    except ValueError:
        before_58 = False
    if before_58 and not have(CAP_SYS_ADMIN):
        return cannot("before Linux 5.8 only CAP_SYS_ADMIN loads tracing programs",
                      dropin + "CAP_SYS_ADMIN")
    missing = [f"CAP_{CAP_NAMES[c].upper()}" for c in (CAP_BPF, CAP_PERFMON) if not have(c)]
    if missing and not have(CAP_SYS_ADMIN):
        return cannot(f"loading the program needs {' and '.join(missing)}",
                      dropin + " ".join(missing))
    if ds.settings.transport == "ringbuf":
        if before_58:
            return cannot(f"{transport} needs Linux 5.8", 'transport = "perfbuf" in the config file')
        how = f"{transport} needs no perf_event_open"
    else:
        paranoid = read_paranoid(host)
        if paranoid is None:
            return Result(WARN, "service", f"{transport} needs perf_event_open and "
                          f"{host.perf_event_paranoid} is unreadable: see the compile line; {held}")
        if paranoid >= 3 and not have(CAP_SYS_ADMIN):
            return cannot(
                f"{transport} needs perf_event_open, which kernel.perf_event_paranoid={paranoid} "
                "(Debian's default) allows only with CAP_SYS_ADMIN",
                f"{dropin}CAP_SYS_ADMIN, or sysctl -w kernel.perf_event_paranoid=2 (and keep it "
                "in /etc/sysctl.d/), or use the ring buffer (transport = \"ringbuf\")")
        who = "CAP_PERFMON" if paranoid < 3 and have(CAP_PERFMON) else "CAP_SYS_ADMIN"
        how = (f"{transport} needs perf_event_open, allowed at kernel.perf_event_paranoid="
               f"{paranoid} with {who}")
    poorer = _without_optional(have)
    if poorer:
        lacking, what = poorer
        return Result(WARN, "service", f"can capture: {how}; but without {lacking}: {what}; {held}",
                      dropin + lacking.replace(" and ", " "))
    return Result(OK, "service", f"can capture: {how}; {held}")


# --- compiling and loading the real program, as the service -----------------

# clang's and the verifier's output lines that say nothing about why
_LOG_NOISE = re.compile(r"\d+: |; |processed \d+ insns|verification time|stack depth|"
                        r"-- (BEGIN|END) PROG LOAD LOG --|HINT: |from \d+ to \d+:|"
                        r"mark_precise|last_idx|regs=|func#\d+ @")


def verifier_reason(stderr: str) -> str | None:
    """The verifier's last meaningful line, from the log bcc prints after its
    "bpf: Failed to load program" line."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("bpf: Failed to load program")]
    if not starts:
        return None
    for line in reversed(lines[starts[-1] + 1:]):
        text = line.strip()
        if text and not _LOG_NOISE.match(text):
            return text
    return None


def _last_line(stderr: str, pattern: str) -> str | None:
    found = [line.strip() for line in stderr.splitlines() if re.search(pattern, line)]
    return found[-1] if found else None


def load_failure(error: str, stderr: str) -> tuple[str, str]:
    """One sentence naming what failed, and its fix, from the exception the load raised and
    what bcc, clang and the kernel printed to stderr meanwhile."""
    if m := re.search(r"Failed to load BPF program b?'?(\w+)'?: ([^;]+)", error):
        prog, errtext = m.group(1), m.group(2).strip()
        reason = verifier_reason(stderr)
        return (f"the kernel refused program {prog} ({errtext})" + (f": {reason}" if reason else ""),
                "the settings above give a program this kernel's verifier refuses: go back to "
                "the defaults of max_args and max_arg_bytes, or report the line")
    caps_fix = "add CAP_BPF and CAP_PERFMON to the unit's CapabilityBoundingSet"
    if "Need super-user privileges" in error:
        # bcc names neither the program nor the missing capability for EPERM
        return ("the kernel refused to load the program (Operation not permitted): loading it "
                "needs CAP_BPF and CAP_PERFMON", caps_fix)
    if "Failed to compile BPF module" in error:
        # bcc creates the maps while it compiles: a refused map is reported as a compile failure
        if m := re.search(r"could not open bpf map: (\w+), error: (.+)", stderr):
            return (f"the kernel refused to create map {m.group(1)} ({m.group(2).strip()})",
                    caps_fix if "not permitted" in m.group(2) else "a smaller buffer_kb")
        line = _last_line(stderr, r":\d+:\d+: (fatal )?error: ") or "no error line from clang"
        return (f"clang could not compile {loader.PROGRAM}: {os.path.basename(line)}",
                "install the kernel headers for the running kernel (see the headers line)")
    if m := re.search(r"could not attach the program to the raw tracepoint (\w+): (.+)", error):
        return (f"the kernel could not attach raw tracepoint {m.group(1)} ({m.group(2).strip()})",
                "see the tracepoints line")
    if m := re.search(r"could not open perf buffer: ([^(]+)", error):
        # libbpf's own warning names the step (perf_event_open or mmap) and the CPU
        line = _last_line(stderr, r"^libbpf: ") or m.group(1).strip()
        fix = ("LimitMEMLOCK=infinity in the unit (without CAP_IPC_LOCK the perf buffers count "
               "against RLIMIT_MEMLOCK), a smaller buffer_kb, or the ring buffer"
               if "mmap" in line else "see the service line, or use the ring buffer")
        return f"the perf buffers could not be opened ({line.removeprefix('libbpf: ')})", fix
    if m := re.search(r"could not map the ring buffer .*?: (.+)", error):
        return f"the ring buffer could not be opened ({m.group(1).strip()})", "a smaller buffer_kb"
    first = error.strip().splitlines()[0] if error.strip() else "no message"
    return f"loading failed: {first}", "see the lines above"


def load_child(settings_json: str) -> int:
    """In the child: load, attach and release the real program with these run settings,
    exactly as the daemon does, and print one result line."""
    from ..daemon import logsetup

    # loader logs to stdout unless told otherwise: keep stdout for the result line
    logsetup.configure("error", sys.stderr)
    try:
        values = json.loads(settings_json)
        values["db_dir"] = Path(values["db_dir"])
        settings = config.RunSettings(**values)
        programs = loader.Programs(loader.ProgramSettings.for_run(settings), [])
        try:
            result = {"offsets": programs.offsets_source, "hooks": programs.hooks, **programs.capture}
        finally:
            programs.close()
    except Exception as e:  # bcc raises bare Exception; the parent turns it into one sentence
        result = {"error": str(e)}
    sys.stderr.flush()
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0 if "offsets" in result else 1


def _le(a: int, b: int) -> bool:
    """a <= b for rlimit values, RLIM_INFINITY being the largest."""
    inf = resource.RLIM_INFINITY
    return b == inf or (a != inf and a <= b)


@dataclass
class LoadPlan:
    argv: list[str]
    memlock: tuple[int, int] | None  # applied to the child before it starts
    as_whom: str  # whose capabilities, for the message


def load_plan(host: Host, unit: Unit | None, settings: config.RunSettings) -> LoadPlan:
    """How to start the child so it can do what the service can: the unit's bounding set
    (setpriv), and its LimitMEMLOCK."""
    child = compiler.python_child(__name__, "load_child", json.dumps(settings.as_dict()))
    own = effective_caps(host.proc_status)
    memlock, stand_in = None, False
    if unit is not None and unit.memlock is not None:
        _, hard_now = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if _le(unit.memlock[1], hard_now) or own >> CAP_SYS_RESOURCE & 1:
            memlock = unit.memlock
        else:
            # what a larger RLIMIT_MEMLOCK gives the perf buffers, CAP_IPC_LOCK gives too
            stand_in = settings.transport == "perfbuf" and bool(own >> CAP_IPC_LOCK & 1)
    if unit is None or unit.caps is None:
        return LoadPlan(child, memlock, "this process's capabilities" + (
            " (the unit does not limit the service's)" if unit else ""))
    if host.setpriv is None:
        return LoadPlan(child, memlock, "this process's capabilities: setpriv (util-linux) is "
                        "not installed to drop them to the unit's")
    caps, notes = unit.caps, []
    if stand_in:
        caps |= 1 << CAP_IPC_LOCK
        notes.append("CAP_IPC_LOCK standing in for the unit's LimitMEMLOCK, which this "
                     "process may not raise")
    lacking = unit.caps & ~_caps_line(host.proc_status, "CapBnd")
    if lacking:
        notes.append(f"without {cap_labels(lacking)}, which this process does not have")
    spec = ",".join(["-all"] + [f"+{n}" for i, n in enumerate(CAP_NAMES) if caps >> i & 1])
    whom = f"the unit's bounding set {cap_labels(unit.caps)}"
    return LoadPlan([host.setpriv, f"--bounding-set={spec}", *child], memlock,
                    whom + (f" ({'; '.join(notes)})" if notes else ""))


def run_load(plan: LoadPlan, timeout: float = LOAD_TIMEOUT_S) -> tuple[dict, str]:
    """Run the child; its result line, and its stderr."""
    def limit():
        if plan.memlock is not None:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, plan.memlock)

    p = subprocess.run(plan.argv, capture_output=True, text=True, errors="replace",
                       timeout=timeout, preexec_fn=limit, stdin=subprocess.DEVNULL)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):]), p.stderr
    # no result line: the child died before it could write one (setpriv refused, a crash)
    last = _last_line(p.stderr, r"\S") or f"exit status {p.returncode}"
    return {"error": f"the test process ended without a result: {last}"}, p.stderr


def _can_compile(host: Host) -> str | None:
    if _import_bcc() is None:
        return "bcc is not importable"
    if host.euid != 0:
        return "needs root"
    return None


def check_compile(host: Host, unit: Unit | None, ds: DaemonSettings,
                  loaded: dict | None = None) -> Result:
    """``loaded``: filled with the capture mode the child attached and why it fell back."""
    why = _can_compile(host)
    if why:
        return Result(SKIP, "compile", why)
    plan = load_plan(host, unit, ds.settings)
    try:
        result, stderr = run_load(plan)
    except subprocess.TimeoutExpired:
        return Result(FAIL, "compile", f"compiling and loading the program took more than "
                      f"{LOAD_TIMEOUT_S} s", "try again on a less loaded machine")
    if "error" in result:
        sentence, fix = load_failure(result["error"], stderr)
        return Result(FAIL, "compile", sentence, fix)
    if loaded is not None:
        loaded.update(mode=result["mode"], fallback=result["fallback"])
    return Result(OK, "compile", f"the program (transport {ds.settings.transport}, offsets from "
                  f"{result['offsets']}, capture mode {result['mode']}) compiled, loaded and "
                  f"attached to {', '.join(result['hooks'])} with {plan.as_whom}")


def check_capture(host: Host, ds: DaemonSettings, loaded: dict | None = None) -> Result:
    """The capture mode the service gets and what it costs the programs it watches: as the
    compile check's child attached it, else as the kernel's BTF, kallsyms and ftrace predict."""
    if loaded:
        mode, fallback, how = loaded["mode"], loaded["fallback"], ""
    else:
        (mode, fallback), how = expected_mode(host, ds.settings), " (expected: nothing loaded)"
    if mode == loader.FENTRY:
        functions = [fn for _, fn in service_facts(host).exec_functions]
        return Result(OK, "capture", f"fentry{how}: execve seen at {', '.join(functions)}; "
                      "other system calls pay nothing")
    if fallback is None:
        return Result(OK, "capture", f"raw_syscalls{how}, as the settings ask: "
                      f"{loader.RAW_SYSCALLS_COST}")
    return Result(WARN, "capture", f"raw_syscalls{how}, the fallback: {fallback}; "
                  f"{loader.RAW_SYSCALLS_COST}",
                  "a kernel that attaches fentry/fexit programs (BTF, kernel.ftrace_enabled=1, "
                  "tracing programs allowed): Debian's 5.10, 6.1 and 6.12 do")


def check_db_dir(db_dir: Path) -> Result:
    d = Path(db_dir)
    probe = d
    while not probe.exists():  # the daemon creates it: check the nearest existing parent
        probe = probe.parent
    if not probe.is_dir():
        return Result(FAIL, "database", f"{probe} is not a directory",
                      f"remove {probe} or choose another --db-dir")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".doctor-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        return Result(FAIL, "database", f"{probe} is not writable: {e.strerror}",
                      f"make {d} writable by root, or choose another --db-dir")
    st = os.statvfs(probe)
    free_mb = st.f_bavail * st.f_frsize // (1024 * 1024)
    where = str(d) if probe == d else f"{d} (will be created in {probe})"
    if free_mb < LOW_FREE_MB:
        return Result(WARN, "database", f"{where} writable, only {free_mb} MiB free",
                      "free some space, or set rotate_size_mb, keep and min_free_mb")
    return Result(OK, "database", f"{where} writable, {free_mb} MiB free")


def check_sealing(state_dir: Path) -> Result:
    """What the daemon will do about sealing at its start (daemon/main.py, sealer_for): off
    without a state; with one it cannot read, off too (capture goes on, unsealed); a state
    others may read gives them the current key, which forges every seal from now on."""
    state_dir = Path(state_dir)
    if not seal.State.exists(state_dir):
        return Result(OK, "sealing", f"off: no sealing state in {state_dir} "
                      "(auditd-lite seal setup turns it on)")
    try:
        state = seal.State.load(state_dir)
    except seal.SealError as e:
        return Result(WARN, "sealing", f"{e}: the daemon will capture without sealing",
                      "auditd-lite seal setup --force begins a new key chain (keep its new key)")
    path = seal.State.path(state_dir)
    loose = [f"{p} is {oct(have)}, not {oct(want)}" for p, have, want in seal.State.loose_modes(state_dir)]
    last = state.recent[-1] if state.recent else None
    said = (f"on: key id {state.key_id}, next epoch {state.epoch}, epochs of "
            f"{timeparse.format_duration(state.interval_s * 10**9)}, "
            + (f"last seal at {timeparse.format_time(last['sealed_ns'])} ({last['reason']})"
               if last else "no seal made yet"))
    if loose:
        return Result(WARN, "sealing", f"{said}; but {'; '.join(loose)}: whoever read the "
                      "current key can forge the seals from its epoch on",
                      f"chmod {seal.DIR_MODE:o} {state_dir}; chmod {seal.FILE_MODE:o} {path} (the daemon also does at its "
                      "start); if others could read it, seal setup --force")
    return Result(OK, "sealing", said)


def resolve_settings(host: Host, config_file: Path | None, overrides: dict | None
                     ) -> tuple[Unit | None, DaemonSettings | None, Result]:
    """The unit and the daemon's settings, and the settings line; a bad config file or bad
    ExecStart flags are that line's failure, not a crash of every check that needs them."""
    unit = read_unit(host)
    try:
        ds = daemon_settings(host, unit, config_file, overrides)
    except AuditdLiteError as e:
        return unit, None, Result(FAIL, "settings", str(e),
                                  "fix the config file, the unit's ExecStart flags or doctor's flags")
    return unit, ds, check_settings(ds)


def run_checks(config_file: Path | None = None, overrides: dict | None = None,
               compile_test: bool = True, host: Host | None = None) -> list[Result]:
    host = host or Host()
    try:
        unit, ds, settings_line = resolve_settings(host, config_file, overrides)
    except Exception as e:  # an unreadable unit file, say: the checks that need none still run
        unit, ds = None, None
        settings_line = Result(FAIL, "settings", f"check failed: {type(e).__name__}: {e}")

    def db_dir() -> Path:
        given = (overrides or {}).get("db_dir")
        return ds.settings.db_dir if ds else given or config.DEFAULT_DB_DIR

    checks: list[tuple[str, Callable[[], Result]]] = [
        ("privileges", lambda: check_privileges(host)),
        ("kernel", lambda: check_kernel(host)),
        ("btf", lambda: check_btf(host)),
        ("tracefs", lambda: check_tracefs(host)),
        ("tracepoints", lambda: check_tracepoints(host, ds.settings if ds else None)),
        ("bcc", lambda: check_bcc(host)),
        ("headers", lambda: check_headers(host)),
        ("settings", lambda: settings_line),
        ("service", lambda: check_service(host, unit, ds) if ds
         else Result(SKIP, "service", "no settings to check it with")),
    ]
    loaded: dict = {}
    if compile_test:
        checks.append(("compile", lambda: check_compile(host, unit, ds, loaded) if ds
                       else Result(SKIP, "compile", "no settings to compile with")))
    checks.append(("capture", lambda: check_capture(host, ds, loaded) if ds
                   else Result(SKIP, "capture", "no settings to tell the mode with")))
    checks.append(("database", lambda: check_db_dir(db_dir())))
    checks.append(("sealing", lambda: check_sealing(ds.settings.seal_state) if ds
                   else Result(SKIP, "sealing", "no settings to find its state with")))
    results = []
    for name, check in checks:
        try:
            results.append(check())
        except Exception as e:  # one broken check must not hide the others
            results.append(Result(FAIL, name, f"check failed: {type(e).__name__}: {e}"))
    return results


def main(config_file: Path | None = None, overrides: dict | None = None,
         compile_test: bool = True, out: TextIO | None = None, host: Host | None = None) -> int:
    results = run_checks(config_file, overrides, compile_test, host)
    failed = [r for r in results if r.status == FAIL]
    lines = [r.line() for r in results]
    if failed:
        lines.append(f"capture cannot work here: {len(failed)} check(s) failed "
                     f"({', '.join(r.name for r in failed)})")
    else:
        lines.append("capture can work on this host")
    if out is not None:
        out.write("\n".join(lines) + "\n")
        out.flush()
    return 1 if failed else 0
