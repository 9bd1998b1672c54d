"""`auditd-lite doctor`: can this host capture, and if not, what to do about it.

Each check is a function returning one Result; a check that crashes is
reported as a failure of that check, never as a traceback. Checks that need
bcc or root say so instead of failing obscurely when they are missing.
"""

from __future__ import annotations

import os
import platform
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from . import btf, loader

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"

# capability numbers from include/uapi/linux/capability.h
CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_PERFMON, CAP_BPF = 21, 19, 38, 39
RINGBUF_KERNEL = (5, 8)  # BPF_MAP_TYPE_RINGBUF, CAP_BPF and CAP_PERFMON
MIN_KERNEL = (5, 5)  # bpf_probe_read_kernel; before 5.8 only with --transport perfbuf
LOW_FREE_MB = 100

TINY_PROGRAM = r"""
BPF_ARRAY(seen, u64, 1);
TRACEPOINT_PROBE(sched, sched_process_exec) {
    int zero = 0;
    u64 *n = seen.lookup(&zero);
    if (n) __sync_fetch_and_add(n, 1);
    return 0;
}
"""
RINGBUF_PROGRAM = "BPF_RINGBUF_OUTPUT(probe_rb, 1);"


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


def kernel_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise ValueError(f"cannot read a version from kernel release {release!r}")
    return int(m.group(1)), int(m.group(2))


def effective_caps(proc_status: str) -> int:
    with open(proc_status) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


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
    if not have(CAP_SYS_PTRACE):
        return Result(WARN, "privileges", "root with CAP_BPF and CAP_PERFMON, without "
                      "CAP_SYS_PTRACE: executables of processes running at start are not recorded",
                      "add CAP_SYS_PTRACE")
    return Result(OK, "privileges", "root with CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE")


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


def check_btf(host: Host) -> Result:
    try:
        types = btf.BTF.from_file(host.btf_path)
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
    return Result(OK, "btf", f"{host.btf_path}: all {len(wanted)} kernel field offsets resolved")


def _tracefs(host: Host) -> str | None:
    for d in host.tracefs:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    return None


def tracefs_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    try:
        with open(mountinfo) as f:
            # fields: ... mount-point (5th) ... " - " fstype source options
            return [line.split()[4] for line in f if line.split(" - ")[-1].startswith("tracefs ")]
    except OSError:
        return []


def check_tracefs(host: Host) -> Result:
    d = _tracefs(host)
    if d is None:
        mounted = [m for m in tracefs_mounts() if m in host.tracefs]
        if mounted:
            # tracefs is 0700 root: mounted, but this user cannot look inside
            return Result(FAIL, "tracefs", f"mounted at {mounted[0]} but not readable as uid "
                          f"{host.euid}", "run as root")
        return Result(FAIL, "tracefs", f"not mounted (looked in {', '.join(host.tracefs)})",
                      "mount -t tracefs tracefs /sys/kernel/tracing")
    return Result(OK, "tracefs", f"mounted at {d}")


def check_tracepoints(host: Host) -> Result:
    d = _tracefs(host)
    if d is None:
        return Result(SKIP, "tracepoints", "tracefs is not available")
    missing = [tp for tp in loader.TRACEPOINTS
               if not os.path.exists(os.path.join(d, "events", *tp.split(":"), "id"))]
    if missing:
        return Result(FAIL, "tracepoints", f"missing: {', '.join(missing)}",
                      "a kernel with CONFIG_FTRACE_SYSCALLS=y (syscalls:*) and sched tracepoints")
    return Result(OK, "tracepoints", f"all {len(loader.TRACEPOINTS)} present: "
                  + ", ".join(loader.TRACEPOINTS))


def headers_release(build: Path) -> str | None:
    """The kernel release the headers in ``build`` were made for."""
    for name, pattern in (("include/config/kernel.release", r"(\S+)"),
                          ("include/generated/utsrelease.h", r'UTS_RELEASE\s+"([^"]+)"')):
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
    try:
        import bcc  # noqa: PLC0415 - only doctor's compile checks need it
    except ImportError:
        return None
    return bcc


def check_bcc(host: Host) -> Result:
    bcc = _import_bcc()
    if bcc is None:
        return Result(FAIL, "bcc", "Python module bcc not importable",
                      "apt-get install python3-bpfcc (Debian's; PyPI's bcc is another project)")
    return Result(OK, "bcc", f"bcc {getattr(bcc, '__version__', '?')} from "
                  f"{os.path.dirname(bcc.__file__)}")


def _compile(text: str) -> None:
    bcc = _import_bcc()
    b = bcc.BPF(text=text)
    b.cleanup()


def _can_compile(host: Host) -> str | None:
    if _import_bcc() is None:
        return "bcc is not importable"
    if host.euid != 0:
        return "needs root"
    return None


def check_compile(host: Host) -> Result:
    why = _can_compile(host)
    if why:
        return Result(SKIP, "compile", why)
    try:
        _compile(TINY_PROGRAM)
    except Exception as e:  # bcc raises bare Exception for compile and load errors
        return Result(FAIL, "compile", f"a tiny tracepoint program did not compile or load: {e}",
                      "install the kernel headers (see the headers line) and clang's "
                      "dependencies of python3-bpfcc")
    return Result(OK, "compile", "a tiny program compiled, loaded and attached to "
                  "sched:sched_process_exec")


def check_ringbuf(host: Host) -> Result:
    why = _can_compile(host)
    if why:
        try:
            ok = kernel_version(host.release) >= RINGBUF_KERNEL
        except ValueError:
            ok = False
        return Result(OK if ok else WARN, "ringbuf", f"kernel {host.release} "
                      f"{'has' if ok else 'may lack'} BPF ring buffers (not tried: {why})",
                      "" if ok else "run with --transport perfbuf")
    try:
        _compile(RINGBUF_PROGRAM)
    except Exception as e:
        return Result(WARN, "ringbuf", f"creating a BPF ring buffer failed: {e}",
                      "run with --transport perfbuf (transport = \"perfbuf\" in the config file)")
    return Result(OK, "ringbuf", "a BPF ring buffer map was created")


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


def run_checks(db_dir: Path, compile_test: bool = True, host: Host | None = None) -> list[Result]:
    host = host or Host()
    checks: list[tuple[str, Callable[[], Result]]] = [
        ("privileges", lambda: check_privileges(host)),
        ("kernel", lambda: check_kernel(host)),
        ("btf", lambda: check_btf(host)),
        ("tracefs", lambda: check_tracefs(host)),
        ("tracepoints", lambda: check_tracepoints(host)),
        ("bcc", lambda: check_bcc(host)),
        ("headers", lambda: check_headers(host)),
    ]
    if compile_test:
        checks += [("compile", lambda: check_compile(host)), ("ringbuf", lambda: check_ringbuf(host))]
    checks.append(("database", lambda: check_db_dir(db_dir)))
    results = []
    for name, check in checks:
        try:
            results.append(check())
        except Exception as e:  # one broken check must not hide the others
            results.append(Result(FAIL, name, f"check failed: {type(e).__name__}: {e}"))
    return results


def main(db_dir: Path, compile_test: bool = True, out: TextIO | None = None,
         host: Host | None = None) -> int:
    results = run_checks(db_dir, compile_test, host)
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
