"""The checks of the running kernel and what capture needs of it: privileges, version, BTF,
tracefs, the hooks the programs attach to (and the capture mode they will be in), headers, bcc."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from .. import btf, compiler, loader
from ... import config
from ...errors import CannotCapture
from .host import (CAP_BPF, CAP_DAC_READ_SEARCH, CAP_NAMES, CAP_PERFMON, CAP_SYS_ADMIN,
                   CAP_SYS_PTRACE, FAIL, Host, MIN_KERNEL, OK, RINGBUF_KERNEL, Result, SKIP, WARN,
                   effective_caps, kernel_version)


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
