"""What doctor's checks look at and what they say: the host's files (Host, which tests point at
fakes), one Result per check, and capabilities by name."""

from __future__ import annotations

import os
import platform
import re
import shutil
from dataclasses import dataclass, field

from .. import btf, loader
from ... import config
from ...resources import resource_dir


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
LOAD_TIMEOUT_S = 300  # the unit's TimeoutStartSec: compiling under TCG takes minutes

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
